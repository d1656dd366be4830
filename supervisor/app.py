"""The `run` command: gathers facts, asks the one plan what to do, and applies it. It owns the main loop.

Signal handlers do nothing but let the interpreter's wakeup fd carry the signal number into a pipe (the patroni way,
without even a flag or a lock); other threads wake the loop by writing a byte to the same pipe. The loop does the
work: reload settings on SIGHUP, pass SIGUSR1/SIGUSR2 on to keepalived, restart keepalived with backoff when it dies,
reconcile when the debouncer says a change is due (or a failed reconcile is due again), and on SIGTERM/SIGINT stop
keepalived cleanly (priority-0 advert, VIPs released) and return 0.

Every turn of the loop survives any exception from one of its steps: the step is logged, counted, and tried again on
the next turn. A part that stays broken is reported as a component problem, which turns `status --quiet` (the
image's HEALTHCHECK) red with the reason.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import signal
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from types import FrameType
from typing import Any

from supervisor.adapters import net
from supervisor.adapters.docker_watch import ContainerEvent, DockerWatcher
from supervisor.adapters.health import HealthMonitor
from supervisor.adapters.hooks import NotifyHooks, hook_problems
from supervisor.adapters.keepalived import ConfigRejected, Keepalived, KeepalivedPaths, installed_vips
from supervisor.adapters.lease import VipLease, renew_period
from supervisor.adapters.logs import configure_logging
from supervisor.adapters.metrics import Metrics, Server
from supervisor.adapters.notify import NotifyFifoReader, Transition
from supervisor.adapters.preflight import script_problems
from supervisor.adapters.rancher_metadata import RancherMetadata, own_container_id
from supervisor.adapters.reaper import reap_orphans
from supervisor.adapters.splitbrain import AdvertListener, split_brain
from supervisor.adapters.status import StatusBoard, health_verdict
from supervisor.core.debounce import Debouncer, restart_delay
from supervisor.core.plan import HostFacts, Plan, health_members, make_plan
from supervisor.core.rancher import RancherView
from supervisor.core.settings import Settings, SettingsError, load_settings
from supervisor.core.snapshot import Snapshot
from supervisor.core.validate import VirtualAddress

log = logging.getLogger(__name__)

STABLE_RUN_SECONDS = 30.0  # a keepalived that ran this long resets the restart backoff
RETRY_FIRST, RETRY_MAX = 1.0, 30.0  # a failed reconcile is tried again after 1 s, doubling up to 30 s
RESUME_RELOAD_AFTER = 1.0  # after a restart that kept the VIPs, the real priorities return in a reload this much later
RESUME_HOLD_SECONDS = 2  # the VIP's copy on lo during such a restart expires by itself (kernel lifetime)
STEP_FAILURES_RED = 3  # a loop step that failed this many times in a row makes the node unhealthy
POLL_SECONDS = 2.0  # the health of every part, for status, /healthz and the metrics; events do the urgent work
INTERFACE_POLL_EVERY = 15  # polls (30 s) between safety-net checks for a re-created interface; link events do it first
HELD_POLL_EVERY = 5  # polls (10 s) between safety-net checks of the VIPs held; netlink events do the real work
FORWARDED_SIGNALS = (signal.SIGUSR1, signal.SIGUSR2)  # keepalived writes its data and stats files on these
HANDLED_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, *FORWARDED_SIGNALS)


class WakePipe:
    """A non-blocking pipe: signal numbers arrive through the interpreter's wakeup fd, thread wakes as a 0 byte."""

    def __init__(self) -> None:
        self.read_fd, self.write_fd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)

    def wake(self) -> None:
        with contextlib.suppress(BlockingIOError):  # a full pipe already wakes the loop
            os.write(self.write_fd, b"\0")

    def wait(self, timeout: float) -> list[int]:
        """Wait up to `timeout` seconds; the signal numbers that arrived (duplicates kept, in order)."""
        ready, _, _ = select.select([self.read_fd], [], [], max(0.0, timeout))
        if not ready:
            return []
        data = b""
        with contextlib.suppress(BlockingIOError):
            while chunk := os.read(self.read_fd, 4096):
                data += chunk
        return [byte for byte in data if byte]

    def close(self) -> None:
        for fd in (self.read_fd, self.write_fd):
            with contextlib.suppress(OSError):
                os.close(fd)


