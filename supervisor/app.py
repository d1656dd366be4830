"""The `run` command: wires watch -> state -> render -> apply together and owns the main loop.

Signal handlers only set flags and wake the loop (the patroni way); the loop does the work: reload settings on
SIGHUP, restart keepalived with backoff when it dies, reconcile when the debouncer says a change is due, and on
SIGTERM/SIGINT stop keepalived cleanly (priority-0 advert, VIPs released) and return 0.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from dataclasses import replace
from types import FrameType

from supervisor.adapters import net
from supervisor.adapters.docker_watch import ContainerEvent, DockerWatcher
from supervisor.adapters.health import HealthMonitor
from supervisor.adapters.keepalived import ConfigRejected, Keepalived, KeepalivedPaths
from supervisor.adapters.notify import NotifyFifoReader, Transition
from supervisor.adapters.preflight import interface_problems, script_problems
from supervisor.adapters.reaper import reap_orphans
from supervisor.adapters.status import StatusBoard
from supervisor.core.checks import plan_members
from supervisor.core.debounce import Debouncer, restart_delay
from supervisor.core.labels import parse_services
from supervisor.core.model import DesiredState, build_desired_state
from supervisor.core.render import render
from supervisor.core.settings import Settings, SettingsError, load_settings
from supervisor.core.snapshot import Snapshot

log = logging.getLogger(__name__)

STABLE_RUN_SECONDS = 30.0  # a keepalived that ran this long resets the restart backoff


def host_addresses(state: DesiredState) -> dict[str, str | None]:
    """The host's own address on each instance interface (not a VIP), where probes of published ports go."""
    vips = {vip.address for instance in state.instances for vip in instance.vips}
    result: dict[str, str | None] = {}
    for instance in state.instances:
        own = [a for a in net.interface_addresses(instance.interface) if a not in vips and a.version == instance.family]
        result[instance.interface] = str(own[0]) if own else None
    return result


