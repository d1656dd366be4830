"""What a hostile container, a full disk or a storm of signals does to real supervisors: nothing it should.

Supervisors from this checkout run in network namespaces (simulated hosts on a lab bridge, 198.51.100.0/24) with
real keepalived, and watch the real engine, each scoped to its own host's containers by LABEL_SELECTOR.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from lab.netns import Lab, Node, wait_until
from tests.integration.dockerlab import ContainerLab

VIP = "198.51.100.100"


def config(node: Node) -> str:
    path = node.run_dir / "keepalived.conf"
    return path.read_text() if path.exists() else ""


def alive(node: Node) -> bool:
    return node.process is not None and node.process.poll() is None


def supervise(node: Node, peers: str, priority: int, selector: str, **extra: str) -> None:
    node.start_supervisor(
        {
            "DOCKER_HOST": "unix:///var/run/docker.sock",
            "LABEL_SELECTOR": selector,
            "VIRTUAL_IP": VIP,
            "VRID": "60",
            "PRIORITY": str(priority),
            "UNICAST_PEERS": peers,
            "ADVERT_INT": "0.5",
            **extra,
        }
    )


def test_hostile_labels_leave_both_supervisors_up_and_one_holder(lab: Lab, docker_lab: ContainerLab) -> None:
    a, b = lab.add_node("a", 11), lab.add_node("b", 12)
    peers = f"{a.address},{b.address}"
    run = docker_lab.run_id
    supervise(a, peers, 150, f"kat.test={run},kat.node=a")
    supervise(b, peers, 100, f"kat.test={run},kat.node=b")
    wait_until(lambda: a.has(VIP) and not b.has(VIP), 20, "the VIP on a only")

    hostile = {
        "a": {
            "huge": {"keepalived.port": "9" * 5000},
            "nowhere": {"keepalived.vip": "198.51.100.31", "keepalived.vrid": "131", "keepalived.interface": "nosuch0"},
            "typo": {"keepalived.prot": "80"},
        },
        "b": {"thief": {"keepalived.vip": VIP, "keepalived.vrid": "101", "keepalived.check": "none"}},
    }
    for host, containers in hostile.items():
        for name, labels in containers.items():
            docker_lab.create({"kat.node": host, **labels}, name=f"kat-{run}-{name}")
    for node, containers in ((a, hostile["a"]), (b, hostile["b"])):
        for name in containers:
            wanted = f"kat-{run}-{name}"
            wait_until(lambda n=node, c=wanted: c in n.log_text(), 20, f"a log line naming {name}")  # type: ignore[misc]

    samples: list[tuple[bool, bool]] = []
    deadline = time.monotonic() + 4
    while time.monotonic() < deadline:
        samples.append((a.has(VIP), b.has(VIP)))
        time.sleep(0.05)
    assert all(sample == (True, False) for sample in samples), f"the VIP left a or was doubled: {set(samples)}"
    assert alive(a) and alive(b), a.log_text()[-2000:] + b.log_text()[-2000:]
    assert "virtual_router_id 101" not in config(b) and "nosuch0" not in config(a)

    docker_lab.create(
        {"kat.node": "b", "keepalived.vip": "198.51.100.20", "keepalived.vrid": "120", "keepalived.check": "none"},
        name=f"kat-{run}-good",
    )
    wait_until(lambda: b.has("198.51.100.20"), 20, "the good container's VIP on b, despite the hostile ones")
    assert a.has(VIP) and not b.has(VIP)


def test_full_run_dir_keeps_the_old_config_and_applies_the_change_later(lab: Lab, tmp_path: Path) -> None:
    node = lab.add_node("a", 11)
    node.run_dir.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "kat-full", str(node.run_dir)], check=True)
    settings = tmp_path / "settings.env"
    settings.write_text("PRIORITY=100\n")
    filler = node.run_dir / "filler"
    try:
        node.start_supervisor({"VIRTUAL_IP": VIP, "VRID": "62", "SETTINGS_FILE": str(settings)})
        wait_until(lambda: node.has(VIP), 20, "the VIP held")
        assert "priority 100" in config(node)

        subprocess.run(["dd", "if=/dev/zero", f"of={filler}", "bs=64k"], capture_output=True, check=False)
        settings.write_text("PRIORITY=120\n")
        node.signal(signal.SIGHUP)
        wait_until(lambda: "new configuration rejected" in node.log_text(), 10, "the failed reload reported in the log")
        time.sleep(2)  # a retry or two under a full disk
        assert alive(node), node.log_text()[-3000:]
        assert "priority 100" in config(node), "the running config stays while the disk is full"
        assert node.has(VIP)

        filler.unlink()
        wait_until(lambda: "priority 120" in config(node), 40, "the change applied once space is back")
        wait_until(lambda: "configuration applied after an earlier failure" in node.log_text(), 10, "recovery logged")
        assert alive(node) and node.has(VIP)
    finally:
        node.stop_supervisor()
        subprocess.run(["umount", "-l", str(node.run_dir)], check=False)


def test_bursts_of_sighup_leave_the_process_alive_with_the_right_config(lab: Lab, tmp_path: Path) -> None:
    node = lab.add_node("a", 11)
    settings = tmp_path / "settings.env"
    settings.write_text("PRIORITY=100\n")
    node.start_supervisor({"VIRTUAL_IP": VIP, "VRID": "63", "SETTINGS_FILE": str(settings)})
    wait_until(lambda: node.has(VIP), 20, "the VIP held")
    assert node.process is not None
    pid = node.process.pid

    def burst(count: int) -> None:
        for _ in range(count):
            os.kill(pid, signal.SIGHUP)

    for round_number, priority in enumerate((110, 120, 130)):
        settings.write_text(f"PRIORITY={priority}\n")
        senders = [threading.Thread(target=burst, args=(100,)) for _ in range(3)]
        for sender in senders:
            sender.start()
        for sender in senders:
            sender.join()
        assert alive(node), f"round {round_number}: " + node.log_text()[-3000:]
        wait_until(lambda p=priority: f"priority {p}" in config(node), 20, f"priority {priority} installed")  # type: ignore[misc]
    time.sleep(1)
    assert alive(node) and node.has(VIP)
    assert "RecursionError" not in node.log_text() and "Traceback" not in node.log_text()


def test_render_in_the_namespace_equals_what_run_installed(lab: Lab, docker_lab: ContainerLab) -> None:
    a, b = lab.add_node("a", 11), lab.add_node("b", 12)
    run = docker_lab.run_id
    supervise(a, f"{a.address},{b.address}", 150, f"kat.test={run}")
    docker_lab.create({"keepalived.vip": "198.51.100.21", "keepalived.vrid": "121", "keepalived.check": "none"})
    wait_until(lambda: "virtual_router_id 121" in config(a), 20, "the labelled instance installed")
    wait_until(lambda: a.has("198.51.100.21") and a.has(VIP), 20, "both VIPs held (render must not mistake them)")
    result = subprocess.run(
        ["ip", "netns", "exec", a.netns, sys.executable, "-m", "supervisor", "render"],
        env=a.env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert result.stdout == config(a), result.stderr
    assert re.search(r"unicast_peer \{\s+198\.51\.100\.12\s+\}", result.stdout), "own address dropped from the peers"