def _note_signal(_signum: int, _frame: FrameType | None) -> None:
    """The Python-level handler: nothing to do, the wakeup fd already carried the signal number to the loop."""


class Supervisor:
    """One node's supervisor: one keepalived, its config and its health files."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.run_dir = settings.run_dir
        self.pipe = WakePipe()
        self.keepalived = Keepalived(settings.keepalived_bin, KeepalivedPaths(self.run_dir), on_exit=self.pipe.wake)
        self.board = StatusBoard(self.run_dir)
        self.debouncer = Debouncer(settings.reconcile_min_wait, settings.reconcile_max_wait)
        self._stop_signal: int | None = None
        self._snapshot = Snapshot()
        self.metrics = Metrics()
        self.http: Server | None = None
        self.health = HealthMonitor(
            settings.health_policy, on_verdict=self.board.record_health, on_probe=self._on_probe
        )
        self._rancher_view: RancherView | None = None
        self.rancher = (
            RancherMetadata(settings.rancher_metadata_url, self._on_rancher, own_container_id=own_container_id())
            if settings.rancher_metadata_url is not None
            else None
        )
        self.listeners: dict[str, AdvertListener] = {}
        self._split: dict[str, bool] = {}
        self.watcher = DockerWatcher(
            on_snapshot=self._on_snapshot,
            selector=dict(settings.label_selector),
            label_prefix=settings.label_prefix,
            on_event=self._on_event,
            watch_unlabelled=settings.discover_check_port and settings.check.port is not None,  # CHECK_PORT / Rancher
        )
        self.fifo: NotifyFifoReader | None = None
        self.addresses = net.AddressWatcher(self._on_address_change, self._on_link_change)
        self._links_changed = False
        self._next_poll = 0.0  # monotonic time of the loop's next poll
        self.hooks = NotifyHooks(
            settings.notify,
            settings.notify_master,
            settings.notify_backup,
            settings.notify_fault,
            settings.script_user,
            settings.notify_timeout,
        )
        self.lease = (
            VipLease(settings.vip_lease, renew_period(settings.vip_lease), self._lease_targets, self._lease_allowed)
            if settings.vip_lease > 0
            else None
        )
        self._last_problems: tuple[str, ...] = ()
        self._plan: Plan | None = None
        self._failures = 0
        self._started_at = 0.0
        self._restart_at: float | None = None
        self._retry_at: float | None = None
        self._retry_delay = RETRY_FIRST
        self._resume_masters: frozenset[str] = frozenset()
        self._polls = 0
        self._earlier_vips = installed_vips(self.keepalived.installed_text())
        self._step_failures: dict[str, int] = {}
        self._interface_index: dict[str, int] = {}

    # -- signals and wakes: no work here, the loop reads the pipe ------------------------------------------------

    def wake(self) -> None:
        self.pipe.wake()

    def install_signal_handlers(self) -> None:
        signal.set_wakeup_fd(self.pipe.write_fd, warn_on_full_buffer=False)
        for signum in HANDLED_SIGNALS:
            signal.signal(signum, _note_signal)

    # -- facts and the plan ---------------------------------------------------------------------------------------

    def plan(self) -> Plan:
        """The plan for the current settings, snapshot and host facts (the same function `render` calls)."""
        return make_plan(self.settings, self._snapshot, self._facts(), rancher=self._rancher_view)

    def _facts(self) -> HostFacts:
        """Host facts; addresses that are, or were, VIPs of ours (the environment's, the running plan's, those of
        the config an earlier run installed) are not taken for the host's own."""
        managed = set(self._earlier_vips) | {vip.address for vip in self.settings.virtual_ips}
        if self._plan is not None:
            managed |= self._plan.vips
        return net.host_facts(frozenset(managed))

    def _on_snapshot(self, snapshot: Snapshot) -> None:
        """Watcher thread: remember the snapshot; the loop reconciles once the debouncer says so."""
        self._snapshot = snapshot
        if snapshot.engine_reachable and self.board.engine_reachable is False:
            self.metrics.watcher_reconnected()
        self.board.record_engine(snapshot.engine_reachable)
        self.debouncer.mark(time.monotonic())
        self.pipe.wake()

    def _on_event(self, event: ContainerEvent) -> None:
        """Watcher thread: health verdicts flip at once, without waiting for the debounced reconcile."""
        self.health.on_container_event(event.id, event.action)
        self.metrics.docker_event(event.verb)

    def _on_probe(self, instance: str, member: str, ok: bool, seconds: float) -> None:
        """Health thread: one probe result, for the metrics."""
        self.metrics.probe(ok, seconds)
        self.metrics.set_member_healthy(instance, member, ok)

    def _on_rancher(self, view: RancherView) -> None:
        """Rancher metadata thread: a changed view (peers, discovered front ends) is reconciled like a snapshot."""
        self._rancher_view = view
        self.debouncer.mark(time.monotonic())
        self.pipe.wake()

    def healthz(self) -> tuple[bool, str]:
        """The answer of /healthz, the same as `status --quiet`: keepalived running and every part working."""
        if self.keepalived.pid is None:
            return False, "keepalived is not running"
        return health_verdict(self.board.as_dict())

    def _log_problems(self, plan: Plan) -> None:
        if plan.problems != self._last_problems:
            for problem in plan.problems:
                if problem not in self._last_problems:
                    log.error("%s", problem)
            self._last_problems = plan.problems

    def _on_transition(self, transition: Transition) -> None:
        log.info("instance %s is now %s (priority %s)", transition.instance, transition.state, transition.priority,
                 extra={"instance": transition.instance})  # fmt: skip
        self.board.record_transition(transition.instance, transition.state, transition.priority)
        self.metrics.transition(transition.instance, transition.state)
        plan = self._plan
        for instance in plan.state.instances if plan is not None else ():
            if instance.name == transition.instance:
                vips = [str(vip.address) for vip in instance.vips]
                self.metrics.set_vrrp_state(instance.name, instance.interface, instance.vrid, vips, transition.state)
        self.hooks.on_transition(transition.instance, transition.state, transition.priority)

    # -- start ----------------------------------------------------------------------------------------------------

    def run(self) -> int:
        self.install_signal_handlers()
        (self.run_dir / "health").mkdir(mode=0o755, parents=True, exist_ok=True)  # track files, written by health
        plan = self.plan()
        hooks = (self.settings.notify, self.settings.notify_master, self.settings.notify_backup,
                 self.settings.notify_fault)  # fmt: skip
        problems = [*plan.fatal, *script_problems(self.settings), *hook_problems(*hooks, self.settings.script_user)]
        if problems:
            for problem in problems:
                log.error("%s", problem)
            return 2
        self._log_problems(plan)
        try:
            self.keepalived.config_test(plan.text)
        except ConfigRejected as rejected:
            log.error("the initial configuration was rejected, keepalived not started: %s", rejected)
            return 1
        self.keepalived.clean_stale()
        for instance in plan.state.instances:  # left by an unclean stop; keepalived adds them back as MASTER
            net.remove_vips(instance.interface, instance.vips)
        self._plan = plan
        self.board.set_desired(plan.state)
        self.health.start()
        self.health.update(dict(plan.members), _track_files(plan))
        self.keepalived.install(plan.text)
        self.fifo = NotifyFifoReader(plan.state.notify_fifo, self._on_transition)
        self.fifo.start()
        self._start_keepalived()
        self._check_interfaces(plan)  # records each interface's index: a later change means it was re-created
        if self.lease is not None:
            self.lease.start()
        self.addresses.start()
        self._start_http()
        if self.rancher is not None:
            self.rancher.start()
        self._sync_listeners(plan)
        self.watcher.start()
        self.board.record_engine(self.watcher.snapshot.engine_reachable)
        try:
            self._loop()
        finally:
            log.info("stopping keepalived (signal %s)", self._stop_signal)
            # keepalived first: its priority-0 advert hands the VIP over at once; everything else can wait.
            if self.lease is not None:
                self.lease.stop()  # the lease must not touch an address keepalived is removing
            status = self.keepalived.stop()
            self.watcher.stop()
            self.addresses.stop()
            if self.rancher is not None:
                self.rancher.stop()
            for listener in self.listeners.values():
                listener.stop()
            if self.http is not None:
                self.http.close()
            self.health.stop()
            self.fifo.stop()
            self.hooks.stop(self.settings.notify_timeout)  # after the FIFO: keepalived's STOP reaches NOTIFY too
            signal.set_wakeup_fd(-1)
            self.pipe.close()
            log.info("keepalived stopped with status %s; supervisor exiting", status)
        return 0

    def _start_http(self) -> None:
        addr = self.settings.metrics_addr
        if addr is None:
            return
        try:
            self.http = self.metrics.serve(addr, self.healthz)
            log.info("metrics on http://%s/metrics, health on /healthz", addr)
        except (OSError, ValueError) as error:
            log.error("METRICS_ADDR=%s: cannot serve metrics: %s", addr, error)
            self._component("metrics", False, f"cannot listen on {addr}: {error}")

    def _sync_listeners(self, plan: Plan) -> None:
        """One VRRP advert listener per instance interface (split-brain detection)."""
        wanted = {instance.interface: instance.family for instance in plan.state.instances}
        for interface in [name for name in self.listeners if name not in wanted]:
            self.listeners.pop(interface).stop()
        for interface, family in wanted.items():
            if interface not in self.listeners:
                listener = AdvertListener(interface, self._own_addresses(interface), family=family)
                listener.start()
                self.listeners[interface] = listener

    @staticmethod
    def _own_addresses(interface: str) -> Callable[[], set[str]]:
        return lambda: {str(address) for address in net.interface_addresses(interface)}

    def _check_split_brain(self, plan: Plan) -> None:
        for instance in plan.state.instances:
            listener = self.listeners.get(instance.interface)
            entry = self.board.instances.get(instance.name)
            if listener is None or entry is None:
                continue
            heard = listener.heard_master(instance.vrid, 3 * instance.advert_int)
            split = split_brain(entry.state, heard)
            if split != self._split.get(instance.name, False):
                log.log(logging.ERROR if split else logging.INFO,
                        "%s: split brain %s (this node is %s; MASTER adverts heard from %s)", instance.name,
                        "DETECTED" if split else "over", entry.state, ", ".join(heard) or "nobody")  # fmt: skip
            self._split[instance.name] = split
            self.metrics.set_split_brain(instance.name, split)

    def _start_keepalived(self) -> None:
        self.board.record_starting()  # before the start: keepalived's first transition may arrive at once
        self.keepalived.start()
        self._started_at = time.monotonic()
        pid = self.keepalived.pid
        if pid is not None:
            self.board.record_start(pid)

    # -- the loop -------------------------------------------------------------------------------------------------

    def _next_wait(self, now: float) -> float:
        waits = [self._next_poll - now]
        for moment in (self.debouncer.deadline(), self._restart_at, self._retry_at):
            if moment is not None:
                waits.append(moment - now)
        return max(0.0, min(waits))

    def _loop(self) -> None:
        while self._stop_signal is None:
            signals = self.pipe.wait(self._next_wait(time.monotonic()))
            self._step("signals", self._handle_signals, signals)
            if self._stop_signal is not None:
                break
            now = time.monotonic()
            self._step("keepalived", self._watch_keepalived, now)
            ours = {pid for pid in (self.keepalived.pid,) if pid is not None} | self.hooks.children()
            self._step("reaper", reap_orphans, ours)
            due_retry = self._retry_at is not None and now >= self._retry_at
            if self.debouncer.due(now) or due_retry:
                self.debouncer.clear()
                self._step("reconcile", self.reconcile)
            if now >= self._next_poll or self._links_changed:
                self._next_poll = now + POLL_SECONDS
                self._step("poll", self._poll)

    def _step(self, name: str, action: Callable[..., object], *args: Any) -> None:
        """Run one step of the loop; an exception is logged and counted, never allowed to end the loop."""
        try:
            action(*args)
        except Exception as error:
            count = self._step_failures.get(name, 0) + 1
            self._step_failures[name] = count
            log.exception("main loop: %s failed (%d in a row)", name, count)
            if count >= STEP_FAILURES_RED:
                self._component(f"loop:{name}", False, f"failed {count} times in a row: {type(error).__name__}")
            return
        if self._step_failures.pop(name, 0) >= STEP_FAILURES_RED:
            self._component(f"loop:{name}", True, "ok")

    def _component(self, name: str, ok: bool, reason: str) -> None:
        self.board.record_component(name, ok, reason)

    def _handle_signals(self, signals: list[int]) -> None:
        for signum in signals:
            if signum in (signal.SIGTERM, signal.SIGINT):
                self._stop_signal = signum
        if self._stop_signal is not None:
            return
        if signal.SIGHUP in signals:  # a burst of SIGHUPs is one reload
            self._reload_settings()
        for signum in FORWARDED_SIGNALS:
            if signum in signals:
                self._forward(signum)

    def _forward(self, signum: int) -> None:
        pid = self.keepalived.pid
        if pid is None:
            log.warning("%s: keepalived is not running, nothing to pass it to", signal.Signals(signum).name)
            return
        os.kill(pid, signum)
        log.info("%s passed on to keepalived (pid %d)", signal.Signals(signum).name, pid)

    def _watch_keepalived(self, now: float) -> None:
        status = self.keepalived.exit_status()
        if status is not None and self._restart_at is None:
            ran = now - self._started_at
            self._failures = 1 if ran >= STABLE_RUN_SECONDS else self._failures + 1
            self._resume_masters = self._masters_to_resume()
            if self._resume_masters:  # it reached MASTER and healthy before dying: no crash loop, restart at once
                self._failures = 0
            delay = 0.0 if self._resume_masters else restart_delay(self._failures)
            log.error("keepalived exited with status %s after %.1f s; restarting in %.1f s", status, ran, delay)
            self._restart_at = now + delay
            self._component("keepalived", False, f"exited with status {status}; restarting in {delay:.1f} s")
        if self._restart_at is not None and now >= self._restart_at:
            self._restart_at = None
            if self._resume_masters:
                self._install_resume_plan()
            self._start_keepalived()
            self.metrics.keepalived_restarted()
            self._component("keepalived", True, "running")
            if self._resume_masters:
                log.info(
                    "keepalived restarted keeping %s as MASTER; the real priority follows in a reload",
                    ", ".join(sorted(self._resume_masters)),
                )
                self._resume_masters = frozenset()
                self._retry_at = time.monotonic() + RESUME_RELOAD_AFTER

    def _lease_targets(self) -> list[tuple[str, list[VirtualAddress]]]:
        plan = self._plan
        return [] if plan is None else [(i.interface, list(i.vips)) for i in plan.state.instances]

    def _lease_allowed(self) -> bool:
        """Renew while keepalived runs, or is about to run again (a restart that keeps its MASTER VIPs)."""
        restart_at = self._restart_at
        soon = restart_at is not None and restart_at - time.monotonic() <= 1.0
        return self.keepalived.pid is not None or soon

    def _masters_to_resume(self) -> frozenset[str]:
        """Instances this node was MASTER of, healthy, with every VIP still on its interface: a crash of keepalived
        must not cost them their VIPs, nor make the peer take over."""
        plan = self._plan
        if plan is None:
            return frozenset()
        names = set()
        for instance in plan.state.instances:
            entry = self.board.instances.get(instance.name)
            held = len(net.held_vips(instance.interface, instance.vips))
            if entry is not None and entry.state == "MASTER" and entry.healthy and held == len(instance.vips):
                names.add(instance.name)
            elif entry is not None and entry.state == "MASTER":
                log.info("%s not kept as MASTER across the restart: healthy %s, %d of %d VIPs held",
                         instance.name, entry.healthy, held, len(instance.vips))  # fmt: skip
        return frozenset(names)

    def _install_resume_plan(self) -> None:
        plan = make_plan(self.settings, self._snapshot, self._facts(), self._resume_masters, self._rancher_view)
        try:
            self.keepalived.config_test(plan.text)
            self.keepalived.install(plan.text)
            for instance in plan.state.instances:
                if instance.name in self._resume_masters:
                    net.hold_on_loopback(instance.vips, RESUME_HOLD_SECONDS)
        except (ConfigRejected, OSError) as error:
            log.error("cannot keep the VIPs across the keepalived restart: %s", error)
            self._resume_masters = frozenset()

    def _on_link_change(self) -> None:
        """Address-watch thread: an interface changed; the loop checks for a re-created one at once."""
        self._links_changed = True
        self.pipe.wake()

    def _on_address_change(self) -> None:
        """Address-watch thread: a VIP may have come or gone."""
        try:
            self._record_held()
        except Exception:
            log.exception("recording the VIPs held failed")

    def _record_held(self) -> None:
        """Whether each instance's VIPs are on this host now; called on every netlink address event (and by the
        once-a-second poll as a safety net)."""
        plan = self._plan
        if plan is None:
            return
        for instance in plan.state.instances:
            self.board.record_vips_held(instance.name, bool(net.held_vips(instance.interface, instance.vips)))

    def _poll(self) -> None:
        """Every POLL_SECONDS: the health of every part, split brain, re-created interfaces (when a link event said
        so, and every 30 s); every 10 s (a safety net for the netlink address events) whether the VIPs are held."""
        plan = self._plan
        self.metrics.set_up(self.keepalived.pid is not None)
        self._polls += 1
        if plan is not None:
            if self._polls % HELD_POLL_EVERY == 0:
                self._record_held()
            if self._links_changed or self._polls % INTERFACE_POLL_EVERY == 0:
                self._links_changed = False
                self._check_interfaces(plan)
            self._check_split_brain(plan)
        parts: dict[str, Callable[[], str | None]] = {"docker watcher": self.watcher_problem}
        parts["health"] = self.health.problem
        if self.lease is not None:
            parts["vip lease"] = self.lease.problem
        parts["notify hooks"] = self.hooks.problem
        parts["address watcher"] = self.addresses.problem
        for interface, listener in self.listeners.items():
            parts[f"advert listener {interface}"] = listener.problem
        if self.rancher is not None and self._rancher_view is not None:  # only once Rancher's service has answered
            parts["rancher metadata"] = self.rancher.problem
        if self.fifo is not None:
            parts["notify"] = self.fifo.problem
        for name, problem in parts.items():
            reason = problem()
            self._component(name, reason is None, reason or "ok")

    def watcher_problem(self) -> str | None:
        return self.watcher.problem()

    def _check_interfaces(self, plan: Plan) -> None:
        """Restart keepalived when an instance's interface was deleted and created again (a new index): keepalived
        keeps using the old index's sockets and would never send or hear an advert again."""
        recreated = []
        for interface in sorted({instance.interface for instance in plan.state.instances}):
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
            _record_pending(self.board, error.problems)
            return
        _record_pending(self.board, [])
        fixed = (
            "run_dir",
            "keepalived_bin",
            "label_prefix",
            "label_selector",
            "metrics_addr",
            "rancher_metadata_url",
            "vip_lease",
            "log_format",
            "discover_check_port",
        )
        if any(getattr(fresh, name) != getattr(self.settings, name) for name in fixed):
            log.warning(
                "SIGHUP: RUN_DIR, KEEPALIVED_BIN, LABEL_PREFIX, LABEL_SELECTOR, METRICS_ADDR, RANCHER_METADATA_URL, "
                "VIP_LEASE, LOG_FORMAT and DISCOVER_CHECK_PORT take effect only after a restart"
            )
            fresh = replace(fresh, **{name: getattr(self.settings, name) for name in fixed})
        log.info("SIGHUP: settings reloaded")
        self.settings = fresh
        self.debouncer = Debouncer(fresh.reconcile_min_wait, fresh.reconcile_max_wait)
        self.health.policy = fresh.health_policy
        self.reconcile()

    # -- apply ----------------------------------------------------------------------------------------------------

    def reconcile(self) -> None:
        """Plan and apply: test the exact text, install it, SIGHUP keepalived; only when the bytes changed.

        When the plan cannot be applied (keepalived rejects it, RUN_DIR is full or read-only, the environment's
        interface is gone), the running configuration stays, the error is reported, and the reconcile is tried again
        with a doubling delay until it succeeds.
        """
        plan = self.plan()
        self._log_problems(plan)
        try:
            applied = self._apply(plan)
        except (ConfigRejected, OSError) as error:
            self.metrics.reload("rejected")
            if isinstance(error, ConfigRejected):
                self.metrics.config_test_failed()
            self._retry_at = time.monotonic() + self._retry_delay
            log.error("new configuration rejected, the running one stays (retry in %.0f s): %s",
                      self._retry_delay, error)  # fmt: skip
            self._retry_delay = min(RETRY_MAX, self._retry_delay * 2)
            self.board.record_config_error(str(error))
            self._component("config", False, f"the last change could not be applied: {str(error)[:200]}")
            running = self._plan
            if running is not None:  # the running instances still follow their containers
                facts = net.host_facts(running.vips)
                members = health_members(running.state, self.settings, self._snapshot, facts)
                self.health.update(members, _track_files(running))
            return
        if self._retry_at is not None:
            log.info("configuration applied after an earlier failure")
        self._retry_at, self._retry_delay = None, RETRY_FIRST
        self.metrics.reload("applied" if applied else "unchanged")
        self._component("config", True, "applied" if applied else "unchanged")
        self._count_members(plan)
        self._sync_listeners(plan)

    def _count_members(self, plan: Plan) -> None:
        counts: dict[str, int] = {}
        for instance in plan.state.instances:
            for spec in instance.members:
                counts[spec.joined_by] = counts.get(spec.joined_by, 0) + 1
        self.metrics.set_discovered_members(counts)

    def _apply(self, plan: Plan) -> bool:
        if plan.fatal:
            raise ConfigRejected("; ".join(plan.fatal))
        changed = plan.text != self.keepalived.installed_text()
        started = time.monotonic()
        if changed:
            self.keepalived.config_test(plan.text)
        self.health.update(dict(plan.members), _track_files(plan))  # track files of new instances come first
        if changed:
            self.keepalived.install(plan.text)
        self._plan = plan
        self.board.set_desired(plan.state)
        if not changed:
            return False
        if self.keepalived.pid is not None:
            self.keepalived.reload()
            self.board.record_reload()
            log.info(
                "configuration changed: keepalived reloaded (%d instances) in %.0f ms",
                len(plan.state.instances),
                (time.monotonic() - started) * 1000,
            )
        return True


def _track_files(plan: Plan) -> dict[str, Path]:
    return {instance.name: instance.track_file for instance in plan.state.instances}


def _record_pending(board: StatusBoard, problems: list[str]) -> None:
    board.record_pending_problems(list(problems))


def run(settings: Settings) -> int:
    configure_logging(settings.log_level, settings.log_format)
    for note in settings.notes:
        log.warning("%s", note)
    return Supervisor(settings).run()
