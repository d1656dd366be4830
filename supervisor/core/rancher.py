"""Rancher 1.x metadata service JSON -> the core's records, and the decisions taken on them.

The metadata service (``http://rancher-metadata/<api version>/...``, queried with ``Accept: application/json``)
describes the whole environment: every container (``/containers``), every host (``/hosts``), and, as seen from the
caller, ``/self/host``, ``/self/container`` and ``/self/service``. This module turns those JSON answers into immutable
records (only the fields the supervisor uses are kept) and decides, without any I/O:

* ``published_ports``: what a container publishes, from Rancher's port strings;
* ``discovered_external_ids``: the Docker ids of the containers on this host that publish ``CHECK_PORT`` (they join
  the environment's instance, so their Docker events fail it at once);
* ``peer_addresses``: this host's agent address and those of the other hosts running this same service (the
  supervisor's own stack/service): the unicast source and peers.

Facts about the service this code relies on (rancher/rancher-metadata, rancher/go-rancher-metadata, Rancher 1.6
docs "Metadata Service"):

* Container ports are strings ``hostIP:publicPort:privatePort[/protocol]``. The service normalises them: API
  2015-12-19 writes this host's IP where Cattle had none or ``0.0.0.0``, API 2016-07-29 writes ``0.0.0.0``. A
  string with only two parts is either ``publicPort:privatePort`` (raw Cattle form) or ``hostIP:privatePort``
  (a port the service normalised that publishes nothing); both are understood.
* API 2016-07-29 lower-cases container, service and stack names, 2015-12-19 does not: names are compared
  case-insensitively.
* Every field may be ``null`` (the service serves whatever Cattle gave it): null means missing.
* A container on the host's network (as the supervisor always is) gets ``/self/host`` but usually no
  ``/self/container`` nor ``/self/service``: the service tells callers apart by source address, and all of a
  host's host-network containers share it (rancher/rancher#9741). So the supervisor's own service is found, first,
  by its own Docker container id among ``/containers`` (``external_id``), then from ``/self/container``, then from
  ``/self/service``.

Everything here is tolerant: an object that is not what the service would send is skipped with one problem line in
``RancherView.problems``; nothing raises on bad input.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import NamedTuple, TypeVar

from supervisor.core.snapshot import PortBinding

DEFAULT_API_VERSION = "2015-12-19"
DEFAULT_URL = f"http://rancher-metadata/{DEFAULT_API_VERSION}"
"""Where the metadata service answers a container started with ``io.rancher.container.dns: 'true'``."""

GONE_STATES = frozenset({"removed", "removing", "purged", "purging"})
"""Container states that no longer count: such a container neither joins an instance nor makes its host a peer."""

MAX_PORT_RANGE = 1024
"""A port range (``8000-8010:8000-8010``) longer than this is not expanded (and reported)."""

MAX_PROBLEMS = 50
"""At most this many problem lines in a view (then one line saying how many more)."""

_MAX_SHOWN = 80  # characters of a bad value shown in a problem line

_Item = TypeVar("_Item", "RancherHost", "RancherContainer")


class MalformedObject(ValueError):
    """A JSON object that is not what the metadata service sends (missing uuid, wrong types...)."""


# --- records ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RancherHost:
    """One host of ``/hosts`` or ``/self/host``."""

    uuid: str
    name: str
    agent_ip: str
    """The address the host's agent registered with (``CATTLE_AGENT_IP``); "" when the service gave none."""
    hostname: str = ""
    labels: Mapping[str, str] = field(default_factory=dict, hash=False, compare=True)


@dataclass(frozen=True)
class RancherContainer:
    """One container of ``/containers`` or ``/self/container``."""

    name: str
    uuid: str
    external_id: str
    """The Docker container id on its host ("" when the service gave none)."""
    host_uuid: str
    ports: tuple[str, ...]
    """Port strings as the service gave them, ``hostIP:publicPort:privatePort[/protocol]``."""
    primary_ip: str
    labels: Mapping[str, str] = field(default_factory=dict, hash=False, compare=True)
    service_name: str = ""
    stack_name: str = ""
    state: str = ""
    """"running", "stopped", "starting"... ("" when the service gave none)."""
    health_state: str = ""
    system: bool = False