class Supervisor:
    """One node's supervisor: one keepalived, its config and its health files."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.run_dir = settings.run_dir
        self.keepalived = Keepalived(settings.keepalived_bin, KeepalivedPaths(self.run_dir), on_exit=self.wake)
        self.board = StatusBoard(self.run_dir)
        self.debouncer = Debouncer(settings.reconcile_min_wait, settings.reconcile_max_wait)
        self._wake = threading.Event()
        self._stop_signal: int | None = None
        self._reload_requested = False
        self._snapshot = Snapshot()
        self.health = HealthMonitor(settings.health_policy, on_verdict=self.board.record_health)
        self.watcher = DockerWatcher(
            on_snapshot=self._on_snapshot,
            selector=dict(settings.label_selector),
            label_prefix=settings.label_prefix,
            on_event=self._on_event,
        )
        self._last_problems: tuple[str, ...] = ()
        self._state: DesiredState | None = None
        self._failures = 0
        self._started_at = 0.0
        self._restart_at: float | None = None
        self._interface_index: dict[str, int] = {}

    # -- signals: set a flag, wake the loop, nothing else ---------------------------------------------------------

    def wake(self) -> None:
        self._wake.set()

    def _on_stop_signal(self, signum: int, _frame: FrameType | None) -> None:
        self._stop_signal = signum
        self._wake.set()

    def _on_hup(self, _signum: int, _frame: FrameType | None) -> None:
        self._reload_requested = True
        self._wake.set()

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, self._on_stop_signal)
        signal.signal(signal.SIGINT, self._on_stop_signal)
        signal.signal(signal.SIGHUP, self._on_hup)

    # -- state --------------------------------------------------------------------------------------------------

    def desired_state(self) -> DesiredState:
        specs, problems = parse_services(self._snapshot.containers.values(), self.settings.label_prefix)
        state = build_desired_state(self.settings, specs, net.local_addresses())
        return replace(state, problems=(*problems, *state.problems))

    def _on_snapshot(self, snapshot: Snapshot) -> None:
        """Watcher thread: remember the snapshot; the loop reconciles once the debouncer says so."""
        self._snapshot = snapshot
        self.board.record_engine(snapshot.engine_reachable)
        self.debouncer.mark(time.monotonic())
        self._wake.set()

    def _on_event(self, event: ContainerEvent) -> None:
        """Watcher thread: health verdicts flip at once, without waiting for the debounced reconcile."""
        self.health.on_container_event(event.id, event.action)

    def _log_problems(self, state: DesiredState) -> None:
        if state.problems != self._last_problems:
            for problem in state.problems:
                if problem not in self._last_problems:
                    log.error("%s", problem)
            self._last_problems = state.problems

    def _on_transition(self, transition: Transition) -> None:
        log.info("instance %s is now %s (priority %s)", transition.instance, transition.state, transition.priority)
        self.board.record_transition(transition.instance, transition.state, transition.priority)

    # -- the loop -----------------------------------------------------------------------------------------------

    def run(self) -> int:
        self.install_signal_handlers()
        (self.run_dir / "health").mkdir(mode=0o755, parents=True, exist_ok=True)  # track files, written by health
        state = self.desired_state()
        problems = interface_problems(state) + script_problems(self.settings)
        if problems:
            for problem in problems:
                log.error("%s", problem)
            return 2
        self._log_problems(state)
        text = render(state)
        try:
            self.keepalived.config_test(text)
        except ConfigRejected as rejected:
            log.error("the initial configuration was rejected, keepalived not started: %s", rejected)
            return 1
        self.keepalived.clean_stale()
        for instance in state.instances:
            net.remove_vips(instance.interface, instance.vips)
        self._state = state
        self.board.set_desired(state)
        self.health.start()
        self._update_health(state)
        self.keepalived.install(text)
        fifo = NotifyFifoReader(state.notify_fifo, self._on_transition)
        fifo.start()
        self._start_keepalived()
        self.watcher.start()
        self.board.record_engine(self.watcher.snapshot.engine_reachable)
        try:
            self._loop()
        finally:
            log.info("stopping keepalived (signal %s)", self._stop_signal)
            self.watcher.stop()
            status = self.keepalived.stop()
            self.health.stop()
            fifo.stop()
            log.info("keepalived stopped with status %s; supervisor exiting", status)
        return 0

    def _start_keepalived(self) -> None:
        self.board.record_starting()  # before the start: keepalived's first transition may arrive at once
        self.keepalived.start()
        self._started_at = time.monotonic()
        pid = self.keepalived.pid
        if pid is not None:
            self.board.record_start(pid)

    def _loop(self) -> None:
        next_vip_poll = 0.0
        while self._stop_signal is None:
            now = time.monotonic()
            waits = [1.0]
            deadline = self.debouncer.deadline()
            if deadline is not None:
                waits.append(deadline - now)
            if self._restart_at is not None:
                waits.append(self._restart_at - now)
            self._wake.wait(max(0.0, min(waits)))
            self._wake.clear()
            if self._stop_signal is not None:
                break
            now = time.monotonic()
            if self._reload_requested:
                self._reload_requested = False
                self._reload_settings()
            self._watch_keepalived(now)
            reap_orphans({pid for pid in (self.keepalived.pid,) if pid is not None})
            if self.debouncer.due(now):
                self.debouncer.clear()
                self.reconcile()
            if now >= next_vip_poll:
                next_vip_poll = now + 1.0
                self._poll_vips()

    def _watch_keepalived(self, now: float) -> None:
        status = self.keepalived.exit_status()
        if status is not None and self._restart_at is None:
            ran = now - self._started_at
            self._failures = 1 if ran >= STABLE_RUN_SECONDS else self._failures + 1
            delay = restart_delay(self._failures)
            log.error("keepalived exited with status %s after %.1f s; restarting in %.1f s", status, ran, delay)
            self._restart_at = now + delay
        if self._restart_at is not None and now >= self._restart_at:
            self._restart_at = None
            self._start_keepalived()

    def _poll_vips(self) -> None:
        if self._state is None:
            return
        for instance in self._state.instances:
            held = bool(net.held_vips(instance.interface, instance.vips))
            self.board.record_vips_held(instance.name, held)
        self._check_interfaces(self._state)

    def _check_interfaces(self, state: DesiredState) -> None:
        """Restart keepalived when an instance's interface was deleted and created again (a new index): keepalived
        keeps using the old index's sockets and would never send or hear an advert again."""
        recreated = []
        for interface in sorted({instance.interface for instance in state.instances}):
            index = net.interface_index(interface)
            known = self._interface_index.get(interface)
            if index is not None:
                self._interface_index[interface] = index
                if known is not None and known != index:
                    recreated.append(f"{interface} (index {known} -> {index})")
        if recreated and self.keepalived.pid is not None:
            log.warning("interface re-created: %s; restarting keepalived", ", ".join(recreated))
            self.keepalived.stop()
            self._start_keepalived()

    def _reload_settings(self) -> None:
        try:
            fresh = load_settings(os.environ)
        except SettingsError as error:
            for problem in error.problems:
                log.error("SIGHUP: %s", problem)
            log.error("SIGHUP: settings not changed; the running configuration stays")
            return
        fixed = ("run_dir", "keepalived_bin", "label_prefix", "label_selector")
        if any(getattr(fresh, name) != getattr(self.settings, name) for name in fixed):
            log.warning(
                "SIGHUP: RUN_DIR, KEEPALIVED_BIN, LABEL_PREFIX and LABEL_SELECTOR take effect only after a restart"
            )
            fresh = replace(fresh, **{name: getattr(self.settings, name) for name in fixed})
        log.info("SIGHUP: settings reloaded")
        self.settings = fresh
        self.debouncer = Debouncer(fresh.reconcile_min_wait, fresh.reconcile_max_wait)
        self.health.policy = fresh.health_policy
        self.reconcile()

    def _update_health(self, state: DesiredState) -> None:
        members = plan_members(state, self._snapshot.containers, self.settings, host_addresses(state))
        self.health.update(members, {instance.name: instance.track_file for instance in state.instances})

    def reconcile(self) -> None:
        """Render the desired state and apply it: test, install, SIGHUP; only when the bytes changed."""
        state = self.desired_state()
        self._log_problems(state)
        text = render(state)
        changed = text != self.keepalived.installed_text()
        if changed:
            try:
                self.keepalived.config_test(text)
            except ConfigRejected as rejected:
                log.error("new configuration rejected, the running one stays: %s", rejected)
                self.board.record_config_error(str(rejected))
                if self._state is not None:
                    self._update_health(self._state)  # the running instances still follow their containers
                return
        self._state = state
        self.board.set_desired(state)
        self._update_health(state)  # writes the track files of new instances before keepalived reads them
        if changed:
            self.keepalived.install(text)
        if changed and self.keepalived.pid is not None:
            self.keepalived.reload()
            self.board.record_reload()
            log.info("configuration changed: keepalived reloaded (%d instances)", len(state.instances))


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level, logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def run(settings: Settings) -> int:
    configure_logging(settings.log_level)
    return Supervisor(settings).run()
