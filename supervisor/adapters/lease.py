"""The VIP lease: every virtual IP this node holds carries a short kernel lifetime, renewed while we live.

Why it exists. keepalived adds VIPs with an infinite lifetime and removes them itself on a graceful stop. If the
supervisor and keepalived are killed hard (SIGKILL, OOM killer, a container runtime that gives up on the stop
timeout) nothing removes them: the peer stops hearing adverts, becomes master after its master-down time and adds
the same address, and this host keeps answering ARP/ND for it too, forever. With a lease the kernel itself removes
the address shortly after the last renewal, whoever dies.

How. A daemon thread ("vip-lease") wakes every ``renew_every`` seconds and, for each VIP of the current plan that
is PRESENT on its interface (exact address and prefix), sets valid_lft = preferred_lft = ``lease_seconds`` with an
RTM_NEWADDR/NLM_F_REPLACE request (built by pyroute2, sent on the lease's own netlink socket: the same request as
``ip addr change ... valid_lft N preferred_lft N``). For IPv4 the kernel keeps every attribute of the existing
address (label, scope, broadcast, secondary flag) and only takes the lifetimes, the metric and the protocol from
the request; for IPv6 it also takes the flags. The request therefore repeats what the dump showed (flags such as
nodad and noprefixroute, label, broadcast, scope, metric, protocol) so nothing but the lifetimes changes.

It never adds an address: presence is keepalived's. The kernel has no "modify only if it exists" for addresses
(NLM_F_REPLACE without NLM_F_CREATE still creates), so an address keepalived deletes in the microseconds between
our dump and our request comes back, with the lease lifetime: at worst a duplicate for ``lease_seconds``.

When ``allowed()`` is false (the run loop passes "keepalived is running") nothing is renewed and the lease runs
out. ``stop()`` leaves the lifetimes as they are: on a graceful stop keepalived removes its VIPs itself, and on a
stop that is not followed by keepalived's, the lease running out is exactly what we want. ``release_forever``
puts the infinite lifetime back, for when the lease is turned off at runtime.

Margins (defaults: lease 2 s, renewed every second by the run loop, see ``renew_period``). The kernel counts
lifetimes in whole seconds and runs its expiry work on its own schedule: an address given N s disappears N to N + 0.25
s after the renewal (about N + 0.08 s seen here). After a hard kill the address therefore lingers 1.0 to 2.25 s (lease
minus the time since the last renewal, plus the kernel's delay). While we live, a renewal thread that stalls costs the
VIP only after ``lease_seconds - renew_every`` = 1 s of stall, which a healthy thread never comes near. A lapse while
keepalived lives is not silent: keepalived 2.2.7 sees the address go ("Netlink reflector reports IP ... removed"),
enters BACKUP, sends a priority-0 advert (the peer takes over at once) and, with no peer, becomes MASTER again about a
second later and adds the address back with an infinite lifetime. That is why ``allowed()`` must be true whenever
keepalived runs.

The window that remains. The peer takes over its master-down time (3 x advert + skew, skew = (256 - priority) / 256 x
advert) after the last advert it heard, and that advert left up to one advert interval before the kill: the takeover
comes 2 x advert + skew to 3 x advert + skew after the kill. With the default 1 s advert that is 2.02 to 3.02 s (peer
priority 250), against 1.0 to 2.25 s for the lease: the two overlap only when the kill falls just after a renewal and
just before an advert, and then for at most about 0.2 s (a small fraction of hard kills). ``VIP_LEASE=1`` (renewed
every 0.5 s) closes that window for adverts of 0.7 s and more, at the price of a 0.5 s stall budget. With sub-second
adverts the master-down time can be shorter than even the shortest lease (1 s, the kernel's unit), so after a hard
kill a window of up to ``lease_seconds + 0.25 - 2 x advert - skew`` with two holders remains. Also, an address
keepalived (re)adds has an infinite lifetime until our next turn, so a kill within ``renew_every`` of a transition to
master leaves that address without a lease.

IPv6 VIPs are leased the same way. Kernel quirk seen on Linux 6.x: changing the lifetime of an IPv6 address gives
its prefix route (if it has one) a bogus, already-passed expiry (``ip -6 route`` shows "expires -17180000sec"), and
when the address expires that route is left behind. The route stays usable (the kernel has not garbage-collected
it in a minute of watching) and an on-link route to the subnet is harmless on a node that no longer holds the VIP.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from pyroute2.netlink import NLM_F_ACK, NLM_F_DUMP, NLM_F_REPLACE, NLM_F_REQUEST
from pyroute2.netlink.rtnl import RTM_GETADDR, RTM_NEWADDR
from pyroute2.netlink.rtnl.ifaddrmsg import ifaddrmsg
from pyroute2.netlink.rtnl.marshal import MarshalRtnl

from supervisor.adapters.net import NETLINK_ROUTE, NetlinkRequests, interface_index
from supervisor.core.validate import VirtualAddress

log = logging.getLogger(__name__)

SOL_NETLINK = 270
NETLINK_GET_STRICT_CHK = 12
FOREVER = 0xFFFFFFFF
"""The kernel's infinite lifetime (INFINITY_LIFE_TIME)."""
MAX_LEASE_SECONDS = 3600
THREAD_NAME = "vip-lease"

