"""Docker engine JSON -> the core's records: inspect results -> ContainerInfo, event messages -> ContainerEvent.

Why a module of its own: this is the part of the Docker watcher that needs no engine, no socket and no thread, only
dicts shaped like the engine's JSON. Kept here, in the pure core, it is unit-tested on trimmed real payloads and
hardened against malformed ones without a Docker engine, and the adapter (``supervisor.adapters.docker_watch``) is
left with the connection lifecycle alone. Everything here is tolerant of gaps; only ``event_from_raw`` refuses an
event, and only with ``MalformedEvent`` (a ValueError), so that its caller can drop it and go on.
"""

from __future__ import annotations

import collections
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from supervisor.core.snapshot import ContainerInfo, PortBinding

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ContainerEvent:
    """One container event from the engine, as delivered to ``on_event`` (for event-driven health verdicts)."""

    id: str
    action: str  # "start", "die", "health_status: healthy", ...
    time_nano: int
    attributes: Mapping[str, str] = field(default_factory=dict, hash=False)

    @property
    def verb(self) -> str:
        """The action without its detail: "health_status" for "health_status: healthy"."""
        return self.action.split(":", 1)[0].strip()


class MalformedEvent(ValueError):
    """An engine event that cannot be understood as a container event (no id, no action, not an object...)."""


# --- inspect results ---------------------------------------------------------------------------------------------

_CREATED_RE = re.compile(
    r"^(?P<base>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:[.,](?P<frac>\d+))?(?P<tz>Z|[+-]\d\d:?\d\d)?$", re.IGNORECASE
)


def parse_created(value: object) -> float:
    """Docker's RFC 3339 timestamp with up to nanoseconds ("2024-05-01T10:00:00.123456789Z") -> epoch seconds.

    Returns 0.0 for anything unparsable (or Go's zero time), so that such a container simply sorts first.
    """
    if not isinstance(value, str):
        return 0.0
    match = _CREATED_RE.match(value.strip())
    if match is None:
        return 0.0
    tz = match["tz"] or "Z"
    if tz.upper() == "Z":
        tz = "+00:00"
    elif ":" not in tz:
        tz = f"{tz[:3]}:{tz[3:]}"
    try:
        base = datetime.fromisoformat(match["base"] + tz)
    except ValueError:
        return 0.0
    if base.year <= 1:
        return 0.0
    frac = match["frac"] or ""
    return base.timestamp() + (int(frac) / 10 ** len(frac) if frac else 0.0)


def _parse_ports(ports: object) -> tuple[PortBinding, ...]:
    if not isinstance(ports, Mapping):
        return ()
    bindings: list[PortBinding] = []
    for key, published in ports.items():
        port_text, _, protocol = str(key).partition("/")
        if not port_text.isdigit() or not isinstance(published, list):
            continue  # exposed but not published (None), or a shape we do not know
        for binding in published:
            if not isinstance(binding, Mapping):
                continue
            host_port = str(binding.get("HostPort") or "")
            if not host_port.isdigit():
                continue
            bindings.append(
                PortBinding(
                    container_port=int(port_text),
                    protocol=protocol or "tcp",
                    host_ip=str(binding.get("HostIp") or ""),
                    host_port=int(host_port),
                )
            )
    bindings.sort(key=lambda b: (b.container_port, b.protocol, b.host_ip, b.host_port))
    return tuple(bindings)


def _parse_addresses(networks: object) -> dict[str, str]:
    if not isinstance(networks, Mapping):
        return {}
    addresses: dict[str, str] = {}
    for name, settings in networks.items():
        if not isinstance(settings, Mapping):
            continue
        address = settings.get("IPAddress") or settings.get("GlobalIPv6Address")
        if address:
            addresses[str(name)] = str(address)
    return addresses


def _mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def container_info_from_attrs(attrs: Mapping[str, Any]) -> ContainerInfo:
    """A docker-py inspect result (``client.api.inspect_container``) -> ContainerInfo. Pure; tolerant of gaps."""
    state = _mapping(attrs.get("State"))
    config = _mapping(attrs.get("Config"))
    host_config = _mapping(attrs.get("HostConfig"))
    net = _mapping(attrs.get("NetworkSettings"))
    health = _mapping(state.get("Health")).get("Status")
    paused = bool(state.get("Paused"))
    network_mode = str(host_config.get("NetworkMode") or "")
    labels = _mapping(config.get("Labels"))
    return ContainerInfo(
        id=str(attrs.get("Id") or ""),
        name=str(attrs.get("Name") or "").lstrip("/"),
        labels={str(k): str(v) for k, v in labels.items()},
        running=bool(state.get("Running")) and not paused,
        paused=paused,
        health=str(health) if health else None,
        # A stopped container has no live Ports; its configured bindings still say what it publishes.
        ports=_parse_ports(net.get("Ports")) or _parse_ports(host_config.get("PortBindings")),
        addresses=_parse_addresses(net.get("Networks")),
        host_network=network_mode == "host" or network_mode.startswith("container:"),
        created=parse_created(attrs.get("Created")),
    )


