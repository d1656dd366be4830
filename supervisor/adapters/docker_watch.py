"""Watch the local Docker engine and keep a Snapshot of the containers this supervisor fronts.

A thin adapter between docker-py and the pure core: everything downstream sees only ``Snapshot`` and
``ContainerEvent`` records (the JSON conversion lives in ``supervisor.core.docker_json``). It follows docker-gen's
recipe so that nothing falls into a gap:

* subscribe to events first, then list and inspect everything (the full relist happens after every (re)connect);
* a reader thread only enqueues events (the engine drops events for subscribers slower than 100 ms), a worker thread
  re-inspects the containers they name, updates the snapshot and calls the callbacks;
* any end of the event stream, any error, or a silence after which the engine does not answer a ping is a disconnect:
  reconnect with exponential backoff forever, resuming the stream ``since`` the last event seen (the repeated boundary
  event is dropped), then relist;
* an engine unreachable at start is not fatal: the snapshot says ``engine_reachable=False`` until it connects.

Under an event storm the queue between reader and worker stays bounded: events are merged per container
(``supervisor.core.events.PendingEvents``), failure actions are never merged away and jump the queue, and the worker
looks for newly arrived failures between its inspect round-trips, so a ``die`` reaches ``on_event`` at once.

Nothing kills a loop: a malformed event is dropped (and logged, rate-limited), any exception from one item is logged
and the loop goes on, and a thread whose loop dies anyway is restarted with backoff. ``problem()`` says when the
watcher is broken all the same (a dead thread, a stuck worker, an engine unreachable for too long).

Which containers count: those with any label under the prefix (``<prefix>enable`` included) that also match every
``key=value`` of the selector. The selector is applied by the engine (server-side filters), the prefix here.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

import docker
import docker.errors
import tenacity
from docker.types.daemon import CancellableStream

from supervisor.core.docker_json import (
    ContainerEvent,
    EventResume,
    MalformedEvent,
    container_info_from_attrs,
    event_from_raw,
    event_since,
    has_prefixed_label,
    parse_created,
)
from supervisor.core.events import WATCHED_ACTIONS, Batch, PendingEvents
from supervisor.core.snapshot import ContainerInfo, Snapshot

log = logging.getLogger(__name__)

#: Default timeout (seconds) of API calls of the default client: bounds a ping or inspect against a hung engine.
DEFAULT_API_TIMEOUT = 15

_STABLE_AFTER = 5.0  # seconds a connection (or a thread's run) must last before a restart goes without delay
_MAX_BATCH = 500  # containers handled per worker round; one inspect per container per round
_RESTART_INITIAL = 0.5  # first delay before restarting a crashed thread, doubled up to _RESTART_MAX
_RESTART_MAX = 30.0
_LOG_EVERY = 10.0  # seconds between two log lines of the same repeated trouble


def default_client_factory() -> docker.DockerClient:
    """The engine from the environment (DOCKER_HOST or the local socket) with a bounded API timeout."""
    return docker.from_env(timeout=DEFAULT_API_TIMEOUT)


# --- queue items -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Connected:
    generation: int
    client: docker.DockerClient


@dataclass(frozen=True)
class _Relist:
    """A relist asked for outside a (re)connect: after a worker crash lost what it was applying."""

    generation: int
    client: docker.DockerClient


@dataclass(frozen=True)
class _Disconnected:
    generation: int
    reason: str


@dataclass(frozen=True)
class _Stop:
    pass


_Control = _Connected | _Relist | _Disconnected | _Stop
_Entries = tuple[tuple[str, tuple[ContainerEvent, ...]], ...]


class EventQueue:
    """The reader -> worker queue: ``PendingEvents`` (merged per container, bounded) behind a lock, a blocking get,
    and since when something has been waiting (for ``DockerWatcher.problem``)."""

    def __init__(self, max_containers: int = 10_000, max_actions: int = 32) -> None:
        self._pending: PendingEvents[_Control, docker.DockerClient] = PendingEvents(max_containers, max_actions)
        self._cond = threading.Condition(threading.Lock())
        self._waiting_since: float | None = None

    def put_event(self, generation: int, client: docker.DockerClient, event: ContainerEvent) -> None:
        with self._cond:
            self._pending.add_event(generation, client, event)
            self._put_done()

    def put_control(self, item: _Control) -> None:
        with self._cond:
            self._pending.add_control(item)
            self._put_done()

    def _put_done(self) -> None:
        if self._waiting_since is None:
            self._waiting_since = time.monotonic()
        self._cond.notify()

    def get(self, max_containers: int = _MAX_BATCH, timeout: float | None = None) -> _Control | Batch[Any] | None:
        """The next control item or batch; blocks until there is one (None only after `timeout`)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while True:
                item = self._pending.take(max_containers)
                if item is not None:
                    self._waiting_since = time.monotonic() if len(self._pending) else None
                    return item
                self._waiting_since = None
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return None
                self._cond.wait(remaining)

    def take_urgent(self, generation: int, max_containers: int = _MAX_BATCH) -> _Entries:
        """Containers of `generation` with a pending failure, if that generation's events are next; never blocks."""
        with self._cond:
            entries = self._pending.take_urgent(generation, max_containers)
            if entries:
                self._waiting_since = time.monotonic() if len(self._pending) else None
            return entries

    def waiting_since(self) -> float | None:
        """Monotonic time since which items have waited without being taken; None when the queue is empty."""
        with self._cond:
            return self._waiting_since

    def __len__(self) -> int:
        with self._cond:
            return len(self._pending)

    def stats(self) -> dict[str, int]:
        with self._cond:
            p = self._pending
            return {
                "pending_containers": p.pending_containers,
                "pending_events": p.pending_events,
                "received": p.received,
                "merged": p.merged,
                "overflowed": p.overflowed,
                "failures_overflowed": p.failures_overflowed,
            }