Targets = Callable[[], list[tuple[str, list[VirtualAddress]]]]


def renew_period(lease_seconds: int) -> float:
    """How often the run loop renews a lease of `lease_seconds`: once a second, and at least twice per lease (a
    1 s lease is renewed every 0.5 s). The renewal thread may stall for lease - period before a VIP lapses."""
    return min(1.0, lease_seconds / 2)


# Attributes of the dumped address that the request repeats, so that only the lifetimes change.
_KEPT_ATTRIBUTES = ("IFA_LOCAL", "IFA_LABEL", "IFA_BROADCAST", "IFA_RT_PRIORITY", "IFA_PROTO")


class AddressSocket(NetlinkRequests):
    """Dumps an interface's addresses and changes their lifetimes, on one NETLINK_ROUTE socket of its own.

    Why not pyroute2's IPRoute: in pyroute2 0.9 each call of its synchronous API runs an asyncio loop. A lease turn
    (one dump, one replace) through it cost 0.64 ms of CPU, against 0.12 ms this way (measured in a network
    namespace); the lease turns every second of the supervisor's life, and that was half of its idle CPU.
    """

    def __init__(self, timeout: float = 2.0) -> None:
        super().__init__(NETLINK_ROUTE, MarshalRtnl(), timeout)
        # Strict checking makes the kernel honour the dump request's interface index (Linux 4.20 and later); where
        # it cannot be set, the dump covers every interface and the filter below does the same job.
        with contextlib.suppress(OSError):
            self._socket.setsockopt(SOL_NETLINK, NETLINK_GET_STRICT_CHK, 1)

    def addresses(self, index: int, family: int = socket.AF_UNSPEC) -> list[Any]:
        """The addresses of `family` (both by default) on the interface with this index, as pyroute2 ifaddrmsg."""
        query = ifaddrmsg()
        query["family"] = family
        query["index"] = index
        dump = self.request(query, RTM_GETADDR, NLM_F_REQUEST | NLM_F_DUMP)
        return [message for message in dump if message["index"] == index]

    def replace(self, request: ifaddrmsg) -> None:
        """RTM_NEWADDR with NLM_F_REPLACE, acknowledged; a refusal raises pyroute2's NetlinkError."""
        self.request(request, RTM_NEWADDR, NLM_F_REQUEST | NLM_F_ACK | NLM_F_REPLACE)


def _address_of(message: Any) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    # For IPv4 IFA_LOCAL is the interface's own address (IFA_ADDRESS is the peer on point-to-point links).
    value = message.get_attr("IFA_LOCAL") or message.get_attr("IFA_ADDRESS")
    return ipaddress.ip_address(value) if value else None


def _lifetime_request(message: Any, index: int, seconds: int) -> ifaddrmsg:
    """The dumped address again, with only its lifetimes changed."""
    flags = int(message.get_attr("IFA_FLAGS") or message["flags"])
    request = ifaddrmsg()
    request["family"] = int(message["family"])
    request["prefixlen"] = int(message["prefixlen"])
    request["scope"] = int(message["scope"])
    request["index"] = index
    request["flags"] = flags & 0xFF  # the header's 8 bits; IFA_FLAGS carries all of them
    address = message.get_attr("IFA_ADDRESS") or str(_address_of(message))
    attributes: list[list[Any]] = [["IFA_ADDRESS", address]]
    for name in _KEPT_ATTRIBUTES:
        value = message.get_attr(name)
        if value is not None:
            attributes.append([name, value])
    attributes.append(["IFA_FLAGS", flags])
    attributes.append(["IFA_CACHEINFO", {"ifa_preferred": seconds, "ifa_valid": seconds, "cstamp": 0, "tstamp": 0}])
    request["attrs"] = attributes
    return request


def set_lifetime(
    sock: AddressSocket, interface: str, vips: Iterable[VirtualAddress], seconds: int
) -> list[VirtualAddress]:
    """Give each of `vips` present on `interface` (exact address and prefix) the lifetime `seconds` (FOREVER for
    infinite), keeping every other attribute; returns the VIPs changed. Absent VIPs are left absent."""
    wanted = set(vips)
    index = interface_index(interface)
    if not wanted or index is None:
        return []
    versions = {vip.version for vip in wanted}
    family = socket.AF_UNSPEC if len(versions) > 1 else socket.AF_INET if 4 in versions else socket.AF_INET6
    changed: list[VirtualAddress] = []
    for message in sock.addresses(index, family):
        address = _address_of(message)
        if address is None:
            continue
        vip = VirtualAddress(address, int(message["prefixlen"]))
        if vip in wanted:
            sock.replace(_lifetime_request(message, index, seconds))
            changed.append(vip)
    return changed