def has_prefixed_label(labels: Mapping[str, str], prefix: str) -> bool:
    """True when the labels put the container in the supervisor's scope (``<prefix>enable`` or any ``<prefix>*``)."""
    return any(key.startswith(prefix) for key in labels)


# --- events ------------------------------------------------------------------------------------------------------

_MAX_ID = 256  # container ids are 64 hex digits; anything much longer is not one
_MAX_ACTION = 256


def _whole_number(value: object) -> int | None:
    """A non-negative integer from an int, an integral float or a string of digits; None for anything else."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value >= 0 else None
    if isinstance(value, float):
        return int(value) if value.is_integer() and value >= 0 else None
    if isinstance(value, str) and value.strip().isdigit() and len(value) <= 32:
        return int(value.strip())
    return None


def _text(value: object, limit: int) -> str | None:
    if isinstance(value, str) and value.strip() and len(value) <= limit:
        return value.strip()
    return None


def event_from_raw(raw: object) -> ContainerEvent:
    """A decoded engine event message -> ContainerEvent; raises ``MalformedEvent`` and nothing else.

    Needs a container id (``Actor.ID`` or the legacy ``id``) and an action (``Action`` or the legacy ``status``).
    Everything else is optional: an unusable ``timeNano``/``time`` gives 0, unusable attributes give none; an event
    of another ``Type`` than container is refused (the subscription asks for containers only).
    """
    if not isinstance(raw, Mapping):
        raise MalformedEvent(f"not an object: {type(raw).__name__}")
    try:
        kind = raw.get("Type")
        if kind is not None and kind != "container":
            raise MalformedEvent(f"not a container event: Type={kind!r:.40}")
        actor = _mapping(raw.get("Actor"))
        container_id = _text(actor.get("ID"), _MAX_ID) or _text(raw.get("id"), _MAX_ID)
        if container_id is None:
            raise MalformedEvent("no container id")
        action = _text(raw.get("Action"), _MAX_ACTION) or _text(raw.get("status"), _MAX_ACTION)
        if action is None:
            raise MalformedEvent(f"no action for {container_id[:12]}")
        time_nano = _whole_number(raw.get("timeNano"))
        if time_nano is None:
            seconds = _whole_number(raw.get("time"))
            time_nano = seconds * 1_000_000_000 if seconds is not None else 0
        attributes = {str(k): str(v) for k, v in _mapping(actor.get("Attributes")).items()}
    except MalformedEvent:
        raise
    except Exception as exc:  # a Mapping whose methods misbehave, a str() that raises: still just a bad event
        raise MalformedEvent(f"{type(exc).__name__}: {exc}") from exc
    return ContainerEvent(id=container_id, action=action, time_nano=time_nano, attributes=attributes)


def event_since(time_nano: int) -> str:
    """The ``since`` argument that resumes a stream at an event: "seconds.nanoseconds" (inclusive on the engine)."""
    seconds, nanos = divmod(time_nano, 1_000_000_000)
    return f"{seconds}.{nanos:09d}"


class EventResume:
    """Where to resume the event stream after a reconnect, and which events a resumed stream repeats.

    ``since`` is inclusive on the engine, so at least the last event seen comes again. The engine also stamps events
    before publishing them, so under concurrent API calls they arrive slightly out of timeNano order: the resume point
    is the newest timeNano seen, and repeats are recognised by (timeNano, id, action) among the last `capacity` events
    (the engine replays at most 256), never by being older than the resume point, which would drop live events.
    Anything malformed is simply accepted (not a replay) and left for ``event_from_raw`` to refuse.
    """

    def __init__(self, capacity: int = 4096) -> None:
        self._capacity = capacity
        self._newest: int | None = None
        self._recent: collections.OrderedDict[tuple[int, str, str], None] = collections.OrderedDict()

    def since(self) -> str | None:
        """The ``since`` argument for a new subscription, or None before any event was seen."""
        return event_since(self._newest) if self._newest is not None else None

    def accept(self, raw: object) -> bool:
        """Record a raw engine event; False when it was seen already (a replay). Never raises."""
        try:
            if not isinstance(raw, Mapping):
                return True
            time_nano = raw.get("timeNano")
            if not isinstance(time_nano, int) or isinstance(time_nano, bool) or time_nano < 0:
                return True
            key = (time_nano, str(raw.get("id") or ""), str(raw.get("Action") or raw.get("status") or ""))
        except Exception:
            return True
        if key in self._recent:
            log.debug("dropping replayed event %s", key)
            return False
        self._recent[key] = None
        if len(self._recent) > self._capacity:
            self._recent.popitem(last=False)
        if self._newest is None or time_nano > self._newest:
            self._newest = time_nano
        return True


__all__ = [
    "ContainerEvent",
    "EventResume",
    "MalformedEvent",
    "container_info_from_attrs",
    "event_from_raw",
    "event_since",
    "has_prefixed_label",
    "parse_created",
]