@dataclass(frozen=True)
class RancherView:
    """What the metadata service says at one version, as far as the supervisor cares.

    Two views are equal when everything but ``version`` is equal: a new version whose parsed content is the same
    (a change in a field not kept here) is no change.
    """

    version: str = field(compare=False)
    self_host: RancherHost | None
    self_service_name: str | None
    """The supervisor's own service, or None when it could not be told."""
    self_stack_name: str | None
    containers: tuple[RancherContainer, ...]
    hosts: tuple[RancherHost, ...]
    problems: tuple[str, ...] = ()
    """Objects skipped or values not understood, one line each."""
    self_source: str = ""
    """How the own service was found: "container id", "self/container", "self/service" or "" (not found)."""

    @property
    def self_service(self) -> tuple[str, str] | None:
        """(stack name, service name) of the supervisor's own service, when known."""
        if self.self_service_name is None or self.self_stack_name is None:
            return None
        return (self.self_stack_name, self.self_service_name)


class RancherPort(NamedTuple):
    """One published port: host_ip:host_port -> container_port/protocol."""

    host_ip: str
    """As the service gave it ("0.0.0.0", an address); "" when absent or not an address."""
    host_port: int
    container_port: int
    protocol: str
    """"tcp", "udp" or "sctp"."""

    def binding(self) -> PortBinding:
        """The same port as the Docker watcher's record."""
        return PortBinding(
            container_port=self.container_port,
            protocol=self.protocol,
            host_ip=self.host_ip,
            host_port=self.host_port,
        )


# --- small readers ---------------------------------------------------------------------------------------------


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= _MAX_SHOWN else text[:_MAX_SHOWN] + "..."


def _text(obj: Mapping[str, object], key: str, required: bool = False) -> str:
    """A string field; null or absent is "" (or MalformedObject when required); a number is taken as its text."""
    value = obj.get(key)
    if value is None or value == "":
        if required:
            raise MalformedObject(f"no {key}")
        return ""
    if isinstance(value, bool):
        raise MalformedObject(f"{key} is not a string: {_shown(value)}")
    if isinstance(value, int | float):
        return str(value)
    if not isinstance(value, str):
        raise MalformedObject(f"{key} is not a string: {_shown(value)}")
    return value


def _labels(obj: Mapping[str, object], key: str = "labels") -> dict[str, str]:
    value = obj.get(key)
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise MalformedObject(f"{key} is not an object: {_shown(value)}")
    labels: dict[str, str] = {}
    for name, item in value.items():
        if not isinstance(name, str):
            raise MalformedObject(f"{key} has a key that is not a string: {_shown(name)}")
        if item is None:
            labels[name] = ""
        elif isinstance(item, str):
            labels[name] = item
        elif isinstance(item, bool | int | float):
            labels[name] = str(item).lower() if isinstance(item, bool) else str(item)
        else:
            raise MalformedObject(f"{key}[{name!r}] is not a string: {_shown(item)}")
    return labels


def _strings(obj: Mapping[str, object], key: str) -> tuple[str, ...]:
    value = obj.get(key)
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise MalformedObject(f"{key} is not a list of strings: {_shown(value)}")
    return tuple(value)


def _flag(obj: Mapping[str, object], key: str) -> bool:
    value = obj.get(key)
    if value is None:
        return False
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in {"true", "false"}:
        return value.lower() == "true"
    raise MalformedObject(f"{key} is not a boolean: {_shown(value)}")


def _who(obj: object) -> str:
    """A name for a skipped object in a problem line."""
    if isinstance(obj, Mapping):
        for key in ("name", "uuid", "external_id"):
            value = obj.get(key)
            if isinstance(value, str) and value:
                return f"{key} {_shown(value)}"
    return _shown(obj)


# --- parsing ---------------------------------------------------------------------------------------------------


def parse_host(obj: object) -> RancherHost:
    """One host object -> RancherHost; MalformedObject when it is not an object with a uuid, or its agent_ip is
    not an address."""
    if not isinstance(obj, Mapping):
        raise MalformedObject(f"not an object: {_shown(obj)}")
    agent_ip = _text(obj, "agent_ip")
    if agent_ip:
        try:
            agent_ip = str(ipaddress.ip_address(agent_ip.strip()))
        except ValueError:
            raise MalformedObject(f"agent_ip {_shown(agent_ip)} is not an address") from None
    return RancherHost(
        uuid=_text(obj, "uuid", required=True),
        name=_text(obj, "name"),
        agent_ip=agent_ip,
        hostname=_text(obj, "hostname"),
        labels=_labels(obj),
    )


