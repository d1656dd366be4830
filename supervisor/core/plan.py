"""The one plan: settings + a snapshot of containers + this host's facts -> everything the supervisor applies.

``make_plan`` is the only place a configuration is assembled. ``run`` calls it at start and at every reconcile;
``render``, ``check`` and ``status`` call it too, so what ``render`` prints is byte for byte what ``run`` installs on
this host. Each container is planned on its own: one that cannot be served here (an invalid or unknown label, an
interface this host lacks, a VIP that is already claimed or is one of this host's or its peers' addresses) is left
out with one problem line naming it, and everything else is still planned.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from supervisor.core.checks import Member, plan_members
from supervisor.core.labels import LabelProblem, ServiceSpec, explicitly_disabled, joined_service, parse_service
from supervisor.core.model import DesiredState, build_desired_state
from supervisor.core.rancher import RancherView, discovered_external_ids, peer_addresses
from supervisor.core.render import render
from supervisor.core.settings import Settings
from supervisor.core.snapshot import ContainerInfo, Snapshot
from supervisor.core.validate import IPAddress


@dataclass(frozen=True)
class HostFacts:
    """What this host looks like, as the adapters found it (netlink); the plan reads nothing else of the host."""

    interfaces: Mapping[str, tuple[IPAddress, ...]] = field(default_factory=dict)
    """Interface name -> its addresses, primary first."""
    managed_vips: frozenset[IPAddress] = frozenset()
    """Addresses keepalived may hold here as VIPs: present on an interface, but not the host's own."""
    known: bool = True
    """False when the facts could not be gathered: interface and address checks are then skipped."""

    def own_addresses(self) -> frozenset[IPAddress]:
        """The host's own addresses (every interface address that is not a VIP keepalived manages)."""
        return frozenset(a for addresses in self.interfaces.values() for a in addresses if a not in self.managed_vips)

    def host_address(self, interface: str, family: int, vips: frozenset[IPAddress]) -> str | None:
        """The host's own address on `interface` of `family`: where probes of published ports go."""
        for address in self.interfaces.get(interface, ()):
            if address.version == family and address not in vips and address not in self.managed_vips:
                return str(address)
        return None


@dataclass(frozen=True)
class Plan:
    """The desired state, its exact keepalived.conf, the health members of every instance, and every problem."""

    state: DesiredState
    text: str
    members: Mapping[str, tuple[Member, ...]]
    problems: tuple[str, ...]
    """Containers left out, one line each naming the container, the label or value, and the reason."""
    fatal: tuple[str, ...]
    """Why the environment's own instance cannot run on this host (empty when it can)."""

    @property
    def vips(self) -> frozenset[IPAddress]:
        return frozenset(vip.address for instance in self.state.instances for vip in instance.vips)


def _who(container: ContainerInfo) -> str:
    return f"container {container.name} ({container.id[:12]})"


def plan_services(
    containers: Mapping[str, ContainerInfo],
    settings: Settings,
    host: HostFacts,
    rancher_ids: frozenset[str] = frozenset(),
) -> tuple[list[ServiceSpec], list[str]]:
    """Every enabled container's spec, oldest first, and one problem line per container left out."""
    specs: list[ServiceSpec] = []
    problems: list[str] = []
    for container in sorted(containers.values(), key=lambda c: (c.created, c.id)):
        try:
            spec = parse_service(container, settings.label_prefix)
        except LabelProblem as problem:
            problems.append(f"{problem}; container skipped")
            continue
        except Exception as error:  # a hostile value must cost its own container, never the plan
            problems.append(f"{_who(container)}: labels not understood ({type(error).__name__}); container skipped")
            continue
        if spec is None:
            how = _joins_by_itself(container, settings, rancher_ids)
            if how is None:
                continue
            spec = joined_service(container, how)
        interface = spec.interface or settings.interface
        if spec.defines_instance and host.known and interface not in host.interfaces:
            label = f"{settings.label_prefix}interface" if spec.interface else "INTERFACE"
            problems.append(
                f"{_who(container)}: {label}={interface!r}: no such interface on this host; container skipped"
            )
            continue
        specs.append(spec)
    return specs, problems


