"""Container labels -> typed per-container service specs.

Labels live under one prefix (default ``keepalived.``):

  enable     true/false; a container with any other prefixed label is enabled unless enable=false
  vip        ADDR[/PREFIX]: the container defines its own VRRP instance (needs vrid)
  vrid       1-255: with vip, the new instance's id; alone, join the instance with that id
  port       the container port to probe (80 or 80/tcp), reached through its published endpoint
  check      tcp (default when port is set), http[:/path], listen (a listener on the host), or none
  interface  the interface for an own instance (default INTERFACE)
  priority   1-254, this host's priority for an own instance (default PRIORITY)

A container with an invalid label is skipped with one problem line naming the container, the label and what was
expected; the other containers are still used.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TypeVar

from supervisor.core.snapshot import ContainerInfo
from supervisor.core.validate import (
    InvalidValue,
    VirtualAddress,
    parse_bool,
    parse_http_path,
    parse_int,
    parse_interface,
    parse_port,
    parse_vip,
)

T = TypeVar("T")

KNOWN_KEYS = ("enable", "vip", "vrid", "port", "check", "interface", "priority")
CHECK_KINDS = ("tcp", "http", "listen", "none")
ENV_CHECK = "env"  # the environment's check (CHECK_PORT through the published endpoint), for joined containers


@dataclass(frozen=True)
class ServiceSpec:
    """What one fronted container asks of the supervisor."""

    container_id: str
    container_name: str
    created: float
    vip: VirtualAddress | None = None
    vrid: int | None = None
    port: int | None = None
    check: str = "tcp"
    http_path: str = "/"
    interface: str | None = None
    priority: int | None = None
    joined_by: str = "labels"
    """How the container came in: "labels" (a label of ours), "selector" (LABEL_SELECTOR alone) or "check_port"
    (it publishes CHECK_PORT). The last two join the environment's instance with the environment's check ("env")."""

    @property
    def defines_instance(self) -> bool:
        return self.vip is not None


class LabelProblem(ValueError):
    """One invalid label on one container."""

    def __init__(self, container: ContainerInfo, label: str, value: str, expected: str) -> None:
        shown = value if len(value) <= 64 else f"{value[:48]}... ({len(value)} characters)"
        super().__init__(f"container {container.name} ({container.id[:12]}): label {label}={shown!r}: {expected}")


def _parse_check(raw: str) -> tuple[str, str]:
    kind, _, path = raw.strip().partition(":")
    kind = kind.lower()
    if kind not in CHECK_KINDS or (path and kind != "http"):
        raise InvalidValue("expected tcp, http, http:/path, listen or none")
    return kind, parse_http_path(path) if path else "/"


def _parse_container_port(raw: str) -> int:
    number, _, proto = raw.strip().partition("/")
    if proto and proto.lower() != "tcp":
        raise InvalidValue("expected a TCP port like 80 or 80/tcp")
    return parse_port(number)


def is_enabled(container: ContainerInfo, prefix: str) -> bool:
    """Enabled when `enable` is true, or absent while another prefixed label is present."""
    labels = container.labels
    enable = labels.get(prefix + "enable")
    if enable is not None:
        try:
            return parse_bool(enable)
        except InvalidValue:
            return True  # parse_service reports the bad value
    return any(key.startswith(prefix) for key in labels)


def _label(container: ContainerInfo, prefix: str, key: str, parser: Callable[[str], T]) -> T | None:
    raw = container.labels.get(prefix + key)
    if raw is None or raw.strip() == "":
        return None
    try:
        return parser(raw)
    except InvalidValue as problem:
        raise LabelProblem(container, prefix + key, raw, str(problem)) from None


def parse_service(container: ContainerInfo, prefix: str) -> ServiceSpec | None:
    """The container's spec, None when it is not enabled; raises LabelProblem for an invalid label."""
    enable = _label(container, prefix, "enable", parse_bool)
    if enable is False or (enable is None and not is_enabled(container, prefix)):
        return None
    unknown = sorted(key for key in container.labels if key.startswith(prefix) and key[len(prefix) :] not in KNOWN_KEYS)
    if unknown:
        raise LabelProblem(
            container,
            unknown[0],
            container.labels[unknown[0]],
            f"unknown label; expected one of {', '.join(prefix + key for key in KNOWN_KEYS)}",
        )
    vip = _label(container, prefix, "vip", lambda raw: parse_vip(raw, None))
    vrid = _label(container, prefix, "vrid", lambda raw: parse_int(raw, 1, 255))
    port = _label(container, prefix, "port", _parse_container_port)
    check = _label(container, prefix, "check", _parse_check)
    interface = _label(container, prefix, "interface", parse_interface)
    priority = _label(container, prefix, "priority", lambda raw: parse_int(raw, 1, 254))
    if vip is not None and vrid is None:
        raise LabelProblem(container, prefix + "vrid", "", "is required with a vip label (1-255)")
    kind, http_path = check if check is not None else ("tcp" if port is not None else "none", "/")
    if kind != "none" and port is None:
        raise LabelProblem(container, prefix + "port", "", f"is required with check={kind}")
    return ServiceSpec(
        container_id=container.id,
        container_name=container.name,
        created=container.created,
        vip=vip,
        vrid=vrid,
        port=port,
        check=kind,
        http_path=http_path,
        interface=interface,
        priority=priority,
    )


def explicitly_disabled(container: ContainerInfo, prefix: str) -> bool:
    """`<prefix>enable=false` (or another false value): the container is never fronted, however it was found."""
    raw = container.labels.get(prefix + "enable")
    if raw is None:
        return False
    try:
        return not parse_bool(raw)
    except InvalidValue:
        return False


def joined_service(container: ContainerInfo, how: str) -> ServiceSpec:
    """A container with no label of ours that joins the environment's instance, checked by the environment's check."""
    return ServiceSpec(
        container_id=container.id,
        container_name=container.name,
        created=container.created,
        check=ENV_CHECK,
        joined_by=how,
    )


def parse_services(containers: Iterable[ContainerInfo], prefix: str) -> tuple[list[ServiceSpec], list[str]]:
    """Specs of every enabled container (ordered by creation, then id) and one problem line per skipped one."""
    specs: list[ServiceSpec] = []
    problems: list[str] = []
    for container in sorted(containers, key=lambda c: (c.created, c.id)):
        try:
            spec = parse_service(container, prefix)
        except LabelProblem as problem:
            problems.append(f"{problem}; container skipped")
            continue
        if spec is not None:
            specs.append(spec)
    return specs, problems
