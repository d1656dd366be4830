"""What the supervisor knows about containers on its engine, as plain immutable data.

The Docker watcher (an adapter) turns docker-py inspect results into these records; everything downstream
(labels, model, health decisions) works on them alone, so it can be tested without an engine.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class PortBinding:
    """One published port: container port/proto mapped to host_ip:host_port."""

    container_port: int
    protocol: str  # "tcp" or "udp"
    host_ip: str  # "0.0.0.0", "::" or a specific address; "" when Docker gave none
    host_port: int


@dataclass(frozen=True)
class ContainerInfo:
    """A container as last seen through list/inspect or an event."""

    id: str
    name: str
    labels: dict[str, str] = field(default_factory=dict, hash=False, compare=True)
    running: bool = False
    paused: bool = False
    # Docker HEALTHCHECK status: "healthy", "unhealthy", "starting", or None when the image has none.
    health: str | None = None
    ports: tuple[PortBinding, ...] = ()
    # Addresses of the container on its networks (network name -> IPv4/IPv6 address), for probes.
    addresses: dict[str, str] = field(default_factory=dict, hash=False, compare=True)
    # True when the container shares the host's network stack (network_mode host or container:HOST).
    host_network: bool = False
    created: float = 0.0  # seconds since the epoch, to order conflicting claims (earlier wins)


@dataclass(frozen=True)
class Snapshot:
    """The full set of containers the supervisor considers, keyed by container id."""

    containers: dict[str, ContainerInfo] = field(default_factory=dict)
    engine_reachable: bool = False
