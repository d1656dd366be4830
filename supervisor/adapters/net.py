"""Addresses and interfaces of this host, through netlink (pyroute2), never by parsing `ip` output.

The occasional calls (host facts, held VIPs, removals) each open a short-lived IPRoute socket in the calling thread:
pyroute2 0.9's synchronous IPRoute wraps an event loop and warns when used from a thread other than its creator's.
What runs all the time (the address watcher here, the VIP lease, port probes) uses plain netlink sockets instead,
with pyroute2 building and parsing the messages: ``netlink_socket`` and ``NetlinkRequests``.
"""

from __future__ import annotations

import ipaddress
import logging
import select
import socket
import threading
from collections.abc import Callable, Iterable
from typing import Any, Self

from pyroute2 import IPRoute
from pyroute2.netlink import NLMSG_DONE, NLMSG_ERROR
from pyroute2.netlink.rtnl import RTMGRP_IPV4_IFADDR, RTMGRP_IPV6_IFADDR, RTMGRP_LINK
from pyroute2.netlink.rtnl.marshal import MarshalRtnl

from supervisor.core.plan import HostFacts
from supervisor.core.validate import IPAddress, VirtualAddress

log = logging.getLogger(__name__)


NETLINK_ROUTE = 0


def netlink_socket(protocol: int = NETLINK_ROUTE, groups: int = 0, timeout: float | None = None) -> socket.socket:
    """A plain netlink socket, subscribed to `groups`; pyroute2's marshals parse what it receives.

    For the readers that run all the time (the VIP lease, the address watcher, port probes): pyroute2 0.9's
    synchronous sockets run an asyncio loop for every call, which cost several times the work itself.
    """
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, protocol)
    try:
        sock.settimeout(timeout)
        sock.bind((0, groups))
    except OSError:
        sock.close()
        raise
    return sock


class NetlinkRequests:
    """Requests on one plain netlink socket: pyroute2 encodes each message and parses the replies, this class sends
    it and collects the replies that answer it (a dump's messages up to NLMSG_DONE, or the acknowledgement)."""

    def __init__(self, protocol: int, marshal: Any, timeout: float) -> None:
        self._socket = netlink_socket(protocol, timeout=timeout)
        self._marshal = marshal
        self._sequence = 0

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        self._socket.close()

    def request(self, message: Any, kind: int, flags: int) -> list[Any]:
        """Send `message` as `kind`; its replies, or pyroute2's NetlinkError when the kernel refuses. A reply that
        never comes raises TimeoutError after the socket's timeout."""
        self._sequence = self._sequence % 0x7FFFFFFF + 1
        sequence = self._sequence
        message["header"]["type"] = kind
        message["header"]["flags"] = flags
        message["header"]["sequence_number"] = sequence
        message.encode()
        self._socket.send(message.data)
        replies: list[Any] = []
        while True:  # a dump is read to its end, so that the next request starts on a clean socket
            for reply in self._marshal.parse(self._socket.recv(1 << 16), sequence):
                header = reply["header"]
                if header["sequence_number"] != sequence:
                    continue  # the late reply to an earlier request that timed out
                if header.get("error") is not None:
                    raise header["error"]
                if header["type"] in (NLMSG_DONE, NLMSG_ERROR):  # end of a dump, or the acknowledgement
                    return replies
                replies.append(reply)


def interface_index(interface: str) -> int | None:
    """The kernel's index of the interface (None when there is none); a new index means the interface was deleted
    and created again. One ioctl, not a netlink dump of every link: the VIP lease asks every second."""
    try:
        return socket.if_nametoindex(interface)
    except (OSError, ValueError):  # no such interface, or a name the kernel cannot hold
        return None


def interface_exists(interface: str) -> bool:
    return interface_index(interface) is not None


def _addresses(ipr: IPRoute, index: int | None = None) -> list[tuple[IPAddress, int, int]]:
    """(address, prefix, interface index) of every address, or of one interface's."""
    result = []
    messages = ipr.get_addr(index=index) if index is not None else ipr.get_addr()
    for message in messages:
        value = message.get("IFA_ADDRESS") or message.get("IFA_LOCAL")
        if value:
            result.append((ipaddress.ip_address(value), int(message["prefixlen"]), int(message["index"])))
    return result


def interface_addresses(interface: str) -> list[IPAddress]:
    """The interface's addresses, primary first (empty when the interface does not exist)."""
    with IPRoute() as ipr:
        index = interface_index(interface)
        if index is None:
            return []
        return [address for address, _, _ in _addresses(ipr, index)]


def local_addresses() -> frozenset[IPAddress]:
    """Every address on every interface of this network namespace."""
    with IPRoute() as ipr:
        return frozenset(address for address, _, _ in _addresses(ipr))


def held_vips(interface: str, vips: Iterable[VirtualAddress]) -> list[VirtualAddress]:
    """Which of `vips` are present on `interface` now."""
    wanted = {vip.address: vip for vip in vips}
    with IPRoute() as ipr:
        index = interface_index(interface)
        if index is None:
            return []
        return [wanted[address] for address, _, _ in _addresses(ipr, index) if address in wanted]


