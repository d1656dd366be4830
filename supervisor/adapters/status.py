"""What the supervisor reports about itself: per instance state, priority, VIPs, health, last transition and reload.

The running supervisor keeps a ``StatusBoard`` and writes it to ``RUN_DIR/status.json`` (atomically) on every
change; `keepalived-supervisor status` reads that file, so it works from `docker exec` without any socket. The board
holds no secret: AUTH_PASS never reaches it.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from supervisor.adapters.files import read_bounded, write_atomically
from supervisor.core.model import DesiredState

log = logging.getLogger(__name__)

STATUS_FILE = "status.json"


def _now() -> float:
    return round(time.time(), 3)


@dataclass
class InstanceStatus:
    name: str
    vrid: int
    interface: str
    priority: int
    vips: list[str]
    source: str
    state: str = "UNKNOWN"
    healthy: bool = True
    health_reason: str = "no check configured"
    holds_vips: bool = False
    last_transition: float | None = None
    members: list[str] = field(default_factory=list)


@dataclass
class ComponentStatus:
    ok: bool
    reason: str
    since: float


@dataclass
class KeepalivedStatus:
    pid: int | None = None
    starts: int = 0
    reloads: int = 0
    last_reload: float | None = None
    last_config_error: str | None = None
    last_config_error_at: float | None = None


def _describe(error: Exception) -> str:
    """An error without the random temp file name, so the same failure is recognised (and logged) once."""
    if isinstance(error, OSError) and error.strerror:
        return f"{type(error).__name__}: [Errno {error.errno}] {error.strerror}"
    return f"{type(error).__name__}: {error}"


class StatusBoard:
    """Thread-safe status, written to status.json whenever it changes.

    Writing never raises: a full disk, a read-only or vanished RUN_DIR is logged (once per distinct error) and the
    in-memory board stays authoritative; the next change writes the whole board again. Every change bumps a
    generation; the writer serialises the board and writes it under one lock, and a generation is never written
    after a newer one, so status.json cannot go back in time when threads race.
    """

    def __init__(self, run_dir: Path) -> None:
        self.path = run_dir / STATUS_FILE
        self._lock = threading.RLock()  # the board's fields and generation
        self._write_lock = threading.Lock()  # one writer at a time; taken before _lock, never inside it
        self._generation = 0
        self._written_generation = -1
        self._write_error: str | None = None
        self.instances: dict[str, InstanceStatus] = {}
        self.keepalived = KeepalivedStatus()
        self.problems: list[str] = []
        self.pending_problems: list[str] = []
        self.components: dict[str, ComponentStatus] = {}
        self.engine_reachable: bool | None = None
        self.supervisor_pid = os.getpid()
        self.started = _now()

    def _changed(self) -> None:
        """Called with _lock held after every change."""
        self._generation += 1

    def set_desired(self, state: DesiredState) -> None:
        with self._lock:
            fresh: dict[str, InstanceStatus] = {}
            for instance in state.instances:
                old = self.instances.get(instance.name)
                entry = InstanceStatus(
                    name=instance.name,
                    vrid=instance.vrid,
                    interface=instance.interface,
                    priority=instance.priority,
                    vips=[str(vip) for vip in instance.vips],
                    source=instance.source,
                    members=[_member_text(spec.container_name, spec.joined_by) for spec in instance.members],
                )
                if old is not None:
                    entry.state, entry.last_transition = old.state, old.last_transition
                    entry.healthy, entry.health_reason = old.healthy, old.health_reason
                    entry.holds_vips = old.holds_vips
                fresh[instance.name] = entry
            self.instances = fresh
            self.problems = list(state.problems)
            self._changed()
        self.write()

    def record_transition(self, name: str, state: str, priority: int | None) -> None:
        with self._lock:
            entry = self.instances.get(name)
            if entry is None:
                return
            entry.state = state
            if priority is not None and state == "MASTER":
                entry.priority = priority
            entry.last_transition = _now()
            self._changed()
        self.write()

    def record_health(self, name: str, healthy: bool, reason: str) -> None:
        with self._lock:
            entry = self.instances.get(name)
            if entry is None or (entry.healthy, entry.health_reason) == (healthy, reason):
                return
            entry.healthy, entry.health_reason = healthy, reason
            self._changed()
        self.write()

    def record_vips_held(self, name: str, held: bool) -> None:
        with self._lock:
            entry = self.instances.get(name)
            if entry is None or entry.holds_vips == held:
                return
            entry.holds_vips = held
            self._changed()
        self.write()

    def record_starting(self) -> None:
        """keepalived is about to (re)start: its instances' states are unknown until it reports them."""
        with self._lock:
            for entry in self.instances.values():
                entry.state = "UNKNOWN"
            self._changed()
        self.write()

    def record_start(self, pid: int) -> None:
        with self._lock:
            self.keepalived.pid = pid
            self.keepalived.starts += 1
            self._changed()
        self.write()

    def record_reload(self) -> None:
        with self._lock:
            self.keepalived.reloads += 1
            self.keepalived.last_reload = _now()
            self._changed()
        self.write()

    def record_config_error(self, message: str) -> None:
        with self._lock:
            self.keepalived.last_config_error = message
            self.keepalived.last_config_error_at = _now()
            self._changed()
        self.write()

    def record_engine(self, reachable: bool) -> None:
        with self._lock:
            if self.engine_reachable == reachable:
                return
            self.engine_reachable = reachable
            self._changed()
        self.write()

    def record_component(self, name: str, ok: bool, reason: str) -> None:
        """The health of one part of the supervisor (e.g. the health monitor, the notify reader) for HEALTHCHECK.

        `since` is when `ok` last changed; a new reason with the same `ok` keeps it.
        """
        with self._lock:
            old = self.components.get(name)
            if old is not None and (old.ok, old.reason) == (ok, reason):
                return
            since = old.since if old is not None and old.ok == ok else _now()
            self.components[name] = ComponentStatus(ok=ok, reason=reason, since=since)
            self._changed()
        self.write()

    def record_pending_problems(self, problems: list[str]) -> None:
        """Problems of a SETTINGS_FILE edit waiting for SIGHUP: reported, but they do not make the node unhealthy."""
        with self._lock:
            if self.pending_problems == list(problems):
                return
            self.pending_problems = list(problems)
            self._changed()
        self.write()

    def _snapshot(self) -> dict[str, Any]:
        """Called with _lock held."""
        return {
            "supervisor_pid": self.supervisor_pid,
            "started": self.started,
            "updated": _now(),
            "engine_reachable": self.engine_reachable,
            "keepalived": asdict(self.keepalived),
            "instances": [asdict(entry) for entry in self.instances.values()],
            "problems": list(self.problems),
            "pending_problems": list(self.pending_problems),
            "components": {name: asdict(entry) for name, entry in sorted(self.components.items())},
        }

    def as_dict(self) -> dict[str, Any]:
        with self._lock:
            return self._snapshot()

    def write(self) -> bool:
        """Write the latest board to status.json unless it is already there; never raises. True when written."""
        with self._write_lock:
            with self._lock:
                generation = self._generation
                if generation == self._written_generation:
                    return True
                text = json.dumps(self._snapshot(), indent=2, sort_keys=True) + "\n"
            try:
                write_atomically(self.path, text, mode=0o644)
            except Exception as error:  # ENOSPC, EROFS, EACCES, RUN_DIR gone...: the board stays, retried later
                description = _describe(error)
                if description != self._write_error:
                    self._write_error = description
                    log.warning("cannot write %s (retried on the next change): %s", self.path, description)
                return False
            if self._write_error is not None:
                log.info("%s written again", self.path)
                self._write_error = None
            self._written_generation = generation
            return True

    def write_error(self) -> str | None:
        """The error of the last failed write while it lasts; None once status.json is current again."""
        with self._write_lock:
            return self._write_error