class _RateLimitedLog:
    """One log line per `key` every `interval` seconds at most; the next one says how many were suppressed."""

    def __init__(self, logger: logging.Logger, interval: float = _LOG_EVERY) -> None:
        self._logger = logger
        self._interval = interval
        self._lock = threading.Lock()
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def log(self, key: str, level: int, message: str, *args: object, exc_info: bool = False) -> None:
        now = time.monotonic()
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last < self._interval:
                self._suppressed[key] = self._suppressed.get(key, 0) + 1
                return
            self._last[key] = now
            suppressed = self._suppressed.pop(key, 0)
        if suppressed:
            message += " (and %d more like it in the last %.0f s)"
            args = (*args, suppressed, now - (last or now))
        self._logger.log(level, message, *args, exc_info=exc_info)


class _Stopping(Exception):
    """Raised inside the connect loop when stop() was called."""


# --- the watcher -----------------------------------------------------------------------------------------------


class DockerWatcher:
    """Keeps ``snapshot`` in step with the engine and calls back on every change.

    Callbacks run on the watcher's worker thread, one at a time: ``on_event`` for each container event of a container
    in scope (before its re-inspect, so health acts at once; events of one container are merged under a storm, each
    action kept at its latest place, failures never dropped), then ``on_snapshot`` when the snapshot changed (engine
    reachability included). On a disconnect the snapshot keeps the last known containers with
    ``engine_reachable=False``.
    """

    def __init__(
        self,
        on_snapshot: Callable[[Snapshot], None],
        selector: Mapping[str, str],
        label_prefix: str,
        on_event: Callable[[ContainerEvent], None] | None = None,
        client_factory: Callable[[], docker.DockerClient] = default_client_factory,
        watchdog_interval: float = 10.0,
        retry_initial: float = 0.5,
        retry_max: float = 5.0,
        stuck_after: float = 60.0,
        unreachable_after: float = 30.0,
        max_pending_containers: int = 10_000,
        watch_unlabelled: bool = False,
    ) -> None:
        if not label_prefix:
            raise ValueError("label_prefix must not be empty")
        self._on_snapshot = on_snapshot
        self._on_event = on_event
        self._selector = dict(selector)
        self._prefix = label_prefix
        # A selector selects on its own; with CHECK_PORT discovery every container may publish the port. Otherwise
        # only containers with a label of ours are in scope.
        self._need_prefix = not (self._selector or watch_unlabelled)
        self._client_factory = client_factory
        self._watchdog_interval = watchdog_interval
        self._retry_initial = retry_initial
        self._retry_max = retry_max
        self._stuck_after = stuck_after
        self._unreachable_after = unreachable_after

        self._queue = EventQueue(max_pending_containers)
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._snapshot = Snapshot()
        self._limited = _RateLimitedLog(log)
        self._heartbeat = time.monotonic()  # the worker's last sign of progress (a plain float: atomic to assign)

        # Shared between reader, worker and watchdog; guarded by _lock.
        self._lock = threading.Lock()
        self._generation = 0
        self._live: tuple[int, docker.DockerClient, CancellableStream[dict[str, Any]]] | None = None
        self._drop_reason: str | None = None
        self._last_activity = time.monotonic()
        self._unreachable_since: tuple[float, float] | None = None  # (monotonic, wall clock)
        self._crashes: dict[str, int] = {}

        self._resume = EventResume()  # reader-only

    # -- public ----------------------------------------------------------------------------------------------

    @property
    def snapshot(self) -> Snapshot:
        """The current snapshot (immutable; a new object after every change)."""
        return self._snapshot

    @property
    def event_filters(self) -> dict[str, Any]:
        """The server-side filters of the event subscription."""
        filters: dict[str, Any] = {"type": "container", "event": list(WATCHED_ACTIONS)}
        if self._selector:
            filters["label"] = self._label_filters()
        return filters

    def start(self) -> None:
        """Start the reader, worker and watchdog threads; returns at once, also when the engine is unreachable."""
        if self._threads:
            raise RuntimeError("DockerWatcher already started")
        with self._lock:
            self._unreachable_since = (time.monotonic(), time.time())
        self._heartbeat = time.monotonic()
        for name, body, on_crash in (
            ("docker-watch-reader", self._run_reader, None),
            ("docker-watch-worker", self._run_worker, self._request_relist),
            ("docker-watch-watchdog", self._run_watchdog, None),
        ):
            thread = threading.Thread(target=self._supervised(name, body, on_crash), name=name, daemon=True)
            self._threads.append(thread)
            thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop watching: close the stream and the client, join the threads (at most `timeout` seconds in all)."""
        self._stopping.set()
        self._drop_stream(None, "stopping")
        self._queue.put_control(_Stop())
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
            if thread.is_alive():
                log.warning("docker watcher thread %s did not stop within %.1f s", thread.name, timeout)

    def problem(self) -> str | None:
        """Why the watcher is broken, or None when it works (or was not started, or is stopping).

        Broken: a thread dead (not restarting), the worker stuck (something waiting in the queue for more than
        `stuck_after` seconds without the worker making progress), or the engine unreachable for more than
        `unreachable_after` seconds.
        """
        if not self._threads or self._stopping.is_set():
            return None
        now = time.monotonic()
        for thread in self._threads:
            if not thread.is_alive():
                crashes = self._crashes.get(thread.name, 0)
                return f"docker watcher thread {thread.name} is dead" + (
                    f" after {crashes} crash(es)" if crashes else ""
                )
        waiting = self._queue.waiting_since()
        if waiting is not None:
            idle = now - max(waiting, self._heartbeat)
            if idle > self._stuck_after:
                return f"docker watcher worker stuck: {len(self._queue)} item(s) waiting, no progress for {idle:.0f} s"
        with self._lock:
            unreachable = self._unreachable_since
        if unreachable is not None and now - unreachable[0] > self._unreachable_after:
            since = datetime.fromtimestamp(unreachable[1]).astimezone().isoformat(timespec="seconds")
            return f"docker engine unreachable since {since} ({now - unreachable[0]:.0f} s)"
        return None

    def queue_stats(self) -> dict[str, int]:
        """Counters of the reader -> worker queue (pending, received, merged, overflowed)."""
        return self._queue.stats()

    # -- helpers ---------------------------------------------------------------------------------------------

    def _label_filters(self) -> list[str]:
        return [f"{key}={value}" for key, value in sorted(self._selector.items())]

    def _in_scope(self, labels: Mapping[str, str]) -> bool:
        if self._need_prefix and not has_prefixed_label(labels, self._prefix):
            return False
        return all(labels.get(key) == value for key, value in self._selector.items())

    def _live_generation(self) -> int | None:
        with self._lock:
            return self._live[0] if self._live else None

    def _drop_stream(self, generation: int | None, reason: str) -> None:
        """Close the live event stream (of `generation`, or whichever is live when None): the reader reconnects."""
        with self._lock:
            if self._live is None or (generation is not None and self._live[0] != generation):
                return
            stream = self._live[2]
            self._drop_reason = self._drop_reason or reason
        _close_quietly(stream)

    def _request_relist(self) -> None:
        """Queue a relist on the live connection (after the worker lost what it was applying)."""
        with self._lock:
            live = self._live
        if live is not None:
            self._queue.put_control(_Relist(live[0], live[1]))

    def _publish(self, snapshot: Snapshot) -> bool:
        """Install `snapshot`; True (and on_snapshot called) when it differs from the current one."""
        if snapshot == self._snapshot:
            return False
        self._snapshot = snapshot
        try:
            self._on_snapshot(snapshot)
        except Exception:
            log.exception("on_snapshot callback failed")
        return True

    def _beat(self) -> None:
        self._heartbeat = time.monotonic()

    def _supervised(
        self, name: str, body: Callable[[], None], on_crash: Callable[[], None] | None
    ) -> Callable[[], None]:
        """A thread target that runs `body` and, should it end or raise while not stopping, runs it again."""

        def run() -> None:
            delay = _RESTART_INITIAL
            while True:
                started = time.monotonic()
                try:
                    body()
                    if self._stopping.is_set():
                        break
                    log.error("docker watcher thread %s returned unexpectedly; restarting in %.1f s", name, delay)
                except Exception:
                    if self._stopping.is_set():
                        break
                    self._crashes[name] = self._crashes.get(name, 0) + 1
                    log.exception("docker watcher thread %s crashed; restarting in %.1f s", name, delay)
                if on_crash is not None:
                    try:
                        on_crash()
                    except Exception:
                        log.exception("docker watcher thread %s: recovery after the crash failed", name)
                if time.monotonic() - started > _STABLE_AFTER:
                    delay = _RESTART_INITIAL
                if self._stopping.wait(delay):
                    break
                delay = min(_RESTART_MAX, delay * 2)
            log.debug("docker watcher thread %s stopped", name)

        return run

    # -- reader thread: connection lifecycle, only enqueues ----------------------------------------------------

    def _run_reader(self) -> None:
        flaps = 0  # connections in a row that ended within _STABLE_AFTER seconds
        while not self._stopping.is_set():
            try:
                generation, client, stream = self._connect()
            except Exception:
                # Only reached when stopping (the retry loop never gives up otherwise).
                break
            connected_at = time.monotonic()
            reason = self._follow(generation, client, stream)
            if self._stopping.is_set():
                break
            # A connection that keeps failing right away (say a relist that always errors) must not spin.
            flaps = flaps + 1 if time.monotonic() - connected_at < _STABLE_AFTER else 0
            delay = min(self._retry_max, self._retry_initial * 2 ** (flaps - 1)) if flaps else 0.0
            log.warning("docker engine disconnected (%s); reconnecting in %.1f s", reason, delay)
            self._stopping.wait(delay)

    def _follow(self, generation: int, client: docker.DockerClient, stream: CancellableStream[dict[str, Any]]) -> str:
        """Enqueue the connection, its events, its end; returns why it ended. Cleans up whatever happens."""
        reason = "event stream ended"
        try:
            self._queue.put_control(_Connected(generation, client))
            for raw in stream:
                self._enqueue(generation, client, raw)
        except Exception as exc:
            reason = f"event stream failed: {exc!r}"
        finally:
            with self._lock:
                self._live = None
                reason = self._drop_reason or reason
                self._drop_reason = None
                if self._unreachable_since is None:
                    self._unreachable_since = (time.monotonic(), time.time())
            _close_quietly(stream)
            _close_quietly(client)
            self._queue.put_control(_Disconnected(generation, reason))
        return reason

    def _enqueue(self, generation: int, client: docker.DockerClient, raw: object) -> None:
        """One raw event: drop replays and malformed ones, queue the rest. Never raises."""
        with self._lock:
            self._last_activity = time.monotonic()
        try:
            event = event_from_raw(raw)  # first: a malformed event must not move the resume point either
            if self._resume.accept(raw):
                self._queue.put_event(generation, client, event)
        except MalformedEvent as exc:
            self._limited.log("malformed", logging.WARNING, "dropping a malformed docker event (%s): %.200r", exc, raw)
        except Exception:
            self._limited.log("reader", logging.ERROR, "docker watcher: queueing an event failed", exc_info=True)

    def _connect(self) -> tuple[int, docker.DockerClient, CancellableStream[dict[str, Any]]]:
        retrying = tenacity.Retrying(
            wait=_backoff(self._retry_initial, self._retry_max),
            stop=tenacity.stop_when_event_set(self._stopping),
            sleep=self._sleep,
            before_sleep=self._log_retry,
            reraise=True,
        )
        return retrying(self._open)

    def _sleep(self, seconds: float) -> None:
        self._stopping.wait(seconds)

    @staticmethod
    def _log_retry(state: tenacity.RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome is not None else None
        wait = state.next_action.sleep if state.next_action is not None else 0.0
        log.warning(
            "docker engine unreachable (attempt %d: %s); retrying in %.1f s",
            state.attempt_number,
            f"{type(exc).__name__}: {exc}" if exc is not None else "unknown",
            wait,
        )

    def _open(self) -> tuple[int, docker.DockerClient, CancellableStream[dict[str, Any]]]:
        """One connection attempt: client, ping, subscribe. Subscribing comes before the relist (no gap)."""
        if self._stopping.is_set():
            raise _Stopping
        client = self._client_factory()
        try:
            client.ping()
            since = self._resume.since()
            # docker-py passes `since` through; the stubs only admit int/datetime, the engine also "sec.nanosec".
            stream = client.events(decode=True, filters=self.event_filters, since=cast(int | None, since))
        except BaseException:
            _close_quietly(client)
            raise
        with self._lock:
            if self._stopping.is_set():
                _close_quietly(stream)
                _close_quietly(client)
                raise _Stopping
            self._generation += 1
            generation = self._generation
            self._live = (generation, client, stream)
            self._drop_reason = None
            self._last_activity = time.monotonic()
            self._unreachable_since = None
        log.info(
            "connected to docker engine at %s (connection %d), events%s",
            client.api.base_url,
            generation,
            f" since {since}" if since else "",
        )
        return generation, client, stream

    # -- worker thread: inspect, update, call back -----------------------------------------------------------

    def _run_worker(self) -> None:
        while True:
            item = self._queue.get(_MAX_BATCH)
            self._beat()
            if self._stopping.is_set() or isinstance(item, _Stop):
                return
            try:
                self._handle(item)
            except Exception:
                self._limited.log(
                    "worker", logging.ERROR, "docker watcher: handling %s failed", _describe(item), exc_info=True
                )
                if isinstance(item, Batch):
                    self._request_relist()  # what the batch would have applied is lost: the relist is the truth
            self._beat()

    def _handle(self, item: _Control | Batch[Any] | None) -> None:
        if isinstance(item, _Connected | _Relist):
            self._relist(item.generation, item.client)
        elif isinstance(item, _Disconnected):
            self._publish(Snapshot(containers=self._snapshot.containers, engine_reachable=False))
        elif isinstance(item, Batch):
            generation, client = item.generation, cast(docker.DockerClient, item.context)
            todo: dict[str, str] = {}
            known = self._snapshot.containers
            self._deliver(item.containers, known.__contains__, todo, generation)
            self._inspect_and_publish(generation, client, todo)
            if item.relist:
                log.warning("docker watcher: events beyond the queue's bound were left out; relisting")
                self._relist(generation, client)

    def _deliver(
        self, entries: _Entries, known: Callable[[str], bool], todo: dict[str, str], generation: int | None = None
    ) -> None:
        """on_event for the events of each container in scope, noting the container (and its last verb) in `todo`.

        With `generation`, failures of that generation arriving meanwhile are delivered between two containers (a
        storm's batch can take a while to deliver); a container they name that is still ahead in `entries` comes
        with them, its older events first, so that on_event sees each container's events in order.
        """
        remaining = dict(entries)
        while remaining:
            if generation is not None:
                for container_id, events in self._queue.take_urgent(generation):
                    self._deliver_one(container_id, remaining.pop(container_id, ()) + events, known, todo)
                if not remaining:
                    break
            container_id = next(iter(remaining))
            self._deliver_one(container_id, remaining.pop(container_id), known, todo)

    def _deliver_one(
        self, container_id: str, events: tuple[ContainerEvent, ...], known: Callable[[str], bool], todo: dict[str, str]
    ) -> None:
        if not known(container_id) and not any(self._in_scope(event.attributes) for event in events):
            return
        if self._on_event is not None:
            for event in events:
                try:
                    self._on_event(event)
                except Exception:
                    log.exception("on_event callback failed for %s %s", event.action, container_id[:12])
        todo.pop(container_id, None)
        todo[container_id] = events[-1].verb

    def _take_urgent(self, generation: int, known: Callable[[str], bool], todo: dict[str, str]) -> None:
        """Failures that arrived meanwhile go to on_event now, not after the round-trips still ahead."""
        for container_id, events in self._queue.take_urgent(generation):
            self._deliver_one(container_id, events, known, todo)

    def _inspect(self, client: docker.DockerClient, container_id: str) -> ContainerInfo | None:
        """The container if it exists and is in scope, else None. Raises on engine errors."""
        try:
            attrs = client.api.inspect_container(container_id)
        except docker.errors.NotFound:
            return None
        if not isinstance(attrs, Mapping):
            raise TypeError(f"inspect {container_id[:12]} answered {type(attrs).__name__}, not an object")
        info = container_info_from_attrs(attrs)
        return info if self._in_scope(info.labels) else None

    def _engine_error(self, generation: int, what: str, exc: Exception) -> None:
        if generation == self._live_generation():
            self._drop_stream(generation, f"{what} failed: {type(exc).__name__}: {exc}")
        else:
            log.debug("%s failed on a closed connection: %s", what, exc)

    def _inspect_and_publish(self, generation: int, client: docker.DockerClient, todo: dict[str, str]) -> None:
        """Re-inspect each container of `todo` (taking in failures that arrive meanwhile), then publish."""
        containers = dict(self._snapshot.containers)
        while todo:
            self._take_urgent(generation, containers.__contains__, todo)
            container_id = next(iter(todo))
            verb = todo.pop(container_id)
            if verb == "destroy":
                info = None
            else:
                try:
                    info = self._inspect(client, container_id)
                except Exception as exc:
                    self._engine_error(generation, f"inspect {container_id[:12]}", exc)
                    break  # the reconnect's relist covers the rest
            if info is None:
                containers.pop(container_id, None)
            else:
                containers[container_id] = info
            self._beat()
        self._publish(Snapshot(containers=containers, engine_reachable=self._snapshot.engine_reachable))

    def _relist(self, generation: int, client: docker.DockerClient) -> None:
        started = time.monotonic()
        urgent: dict[str, str] = {}  # failures that arrived during the relist: re-inspected after it
        try:
            filters = {"label": self._label_filters()} if self._selector else None
            summaries = client.api.containers(all=True, filters=filters)
            if not isinstance(summaries, list):
                raise TypeError(f"the container list is a {type(summaries).__name__}, not a list")
            containers: dict[str, ContainerInfo] = {}

            def known(container_id: str) -> bool:
                return container_id in containers or container_id in self._snapshot.containers

            for summary in summaries:
                self._take_urgent(generation, known, urgent)
                container_id = summary.get("Id") if isinstance(summary, Mapping) else None
                labels = summary.get("Labels") if isinstance(summary, Mapping) else None
                if not isinstance(container_id, str) or not self._in_scope(
                    labels if isinstance(labels, Mapping) else {}
                ):
                    continue
                info = self._inspect(client, container_id)
                if info is not None:
                    containers[info.id] = info
                self._beat()
        except Exception as exc:
            self._engine_error(generation, "relist", exc)
            return
        old = self._snapshot.containers
        log.info(
            "relisted containers: %d in scope (%d new, %d gone, %d changed) in %.2f s",
            len(containers),
            len(containers.keys() - old.keys()),
            len(old.keys() - containers.keys()),
            sum(1 for cid in containers.keys() & old.keys() if containers[cid] != old[cid]),
            time.monotonic() - started,
        )
        self._publish(Snapshot(containers=containers, engine_reachable=True))
        if urgent:
            self._inspect_and_publish(generation, client, urgent)

    # -- watchdog thread -------------------------------------------------------------------------------------

    def _run_watchdog(self) -> None:
        tick = max(0.05, self._watchdog_interval / 4)
        while not self._stopping.wait(tick):
            try:
                self._watch_once()
            except Exception:
                self._limited.log("watchdog", logging.ERROR, "docker watcher: watchdog round failed", exc_info=True)

    def _watch_once(self) -> None:
        with self._lock:
            live = self._live
            silence = time.monotonic() - self._last_activity
        if live is None or silence < self._watchdog_interval:
            return
        generation, client, _ = live
        try:
            client.ping()
        except Exception as exc:
            self._drop_stream(
                generation, f"watchdog: no answer to ping after {silence:.1f} s of silence: {type(exc).__name__}"
            )
            return
        with self._lock:
            self._last_activity = time.monotonic()


def _describe(item: object) -> str:
    if isinstance(item, Batch):
        return f"a batch of {len(item.containers)} container(s) (connection {item.generation})"
    return type(item).__name__.lstrip("_")


def _backoff(initial: float, maximum: float) -> tenacity.wait.wait_base:
    """Exponential backoff with jitter: initial * 2**n + uniform(0, initial), capped at maximum."""
    try:
        return tenacity.wait_exponential_jitter(multiplier=initial, max=maximum, jitter=initial)
    except TypeError:  # tenacity < 9.1 names the factor `initial`
        return tenacity.wait_exponential_jitter(initial, maximum, jitter=initial)


def _close_quietly(resource: CancellableStream[dict[str, Any]] | docker.DockerClient) -> None:
    try:
        resource.close()
    except Exception as exc:  # closing a stream whose socket is already gone raises in docker-py
        log.debug("closing %s: %s", type(resource).__name__, exc)


__all__ = [
    "WATCHED_ACTIONS",
    "ContainerEvent",
    "DockerWatcher",
    "EventQueue",
    "EventResume",
    "MalformedEvent",
    "container_info_from_attrs",
    "default_client_factory",
    "event_from_raw",
    "event_since",
    "has_prefixed_label",
    "parse_created",
]
