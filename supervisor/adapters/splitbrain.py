"""Split-brain detection: hear the VRRP adverts on the wire, and notice another MASTER for our VRID while we are one.

``AdvertListener`` opens an ``AF_PACKET`` socket (needs ``CAP_NET_RAW``) bound to one interface, with a tiny classic
BPF filter so the kernel hands over only IP protocol 112 (VRRP), and parses the VRRP v2/v3 adverts it sees in a
daemon thread. It remembers, per (VRID, source address), the last advert: ``heard_master(vrid, within)`` lists the
sources other than this host that advertised that VRID with a priority above 0 in the last `within` seconds. Only a
MASTER sends adverts, so those sources are hosts that believe they are MASTER.

Why a packet socket: it receives a frame when the driver hands it to the stack, before netfilter. A host whose
firewall drops VRRP (``iptables -I INPUT -p 112 -j DROP``, a security group, a wrong multicast rule) makes keepalived
deaf, so both hosts become MASTER and both hold the VIP; the packet socket still hears the peer, which is exactly the
partition we can detect. Our own adverts are ignored (outgoing frames, and sources in ``own_addresses()``).

What it cannot detect: a full link cut (nothing arrives at all, so each side only sees silence, which is what a dead
peer looks like too), a drop before this host (a switch, a peer's egress filter), or a peer on another interface.

``split_brain(my_state, heard)`` is the pure decision: this host is MASTER and heard another MASTER. Callers should
want it to hold for a moment (a few advert intervals) before alarming: during a normal preemption the old MASTER
keeps advertising until it hears the new one, which this side still remembers for up to `within` seconds.
"""

from __future__ import annotations

import contextlib
import ctypes
import ipaddress
import logging
import select
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger(__name__)

IPPROTO_VRRP = 112
ETH_P_IP = 0x0800
ETH_P_IPV6 = 0x86DD
PACKET_OUTGOING = 4  # sockaddr_ll.sll_pkttype of a frame this host sent
SO_ATTACH_FILTER = getattr(socket, "SO_ATTACH_FILTER", 26)

VRRP_TYPE_ADVERTISEMENT = 1

POLL_SECONDS = 2.0  # how often the thread looks at the stop flag (a packet wakes it at once)
RETRY_INITIAL = 0.5  # first delay before reopening a failed socket, doubled up to RETRY_MAX
RETRY_MAX = 10.0
RETAIN_SECONDS = 60.0  # adverts older than this are forgotten
MAX_SOURCES = 4096  # (vrid, source) pairs remembered at most, so a flood of forged sources cannot grow memory
RECV_BYTES = 65535


@dataclass(frozen=True)
class Advert:
    """One VRRP advertisement as heard on the wire."""

    version: int  # 2 or 3
    vrid: int
    priority: int  # 0 = the sender is leaving MASTER
    source: str  # the IP source address
    interval: float  # advertisement interval in seconds (v2 whole seconds, v3 centiseconds)
    addresses: tuple[str, ...] = ()  # the virtual addresses the sender advertises


def split_brain(my_state: str, heard: list[str]) -> bool:
    """True when this node is MASTER and heard another MASTER (any source in `heard`) for the same VRID."""
    return my_state == "MASTER" and len(heard) > 0


