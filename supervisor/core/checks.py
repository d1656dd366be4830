"""Health decisions, pure: what to probe for each instance, and how probe results and Docker states become verdicts.

Each instance has members: the env check (CHECK_PORT, CHECK_IP, CHECK_HTTP_PATH) and every container that fronts it.
A member is healthy when Docker says it can be (running, not paused, not unhealthy) and its probe, if any,
confirms. An instance is healthy when any (or, by HEALTH_POLICY, all) of its members are; an instance with no
member to check is healthy. The health adapter runs the probes and writes the verdicts to the track files.

Probes go to the *published endpoint*: the host's address on the instance's interface and the published port,
because under Rancher (or any DNAT) no socket exists on the host. Not 127.0.0.1 (DNAT there needs route_localnet)
and not the VIP (the backup does not hold it).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from supervisor.core.labels import ENV_CHECK, ServiceSpec
from supervisor.core.model import DesiredState, Instance
from supervisor.core.settings import CheckSettings, Settings
from supervisor.core.snapshot import ContainerInfo

ENV_MEMBER = "environment"


@dataclass(frozen=True)
class Probe:
    """One active probe. kind: tcp | http | listen | port (a listener on any address, or a TCP connect)."""

    kind: str
    host: str | None
    port: int
    http_path: str = "/"
    http_status: int = 200
    interval: float = 1.0
    timeout: float = 1.0
    rise: int = 2
    fall: int = 2

    def describe(self) -> str:
        where = f"{self.host}:{self.port}" if self.host else f"port {self.port}"
        if self.kind == "http":
            return f"HTTP GET http://{where}{self.http_path}"
        if self.kind == "listen":
            return f"a listener on port {self.port}"
        if self.kind == "port":
            return f"port {self.port} (listener on any address, or connect to {where})"
        return f"TCP connect to {where}"


@dataclass(frozen=True)
class Member:
    """Something whose health counts for an instance."""

    key: str  # container id, or ENV_MEMBER
    name: str
    instance: str
    docker_ok: bool
    docker_reason: str
    probe: Probe | None


def docker_verdict(container: ContainerInfo | None) -> tuple[bool, str]:
    """Whether Docker's own view lets the container serve, with the reason."""
    if container is None:
        return False, "container gone"
    if container.paused:
        return False, "container paused"
    if not container.running:
        return False, "container not running"
    if container.health is not None and container.health != "healthy":
        return False, f"Docker health is {container.health}"
    return True, "running"


def published_endpoint(container: ContainerInfo | None, port: int, host_address: str | None) -> tuple[str | None, int]:
    """The address and port a client on the network uses to reach the container's `port`.

    A binding with HostIp 0.0.0.0, :: or empty means the host's address; a specific HostIp is used as is
    (but 127.0.0.1 is replaced by the host's address, DNAT to loopback needs route_localnet). Without a binding
    (host network, or a platform such as Rancher that does its own DNAT) the same port on the host's address.
    """
    if container is not None:
        for binding in container.ports:
            if binding.container_port == port and binding.protocol == "tcp":
                ip = binding.host_ip
                if ip in {"", "0.0.0.0", "::"} or ip.startswith("127."):
                    return host_address, binding.host_port
                return ip, binding.host_port
    return host_address, port


def env_probe(check: CheckSettings, host_address: str | None) -> Probe | None:
    """CHECK_PORT alone: the port on any address; with CHECK_IP: that address; with CHECK_HTTP_PATH: HTTP."""
    if check.port is None:
        return None
    if check.http_path is not None:
        kind, host = "http", str(check.ip) if check.ip is not None else host_address
    elif check.ip is not None:
        kind, host = "tcp", str(check.ip)
    else:
        kind, host = "port", host_address
    return _probe(kind, host, check.port, check, check.http_path or "/")