def parse_container(obj: object) -> RancherContainer:
    """One container object -> RancherContainer; MalformedObject when it is not an object with a uuid."""
    if not isinstance(obj, Mapping):
        raise MalformedObject(f"not an object: {_shown(obj)}")
    return RancherContainer(
        name=_text(obj, "name"),
        uuid=_text(obj, "uuid", required=True),
        external_id=_text(obj, "external_id"),
        host_uuid=_text(obj, "host_uuid"),
        ports=_strings(obj, "ports"),
        primary_ip=_text(obj, "primary_ip"),
        labels=_labels(obj),
        service_name=_text(obj, "service_name"),
        stack_name=_text(obj, "stack_name"),
        state=_text(obj, "state"),
        health_state=_text(obj, "health_state"),
        system=_flag(obj, "system"),
    )


def parse_hosts(value: object) -> tuple[tuple[RancherHost, ...], list[str]]:
    """``/hosts`` -> its hosts (sorted by uuid), and one problem line per object skipped."""
    return _parse_list(value, "/hosts", "host", parse_host)


def parse_containers(value: object) -> tuple[tuple[RancherContainer, ...], list[str]]:
    """``/containers`` -> its containers (sorted by uuid), and one problem line per object skipped."""
    return _parse_list(value, "/containers", "container", parse_container)


def _parse_list(
    value: object, path: str, what: str, parse: Callable[[object], _Item]
) -> tuple[tuple[_Item, ...], list[str]]:
    """Parse every object of a list, skipping (and reporting) the malformed ones and repeated uuids.

    The service builds its lists by walking Go maps, so their order changes from one answer to the next: the result
    is sorted by uuid and problem lines name objects, never positions, so that the same content gives the same view.
    """
    if value is None:
        return (), []
    if not isinstance(value, list):
        return (), [f"rancher metadata {path}: expected a list, got {type(value).__name__}; ignored"]
    items: dict[str, _Item] = {}
    problems: list[str] = []
    for obj in value:
        try:
            item = parse(obj)
        except MalformedObject as error:
            problems.append(f"rancher metadata {path}: {what} {_who(obj)}: {error}; skipped")
            continue
        if item.uuid in items:
            problems.append(f"rancher metadata {path}: {what} uuid {item.uuid!r} listed twice; the second skipped")
            continue
        items[item.uuid] = item
    return tuple(items[uuid] for uuid in sorted(items)), sorted(problems)


def parse_version(value: object) -> str:
    """``/version`` -> the version string (the service sends a JSON string; a number is taken as its text)."""
    if isinstance(value, str) and value:
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    raise MalformedObject(f"/version is not a version string: {_shown(value)}")


# --- ports -----------------------------------------------------------------------------------------------------

_PROTOCOLS = frozenset({"tcp", "udp", "sctp"})
_PORT_RE = re.compile(r"^(\d{1,5})(?:-(\d{1,5}))?$")


def _port_numbers(text: str, what: str) -> list[int]:
    match = _PORT_RE.match(text.strip())
    if match is None:
        raise MalformedObject(f"{what} {_shown(text)} is not a port or a port range")
    low = int(match.group(1))
    high = int(match.group(2)) if match.group(2) is not None else low
    if not 1 <= low <= high <= 65535:
        raise MalformedObject(f"{what} {_shown(text)} is out of range (1-65535)")
    if high - low + 1 > MAX_PORT_RANGE:
        raise MalformedObject(f"{what} {_shown(text)} is a range of more than {MAX_PORT_RANGE} ports")
    return list(range(low, high + 1))


def _host_ip(text: str) -> str:
    """The host address of a port string: "0.0.0.0" when absent (all addresses), "" when not an address."""
    raw = text.strip()
    if raw.startswith("[") and raw.endswith("]"):
        raw = raw[1:-1]
    if not raw:
        return "0.0.0.0"
    try:
        return str(ipaddress.ip_address(raw))
    except ValueError:
        return ""


def parse_port_spec(spec: str) -> list[RancherPort]:
    """One Rancher port string -> the ports it publishes; MalformedObject when it is not a port string.

    ``hostIP:publicPort:privatePort[/protocol]`` and ``publicPort:privatePort[/protocol]`` publish (ranges such as
    ``8000-8001:80-81`` give one port each); ``hostIP:privatePort``, ``privatePort`` and an empty public port
    (``0.0.0.0::80``) publish nothing known and give []. The protocol defaults to tcp.
    """
    body, slash, proto = spec.strip().partition("/")
    protocol = proto.strip().lower() if slash else "tcp"
    if protocol not in _PROTOCOLS:
        raise MalformedObject(f"port {_shown(spec)}: protocol {_shown(proto)} is not tcp, udp or sctp")
    parts = body.rsplit(":", 2)
    host_text = ""
    public: str | None
    if len(parts) == 3:
        host_text, public, private = parts
    elif len(parts) == 2 and _PORT_RE.match(parts[0].strip()):
        public, private = parts
    elif len(parts) == 2:
        host_text, private = parts
        public = None
    else:
        public, private = None, parts[0]
    privates = _port_numbers(private, f"port {_shown(spec)}: private port")
    if public is None or not public.strip():
        return []
    publics = _port_numbers(public, f"port {_shown(spec)}: public port")
    if len(publics) != len(privates):
        raise MalformedObject(f"port {_shown(spec)}: the public and private ranges differ in length")
    host_ip = _host_ip(host_text)
    return [RancherPort(host_ip, pub, priv, protocol) for pub, priv in zip(publics, privates, strict=True)]


