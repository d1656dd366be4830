"""Real keepalived, started by the supervisor, in two network namespaces on their own bridge (198.51.100.0/24)."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from lab.netns import Lab, Node, wait_until

VIP = "198.51.100.100"
VIP2 = "198.51.100.101"
VRID = "61"


def start_pair(lab: Lab, mode: str, extra: dict[str, str] | None = None) -> tuple[Node, Node]:
    """Node a (priority 150) and node b (priority 100) on one instance; multicast or unicast adverts."""
    a = lab.add_node("a", 11)
    b = lab.add_node("b", 12)
    for node, priority in ((a, "150"), (b, "100")):
        env = {"VIRTUAL_IP": VIP, "VRID": VRID, "PRIORITY": priority, **(extra or {})}
        if mode == "unicast":
            # Each node lists both addresses: the supervisor drops its own.
            env["UNICAST_PEERS"] = f"{a.address},{b.address}"
        node.start_supervisor(env)
    return a, b


class VipSampler:
    """Samples VIP presence on every node in the background, to prove there is never a duplicate."""

    def __init__(self, nodes: list[Node], address: str) -> None:
        self.nodes = nodes
        self.address = address
        self.samples: list[tuple[bool, ...]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append(tuple(node.has(self.address) for node in self.nodes))
            time.sleep(0.02)

    def __enter__(self) -> VipSampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


@pytest.fixture(params=["multicast", "unicast"])
def pair(lab: Lab, request: pytest.FixtureRequest) -> Iterator[tuple[Node, Node]]:
    a, b = start_pair(lab, request.param)
    wait_until(lambda: a.has(VIP), 20, f"the VIP on the higher-priority node ({request.param})")
    yield a, b


def test_vip_on_higher_priority_node_only_and_sigterm_moves_it(pair: tuple[Node, Node]) -> None:
    a, b = pair
    wait_until(lambda: a.instance_state("VI_61") == "MASTER", 10, "a reports MASTER in status")
    wait_until(lambda: b.instance_state("VI_61") == "BACKUP", 10, "b reports BACKUP in status")
    assert not b.has(VIP), "the lower-priority node must not hold the VIP"

    started = time.monotonic()
    a.signal(signal.SIGTERM)
    moved = wait_until(lambda: b.has(VIP), 10, "the VIP on b after SIGTERM to a's supervisor")
    assert a.process is not None
    assert a.process.wait(15) == 0, a.log_text()
    assert not a.has(VIP), "the stopped node must release the VIP"
    assert "sent 0 priority" in a.log_text(), "keepalived should send its priority-0 advert on stop"
    print(f"SIGTERM to VIP on peer: {moved * 1000:.0f} ms (total {1000 * (time.monotonic() - started):.0f} ms)")


def test_sigkill_of_keepalived_child_restarts_it(pair: tuple[Node, Node]) -> None:
    a, b = pair
    wait_until(lambda: a.keepalived_pid() is not None, 5, "a's keepalived pid in status")
    old_pid = a.keepalived_pid()
    assert old_pid is not None
    a.exec("kill", "-9", str(old_pid))
    wait_until(lambda: a.keepalived_pid() not in (None, old_pid), 15, "a new keepalived pid on a")
    wait_until(lambda: a.has(VIP) and not b.has(VIP), 20, "a serving the VIP again")
    assert a.status()["keepalived"]["starts"] == 2  # type: ignore[index]
    assert a.process is not None and a.process.poll() is None, "the supervisor itself must keep running"


def test_config_change_reloads_without_leaving_master_and_unchanged_sends_no_sighup(lab: Lab, tmp_path: Path) -> None:
    settings_file = tmp_path / "a.env"
    settings_file.write_text(f"VIRTUAL_IP={VIP}\n")
    a, _b = start_pair(lab, "multicast", {"SETTINGS_FILE": str(settings_file)})
    wait_until(lambda: a.instance_state("VI_61") == "MASTER" and a.has(VIP), 20, "a MASTER with the VIP")
    assert a.reloads() == 0

    # An unchanged render: SIGHUP to the supervisor re-reads settings and sends no SIGHUP to keepalived.
    a.signal(signal.SIGHUP)
    wait_until(lambda: a.log_text().count("SIGHUP: settings reloaded") == 1, 10, "the settings reload logged")
    time.sleep(0.5)  # a reload, if one were wrongly sent, would be counted by now
    assert a.reloads() == 0, "an unchanged render must not reload keepalived"

    settings_file.write_text(f"VIRTUAL_IP={VIP},{VIP2}\n")
    with VipSampler([a], VIP) as sampler:
        a.signal(signal.SIGHUP)
        wait_until(lambda: a.has(VIP2), 10, "the second VIP on a after the config change")
        wait_until(lambda: a.reloads() == 1, 5, "exactly one keepalived reload")
        time.sleep(1)
    assert all(sample == (True,) for sample in sampler.samples), "the first VIP must stay on a through the reload"
    assert a.instance_state("VI_61") == "MASTER"
    transitions = [line for line in a.log_text().splitlines() if "instance VI_61 is now" in line]
    assert transitions[-1].endswith("is now MASTER (priority 150)"), transitions
    assert sum("is now MASTER" in line for line in transitions) == 1, "a must not leave and re-enter MASTER"
    assert f"{VIP2}/32" in (a.run_dir / "keepalived.conf").read_text()


def test_rejected_config_is_not_installed_and_old_vip_keeps_working(lab: Lab, tmp_path: Path) -> None:
    settings_file = tmp_path / "a.env"
    settings_file.write_text("INTERFACE=eth0\n")
    a, b = start_pair(lab, "multicast", {"SETTINGS_FILE": str(settings_file)})
    wait_until(lambda: a.has(VIP), 20, "the VIP on a")
    installed = (a.run_dir / "keepalived.conf").read_text()

    settings_file.write_text("INTERFACE=eth9\n")  # valid name, but keepalived's config test finds no such interface
    a.signal(signal.SIGHUP)
    wait_until(lambda: "new configuration rejected" in a.log_text(), 15, "the rejection logged")
    assert "eth9" in a.log_text(), "keepalived's own message should be in the log"
    assert (a.run_dir / "keepalived.conf").read_text() == installed
    assert a.reloads() == 0
    assert a.status()["keepalived"]["last_config_error"]  # type: ignore[index]
    time.sleep(3 * 1.0 + 0.5)  # three adverts: the peer would have taken over if a had stopped advertising
    assert a.has(VIP) and not b.has(VIP)


def test_start_cleans_stale_vip_and_pid_files(lab: Lab) -> None:
    a = lab.add_node("a", 11)
    b = lab.add_node("b", 12)
    # Leftovers of an unclean stop on b: the VIP still on eth0 and a pid file naming a dead process.
    b.exec("ip", "addr", "add", f"{VIP}/32", "dev", "eth0")
    b.run_dir.mkdir(parents=True)
    (b.run_dir / "keepalived.pid").write_text("999999\n")
    a.start_supervisor({"VIRTUAL_IP": VIP, "VRID": VRID, "PRIORITY": "150"})
    wait_until(lambda: a.has(VIP), 20, "the VIP on a")
    b.start_supervisor({"VIRTUAL_IP": VIP, "VRID": VRID, "PRIORITY": "100"})
    wait_until(lambda: b.instance_state("VI_61") == "BACKUP", 15, "b BACKUP")
    assert not b.has(VIP), "the stale VIP must be removed from b"
    assert "removed stale virtual IP" in b.log_text()
    assert (b.run_dir / "keepalived.pid").read_text().strip() != "999999"


def test_missing_interface_at_start_is_a_clear_error(lab: Lab) -> None:
    a = lab.add_node("a", 11)
    a.start_supervisor({"VIRTUAL_IP": VIP, "INTERFACE": "eth7"})
    assert a.process is not None
    assert a.process.wait(20) == 2
    assert "INTERFACE='eth7': no such interface" in a.log_text()


def test_ipv6_vip_with_vrrp_v3(lab: Lab) -> None:
    a = lab.add_node("a", 11)
    b = lab.add_node("b", 12)
    vip6 = "2001:db8:5100::100"
    for node, priority, address in ((a, "150", "2001:db8:5100::11"), (b, "100", "2001:db8:5100::12")):
        node.exec("ip", "-6", "addr", "add", f"{address}/64", "dev", "eth0", "nodad")
        node.start_supervisor({"VIRTUAL_IP": vip6, "VRID": "62", "PRIORITY": priority, "ADVERT_INT": "0.5"})
    # b may hold it for a moment at start, before a's first advert: wait for the steady state.
    wait_until(lambda: vip6 in a.addresses() and vip6 not in b.addresses(), 20, "the IPv6 VIP on a only")
    a.signal(signal.SIGTERM)
    wait_until(lambda: vip6 in b.addresses(), 10, "the IPv6 VIP on b after a stops")