def _probe(kind: str, host: str | None, port: int, check: CheckSettings, http_path: str) -> Probe:
    return Probe(
        kind,
        host,
        port,
        http_path=http_path,
        http_status=check.http_status,
        interval=check.interval,
        timeout=check.timeout,
        rise=check.rise,
        fall=check.fall,
    )


def member_probe(
    spec: ServiceSpec, container: ContainerInfo | None, check: CheckSettings, host: str | None
) -> Probe | None:
    if spec.check == ENV_CHECK:
        return env_probe(check, host)
    if spec.check == "none" or spec.port is None:
        return None
    address, port = published_endpoint(container, spec.port, host)
    return _probe(spec.check, address, port, check, spec.http_path)


def members_of(
    instance: Instance, containers: Mapping[str, ContainerInfo], settings: Settings, host_address: str | None
) -> tuple[Member, ...]:
    members: list[Member] = []
    # Containers that joined with the environment's check carry it themselves, with their Docker events on top:
    # a separate environment member would keep a dead front end's instance healthy until its probe fails.
    joined = any(spec.check == ENV_CHECK for spec in instance.members)
    if instance.env_check is not None and not joined:
        probe = env_probe(instance.env_check, host_address)
        members.append(Member(ENV_MEMBER, "CHECK_PORT", instance.name, True, "env check", probe))
    for spec in instance.members:
        container = containers.get(spec.container_id)
        ok, reason = docker_verdict(container)
        probe = member_probe(spec, container, settings.check, host_address)
        members.append(Member(spec.container_id, spec.container_name, instance.name, ok, reason, probe))
    return tuple(members)


def plan_members(
    state: DesiredState,
    containers: Mapping[str, ContainerInfo],
    settings: Settings,
    host_addresses: Mapping[str, str | None],
) -> dict[str, tuple[Member, ...]]:
    """Members per instance name; `host_addresses` maps an interface to the host's address on it."""
    return {
        instance.name: members_of(instance, containers, settings, host_addresses.get(instance.interface))
        for instance in state.instances
    }


@dataclass
class ProbeCounter:
    """Rise/fall hysteresis. Unknown until the first result, which decides at once; then rise/fall apply."""

    rise: int
    fall: int
    healthy: bool | None = None
    successes: int = 0
    failures: int = 0
    last_error: str = "not probed yet"

    def record(self, ok: bool, error: str = "") -> bool | None:
        if ok:
            self.successes, self.failures = self.successes + 1, 0
            if self.healthy is None or (not self.healthy and self.successes >= self.rise):
                self.healthy = True
        else:
            self.failures, self.successes = self.failures + 1, 0
            self.last_error = error or "probe failed"
            if self.healthy is None or (self.healthy and self.failures >= self.fall):
                self.healthy = False
        return self.healthy

    def reset(self) -> None:
        """Forget the history: the next result decides (after a container start or unpause)."""
        self.healthy, self.successes, self.failures = None, 0, 0
        self.last_error = "waiting for a probe to confirm"


def member_healthy(member: Member, counter: ProbeCounter | None) -> tuple[bool, str]:
    if not member.docker_ok:
        return False, f"{member.name}: {member.docker_reason}"
    if member.probe is None:
        return True, f"{member.name}: {member.docker_reason}"
    if counter is None or counter.healthy is None:
        return False, f"{member.name}: waiting for {member.probe.describe()}"
    if counter.healthy:
        return True, f"{member.name}: {member.probe.describe()} ok"
    return False, f"{member.name}: {member.probe.describe()} failed ({counter.last_error})"


def instance_verdict(results: list[tuple[bool, str]], policy: str) -> tuple[bool, str]:
    """Combine member verdicts: `any` needs one healthy member, `all` needs every one."""
    if not results:
        return True, "no check configured"
    healthy = [ok for ok, _ in results]
    verdict = any(healthy) if policy == "any" else all(healthy)
    reasons = [reason for ok, reason in results if ok == verdict] or [reason for _, reason in results]
    return verdict, "; ".join(reasons)
