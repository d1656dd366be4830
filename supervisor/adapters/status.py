"""What the supervisor reports about itself: per instance state, priority, VIPs, health, last transition and reload.

The running supervisor keeps a ``StatusBoard`` and writes it to ``RUN_DIR/status.json`` (atomically) on every
change; `keepalived-supervisor status` reads that file, so it works from `docker exec` without any socket. The board
holds no secret: AUTH_PASS never reaches it.
"""

from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from supervisor.adapters.files import write_atomically
from supervisor.core.model import DesiredState

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
class KeepalivedStatus:
    pid: int | None = None
    starts: int = 0
    reloads: int = 0
    last_reload: float | None = None
    last_config_error: str | None = None
    last_config_error_at: float | None = None


class StatusBoard:
    """Thread-safe status, written to status.json whenever it changes."""

    def __init__(self, run_dir: Path) -> None:
        self.path = run_dir / STATUS_FILE
        self._lock = threading.Lock()
        self.instances: dict[str, InstanceStatus] = {}
        self.keepalived = KeepalivedStatus()
        self.problems: list[str] = []
        self.engine_reachable: bool | None = None
        self.supervisor_pid = os.getpid()
        self.started = _now()

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
                    members=[spec.container_name for spec in instance.members],
                )
                if old is not None:
                    entry.state, entry.last_transition = old.state, old.last_transition
                    entry.healthy, entry.health_reason = old.healthy, old.health_reason
                    entry.holds_vips = old.holds_vips
                fresh[instance.name] = entry
            self.instances = fresh
            self.problems = list(state.problems)
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
        self.write()

    def record_health(self, name: str, healthy: bool, reason: str) -> None:
        with self._lock:
            entry = self.instances.get(name)
            if entry is None or (entry.healthy, entry.health_reason) == (healthy, reason):
                return
            entry.healthy, entry.health_reason = healthy, reason
        self.write()

    def record_vips_held(self, name: str, held: bool) -> None:
        with self._lock:
            entry = self.instances.get(name)
            if entry is None or entry.holds_vips == held:
                return
            entry.holds_vips = held
        self.write()

    def record_starting(self) -> None:
        """keepalived is about to (re)start: its instances' states are unknown until it reports them."""
        with self._lock:
            for entry in self.instances.values():
                entry.state = "UNKNOWN"
        self.write()

    def record_start(self, pid: int) -> None:
        with self._lock:
            self.keepalived.pid = pid
            self.keepalived.starts += 1
        self.write()

    def record_reload(self) -> None:
        with self._lock:
            self.keepalived.reloads += 1
            self.keepalived.last_reload = _now()
        self.write()

    def record_config_error(self, message: str) -> None:
        with self._lock:
            self.keepalived.last_config_error = message
            self.keepalived.last_config_error_at = _now()
        self.write()

    def record_engine(self, reachable: bool) -> None:
        with self._lock:
            if self.engine_reachable == reachable:
                return
            self.engine_reachable = reachable
        self.write()

    def as_dict(self) -> dict[str, Any]:
        with self._lock:
            return {
                "supervisor_pid": self.supervisor_pid,
                "started": self.started,
                "updated": _now(),
                "engine_reachable": self.engine_reachable,
                "keepalived": asdict(self.keepalived),
                "instances": [asdict(entry) for entry in self.instances.values()],
                "problems": list(self.problems),
            }

    def write(self) -> None:
        write_atomically(self.path, json.dumps(self.as_dict(), indent=2, sort_keys=True) + "\n", mode=0o644)


def read_status(run_dir: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((run_dir / STATUS_FILE).read_text(encoding="utf-8"))
    return data


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
    lines.extend(f"problem: {problem}" for problem in data.get("problems", []))
    return "\n".join(lines)
