"""Mixed old/new nodes: a plain keepalived configured as the old shell image did (VRRP v2, AH authentication) and this
supervisor on one VRRP instance, in two network namespaces on their own bridge (198.51.100.0/24).

This is the rolling migration README.md describes ("Migrating from the shell image"): same VRID, VRRP_VERSION=2,
AUTH_TYPE=AH and the old AUTH_PASS. Each side must accept the other's adverts (a BACKUP that rejected them would
become MASTER after three missed adverts, and the VIP would be on both nodes), and a stop must hand the VIP over in
both directions. The osixia way (VRRP v2 PASS, set through osixia/keepalived's own variables) is checked the same way.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from lab.netns import Lab, Node, wait_until

VIP = "198.51.100.100"
VRID = "63"
PASSWORD = "m1grat3"  # at most 8 bytes: keepalived's limit for auth_pass
INSTANCE = f"VI_{VRID}"
# Longer than the master-down time of a BACKUP with priority 100 and 1 s adverts (3 x 1 s + 0.61 s skew): a node
# that rejected the MASTER's adverts would have claimed the VIP by then.
HOLD_SECONDS = 5.0


def old_config(auth_type: str, priority: int) -> str:
    """keepalived.conf as the old shell image wrote it: VRRP v2 (keepalived's default), authenticated."""
    return f"""global_defs {{
    router_id old-image
}}

vrrp_instance VI_OLD {{
    state BACKUP
    interface eth0
    virtual_router_id {VRID}
    priority {priority}
    advert_int 1
    authentication {{
        auth_type {auth_type}
        auth_pass {PASSWORD}
    }}
    virtual_ipaddress {{
        {VIP}/32 dev eth0
    }}
}}
"""


@dataclass
class OldNode:
    """A plain keepalived in a lab node's namespace, started and stopped by the test itself."""

    node: Node
    config: Path
    log: Path
    process: subprocess.Popen[bytes] | None = None

    @classmethod
    def create(cls, node: Node, auth_type: str, priority: int) -> OldNode:
        directory = node.lab.workdir / f"{node.name}-old"
        directory.mkdir(parents=True, exist_ok=True)
        config = directory / "keepalived.conf"
        config.write_text(old_config(auth_type, priority))
        return cls(node, config, directory / "keepalived.log")

    def start(self) -> None:
        directory = self.config.parent
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    "ip",
                    "netns",
                    "exec",
                    self.node.netns,
                    "keepalived",
                    "--dont-fork",
                    "--log-console",
                    "--no-syslog",
                    "-f",
                    str(self.config),
                    "-p",
                    str(directory / "keepalived.pid"),
                    "-r",
                    str(directory / "vrrp.pid"),
                    "-c",
                    str(directory / "checkers.pid"),
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def stop(self) -> int | None:
        """SIGTERM (keepalived sends its priority-0 advert and removes the VIP), SIGKILL if it hangs."""
        process, self.process = self.process, None
        if process is None:
            return None
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                process.wait()
        return process.returncode

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


@pytest.fixture
def old_nodes() -> Iterator[list[OldNode]]:
    """Old keepalived processes the test starts; every one is stopped afterwards, whatever happened."""
    started: list[OldNode] = []
    try:
        yield started
    finally:
        for old in started:
            old.stop()


def holders(*nodes: Node) -> tuple[bool, ...]:
    return tuple(node.has(VIP) for node in nodes)


def hold(seconds: float, *nodes: Node) -> set[tuple[bool, ...]]:
    """Who holds the VIP, sampled every 50 ms for `seconds`: the set of distinct observations."""
    seen: set[tuple[bool, ...]] = set()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        seen.add(holders(*nodes))
        time.sleep(0.05)
    return seen


NEW_NODE_ENVS = {
    "AH": {"VIRTUAL_IP": VIP, "VRID": VRID, "VRRP_VERSION": "2", "AUTH_TYPE": "AH", "AUTH_PASS": PASSWORD},
    # osixia/keepalived's variables: a password means VRRP v2 with PASS, as osixia/keepalived ran it.
    "PASS-osixia": {
        "KEEPALIVED_VIRTUAL_IPS": f"#PYTHON2BASH:['{VIP}']",
        "KEEPALIVED_ROUTER_ID": VRID,
        "KEEPALIVED_PASSWORD": PASSWORD,
    },
}


def diagnostics(old: OldNode, new: Node) -> str:
    return f"--- old keepalived ---\n{old.log_text()[-3000:]}\n--- supervisor ---\n{new.log_text()[-3000:]}"


def test_old_master_hands_over_to_the_new_node_and_takes_the_vip_back(lab: Lab, old_nodes: list[OldNode]) -> None:
    a = lab.add_node("a", 11)
    b = lab.add_node("b", 12)
    old = OldNode.create(a, "AH", priority=150)
    old_nodes.append(old)
    old.start()
    wait_until(lambda: a.has(VIP), 20, "the VIP on the old node")

    b.start_supervisor({**NEW_NODE_ENVS["AH"], "PRIORITY": "100"})
    wait_until(lambda: b.instance_state(INSTANCE) == "BACKUP", 20, "the new node BACKUP")
    assert "auth_type AH" in (b.run_dir / "keepalived.conf").read_text()
    seen = hold(HOLD_SECONDS, a, b)
    assert seen == {(True, False)}, f"exactly one MASTER, the old node: {seen}\n{diagnostics(old, b)}"
    assert b.instance_state(INSTANCE) == "BACKUP"

    assert old.stop() == 0
    wait_until(lambda: holders(a, b) == (False, True), 10, "the VIP on the new node after SIGTERM to the old")
    wait_until(lambda: b.instance_state(INSTANCE) == "MASTER", 10, "the new node reports MASTER")

    old.start()
    wait_until(lambda: holders(a, b) == (True, False), 20, "the VIP back on the old node (priority 150 preempts)")
    wait_until(lambda: b.instance_state(INSTANCE) == "BACKUP", 10, "the new node BACKUP again")
    seen = hold(HOLD_SECONDS, a, b)
    assert seen == {(True, False)}, f"the old node stays the only MASTER: {seen}\n{diagnostics(old, b)}"


@pytest.mark.parametrize("kind", sorted(NEW_NODE_ENVS))
def test_new_master_hands_over_to_the_old_node_on_sigterm(lab: Lab, old_nodes: list[OldNode], kind: str) -> None:
    a = lab.add_node("a", 11)
    b = lab.add_node("b", 12)
    old = OldNode.create(a, "AH" if kind == "AH" else "PASS", priority=150)
    old_nodes.append(old)
    b.start_supervisor({**NEW_NODE_ENVS[kind], "PRIORITY": "200"})
    wait_until(lambda: b.has(VIP), 20, "the VIP on the new node")
    expected = f"auth_type {'AH' if kind == 'AH' else 'PASS'}"
    assert expected in (b.run_dir / "keepalived.conf").read_text()

    old.start()
    seen = hold(HOLD_SECONDS, a, b)
    assert seen == {(False, True)}, f"exactly one MASTER, the new node: {seen}\n{diagnostics(old, b)}"
    assert b.instance_state(INSTANCE) == "MASTER"

    b.signal(signal.SIGTERM)
    wait_until(lambda: holders(a, b) == (True, False), 10, "the VIP on the old node after SIGTERM to the supervisor")
    assert b.process is not None
    assert b.process.wait(15) == 0, b.log_text()
    seen = hold(HOLD_SECONDS, a, b)
    assert seen == {(True, False)}, f"the old node keeps the VIP: {seen}\n{diagnostics(old, b)}"