def published_ports(container: RancherContainer) -> list[RancherPort]:
    """Every port the container publishes, in the order of its port strings; strings not understood are skipped
    (``port_problems`` names them)."""
    ports: list[RancherPort] = []
    for spec in container.ports:
        try:
            ports.extend(parse_port_spec(spec))
        except MalformedObject:
            continue
    return ports


def port_problems(container: RancherContainer) -> list[str]:
    """One line per port string of `container` that ``published_ports`` skips."""
    problems: list[str] = []
    for spec in container.ports:
        try:
            parse_port_spec(spec)
        except MalformedObject as error:
            problems.append(f"rancher metadata: container {container.name or container.uuid}: {error}; port ignored")
    return problems


# --- the view --------------------------------------------------------------------------------------------------


def _same_id(external_id: str, own_id: str) -> bool:
    """Docker ids match in full, or by a prefix of at least 12 characters (the short form)."""
    if not external_id or not own_id:
        return False
    own = own_id.strip().lower()
    other = external_id.strip().lower()
    if len(own) >= 12 and len(other) >= 12:
        return other.startswith(own) or own.startswith(other)
    return other == own


def build_view(
    version: str,
    self_host: object,
    self_container: object,
    self_service: object,
    containers: object,
    hosts: object,
    own_container_id: str | None = None,
) -> RancherView:
    """The JSON answers of one round of requests -> a RancherView; never raises.

    `self_host`, `self_container` and `self_service` are None when the service had no answer (404, as for a
    host-network container). `own_container_id` is the supervisor's own Docker container id when known: its entry in
    `containers` then names the own service, whatever ``/self/...`` says (see the module docstring).
    """
    problems: list[str] = []
    parsed_containers, more = parse_containers(containers)
    problems += more
    parsed_hosts, more = parse_hosts(hosts)
    problems += more
    for container in parsed_containers:
        problems += port_problems(container)

    host = _optional(self_host, "/self/host", parse_host, problems)
    me = _optional(self_container, "/self/container", parse_container, problems)

    stack: str | None = None
    service: str | None = None
    source = ""
    own = None
    if own_container_id:
        own = next((c for c in parsed_containers if _same_id(c.external_id, own_container_id)), None)
        if own is None:
            problems.append(
                f"rancher metadata: this supervisor's container ({own_container_id[:12]}) is not listed in "
                "/containers (yet)"
            )
    if own is not None:
        source = "container id"
        if own.service_name and own.stack_name:
            stack, service = own.stack_name, own.service_name
    elif me is not None and me.service_name and me.stack_name:
        source = "self/container"
        stack, service = me.stack_name, me.service_name
    elif isinstance(self_service, Mapping):
        try:
            name, stack_name = _text(self_service, "name"), _text(self_service, "stack_name")
        except MalformedObject as error:
            problems.append(f"rancher metadata /self/service: {error}; ignored")
        else:
            if name and stack_name:
                source = "self/service"
                stack, service = stack_name, name
    elif self_service is not None:
        problems.append(f"rancher metadata /self/service: not an object: {_shown(self_service)}; ignored")

    if host is None and own is not None and own.host_uuid:
        host = next((h for h in parsed_hosts if h.uuid == own.host_uuid), None)
    return RancherView(
        version=version,
        self_host=host,
        self_service_name=service,
        self_stack_name=stack,
        containers=parsed_containers,
        hosts=parsed_hosts,
        problems=_capped(problems),
        self_source=source,
    )


def _capped(problems: list[str]) -> tuple[str, ...]:
    if len(problems) <= MAX_PROBLEMS:
        return tuple(problems)
    more = len(problems) - MAX_PROBLEMS
    return (*problems[:MAX_PROBLEMS], f"rancher metadata: {more} more problem(s) like these not shown")


def _optional(value: object, path: str, parse: Callable[[object], _Item], problems: list[str]) -> _Item | None:
    if value is None:
        return None
    try:
        return parse(value)
    except MalformedObject as error:
        problems.append(f"rancher metadata {path}: {error}; ignored")
        return None


