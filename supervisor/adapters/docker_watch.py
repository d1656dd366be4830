"""Watch the local Docker engine and keep a Snapshot of the containers this supervisor fronts.

A thin adapter between docker-py and the pure core: everything downstream sees only ``Snapshot`` and
``ContainerEvent`` records. It follows docker-gen's recipe so that nothing falls into a gap:

* subscribe to events first, then list and inspect everything (the full relist happens after every (re)connect);
* a reader thread only enqueues raw events (the engine drops events for subscribers slower than 100 ms), a worker thread
  re-inspects the containers they name, updates the snapshot and calls the callbacks;
* any end of the event stream, any error, or a silence after which the engine does not answer a ping is a disconnect:
  reconnect with exponential backoff forever, resuming the stream ``since`` the last event seen (the repeated boundary
  event is dropped), then relist;
* an engine unreachable at start is not fatal: the snapshot says ``engine_reachable=False`` until it connects.

Which containers count: those with any label under the prefix (``<prefix>enable`` included) that also match every
``key=value`` of the selector. The selector is applied by the engine (server-side filters), the prefix here.
"""

from __future__ import annotations

import collections
import logging
import queue
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast

import docker
import docker.errors
import tenacity
from docker.types.daemon import CancellableStream

from supervisor.core.events import WATCHED_ACTIONS
from supervisor.core.snapshot import ContainerInfo, PortBinding, Snapshot

log = logging.getLogger(__name__)

#: Default timeout (seconds) of API calls of the default client: bounds a ping or inspect against a hung engine.
DEFAULT_API_TIMEOUT = 15

_STABLE_AFTER = 5.0  # seconds a connection must last before a reconnect goes without delay
_MAX_BATCH = 1000  # raw events handled per worker round; one inspect per container per round


def default_client_factory() -> docker.DockerClient:
    """The engine from the environment (DOCKER_HOST or the local socket) with a bounded API timeout."""
    return docker.from_env(timeout=DEFAULT_API_TIMEOUT)


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


# --- conversion (pure) -----------------------------------------------------------------------------------------

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
        ports=_parse_ports(net.get("Ports")),
        addresses=_parse_addresses(net.get("Networks")),
        host_network=network_mode == "host" or network_mode.startswith("container:"),
        created=parse_created(attrs.get("Created")),
    )