def release_forever(interface: str, vips: Iterable[VirtualAddress]) -> list[VirtualAddress]:
    """Put the infinite lifetime back on any of `vips` present on `interface` (the lease was turned off at
    runtime); returns the VIPs changed. Opens its own netlink socket."""
    with AddressSocket() as sock:
        released = set_lifetime(sock, interface, vips, FOREVER)
    for vip in released:
        log.info("virtual IP %s on %s: lease released, lifetime forever again", vip, interface)
    return released


class VipLease:
    """Keeps a short kernel lifetime on every held VIP of the plan, renewed by a thread of its own (see module)."""

    release_forever = staticmethod(release_forever)

    def __init__(self, lease_seconds: int, renew_every: float, targets: Targets, allowed: Callable[[], bool]) -> None:
        if isinstance(lease_seconds, bool) or not isinstance(lease_seconds, int):
            raise TypeError("lease_seconds must be a whole number of seconds (the kernel's unit)")
        if not 1 <= lease_seconds <= MAX_LEASE_SECONDS:
            raise ValueError(f"lease_seconds must be from 1 to {MAX_LEASE_SECONDS}")
        if not 0 < renew_every < lease_seconds:
            raise ValueError("renew_every must be more than 0 and less than lease_seconds")
        self.lease_seconds = lease_seconds
        self.renew_every = float(renew_every)
        self._targets = targets
        self._allowed = allowed
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._failing_since: float | None = None
        self._last_error: str | None = None
        self._heartbeat = time.monotonic()
        self._logged: set[str] = set()
        self._renewing = False
        self.turns = 0
        self.renewals = 0

    # -- public -------------------------------------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("VipLease.start() called twice")
        self._heartbeat = time.monotonic()
        self._thread = threading.Thread(target=self._run, name=THREAD_NAME, daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop renewing; the lifetimes already set stay (graceful removal is keepalived's job)."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def problem(self) -> str | None:
        """Why the lease is not doing its job (None when it is): thread dead or stalled, or renewals failing for
        more than lease_seconds."""
        if self._thread is None or self._stop.is_set():
            return None
        now = time.monotonic()
        with self._lock:
            failing_since, last_error, heartbeat = self._failing_since, self._last_error, self._heartbeat
        if not self._thread.is_alive():
            return "the VIP lease thread has died: held VIPs will expire"
        stalled = now - heartbeat
        if stalled > self.lease_seconds + self.renew_every:
            return f"the VIP lease thread has not completed a turn for {stalled:.1f} s: held VIPs may expire"
        if failing_since is not None and now - failing_since > self.lease_seconds:
            return f"renewing VIP leases has failed for {now - failing_since:.1f} s: {last_error}"
        return None

    # -- thread -------------------------------------------------------------------------------------------------

    def _run(self) -> None:
        sock: AddressSocket | None = None
        next_turn = time.monotonic()
        try:
            while not self._stop.is_set():
                try:
                    if sock is None:
                        sock = AddressSocket()
                    self._turn(sock)
                    self._succeeded()
                except Exception as exc:
                    self._failed(exc)
                    if sock is not None:
                        _close_quietly(sock)
                        sock = None
                with self._lock:
                    self._heartbeat = time.monotonic()
                next_turn += self.renew_every
                now = time.monotonic()
                next_turn = max(next_turn, now)  # a turn overran: keep the period, drop the missed turns
                self._stop.wait(next_turn - now)
        finally:
            if sock is not None:
                _close_quietly(sock)

    def _turn(self, sock: AddressSocket) -> None:
        self.turns += 1
        if not self._allowed():
            if self._renewing:
                log.info("VIP lease: not renewing (keepalived is not running); held VIPs expire in %d s",
                         self.lease_seconds)  # fmt: skip
            self._renewing = False
            return
        if not self._renewing:
            log.info("VIP lease: renewing held VIPs every %g s with a %d s lifetime", self.renew_every,
                     self.lease_seconds)  # fmt: skip
        self._renewing = True
        for interface, vips in self._targets():
            self.renewals += len(set_lifetime(sock, interface, vips, self.lease_seconds))

    def _succeeded(self) -> None:
        with self._lock:
            recovered = self._failing_since is not None
            self._failing_since = None
            self._last_error = None
        if recovered:
            log.info("VIP lease: renewals work again")
            self._logged.clear()

    def _failed(self, exc: Exception) -> None:
        text = f"{type(exc).__name__}: {exc}"
        with self._lock:
            if self._failing_since is None:
                self._failing_since = time.monotonic()
            self._last_error = text
        if text not in self._logged and len(self._logged) < 64:
            self._logged.add(text)
            log.warning("VIP lease: renewal failed (%s); retrying every %g s", text, self.renew_every, exc_info=exc)


def _close_quietly(sock: AddressSocket) -> None:
    try:
        sock.close()
    except Exception:  # a broken socket may fail to close; it is dropped either way
        log.debug("closing the lease's netlink socket failed", exc_info=True)
