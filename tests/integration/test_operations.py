"""What operators see of real supervisors: /metrics and /healthz, keepalived's own dump, a truthful HEALTHCHECK.

Supervisors from this checkout in network namespaces (lab.netns) with real keepalived, no Docker engine.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from pathlib import Path

from lab.netns import Lab, Node, wait_until

VIP = "198.51.100.100"
FETCH = (
    "import sys, urllib.request, urllib.error\n"
    "try:\n"
    "    answer = urllib.request.urlopen(sys.argv[1], timeout=3)\n"
    "    print(answer.status); print(answer.read().decode())\n"
    "except urllib.error.HTTPError as error:\n"
    "    print(error.code); print(error.read().decode())\n"
)


def http(node: Node, path: str) -> tuple[int, str]:
    """GET http://<node>:9655<path> from inside the node's namespace."""
    result = node.exec(sys.executable, "-c", FETCH, f"http://{node.address}:9655{path}", check=False)
    status, _, body = result.stdout.partition("\n")
    return (int(status) if status.strip().isdigit() else 0), body.strip()


def vrrp_state(node: Node, vrid: int) -> float | None:
    _, body = http(node, "/metrics")
    found = re.search(rf'keepalived_vrrp_state\{{[^}}]*iname="VI_{vrid}"[^}}]*\}} (\S+)', body)
    return float(found.group(1)) if found else None


def transitions(node: Node, vrid: int, state: str) -> float:
    """keepalived_supervisor_transitions_total for one instance and state (0 while never counted)."""
    _, body = http(node, "/metrics")
    found = re.search(rf'keepalived_supervisor_transitions_total\{{iname="VI_{vrid}",state="{state}"\}} (\S+)', body)
    return float(found.group(1)) if found else 0.0


def test_lone_node_metrics_healthz_and_dump(lab: Lab, tmp_path: Path) -> None:
    a = lab.add_node("a", 11)
    a.start_supervisor({"VIRTUAL_IP": VIP, "VRID": "66", "PRIORITY": "150", "TMPDIR": str(a.run_dir)})
    wait_until(lambda: a.instance_state("VI_66") == "MASTER", 20, "a MASTER")
    wait_until(lambda: vrrp_state(a, 66) == 2, 10, "keepalived_vrrp_state 2 (MASTER) in /metrics")
    status, body = http(a, "/metrics")
    assert status == 200
    assert re.search(r'keepalived_vrrp_state\{.*intf="eth0".*\} 2', body), body
    assert f'ip_address="{VIP}"' in body and 'vrid="66"' in body
    assert re.search(r"^keepalived_up 1(\.0)?$", body, re.M), body
    assert 'keepalived_supervisor_transitions_total{iname="VI_66",state="MASTER"} 1.0' in body
    assert 'keepalived_supervisor_reloads_total{result="applied"}' in body
    assert http(a, "/healthz") == (200, "ok")

    # keepalived's own dump, through SIGUSR1 to the supervisor (PID 1 in the image) and `status --dump`.
    data = a.run_dir / "keepalived.data"
    a.signal(signal.SIGUSR1)
    # keepalived creates the file, then fills it: wait for the content, not the name.
    wait_until(lambda: data.exists() and "VI_66" in data.read_text(errors="replace"), 10,
               "keepalived.data with VI_66 written after SIGUSR1 to the supervisor")  # fmt: skip
    dump = subprocess.run(
        [sys.executable, "-m", "supervisor", "status", "--dump"], env=a.env, capture_output=True, text=True, timeout=30
    )
    assert dump.returncode == 0 and "VI_66" in dump.stdout, dump.stderr

    quiet = subprocess.run(
        [sys.executable, "-m", "supervisor", "status", "--quiet"], env=a.env, capture_output=True, timeout=30
    )
    assert quiet.returncode == 0, quiet.stderr