STATUS_READ_LIMIT = 16 * 1024 * 1024


def read_status(run_dir: Path) -> dict[str, Any]:
    """status.json as written by the board. Raises OSError (FileNotFoundError when absent) or ValueError (a symlink,
    a FIFO, an oversized or malformed file)."""
    data = json.loads(read_bounded(run_dir / STATUS_FILE, STATUS_READ_LIMIT).decode("utf-8"))
    if not isinstance(data, dict):
        raise ValueError(f"{run_dir / STATUS_FILE} does not hold a JSON object")
    return data


def health_verdict(data: dict[str, Any]) -> tuple[bool, str]:
    """Whether `status --quiet` (the HEALTHCHECK) is green, with the reason: red when any component is not ok.

    Pending problems (a settings edit waiting for SIGHUP) are reported by `status` but never make the node red.
    """
    components = data.get("components") or {}
    failed = []
    for name, component in sorted(components.items()):
        if not isinstance(component, dict):
            failed.append(f"{name}: unreadable component status")
        elif component.get("ok") is not True:
            failed.append(f"{name}: {component.get('reason') or 'not ok'}")
    if failed:
        return False, "; ".join(failed)
    return True, "all components ok"


def _when(timestamp: float | None) -> str:
    if timestamp is None:
        return "never"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(timestamp))


def format_status(data: dict[str, Any], running: bool) -> str:
    """The human view of status.json, one line per instance, like the old image's `status`."""
    keepalived = data.get("keepalived", {})
    lines = [
        f"supervisor: {'running' if running else 'NOT RUNNING'} (pid {data.get('supervisor_pid')})"
        f"  keepalived pid: {keepalived.get('pid')}  starts: {keepalived.get('starts')}"
        f"  reloads: {keepalived.get('reloads')} (last {_when(keepalived.get('last_reload'))})",
    ]
    engine = data.get("engine_reachable")
    lines.append(f"docker engine: {'reachable' if engine else 'unreachable' if engine is False else 'not watched'}")
    if keepalived.get("last_config_error"):
        lines.append(
            f"last rejected config ({_when(keepalived.get('last_config_error_at'))}): "
            f"{keepalived['last_config_error'].splitlines()[0]}"
        )
    instances = data.get("instances", [])
    if not instances:
        lines.append("no VRRP instance configured")
    for entry in instances:
        health = "healthy" if entry["healthy"] else "FAILED"
        lines.append(
            f"{entry['name']}: {entry['state']} vrid {entry['vrid']} priority {entry['priority']} "
            f"on {entry['interface']} vips {', '.join(entry['vips'])} "
            f"({'held here' if entry['holds_vips'] else 'not held here'}) health {health}: {entry['health_reason']}; "
            f"last transition {_when(entry['last_transition'])}"
        )
    for name, component in sorted(data.get("components", {}).items()):
        if not component.get("ok", True):
            lines.append(f"component {name}: FAILED since {_when(component.get('since'))}: {component.get('reason')}")
    lines.extend(f"problem: {problem}" for problem in data.get("problems", []))
    lines.extend(
        f"pending problem (settings edit not applied, waits for SIGHUP): {problem}"
        for problem in data.get("pending_problems", [])
    )
    return "\n".join(lines)


def _member_text(name: str, joined_by: str) -> str:
    """A member as `status` shows it, saying how a container nobody labelled was found."""
    how = {
        "selector": "found by LABEL_SELECTOR",
        "check_port": "found by its published CHECK_PORT",
        "rancher": "found by Rancher metadata publishing CHECK_PORT",
    }.get(joined_by)
    return f"{name} ({how})" if how else name