def _checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071) of `data`; 0 when `data` already carries a correct checksum."""
    if len(data) % 2:
        data += b"\0"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def _parse_vrrp(payload: bytes, source: str, pseudo_header: bytes, address_length: int) -> Advert | None:
    """The VRRP header in `payload` (v2, or v3 whose checksum covers `pseudo_header`), or None when it is not one."""
    if len(payload) < 8:
        return None
    version, kind = payload[0] >> 4, payload[0] & 0x0F
    if kind != VRRP_TYPE_ADVERTISEMENT or version not in (2, 3):
        return None
    vrid, priority, count = payload[1], payload[2], payload[3]
    end = 8 + count * address_length
    if vrid == 0 or len(payload) < end:
        return None
    if version == 2:
        # v2: 8-byte header, the IPv4 addresses, 8 bytes of authentication data; the checksum covers VRRP only.
        if _checksum(payload) != 0:
            return None
        interval = float(payload[5])
    else:
        # v3: 12-bit max advert interval in centiseconds; the checksum covers an IP pseudo-header too.
        if _checksum(pseudo_header + payload) != 0:
            return None
        interval = (struct.unpack("!H", payload[4:6])[0] & 0x0FFF) / 100.0
    raw = payload[8:end]
    chunks = [raw[i : i + address_length] for i in range(0, len(raw), address_length)]
    addresses = tuple(str(ipaddress.ip_address(chunk)) for chunk in chunks)
    return Advert(version, vrid, priority, source, interval, addresses)


def parse_ipv4(packet: bytes) -> Advert | None:
    """A VRRP advert from an IPv4 packet (starting at the IP header), or None for anything else or anything broken."""
    if len(packet) < 20 or packet[0] >> 4 != 4:
        return None
    header_length = (packet[0] & 0x0F) * 4
    total_length = struct.unpack("!H", packet[2:4])[0]
    if header_length < 20 or total_length < header_length or len(packet) < total_length:
        return None
    if packet[9] != IPPROTO_VRRP:
        return None
    fragment = struct.unpack("!H", packet[6:8])[0]
    if fragment & 0x3FFF:  # more-fragments or an offset: adverts are never fragmented
        return None
    payload = packet[header_length:total_length]
    source_bytes, destination_bytes = packet[12:16], packet[16:20]
    pseudo = source_bytes + destination_bytes + struct.pack("!BBH", 0, IPPROTO_VRRP, len(payload))
    return _parse_vrrp(payload, str(ipaddress.IPv4Address(source_bytes)), pseudo, 4)


def parse_ipv6(packet: bytes) -> Advert | None:
    """A VRRP v3 advert from an IPv6 packet (no extension headers, as VRRP sends them), or None."""
    if len(packet) < 40 or packet[0] >> 4 != 6 or packet[6] != IPPROTO_VRRP:
        return None
    payload_length = struct.unpack("!H", packet[4:6])[0]
    if len(packet) < 40 + payload_length:
        return None
    payload = packet[40 : 40 + payload_length]
    source_bytes, destination_bytes = packet[8:24], packet[24:40]
    pseudo = source_bytes + destination_bytes + struct.pack("!I3xB", len(payload), IPPROTO_VRRP)
    advert = _parse_vrrp(payload, str(ipaddress.IPv6Address(source_bytes)), pseudo, 16)
    return advert if advert is None or advert.version == 3 else None


def _bpf_protocol_filter(protocol_offset: int) -> list[tuple[int, int, int, int]]:
    """Classic BPF: accept the packet when the byte at `protocol_offset` (from the IP header) is 112, else drop."""
    ldb_abs, jeq_k, ret_k = 0x30, 0x15, 0x06  # BPF_LD|BPF_B|BPF_ABS, BPF_JMP|BPF_JEQ|BPF_K, BPF_RET|BPF_K
    return [
        (ldb_abs, 0, 0, protocol_offset),
        (jeq_k, 0, 1, IPPROTO_VRRP),
        (ret_k, 0, 0, RECV_BYTES),
        (ret_k, 0, 0, 0),
    ]


def _attach_filter(sock: socket.socket, program: list[tuple[int, int, int, int]]) -> None:
    """SO_ATTACH_FILTER with a struct sock_fprog; the kernel copies the program, the buffer may go afterwards."""
    code = b"".join(struct.pack("HBBI", *instruction) for instruction in program)
    buffer = ctypes.create_string_buffer(code)
    fprog = struct.pack("HL", len(program), ctypes.addressof(buffer))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)


class AdvertListener:
    """Hears VRRP adverts on one interface in a daemon thread; see the module docstring.

    The thread survives anything: a packet that does not parse is ignored, a socket error closes the socket and
    reopens it with backoff (an interface that does not exist yet is retried), and an unexpected exception in the
    loop is logged and the loop goes on. ``problem()`` says why the listener is not hearing (None while it is).
    `family` is 4 (IPv4, VRRP v2 and v3) or 6 (IPv6, VRRP v3).
    """

    def __init__(
        self,
        interface: str,
        own_addresses: Callable[[], set[str]] = set,
        *,
        family: int = 4,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if family not in (4, 6):
            raise ValueError(f"family must be 4 or 6, not {family!r}")
        self.interface = interface
        self.own_addresses = own_addresses
        self.family = family
        self._clock = clock
        self._lock = threading.Lock()
        self._last: dict[tuple[int, str], tuple[float, Advert]] = {}
        self._problem: str | None = "not started"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._sock: socket.socket | None = None

    # -- public ------------------------------------------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None:
            return
        self._problem = "starting"
        self._thread = threading.Thread(target=self._run, name=f"vrrp-adverts-{self.interface}", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        self._close()

    def problem(self) -> str | None:
        """Why adverts are not being heard (socket cannot open, thread dead), or None while listening."""
        if self._thread is not None and not self._thread.is_alive() and not self._stop.is_set():
            return f"VRRP advert listener on {self.interface}: thread is dead"
        return self._problem

    def heard_master(self, vrid: int, within: float) -> list[str]:
        """Sources other than this host that advertised `vrid` with priority > 0 in the last `within` seconds."""
        horizon = self._clock() - within
        with self._lock:
            sources = {
                advert.source
                for (advert_vrid, _), (seen, advert) in self._last.items()
                if advert_vrid == vrid and seen >= horizon and advert.priority > 0
            }
        # Our own addresses (a netlink dump) only when something was heard: a lone node asks once a second for nothing.
        return sorted(sources - self._own()) if sources else []

    def heard(self, within: float) -> list[Advert]:
        """The last advert of every (VRID, source) heard in the last `within` seconds, ours excluded (diagnostics)."""
        own = self._own()
        horizon = self._clock() - within
        with self._lock:
            adverts = [advert for seen, advert in self._last.values() if seen >= horizon]
        return sorted((a for a in adverts if a.source not in own), key=lambda a: (a.vrid, a.source))

    def record(self, packet: bytes, outgoing: bool = False) -> Advert | None:
        """Parse one packet (from the IP header on) and remember it if it is a foreign advert; returns the advert."""
        if outgoing:
            return None
        advert = parse_ipv4(packet) if self.family == 4 else parse_ipv6(packet)
        if advert is None:
            return None
        now = self._clock()
        with self._lock:
            self._last[(advert.vrid, advert.source)] = (now, advert)
            if len(self._last) > MAX_SOURCES:
                self._prune(now)
        return advert

    # -- thread --------------------------------------------------------------------------------------------------------

    def _own(self) -> set[str]:
        try:
            return {str(ipaddress.ip_address(a)) for a in self.own_addresses()}
        except Exception as error:  # our own adverts are already skipped as outgoing frames
            log.debug("own addresses unavailable: %s", error)
            return set()

    def _prune(self, now: float) -> None:
        """Forget old adverts; if still too many, the oldest ones. Called with the lock held."""
        horizon = now - RETAIN_SECONDS
        for key in [k for k, (seen, _) in self._last.items() if seen < horizon]:
            del self._last[key]
        if len(self._last) > MAX_SOURCES:
            for key, _ in sorted(self._last.items(), key=lambda item: item[1][0])[: len(self._last) - MAX_SOURCES]:
                del self._last[key]

    def _open_socket(self) -> socket.socket:
        ethertype = ETH_P_IP if self.family == 4 else ETH_P_IPV6
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(ethertype))
        try:
            # SOCK_DGRAM: the filter and recv see the packet from the IP header on.
            _attach_filter(sock, _bpf_protocol_filter(9 if self.family == 4 else 6))
            sock.bind((self.interface, ethertype))
        except BaseException:
            sock.close()
            raise
        return sock

    def _close(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.close()

    def _run(self) -> None:
        delay = RETRY_INITIAL
        last_prune = self._clock()
        while not self._stop.is_set():
            try:
                if self._sock is None:
                    self._sock = self._open_socket()
                    self._problem = None
                    delay = RETRY_INITIAL
                    log.info("listening for VRRP adverts on %s (IPv%d)", self.interface, self.family)
                readable, _, _ = select.select([self._sock], [], [], POLL_SECONDS)
                if readable:
                    self._receive(self._sock)
                now = self._clock()
                if now - last_prune > RETAIN_SECONDS:
                    last_prune = now
                    with self._lock:
                        self._prune(now)
            except OSError as error:
                self._close()
                reason = f"VRRP advert listener on {self.interface}: {error.strerror or error}"
                if reason != self._problem:
                    log.warning("%s; retrying", reason)
                self._problem = reason
                self._stop.wait(delay)
                delay = min(delay * 2, RETRY_MAX)
            except Exception:
                log.exception("VRRP advert listener on %s: unexpected error; going on", self.interface)
                self._stop.wait(POLL_SECONDS)
        self._close()

    def _receive(self, sock: socket.socket) -> None:
        """Read every packet already queued (without blocking)."""
        for _ in range(256):  # bounded, so the stop flag is looked at even under a flood
            try:
                packet, address = sock.recvfrom(RECV_BYTES, socket.MSG_DONTWAIT)
            except BlockingIOError:
                return
            # address: (ifname, protocol, pkttype, hatype, hwaddr)
            if len(address) >= 3 and address[0] != self.interface:
                continue
            self.record(packet, outgoing=len(address) >= 3 and address[2] == PACKET_OUTGOING)
