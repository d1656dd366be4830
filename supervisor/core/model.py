"""The desired state: which VRRP instances this node runs, and with what. Pure functions only.

``build_desired_state`` turns settings (the env-defined instance) plus the services parsed from container labels
into immutable ``DesiredState``. Conflicts (two claims on one VRID with different VIPs) are decided here: the
environment wins over labels, an earlier-created container over a later one, and every loser is reported.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

from supervisor.core.labels import ServiceSpec
from supervisor.core.settings import CheckSettings, Secret, Settings
from supervisor.core.validate import IPAddress, VirtualAddress

ENV_SOURCE = "environment"


@dataclass(frozen=True)
class ScriptCheck:
    """A CHECK_SCRIPT that keepalived runs itself as a vrrp_script."""

    name: str
    command: str
    interval: float
    timeout: float
    rise: int
    fall: int


@dataclass(frozen=True)
class Instance:
    """One VRRP instance as keepalived will run it on this node."""

    name: str
    vrid: int
    interface: str
    priority: int
    state: str
    advert_int: float
    vrrp_version: int
    vips: tuple[VirtualAddress, ...]
    track_file: Path
    source: str  # "environment" or the name of the container that defined it
    auth_pass: Secret | None = None
    auth_type: str | None = None  # PASS or AH whenever auth_pass is set
    unicast_src_ip: IPAddress | None = None
    unicast_peers: tuple[IPAddress, ...] = ()
    nopreempt: bool = False
    preempt_delay: float | None = None
    scripts: tuple[ScriptCheck, ...] = ()
    members: tuple[ServiceSpec, ...] = ()
    env_check: CheckSettings | None = None  # the env-defined probe (CHECK_PORT/CHECK_IP), env instance only

    @property
    def family(self) -> int:
        return self.vips[0].version if self.vips else 4


@dataclass(frozen=True)
class DesiredState:
    """Everything keepalived.conf is rendered from."""

    instances: tuple[Instance, ...]
    notify_fifo: Path
    script_user: str
    problems: tuple[str, ...] = field(default=(), compare=False)

    @property
    def scripts(self) -> tuple[ScriptCheck, ...]:
        return tuple(script for instance in self.instances for script in instance.scripts)


def instance_name(vrid: int) -> str:
    return f"VI_{vrid}"


def track_file_path(run_dir: Path, name: str) -> Path:
    return run_dir / "health" / name


def build_desired_state(
    settings: Settings,
    services: list[ServiceSpec],
    local_addresses: frozenset[IPAddress] = frozenset(),
) -> DesiredState:
    """Decide the instances of this node from settings and label-defined services (ordered oldest first)."""
    problems: list[str] = []
    peers = tuple(peer for peer in settings.unicast_peers if peer not in local_addresses)

    def make_instance(
        vrid: int,
        interface: str,
        priority: int,
        vips: tuple[VirtualAddress, ...],
        source: str,
        scripts: tuple[ScriptCheck, ...] = (),
        env_check: CheckSettings | None = None,
    ) -> Instance:
        family = vips[0].version
        src = settings.unicast_src_ip
        family_peers = tuple(peer for peer in peers if peer.version == family)
        return Instance(
            name=instance_name(vrid),
            vrid=vrid,
            interface=interface,
            priority=priority,
            state=settings.state,
            advert_int=settings.advert_int,
            vrrp_version=settings.vrrp_version,
            vips=vips,
            track_file=track_file_path(settings.run_dir, instance_name(vrid)),
            source=source,
            auth_pass=settings.auth_pass,
            auth_type=(settings.auth_type or "PASS") if settings.auth_pass is not None else None,
            # keepalived refuses a unicast source without peers (a lone node whose list named only itself).
            unicast_src_ip=src if src is not None and src.version == family and family_peers else None,
            unicast_peers=family_peers,
            nopreempt=settings.nopreempt,
            preempt_delay=settings.preempt_delay,
            scripts=scripts,
            env_check=env_check,
        )

    by_vrid: dict[int, Instance] = {}
    if settings.virtual_ips:
        name = instance_name(settings.vrid)
        scripts: tuple[ScriptCheck, ...] = ()
        check = settings.check
        if check.script is not None:
            scripts = (ScriptCheck(f"chk_{name}", check.script, check.interval, check.timeout, check.rise, check.fall),)
        by_vrid[settings.vrid] = make_instance(
            settings.vrid,
            settings.interface,
            settings.priority,
            settings.virtual_ips,
            ENV_SOURCE,
            scripts=scripts,
            env_check=settings.check if settings.check.port is not None else None,
        )

    members: dict[int, list[ServiceSpec]] = {vrid: [] for vrid in by_vrid}
    claimed: dict[IPAddress, str] = {vip.address: ENV_SOURCE for instance in by_vrid.values() for vip in instance.vips}
    reserved = _reserved_addresses(settings, local_addresses)
    pfx = settings.label_prefix
    for spec in services:
        vrid = spec.vrid if spec.vrid is not None else (settings.vrid if settings.virtual_ips else None)
        who = f"container {spec.container_name} ({spec.container_id[:12]})"
        if vrid is None:
            problems.append(f"{who}: no label {pfx}vrid and no VIRTUAL_IP to join; container skipped")
            continue
        existing = by_vrid.get(vrid)
        if spec.vip is None:
            if existing is None:
                problems.append(
                    f"{who}: label {pfx}vrid={vrid} names no instance (no {pfx}vip label or VIRTUAL_IP); container skipped"
                )
            else:
                members[vrid].append(spec)
            continue
        if existing is not None:
            if spec.vip in existing.vips:
                members[vrid].append(spec)
            else:
                problems.append(
                    f"{who}: label {pfx}vip={spec.vip} on vrid {vrid} conflicts with the earlier claim by {existing.source} "
                    f"(vip {', '.join(map(str, existing.vips))}); the earlier claim wins, container skipped"
                )
            continue
        owner = claimed.get(spec.vip.address)
        if owner is not None:
            problems.append(
                f"{who}: label {pfx}vip={spec.vip.address} is already claimed by {owner} under another VRID; two VRIDs holding "
                "one address would put it on two hosts at once; container skipped"
            )
            continue
        if spec.vip.address in reserved:
            problems.append(
                f"{who}: label {pfx}vip={spec.vip.address} is {reserved[spec.vip.address]}; container skipped"
            )
            continue
        if spec.vip.version == 6 and settings.vrrp_version == 2:
            problems.append(f"{who}: label {pfx}vip={spec.vip} is IPv6, which needs VRRP_VERSION=3; container skipped")
            continue
        by_vrid[vrid] = make_instance(
            vrid,
            spec.interface or settings.interface,
            spec.priority or settings.priority,
            (spec.vip,),
            f"container {spec.container_name}",
        )
        members[vrid] = [spec]
        claimed[spec.vip.address] = f"container {spec.container_name}"

    instances = tuple(replace(by_vrid[vrid], members=tuple(members[vrid])) for vrid in sorted(by_vrid))
    return DesiredState(
        instances=instances,
        notify_fifo=settings.run_dir / "notify.fifo",
        script_user=settings.script_user,
        problems=tuple(problems),
    )


def _reserved_addresses(settings: Settings, local_addresses: frozenset[IPAddress]) -> dict[IPAddress, str]:
    """Addresses no label may claim as a VIP, each with what it is."""
    reserved: dict[IPAddress, str] = {address: "an address of this host" for address in local_addresses}
    for peer in settings.unicast_peers:
        reserved[peer] = "a unicast peer (UNICAST_PEERS)"
    if settings.unicast_src_ip is not None:
        reserved[settings.unicast_src_ip] = "this host's UNICAST_SRC_IP"
    return reserved
