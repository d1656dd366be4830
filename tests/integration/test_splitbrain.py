"""Split-brain detection: VRRP adverts heard on the wire with an AF_PACKET socket, even when iptables drops them.

The first tests need nothing (they feed packets built here to the parser and the listener's table). The lab test
runs two real supervisors with keepalived in namespaces on their own bridge (198.51.100.0/24), an AdvertListener in
a small subprocess in each namespace, and partitions them with ``iptables -I INPUT -p 112 -j DROP`` inside the
namespaces: both become MASTER, and each still hears the other's adverts.
"""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from lab.engine import REPO
from lab.netns import Lab, Node, wait_until
from supervisor.adapters import splitbrain
from supervisor.adapters.splitbrain import AdvertListener, parse_ipv4, parse_ipv6, split_brain
from tests.conftest import require

VIP = "198.51.100.100"
VRID = 61
ADVERT_INT = 0.5
WITHIN = 3 * ADVERT_INT  # a foreign MASTER counts while one of its last three adverts is that recent

# -- packets built here ---------------------------------------------------------------------------------------------


def checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def vrrp_ipv4(
    source: str,
    vrid: int = VRID,
    priority: int = 100,
    version: int = 3,
    kind: int = 1,
    vips: tuple[str, ...] = (VIP,),
    destination: str = "224.0.0.18",
    corrupt: bool = False,
) -> bytes:
    addresses = b"".join(ipaddress.IPv4Address(v).packed for v in vips)
    src, dst = ipaddress.IPv4Address(source).packed, ipaddress.IPv4Address(destination).packed
    if version == 2:
        body = struct.pack("!BBBBBBH", (2 << 4) | kind, vrid, priority, len(vips), 0, 1, 0) + addresses + b"\0" * 8
        sum_over = body
    else:
        body = struct.pack("!BBBBHH", (3 << 4) | kind, vrid, priority, len(vips), 50, 0) + addresses
        sum_over = src + dst + struct.pack("!BBH", 0, 112, len(body)) + body
    value = checksum(sum_over) ^ (0x0101 if corrupt else 0)
    body = body[:6] + struct.pack("!H", value) + body[8:]
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0xC0, 20 + len(body), 0, 0, 255, 112, 0, src, dst)
    header = header[:10] + struct.pack("!H", checksum(header)) + header[12:]
    return header + body


def vrrp_ipv6(source: str, vrid: int = VRID, priority: int = 100) -> bytes:
    src, dst = ipaddress.IPv6Address(source).packed, ipaddress.IPv6Address("ff02::12").packed
    body = struct.pack("!BBBBHH", 0x31, vrid, priority, 1, 50, 0) + ipaddress.IPv6Address("2001:db8::100").packed
    value = checksum(src + dst + struct.pack("!I3xB", len(body), 112) + body)
    body = body[:6] + struct.pack("!H", value) + body[8:]
    header = struct.pack("!IHBB16s16s", 6 << 28, len(body), 112, 255, src, dst)
    return header + body


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# -- the parser and the decision, without privileges ---------------------------------------------------------------


def test_split_brain_decision() -> None:
    assert split_brain("MASTER", ["198.51.100.12"]) is True
    assert split_brain("MASTER", []) is False
    assert split_brain("BACKUP", ["198.51.100.11"]) is False, "a BACKUP hearing the MASTER is the normal case"
    assert split_brain("FAULT", ["198.51.100.11"]) is False


@pytest.mark.parametrize("version", [2, 3])
def test_parse_ipv4_adverts(version: int) -> None:
    advert = parse_ipv4(vrrp_ipv4("198.51.100.12", vrid=7, priority=150, version=version))
    assert advert is not None
    assert (advert.version, advert.vrid, advert.priority, advert.source) == (version, 7, 150, "198.51.100.12")
    assert advert.interval == (1.0 if version == 2 else 0.5)
    assert advert.addresses == (VIP,)
    two = parse_ipv4(vrrp_ipv4("198.51.100.12", version=version, vips=(VIP, "198.51.100.101")))
    assert two is not None and two.addresses == (VIP, "198.51.100.101")