def test_pending_invalid_settings_edit_keeps_the_healthcheck_green(lab: Lab, tmp_path: Path) -> None:
    a = lab.add_node("a", 11)
    settings = tmp_path / "settings.env"
    settings.write_text("PRIORITY=150\n")
    a.start_supervisor({"VIRTUAL_IP": VIP, "VRID": "67", "SETTINGS_FILE": str(settings)})
    wait_until(lambda: a.has(VIP), 20, "the VIP held")
    settings.write_text("PRIORITY=999\n")  # invalid, waiting for a SIGHUP that would reject it
    quiet = subprocess.run(
        [sys.executable, "-m", "supervisor", "status", "--quiet"], env=a.env, capture_output=True, timeout=30
    )
    assert quiet.returncode == 0, quiet.stderr
    a.signal(signal.SIGHUP)
    wait_until(lambda: bool(a.status().get("pending_problems")), 10, "the pending problem reported in status")
    shown = subprocess.run(
        [sys.executable, "-m", "supervisor", "status"], env=a.env, capture_output=True, text=True, timeout=30
    )
    assert "PRIORITY='999'" in shown.stdout, shown.stdout
    quiet = subprocess.run(
        [sys.executable, "-m", "supervisor", "status", "--quiet"], env=a.env, capture_output=True, timeout=30
    )
    assert quiet.returncode == 0, quiet.stderr
    assert http(a, "/healthz")[0] == 200


def test_metrics_follow_a_failover(lab: Lab) -> None:
    a, b = lab.add_node("a", 11), lab.add_node("b", 12)
    for node, priority in ((a, "150"), (b, "100")):
        node.start_supervisor({"VIRTUAL_IP": VIP, "VRID": "68", "PRIORITY": priority, "ADVERT_INT": "0.5"})
    wait_until(lambda: vrrp_state(a, 68) == 2 and vrrp_state(b, 68) == 1, 20, "a MASTER (2) and b BACKUP (1)")
    # b may have been MASTER for a moment before a's first advert reached it, so count from here on.
    before = {state: transitions(b, 68, state) for state in ("MASTER", "BACKUP")}
    assert before["BACKUP"] >= 1, "b's entry into BACKUP counted"
    a.signal(signal.SIGTERM)
    wait_until(lambda: vrrp_state(b, 68) == 2, 10, "b MASTER (2) in its metrics after a stopped")
    assert transitions(b, 68, "MASTER") == before["MASTER"] + 1
    assert transitions(b, 68, "BACKUP") == before["BACKUP"]


def test_partition_raises_split_brain_and_healing_leaves_one_master(lab: Lab) -> None:
    """VRRP dropped by each node's firewall (keepalived hears nothing; the supervisor's packet socket still does):
    both become MASTER and /metrics says split brain; healed, one MASTER within 3 adverts and the gauge clears."""
    a, b = lab.add_node("a", 11), lab.add_node("b", 12)
    for node, priority in ((a, "150"), (b, "100")):
        node.start_supervisor({"VIRTUAL_IP": VIP, "VRID": "69", "PRIORITY": priority, "ADVERT_INT": "0.5"})
    wait_until(lambda: a.instance_state("VI_69") == "MASTER" and b.instance_state("VI_69") == "BACKUP", 20, "a/b")

    def split(node: Node) -> float | None:
        found = re.search(r'keepalived_supervisor_split_brain\{iname="VI_69"\} (\S+)', http(node, "/metrics")[1])
        return float(found.group(1)) if found else None

    # b may have been MASTER for a moment at start; a heard it, and that lasts 3 adverts plus a 1 s poll.
    wait_until(lambda: split(a) == 0 and split(b) == 0, 10, "split_brain 0 on both in the steady state")
    for node in (a, b):
        node.exec("iptables", "-I", "INPUT", "-p", "112", "-j", "DROP")
    try:
        wait_until(lambda: a.instance_state("VI_69") == "MASTER" and b.instance_state("VI_69") == "MASTER", 20,
                   "both MASTER while partitioned")  # fmt: skip
        wait_until(lambda: split(a) == 1 and split(b) == 1, 20, "split_brain 1 on both nodes")
        assert "split brain DETECTED" in a.log_text() and "split brain DETECTED" in b.log_text()
    finally:
        for node in (a, b):
            node.exec("iptables", "-D", "INPUT", "-p", "112", "-j", "DROP", check=False)
    healed = wait_until(lambda: b.instance_state("VI_69") == "BACKUP", 10, "b BACKUP again after healing")
    # 3 adverts, plus the notify, the status write and this poll on a loaded machine (bench: test_splitbrain's figure)
    assert healed <= 3 * 0.5 + 2.5, f"one MASTER only {healed:.2f} s after healing"
    assert a.has(VIP) and not b.has(VIP)
    wait_until(lambda: split(a) == 0 and split(b) == 0, 10, "split_brain cleared on both")