# --- decisions -------------------------------------------------------------------------------------------------


def _counts(container: RancherContainer) -> bool:
    return container.state.lower() not in GONE_STATES


def discovered_external_ids(view: RancherView, check_port: int | None) -> set[str]:
    """Docker ids of the containers on this host (``self_host``) that publish `check_port` over TCP.

    Empty when the port is None, this host is unknown, or nothing publishes it. Containers being removed do not
    count; a stopped one does (its Docker state then fails it, which is what a member is for).
    """
    if check_port is None or view.self_host is None:
        return set()
    here = view.self_host.uuid
    found: set[str] = set()
    for container in view.containers:
        if container.host_uuid != here or not container.external_id or not _counts(container):
            continue
        if any(p.protocol == "tcp" and p.host_port == check_port for p in published_ports(container)):
            found.add(container.external_id)
    return found


def _address_key(text: str) -> tuple[int, int]:
    address = ipaddress.ip_address(text)
    return (address.version, int(address))


def _is_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def peer_addresses(view: RancherView) -> tuple[str | None, list[str]]:
    """(this host's agent address, the agent addresses of the other hosts running the supervisor's own service).

    The own service is ``view.self_service`` (stack and service name, compared case-insensitively); without it the
    peers are []. Hosts are those of the service's containers that are not being removed; hosts without a usable
    agent address are left out; the list is sorted, without duplicates and without this host's address.
    """
    src = view.self_host.agent_ip if view.self_host is not None and _is_address(view.self_host.agent_ip) else None
    own = view.self_service
    if own is None:
        return src, []
    stack, service = own[0].casefold(), own[1].casefold()
    here = view.self_host.uuid if view.self_host is not None else None
    agent_ips = {host.uuid: host.agent_ip for host in view.hosts}
    peers: set[str] = set()
    for container in view.containers:
        if container.stack_name.casefold() != stack or container.service_name.casefold() != service:
            continue
        if not _counts(container) or not container.host_uuid or container.host_uuid == here:
            continue
        address = agent_ips.get(container.host_uuid, "")
        if _is_address(address) and address != src:
            peers.add(address)
    return src, sorted(peers, key=_address_key)


# --- which container am I --------------------------------------------------------------------------------------

_CONTAINER_FILES = frozenset({"/etc/hostname", "/etc/hosts", "/etc/resolv.conf"})
_MOUNT_ROOT_RE = re.compile(r"/containers/([0-9a-f]{64})/(?:hostname|hosts|resolv\.conf)$")
_CGROUP_RE = re.compile(r"(?:/docker/|/docker-)([0-9a-f]{64})(?:\.scope)?$")


def container_id_from_mountinfo(text: str) -> str | None:
    """The Docker id of the container whose ``/proc/self/mountinfo`` this is, or None.

    Docker bind-mounts ``/etc/hostname``, ``/etc/hosts`` and ``/etc/resolv.conf`` from
    ``<data root>/containers/<id>/``, also for a container on the host's network, under cgroup v1 and v2 alike.
    Only those three mount points are read; more than one id among them gives None.
    """
    found: set[str] = set()
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 5 or fields[4] not in _CONTAINER_FILES:
            continue
        match = _MOUNT_ROOT_RE.search(fields[3])
        if match is not None:
            found.add(match.group(1))
    return found.pop() if len(found) == 1 else None


def container_id_from_cgroup(text: str) -> str | None:
    """The Docker id from ``/proc/self/cgroup`` (cgroup v1 ``/docker/<id>``, systemd ``docker-<id>.scope``), or
    None (cgroup v2 with a private cgroup namespace shows only ``/``)."""
    found: set[str] = set()
    for line in text.splitlines():
        path = line.rsplit(":", 1)[-1].strip()
        match = _CGROUP_RE.search(path)
        if match is not None:
            found.add(match.group(1))
    return found.pop() if len(found) == 1 else None


def describe(view: RancherView) -> Iterable[str]:
    """Short lines for logs and status: this host, the own service and how it was found, the peers."""
    host = view.self_host
    yield f"version {view.version}"
    yield (
        f"this host: {host.name or host.uuid} ({host.agent_ip or 'no agent address'})" if host else "this host: unknown"
    )
    own = view.self_service
    yield f"own service: {own[0]}/{own[1]} (from {view.self_source})" if own else "own service: unknown"
    _src, peers = peer_addresses(view)
    yield f"peers: {', '.join(peers) if peers else 'none'}"