def remove_vips(interface: str, vips: Iterable[VirtualAddress]) -> list[VirtualAddress]:
    """Delete any of `vips` found on `interface` (left by an unclean stop); returns what was removed."""
    removed: list[VirtualAddress] = []
    wanted = {vip.address for vip in vips}
    with IPRoute() as ipr:
        index = interface_index(interface)
        if index is None:
            return removed
        for address, prefix, _ in _addresses(ipr, index):
            if address in wanted:
                ipr.addr("del", index=index, address=str(address), prefixlen=prefix)
                removed.append(VirtualAddress(address, prefix))
                log.warning("removed stale virtual IP %s/%d from %s", address, prefix, interface)
    return removed


def host_facts(managed_vips: frozenset[IPAddress] = frozenset()) -> HostFacts:
    """Every interface of this network namespace with its addresses (primary first), for the plan."""
    with IPRoute() as ipr:
        names = {int(link["index"]): str(link.get_attr("IFLA_IFNAME")) for link in ipr.get_links()}
        interfaces: dict[str, list[IPAddress]] = {name: [] for name in names.values()}
        for address, _, index in _addresses(ipr):
            name = names.get(index)
            if name is not None:
                interfaces[name].append(address)
    return HostFacts(
        interfaces={name: tuple(addresses) for name, addresses in interfaces.items()}, managed_vips=managed_vips
    )


def address_set_changed(known: set[tuple[int, str, int]], messages: Iterable[object]) -> bool:
    """Fold netlink address events into `known` ((interface index, address, prefix)); True when an address came or
    went. An RTM_NEWADDR for an address already known only changed its attributes: the VIP lease's renewals (every
    second) are such events, and waking the supervisor for each would cost more than the renewals themselves."""
    changed = False
    for message in messages:
        get = getattr(message, "get", None)
        if get is None:
            continue
        event = get("event")
        if event not in ("RTM_NEWADDR", "RTM_DELADDR"):
            continue
        value = get("IFA_LOCAL") or get("IFA_ADDRESS")
        key = (int(get("index") or 0), str(value), int(get("prefixlen") or 0))
        if event == "RTM_NEWADDR":
            changed |= key not in known
            known.add(key)
        else:
            changed = True
            known.discard(key)
    return changed


class AddressWatcher:
    """Calls `on_change` whenever an address appears or disappears in this network namespace (netlink events).

    `status` shows whether a VIP is held from these events, not from a poll. The IPRoute socket is created in the
    watcher's own thread (pyroute2 0.9 wants that); any error is logged, the socket is opened again after a pause,
    and the thread goes on.
    """

    def __init__(self, on_change: Callable[[], None], on_link: Callable[[], None] | None = None) -> None:
        self.on_change = on_change
        self.on_link = on_link  # an interface appeared, disappeared or changed (a re-created one has a new index)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="address-watch", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def problem(self) -> str | None:
        if self._thread.ident is not None and not self._thread.is_alive() and not self._stop.is_set():
            return "the netlink address watcher stopped"
        return None

    def _run(self) -> None:
        while not self._stop.is_set():
            # Addresses seen since the socket opened; the first sighting of each counts as a change.
            known: set[tuple[int, str, int]] = set()
            try:
                marshal = MarshalRtnl()
                with netlink_socket(groups=RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR | RTMGRP_LINK) as sock:
                    while not self._stop.is_set():
                        ready, _, _ = select.select([sock], [], [], 2.0)
                        if not ready:
                            continue
                        messages = list(marshal.parse(sock.recv(1 << 16)))
                        if address_set_changed(known, messages):
                            self.on_change()
                        events = {m.get("event") for m in messages}
                        if self.on_link is not None and events & {"RTM_NEWLINK", "RTM_DELLINK"}:
                            self.on_link()
            except Exception as error:  # the thread must outlive any netlink hiccup
                log.warning("address watcher: %s; reopening in 1 s", error)
                self._stop.wait(1.0)


def hold_on_loopback(vips: Iterable[VirtualAddress], seconds: int) -> list[VirtualAddress]:
    """Put each VIP (as a host address) on `lo` for `seconds`, while keepalived restarts on a MASTER.

    keepalived removes an instance's VIPs when it starts and adds them back as MASTER a moment later; this copy keeps
    the host answering for them in between (Linux answers ARP on eth0 for an address on any interface). The kernel
    removes the copy when its lifetime ends, also when the supervisor dies meanwhile.
    """
    added: list[VirtualAddress] = []
    with IPRoute() as ipr:
        index = interface_index("lo")
        if index is None:
            return added
        for vip in vips:
            host_prefix = 32 if vip.version == 4 else 128
            try:
                ipr.addr(
                    "add",
                    index=index,
                    address=str(vip.address),
                    prefixlen=host_prefix,
                    valid_lft=seconds,
                    preferred_lft=seconds,
                )
                added.append(vip)
            except Exception as error:  # already there, or refused: the restart goes on without the copy
                log.warning("cannot hold %s on lo during the keepalived restart: %s", vip.address, error)
    return added