def _joins_by_itself(container: ContainerInfo, settings: Settings, rancher_ids: frozenset[str]) -> str | None:
    """Why a container with no label of ours joins the environment's instance: "selector", "check_port", "rancher"
    (it publishes CHECK_PORT in Rancher's metadata) or None."""
    if not settings.virtual_ips or explicitly_disabled(container, settings.label_prefix):
        return None
    if settings.label_selector and all(container.labels.get(k) == v for k, v in settings.label_selector):
        return "selector"
    if container.id in rancher_ids:
        return "rancher"
    port = settings.check.port
    publishes = any(b.protocol == "tcp" and b.host_port == port for b in container.ports)
    return "check_port" if settings.discover_check_port and port is not None and publishes else None


#: keepalived starts an instance with this priority (the address owner's) and state MASTER straight in MASTER,
#: re-adding its VIPs within microseconds of removing them; any lower priority waits a master-down time first.
OWNER_PRIORITY = 255


def with_rancher_peers(settings: Settings, view: RancherView | None) -> Settings:
    """UNICAST_SRC_IP and UNICAST_PEERS from Rancher's metadata (this host's agent_ip, and the agent_ip of every host
    running this same service), unless the environment set either of them; only addresses of the VIPs' family."""
    if view is None or settings.unicast_src_ip is not None or settings.unicast_peers or not settings.virtual_ips:
        return settings
    family = settings.virtual_ips[0].version
    src_text, peer_texts = peer_addresses(view)
    addresses = [ipaddress.ip_address(text) for text in (src_text, *peer_texts) if text]
    src = addresses[0] if src_text and addresses[0].version == family else None
    peers = tuple(a for a in addresses[1 if src_text else 0 :] if a.version == family and a != src)
    if not peers:
        return settings
    return replace(settings, unicast_src_ip=src, unicast_peers=peers)


def make_plan(
    settings: Settings,
    snapshot: Snapshot,
    host: HostFacts,
    resume_masters: frozenset[str] = frozenset(),
    rancher: RancherView | None = None,
) -> Plan:
    """Plan this node: which instances, with which exact config text, which health members, and what was left out.

    `resume_masters` names instances that were MASTER and healthy when keepalived died unexpectedly: for the one
    start that follows, they start as MASTER with the owner's priority, so the VIPs stay and the peer sees no gap.
    The next reconcile renders the real priority again (a reload), so the node never fights a better peer for long.

    `rancher` is Rancher 1.x's metadata, when its service answers: containers on this host that publish CHECK_PORT
    there (Rancher's own DNAT leaves Docker no binding) join the environment's instance, and the unicast peers come
    from it unless the environment names them.
    """
    settings = with_rancher_peers(settings, rancher)
    fatal: list[str] = []
    if settings.virtual_ips and host.known and settings.interface not in host.interfaces:
        fatal.append(f"INTERFACE={settings.interface!r}: no such interface on this host")
    rancher_ids: frozenset[str] = frozenset()
    if rancher is not None and settings.discover_check_port:
        rancher_ids = frozenset(discovered_external_ids(rancher, settings.check.port))
    specs, problems = plan_services(snapshot.containers, settings, host, rancher_ids)
    own = host.own_addresses() if host.known else frozenset()
    state = build_desired_state(settings, specs, own)
    all_problems = (*problems, *state.problems)
    instances = tuple(
        replace(i, state="MASTER", priority=OWNER_PRIORITY, nopreempt=False, preempt_delay=None)
        if i.name in resume_masters
        else i
        for i in state.instances
    )
    state = replace(state, instances=instances, problems=all_problems)
    members = health_members(state, settings, snapshot, host)
    return Plan(state=state, text=render(state), members=members, problems=all_problems, fatal=tuple(fatal))


def health_members(
    state: DesiredState, settings: Settings, snapshot: Snapshot, host: HostFacts
) -> dict[str, tuple[Member, ...]]:
    """The health members of every instance of `state`, probing the host's own address on each interface."""
    vips = frozenset(vip.address for instance in state.instances for vip in instance.vips)
    host_addresses = {
        instance.interface: host.host_address(instance.interface, instance.family, vips) for instance in state.instances
    }
    return plan_members(state, snapshot.containers, settings, host_addresses)