def has_prefixed_label(labels: Mapping[str, str], prefix: str) -> bool:
    """True when the labels put the container in the supervisor's scope (``<prefix>enable`` or any ``<prefix>*``)."""
    return any(key.startswith(prefix) for key in labels)


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
    """

    def __init__(self, capacity: int = 4096) -> None:
        self._capacity = capacity
        self._newest: int | None = None
        self._recent: collections.OrderedDict[tuple[int, str, str], None] = collections.OrderedDict()

    def since(self) -> str | None:
        """The ``since`` argument for a new subscription, or None before any event was seen."""
        return event_since(self._newest) if self._newest is not None else None

    def accept(self, raw: Mapping[str, Any]) -> bool:
        """Record a raw engine event; False when it was seen already (a replay)."""
        time_nano = raw.get("timeNano")
        if not isinstance(time_nano, int):
            return True
        key = (time_nano, str(raw.get("id") or ""), str(raw.get("Action") or raw.get("status") or ""))
        if key in self._recent:
            log.debug("dropping replayed event %s", key)
            return False
        self._recent[key] = None
        if len(self._recent) > self._capacity:
            self._recent.popitem(last=False)
        if self._newest is None or time_nano > self._newest:
            self._newest = time_nano
        return True


# --- the watcher -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Connected:
    generation: int
    client: docker.DockerClient


@dataclass(frozen=True)
class _Raw:
    generation: int
    client: docker.DockerClient
    event: dict[str, Any]


@dataclass(frozen=True)
class _Disconnected:
    generation: int
    reason: str


@dataclass(frozen=True)
class _Stop:
    pass


_Item = _Connected | _Raw | _Disconnected | _Stop


class _Stopping(Exception):
    """Raised inside the connect loop when stop() was called."""


class DockerWatcher:
    """Keeps ``snapshot`` in step with the engine and calls back on every change.

    Callbacks run on the watcher's worker thread, one at a time: ``on_event`` for each container event of a container
    in scope (before its re-inspect, so health acts at once), then ``on_snapshot`` when the snapshot changed (engine reachability
    included). On a disconnect the snapshot keeps the last known containers with ``engine_reachable=False``.
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
    ) -> None:
        if not label_prefix:
            raise ValueError("label_prefix must not be empty")
        self._on_snapshot = on_snapshot
        self._on_event = on_event
        self._selector = dict(selector)
        self._prefix = label_prefix
        self._client_factory = client_factory
        self._watchdog_interval = watchdog_interval
        self._retry_initial = retry_initial
        self._retry_max = retry_max

        self._queue: queue.Queue[_Item] = queue.Queue()
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._snapshot = Snapshot()

        # Shared between reader, worker and watchdog; guarded by _lock.
        self._lock = threading.Lock()
        self._generation = 0
        self._live: tuple[int, docker.DockerClient, CancellableStream[dict[str, Any]]] | None = None
        self._drop_reason: str | None = None
        self._last_activity = time.monotonic()

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
        for name, target in (
            ("docker-watch-reader", self._run_reader),
            ("docker-watch-worker", self._run_worker),
            ("docker-watch-watchdog", self._run_watchdog),
        ):
            thread = threading.Thread(target=target, name=name, daemon=True)
            self._threads.append(thread)
            thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop watching: close the stream and the client, join the threads (at most `timeout` seconds in all)."""
        self._stopping.set()
        self._drop_stream(None, "stopping")
        self._queue.put(_Stop())
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
            if thread.is_alive():
                log.warning("docker watcher thread %s did not stop within %.1f s", thread.name, timeout)

    # -- helpers ---------------------------------------------------------------------------------------------

    def _label_filters(self) -> list[str]:
        return [f"{key}={value}" for key, value in sorted(self._selector.items())]

    def _in_scope(self, labels: Mapping[str, str]) -> bool:
        if not has_prefixed_label(labels, self._prefix):
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
            self._queue.put(_Connected(generation, client))
            reason = "event stream ended"
            try:
                for raw in stream:
                    with self._lock:
                        self._last_activity = time.monotonic()
                    if self._resume.accept(raw):
                        self._queue.put(_Raw(generation, client, raw))
            except Exception as exc:
                reason = f"event stream failed: {exc!r}"
            with self._lock:
                self._live = None
                reason = self._drop_reason or reason
                self._drop_reason = None
            _close_quietly(stream)
            _close_quietly(client)
            self._queue.put(_Disconnected(generation, reason))
            if self._stopping.is_set():
                break
            # A connection that keeps failing right away (say a relist that always errors) must not spin.
            flaps = flaps + 1 if time.monotonic() - connected_at < _STABLE_AFTER else 0
            delay = min(self._retry_max, self._retry_initial * 2 ** (flaps - 1)) if flaps else 0.0
            log.warning("docker engine disconnected (%s); reconnecting in %.1f s", reason, delay)
            self._stopping.wait(delay)
        log.debug("docker watcher reader stopped")

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
            items = [self._queue.get()]
            while len(items) < _MAX_BATCH:
                try:
                    items.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            if self._stopping.is_set():
                break
            pending: list[_Raw] = []
            for item in items:
                if isinstance(item, _Raw) and (not pending or pending[0].generation == item.generation):
                    pending.append(item)
                    continue
                if pending:
                    self._handle_events(pending)
                    pending = [item] if isinstance(item, _Raw) else []
                if isinstance(item, _Connected):
                    self._relist(item.generation, item.client)
                elif isinstance(item, _Disconnected):
                    self._publish(Snapshot(containers=self._snapshot.containers, engine_reachable=False))
                elif isinstance(item, _Stop):
                    return
            if pending:
                self._handle_events(pending)
        log.debug("docker watcher worker stopped")

    def _inspect(self, client: docker.DockerClient, container_id: str) -> ContainerInfo | None:
        """The container if it exists and is in scope, else None. Raises on engine errors."""
        try:
            attrs = client.api.inspect_container(container_id)
        except docker.errors.NotFound:
            return None
        info = container_info_from_attrs(attrs)
        return info if self._in_scope(info.labels) else None

    def _engine_error(self, generation: int, what: str, exc: Exception) -> None:
        if generation == self._live_generation():
            self._drop_stream(generation, f"{what} failed: {type(exc).__name__}: {exc}")
        else:
            log.debug("%s failed on a closed connection: %s", what, exc)

    def _relist(self, generation: int, client: docker.DockerClient) -> None:
        started = time.monotonic()
        try:
            filters = {"label": self._label_filters()} if self._selector else None
            summaries = client.api.containers(all=True, filters=filters)
            containers: dict[str, ContainerInfo] = {}
            for summary in summaries:
                if not self._in_scope(summary.get("Labels") or {}):
                    continue
                info = self._inspect(client, summary["Id"])
                if info is not None:
                    containers[info.id] = info
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

    def _handle_events(self, batch: list[_Raw]) -> None:
        """Call on_event for each event, re-inspect each container named in the batch once, then on_snapshot."""
        generation, client = batch[0].generation, batch[0].client
        events = [_to_event(item.event) for item in batch]
        containers = dict(self._snapshot.containers)
        last_action: dict[str, str] = {}
        in_scope: set[str] = set()
        for event in events:
            last_action[event.id] = event.verb
            if event.id in containers or self._in_scope(event.attributes):
                in_scope.add(event.id)
        # Events first: health verdicts must not wait for the inspect round-trips below.
        if self._on_event is not None:
            for event in events:
                if event.id not in in_scope:
                    continue
                try:
                    self._on_event(event)
                except Exception:
                    log.exception("on_event callback failed for %s %s", event.action, event.id[:12])
        for container_id, action in last_action.items():
            if container_id not in in_scope:
                continue
            if action == "destroy":
                info = None
            else:
                try:
                    info = self._inspect(client, container_id)
                except Exception as exc:
                    self._engine_error(generation, f"inspect {container_id[:12]}", exc)
                    continue
            if info is None:
                containers.pop(container_id, None)
            else:
                containers[container_id] = info
        new = Snapshot(containers=containers, engine_reachable=self._snapshot.engine_reachable)
        changed = new != self._snapshot
        if changed:
            self._snapshot = new
        if changed:
            try:
                self._on_snapshot(new)
            except Exception:
                log.exception("on_snapshot callback failed")

    # -- watchdog thread -------------------------------------------------------------------------------------

    def _run_watchdog(self) -> None:
        tick = max(0.05, self._watchdog_interval / 4)
        while not self._stopping.wait(tick):
            with self._lock:
                live = self._live
                silence = time.monotonic() - self._last_activity
            if live is None or silence < self._watchdog_interval:
                continue
            generation, client, _ = live
            try:
                client.ping()
            except Exception as exc:
                self._drop_stream(
                    generation, f"watchdog: no answer to ping after {silence:.1f} s of silence: {type(exc).__name__}"
                )
                continue
            with self._lock:
                self._last_activity = time.monotonic()


def _to_event(raw: Mapping[str, Any]) -> ContainerEvent:
    actor = _mapping(raw.get("Actor"))
    attributes = {str(k): str(v) for k, v in _mapping(actor.get("Attributes")).items()}
    time_nano = raw.get("timeNano")
    if not isinstance(time_nano, int):
        time_nano = int(raw.get("time") or 0) * 1_000_000_000
    return ContainerEvent(
        id=str(actor.get("ID") or raw.get("id") or ""),
        action=str(raw.get("Action") or raw.get("status") or ""),
        time_nano=time_nano,
        attributes=attributes,
    )


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
    "EventResume",
    "container_info_from_attrs",
    "default_client_factory",
    "event_since",
    "has_prefixed_label",
    "parse_created",
]