def test_parse_ipv6_advert() -> None:
    advert = parse_ipv6(vrrp_ipv6("fe80::12", vrid=9, priority=0))
    assert advert is not None
    assert (advert.version, advert.vrid, advert.priority, advert.source) == (3, 9, 0, "fe80::12")
    assert advert.addresses == ("2001:db8::100",)


def test_broken_and_foreign_packets_are_ignored() -> None:
    good = vrrp_ipv4("198.51.100.12")
    assert parse_ipv4(vrrp_ipv4("198.51.100.12", corrupt=True)) is None, "a bad checksum"
    assert parse_ipv4(vrrp_ipv4("198.51.100.12", version=2, corrupt=True)) is None
    assert parse_ipv4(vrrp_ipv4("198.51.100.12", kind=2)) is None, "not an advertisement"
    assert parse_ipv4(vrrp_ipv4("198.51.100.12", vrid=0)) is None
    lying = bytearray(vrrp_ipv4("198.51.100.12", version=2))
    lying[23] = 9  # claims nine addresses in a packet with room for one
    assert parse_ipv4(bytes(lying)) is None
    assert parse_ipv4(good[:-1]) is None, "shorter than its total length"
    assert parse_ipv4(good[:9] + bytes([6]) + good[10:]) is None, "TCP, not VRRP"
    assert parse_ipv4(good[:6] + b"\x20\x00" + good[8:]) is None, "a fragment"
    assert parse_ipv6(good) is None and parse_ipv4(vrrp_ipv6("fe80::1")) is None
    for size in range(len(good)):
        assert parse_ipv4(good[:size]) is None
    # Any bytes at all: never an exception.
    for seed in range(2000):
        blob = bytes((seed * 7919 + i * 104729) % 256 for i in range(seed % 80))
        parse_ipv4(blob)
        parse_ipv6(blob)
        parse_ipv4(b"\x45" + blob)
        parse_ipv6(b"\x60" + blob)


def test_heard_master_window_own_addresses_and_priority_zero() -> None:
    clock = Clock()
    listener = AdvertListener("eth0", lambda: {"198.51.100.11"}, clock=clock)
    listener.record(vrrp_ipv4("198.51.100.11"))  # ours (by address)
    listener.record(vrrp_ipv4("198.51.100.13"), outgoing=True)  # ours (sent by this host)
    listener.record(vrrp_ipv4("198.51.100.12"))
    listener.record(vrrp_ipv4("198.51.100.14", vrid=62))
    assert listener.heard_master(VRID, WITHIN) == ["198.51.100.12"]
    assert listener.heard_master(62, WITHIN) == ["198.51.100.14"]
    clock.now += WITHIN + 0.1
    assert listener.heard_master(VRID, WITHIN) == [], "an old advert no longer counts"
    listener.record(vrrp_ipv4("198.51.100.12"))
    assert listener.heard_master(VRID, WITHIN) == ["198.51.100.12"]
    listener.record(vrrp_ipv4("198.51.100.12", priority=0))
    assert listener.heard_master(VRID, WITHIN) == [], "a priority-0 advert means the peer left MASTER"
    assert [a.source for a in listener.heard(WITHIN)] == ["198.51.100.12"]


