"""Health against the real thing: dockerd, keepalived, two simulated hosts and a client on their bridge.

Each test starts a supervisor from this checkout in each host's network namespace, scoped to that host's containers
by a label selector, with unicast VRRP (Docker drops multicast leaving an internal network).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lab.engine import REPO, wait_until
from lab.hosts import HostLab, SimHost, write_check_script

VIP = "198.51.100.100"
INSTANCE = "VI_71"
JOIN = {"keepalived.enable": "true", "keepalived.port": "80", "keepalived.check": "http"}


def supervise(lab: HostLab, host: SimHost, priority: int, extra: dict[str, str] | None = None) -> None:
    peers = ",".join(h.address for h in lab.hosts)
    host.start_supervisor(
        {
            "VIRTUAL_IP": VIP,
            "VRID": "71",
            "PRIORITY": str(priority),
            "UNICAST_PEERS": peers,
            "ADVERT_INT": "0.5",
            "CHECK_INTERVAL": "0.5",
            "CHECK_TIMEOUT": "0.5",
            **(extra or {}),
        }
    )


def two_hosts(
    lab: HostLab, mode: str, labels: dict[str, str] | None = None, **service: object
) -> tuple[SimHost, SimHost]:
    h1, h2 = lab.add_host("h1", 11), lab.add_host("h2", 12)
    h1.add_service("s1", labels or JOIN, mode=mode, **service)  # type: ignore[arg-type]
    h2.add_service("s2", labels or JOIN, mode=mode, **service)  # type: ignore[arg-type]
    supervise(lab, h1, 150)
    supervise(lab, h2, 100)
    return h1, h2


def master_is(lab: HostLab, holder: SimHost, answer: str) -> bool:
    others = [host for host in lab.hosts if host is not holder]
    return holder.has(VIP) and not any(host.has(VIP) for host in others) and lab.fetch(VIP) == answer


def health_of(host: SimHost) -> tuple[bool, str]:
    assert host.supervisor is not None
    entry = host.supervisor.instance(INSTANCE)
    return bool(entry.get("healthy")), str(entry.get("health_reason", ""))


def test_rancher_case_probe_through_published_endpoint(hostlab: HostLab) -> None:
    h1, h2 = two_hosts(hostlab, "rancher")
    assert ":80 " not in h1.listeners(), "the Rancher case has no listener on the host"
    wait_until(lambda: master_is(hostlab, h1, "s1"), 30, "the VIP on h1, answered by s1")
    healthy, reason = health_of(h1)
    assert healthy and f"HTTP GET http://{h1.address}:80/ ok" in reason, reason
    # The VIP stays: sample for a while (several probe intervals and adverts).
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        assert h1.has(VIP) and not h2.has(VIP)
        time.sleep(0.1)

    h1.services[0].kill()
    wait_until(lambda: master_is(hostlab, h2, "s2"), 15, "the VIP on h2, answered by s2, after s1 was killed")
    assert not health_of(h1)[0]

    h1.services[0].start()
    wait_until(lambda: health_of(h1)[0], 20, "h1 healthy again after s1 started")
    wait_until(lambda: master_is(hostlab, h1, "s1"), 20, "the VIP back on h1 (priority 150)")


def test_service_death_client_answered_by_backup(hostlab: HostLab) -> None:
    h1, h2 = two_hosts(hostlab, "shared")
    wait_until(lambda: master_is(hostlab, h1, "s1"), 30, "the VIP on h1, answered by s1")
    started = time.monotonic()
    h1.services[0].kill()
    took = wait_until(lambda: hostlab.fetch(VIP) == "s2", 15, "a client answered by s2 through the VIP")
    assert h2.has(VIP) and not h1.has(VIP)
    print(f"docker kill -> client answered by backup: {1000 * took:.0f} ms ({1000 * (time.monotonic() - started):.0f})")


def test_docker_healthcheck_unhealthy_moves_vip(hostlab: HostLab) -> None:
    check = {"test": ["CMD", "test", "-f", "/ok"], "interval": 300_000_000, "timeout": 300_000_000, "retries": 1}
    h1, h2 = two_hosts(hostlab, "shared", healthcheck=check)
    wait_until(lambda: master_is(hostlab, h1, "s1"), 30, "the VIP on h1 once Docker says s1 is healthy")
    h1.services[0].exec_run(["rm", "/ok"])
    wait_until(lambda: master_is(hostlab, h2, "s2"), 20, "the VIP on h2 after s1 turned unhealthy")
    healthy, reason = health_of(h1)
    assert not healthy and "unhealthy" in reason, reason


def test_hung_service_fails_at_probe_timeout(hostlab: HostLab) -> None:
    h1, h2 = two_hosts(hostlab, "rancher")
    wait_until(lambda: master_is(hostlab, h1, "s1"), 30, "the VIP on h1, answered by s1")
    # httpd stopped by SIGSTOP (sent from outside its PID namespace, where it is init; no Docker event): the kernel
    # still completes TCP handshakes, nothing ever answers HTTP.
    s1 = h1.services[0]
    s1.reload()
    httpd = int(s1.attrs["State"]["Pid"])
    os.kill(httpd, signal.SIGSTOP)
    try:
        wait_until(lambda: master_is(hostlab, h2, "s2"), 20, "the VIP on h2 after s1 hung")
        assert h1.supervisor is not None
        log = h1.supervisor.log_text()
        assert f"HTTP GET http://{h1.address}:80/ failed: no answer within 0.5 s" in log, log[-2000:]
        assert "VI_71 is FAILED" in log
    finally:
        os.kill(httpd, signal.SIGCONT)


def test_any_and_all_policies_with_two_front_ends(hostlab: HostLab) -> None:
    h1 = hostlab.add_host("h1", 11)
    h1.add_service("s1a", {**JOIN, "keepalived.port": "80"}, mode="shared", port=80)
    h1.add_service("s1b", {**JOIN, "keepalived.port": "8081"}, mode="shared", port=8081)
    supervise(hostlab, h1, 150, {"HEALTH_POLICY": "any"})
    wait_until(lambda: h1.has(VIP), 30, "the VIP on h1")
    h1.services[0].kill()
    time.sleep(1.5)  # three probe intervals: a wrong verdict would have been written by now
    assert health_of(h1)[0] and h1.has(VIP), "with HEALTH_POLICY=any one answering front end keeps the VIP"
    assert h1.supervisor is not None
    h1.supervisor.stop()
    h1.services[0].start()
    supervise(hostlab, h1, 150, {"HEALTH_POLICY": "all"})
    wait_until(lambda: h1.has(VIP), 30, "the VIP on h1 with both front ends up")
    h1.services[1].kill()
    wait_until(lambda: not health_of(h1)[0] and not h1.has(VIP), 10, "h1 FAULT with one of two front ends down")


def test_check_script_exit_1_puts_instance_in_fault(hostlab: HostLab) -> None:
    script = write_check_script("always-fails", "exit 1")
    h1 = hostlab.add_host("h1", 11)
    supervise(
        hostlab, h1, 150, {"CHECK_SCRIPT": str(script), "CHECK_INTERVAL": "1", "CHECK_TIMEOUT": "1", "CHECK_FALL": "1"}
    )
    assert h1.supervisor is not None
    wait_until(lambda: h1.supervisor is not None and h1.supervisor.instance(INSTANCE).get("state") == "FAULT",
               20, "the instance in FAULT")  # fmt: skip
    assert not h1.has(VIP)


def run_cli(command: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    full = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "PYTHONPATH": str(REPO), "VIRTUAL_IP": VIP, **env}
    return subprocess.run([sys.executable, "-m", "supervisor", command], env=full, capture_output=True, text=True,
                          timeout=60)  # fmt: skip


@pytest.mark.parametrize("kind", ["missing", "insecure"])
def test_bad_check_script_is_a_clear_error_in_check_and_at_start(kind: str, tmp_path: Path) -> None:
    if kind == "missing":
        script, expected = "/nonexistent/check.sh", "does not exist"
    else:
        path = tmp_path / "check.sh"  # under /tmp: world-writable, so keepalived's script security refuses it
        path.write_text("#!/bin/sh\nexit 0\n")
        path.chmod(0o755)
        tmp_path.chmod(0o777)
        script, expected = str(path), "script security refuses it"
    env = {"CHECK_SCRIPT": script, "SCRIPT_USER": "nobody", "RUN_DIR": str(tmp_path / "run"), "INTERFACE": "lo"}
    checked = run_cli("check", env)
    assert checked.returncode == 2, checked
    assert f"CHECK_SCRIPT={script!r}" in checked.stderr and expected in checked.stderr, checked.stderr
    started = run_cli("run", env)
    assert started.returncode == 2, started
    assert expected in started.stderr, started.stderr
