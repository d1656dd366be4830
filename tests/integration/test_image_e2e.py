"""End to end with the image built from the Dockerfile: two simulated hosts, each running the supervisor container
beside its front end (published Rancher-style, behind DNAT), a client on the same bridge.

The image is built by scripts/test.sh (kat_build_image) before pytest runs; these tests use it as built.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from lab.engine import wait_until
from lab.hosts import HolderSampler, HostLab, SimHost
from tests.integration.dockerlab import require_image

VIP = "198.51.100.100"
LABELS = {"keepalived.enable": "true", "keepalived.port": "80", "keepalived.check": "http"}


@pytest.fixture
def hostlab(tmp_path: Path) -> Iterator[HostLab]:
    require_image()
    lab = HostLab(tmp_path)
    try:
        yield lab
    finally:
        lab.close()


def start(lab: HostLab, **extra: str) -> tuple[SimHost, SimHost]:
    h1, h2 = lab.add_host("h1", 11), lab.add_host("h2", 12)
    h1.add_service("s1", LABELS)
    h2.add_service("s2", LABELS)
    peers = f"{h1.address},{h2.address}"
    for host, priority in ((h1, 254), (h2, 250)):
        host.start_supervisor_container(
            {"VIRTUAL_IP": VIP, "VRID": "51", "PRIORITY": str(priority), "UNICAST_PEERS": peers, **extra}
        )
    return h1, h2


def only_on(lab: HostLab, host: SimHost) -> Callable[[], bool]:
    return lambda: host.has(VIP) and all(not other.has(VIP) for other in lab.hosts if other is not host)


ZOMBIES = "import os; print(sum(open(f'/proc/{p}/stat').read().rsplit(')', 1)[1].split()[0] == 'Z' for p in os.listdir('/proc') if p.isdigit()))"


def no_zombies(host: SimHost) -> Callable[[], bool]:
    def check() -> bool:
        assert host.supervisor_container is not None
        result = host.supervisor_container.container.exec_run(["python3", "-c", ZOMBIES])
        return isinstance(result.output, bytes) and result.output.strip() == b"0"

    return check


def docker_health_is(host: SimHost, status: str) -> Callable[[], bool]:
    def check() -> bool:
        assert host.supervisor_container is not None
        container = host.supervisor_container.container
        container.reload()
        return bool(container.attrs["State"].get("Health", {}).get("Status") == status)

    return check


def keepalived_running(host: SimHost) -> Callable[[], bool]:
    return lambda: (
        host.supervisor_container is not None and bool(host.supervisor_container.status().get("keepalived_running"))
    )


def test_cold_start_and_service_death(hostlab: HostLab) -> None:
    started = time.monotonic()
    h1, h2 = start(hostlab)
    cold = wait_until(only_on(hostlab, h1), 60, "the VIP on h1")
    print(f"cold start to VIP held: {1000 * (time.monotonic() - started):.0f} ms (supervisors + VRRP) [{cold:.1f}]")
    assert hostlab.fetch(VIP) == "s1"
    assert h1.supervisor_container is not None
    container = h1.supervisor_container
    wait_until(lambda: (container.status().get("instances") or [{}])[0].get("state") == "MASTER", 10,
               "h1's status saying MASTER")  # fmt: skip
    status = container.status()
    assert "AUTH" not in json.dumps(status)

    # PID 1 reaps orphans: a process whose parent exits is re-parented to the supervisor and must not stay a zombie.
    h1.supervisor_container.container.exec_run(["sh", "-c", "(sleep 0.2 &) ; true"])
    wait_until(no_zombies(h1), 10, "the orphan reaped by the supervisor (PID 1)")
    # The image's HEALTHCHECK reflects the supervisor's own health.
    wait_until(docker_health_is(h1, "healthy"), 60, "Docker reporting the supervisor container healthy")

    client = hostlab.client_process("first", VIP, "s2", "20")
    time.sleep(0.2)
    killed_at = time.time()
    h1.services[0].kill()
    out, _ = client.communicate(timeout=30)
    assert client.returncode == 0, "the backup's front end never answered through the VIP"
    print(f"docker kill of the master's front end -> client answered by the backup: "
          f"{1000 * (float(out) - killed_at):.0f} ms")  # fmt: skip
    assert only_on(hostlab, h2)()


def test_master_host_cut_off(hostlab: HostLab) -> None:
    h1, h2 = start(hostlab)
    wait_until(only_on(hostlab, h1), 60, "the VIP on h1")
    hostlab.lan.disconnect(h1.container)
    try:
        wait_until(lambda: h2.has(VIP) and hostlab.fetch(VIP) == "s2", 20, "h2 serving the VIP after h1 was cut off")
        assert not h1.has(VIP)
    finally:
        hostlab.lan.connect(h1.container, ipv4_address=h1.address)
    # Docker names the re-attached interface after the next free index; on a real host the NIC keeps its name.
    h1.restore_interface_name("eth0", h1.address)
    # Back on the network, h1 (priority 254) takes the VIP back and h2 releases it.
    try:
        wait_until(only_on(hostlab, h1), 30, "one holder again, h1, after it came back")
    except AssertionError:
        assert h1.supervisor_container is not None
        print(h1.supervisor_container.logs()[-4000:])
        raise


def test_graceful_stop_of_master_supervisor_moves_vip_at_once(hostlab: HostLab) -> None:
    h1, h2 = start(hostlab)
    wait_until(only_on(hostlab, h1), 60, "the VIP on h1")
    assert h1.supervisor_container is not None
    container = h1.supervisor_container.container
    stopping = threading.Thread(target=container.stop, kwargs={"timeout": 10})
    stopping.start()  # measured from the moment `docker stop` is asked, not from its return
    moved = wait_until(only_on(hostlab, h2), 10, "the VIP on h2 only")
    stopping.join()
    print(f"docker stop of the master's supervisor -> VIP on the backup only: {1000 * moved:.0f} ms")
    # A crashed master is noticed only after 3 adverts; a graceful stop sends a priority-0 advert, and the backup
    # takes over after its skew time. The cause is asserted, not the time (the benchmark measures that).
    assert h2.supervisor_container is not None
    assert "Backup received priority 0 advertisement" in h2.supervisor_container.logs(), "no priority-0 advert"
    container.reload()
    assert container.attrs["State"]["ExitCode"] == 0


def test_kill_and_restart_of_master_supervisor_never_duplicates_vip(hostlab: HostLab) -> None:
    h1, _ = start(hostlab)
    wait_until(only_on(hostlab, h1), 60, "the VIP on h1")
    assert h1.supervisor_container is not None
    container = h1.supervisor_container.container
    with HolderSampler(hostlab, VIP) as watch:
        killed_at = time.time()
        container.kill()
        container.start()

        def restarted_master() -> bool:
            # status.json of the killed run survives in the container: only a board the new run started counts.
            assert h1.supervisor_container is not None
            data = h1.supervisor_container.status()
            instances = data.get("instances") or [{}]
            return float(data.get("started") or 0) > killed_at and instances[0].get("state") == "MASTER"

        wait_until(restarted_master, 60, "h1's restarted supervisor MASTER again")
        wait_until(only_on(hostlab, h1), 30, "the VIP on h1 only")
        time.sleep(2)
    print(f"kill + restart: {watch.samples} samples of both hosts, {watch.two} with a duplicate VIP")
    assert watch.samples > 50
    assert watch.two == 0, "both hosts held the VIP at once"
    # Whether the restarted supervisor or the lease removed the killed run's VIP depends on which came first; the
    # clean-up itself is tested in test_vrrp.py::test_start_cleans_stale_vip_and_pid_files.


def test_rolling_restart_of_both_supervisors(hostlab: HostLab) -> None:
    h1, h2 = start(hostlab)
    wait_until(only_on(hostlab, h1), 60, "the VIP on h1")
    client = hostlab.client_process("loop", VIP, "40", "0.02")
    time.sleep(1)
    for host in (h1, h2):
        assert host.supervisor_container is not None
        host.supervisor_container.container.restart(timeout=10)
        wait_until(keepalived_running(host), 60, f"{host.name}'s supervisor running again")
        wait_until(only_on(hostlab, h1), 60, "the VIP settled on h1")
        time.sleep(2)
    out, _ = client.communicate(timeout=90)
    result = json.loads(out)
    total = result["failures"] + sum(result["answers"].values())
    print(f"rolling restart: {result['failures']} failed connections out of {total} (every 20 ms); "
          f"answers {result['answers']}")  # fmt: skip
    assert sum(result["answers"].values()) > 0
    assert result["failures"] <= total // 10, result