def test_the_table_is_bounded() -> None:
    clock = Clock()
    listener = AdvertListener("eth0", clock=clock)
    for i in range(splitbrain.MAX_SOURCES + 500):
        clock.now += 0.001
        listener.record(vrrp_ipv4(f"198.51.100.{1 + i % 250}", vrid=1 + i // 250))
    assert len(listener.heard(3600)) <= splitbrain.MAX_SOURCES


def test_own_addresses_that_fail_do_not_break_queries() -> None:
    def broken() -> set[str]:
        raise RuntimeError("no netlink")

    listener = AdvertListener("eth0", broken)
    listener.record(vrrp_ipv4("198.51.100.12"))
    assert listener.heard_master(VRID, WITHIN) == ["198.51.100.12"]


def test_a_socket_that_cannot_open_is_a_problem_and_is_retried(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(splitbrain, "RETRY_INITIAL", 0.05)
    monkeypatch.setattr(splitbrain, "RETRY_MAX", 0.05)
    attempts: list[int] = []

    class Denied(AdvertListener):
        def _open_socket(self) -> socket.socket:
            attempts.append(1)
            raise PermissionError(1, "Operation not permitted")

    listener = Denied("eth0")
    assert listener.problem() == "not started"
    listener.start()
    try:
        wait_until(lambda: len(attempts) >= 3, 10, "three attempts to open the socket")
        problem = listener.problem()
        assert problem is not None and "eth0" in problem and "not permitted" in problem
    finally:
        listener.stop()
    assert not listener._thread or not listener._thread.is_alive()


def test_the_thread_survives_an_unexpected_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(splitbrain, "POLL_SECONDS", 0.02)
    reader, writer = socket.socketpair()
    calls: list[int] = []

    class Flaky(AdvertListener):
        def _open_socket(self) -> socket.socket:
            return reader

        def _receive(self, sock: socket.socket) -> None:
            sock.recv(100)
            calls.append(1)
            if len(calls) == 1:
                raise ValueError("a bug")

    listener = Flaky("eth0")
    listener.start()
    try:
        writer.send(b"x")
        wait_until(lambda: len(calls) == 1, 10, "the first (failing) receive")
        writer.send(b"y")
        wait_until(lambda: len(calls) == 2, 10, "a receive after the error")
        assert listener.problem() is None
    finally:
        listener.stop()
        writer.close()


# -- two real supervisors, partitioned by iptables --------------------------------------------------------------

LISTENER_SCRIPT = """
import json, sys, time
from supervisor.adapters.splitbrain import AdvertListener
interface, own, vrid, within = sys.argv[1], set(sys.argv[2].split(",")), int(sys.argv[3]), float(sys.argv[4])
listener = AdvertListener(interface, lambda: own)
listener.start()
deadline = time.monotonic() + 300  # bounded, also if nobody stops it
while time.monotonic() < deadline:
    print(json.dumps({"problem": listener.problem(), "heard": listener.heard_master(vrid, within)}), flush=True)
    time.sleep(0.1)
listener.stop()
"""


class ListenerProcess:
    """An AdvertListener on eth0 inside a node's namespace; `latest` is its newest report."""

    def __init__(self, node: Node, within: float) -> None:
        self.node = node
        self.latest: dict[str, Any] = {}
        self.reports = 0
        self.process = subprocess.Popen(
            self.command(node, within),
            env={**os.environ, "PYTHONPATH": str(REPO)},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    @staticmethod
    def command(node: Node, within: float) -> list[str]:
        script = ["-c", LISTENER_SCRIPT, "eth0", node.address, str(VRID), str(within)]
        return ["ip", "netns", "exec", node.netns, sys.executable, *script]

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            try:
                self.latest = json.loads(line)
                self.reports += 1
            except ValueError:
                continue

    def heard(self) -> list[str]:
        return list(self.latest.get("heard", []))

    def split_brain(self) -> bool:
        return split_brain(self.node.instance_state("VI_61") or "", self.heard())

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self._thread.join(5)
        for stream in (self.process.stdout, self.process.stderr):
            if stream is not None:
                stream.close()


# Multicast and unicast VRRP v3 (sub-second adverts), and VRRP v2 with PASS authentication (whole seconds).
MODES = {
    "multicast-v3": (ADVERT_INT, {}),
    "unicast-v3": (ADVERT_INT, {"UNICAST_PEERS": "198.51.100.11,198.51.100.12"}),
    "multicast-v2": (1.0, {"VRRP_VERSION": "2", "AUTH_PASS": "s3cret"}),
}


@pytest.fixture(params=list(MODES))
def pair(lab: Lab, request: pytest.FixtureRequest) -> Iterator[tuple[Node, Node, ListenerProcess, ListenerProcess]]:
    require(shutil.which("iptables") is not None, "needs iptables to partition the lab")
    advert_int, extra = MODES[request.param]
    a = lab.add_node("a", 11)
    b = lab.add_node("b", 12)
    for node, priority in ((a, "150"), (b, "100")):
        env = {"VIRTUAL_IP": VIP, "VRID": str(VRID), "PRIORITY": priority, "ADVERT_INT": f"{advert_int:g}"}
        node.start_supervisor({**env, **extra})
    listeners = [ListenerProcess(a, 3 * advert_int), ListenerProcess(b, 3 * advert_int)]
    try:
        yield a, b, listeners[0], listeners[1]
    finally:
        for listener in listeners:
            listener.close()


def drop_vrrp(node: Node, insert: bool) -> None:
    result = node.exec("iptables", "-I" if insert else "-D", "INPUT", "-p", "112", "-j", "DROP", check=False)
    if insert:
        require(result.returncode == 0, f"iptables cannot add a rule in a namespace: {result.stderr.strip()}")
    else:
        assert result.returncode == 0, result.stderr


def test_iptables_partition_is_detected_on_both_and_heals(
    pair: tuple[Node, Node, ListenerProcess, ListenerProcess],
) -> None:
    a, b, hear_a, hear_b = pair
    wait_until(
        lambda: all(h.reports > 0 and h.latest["problem"] is None for h in (hear_a, hear_b)),
        15,
        "both listeners listening (no problem reported)",
    )

    # Healthy: a MASTER, b BACKUP. b hears a's adverts (that is normal), a hears nobody, so no split brain.
    wait_until(
        lambda: a.instance_state("VI_61") == "MASTER" and b.instance_state("VI_61") == "BACKUP",
        20,
        "a MASTER, b BACKUP",
    )
    wait_until(lambda: hear_b.heard() == [a.address], 10, "b hearing a's adverts")
    wait_until(lambda: not hear_a.split_brain() and not hear_b.split_brain(), 10, "no split brain while healthy")
    stable_until = time.monotonic() + 2
    while time.monotonic() < stable_until:
        assert not hear_a.split_brain() and not hear_b.split_brain()
        assert a.address not in hear_a.heard(), "a must never count its own adverts"
        time.sleep(0.1)

    # Partition: keepalived on both sides is deaf to VRRP, so both become MASTER; the packet sockets still hear.
    drop_vrrp(a, insert=True)
    drop_vrrp(b, insert=True)
    wait_until(
        lambda: a.instance_state("VI_61") == "MASTER" and b.instance_state("VI_61") == "MASTER",
        20,
        "both MASTER while VRRP is dropped",
    )
    assert a.has(VIP) and b.has(VIP), "both hold the VIP: the split brain we detect"
    wait_until(lambda: hear_a.split_brain() and hear_b.split_brain(), 10, "split brain seen on both nodes")
    assert hear_a.heard() == [b.address] and hear_b.heard() == [a.address]

    # Heal: b hears the higher priority again and goes BACKUP; a's memory of b's adverts runs out within 3 adverts.
    drop_vrrp(a, insert=False)
    drop_vrrp(b, insert=False)
    wait_until(
        lambda: a.instance_state("VI_61") == "MASTER" and b.instance_state("VI_61") == "BACKUP",
        20,
        "one MASTER (a) after healing",
    )
    wait_until(lambda: not hear_a.split_brain() and not hear_b.split_brain(), 15, "no split brain after healing")
    wait_until(lambda: not b.has(VIP), 10, "the VIP gone from b")
    assert a.has(VIP)
    assert hear_a.latest["problem"] is None and hear_b.latest["problem"] is None
