"""DockerWatcher against the real engine: containers appear, change and vanish in the snapshot; the selector scopes
them; engine outages, an event storm and an engine unreachable at start all converge to the truth; malformed events
are dropped without harm.

Every container here carries ``kat.test=<run id>`` and every watcher's selector includes it, so the tests neither see
nor touch anything else on the engine. Convergence is polled with deadlines, never waited for with fixed sleeps.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, cast

import docker
import pytest

from supervisor.adapters.docker_watch import ContainerEvent, DockerWatcher
from supervisor.core.snapshot import Snapshot
from tests.integration.dockerlab import (
    TEST_LABEL,
    ContainerLab,
    dockerd_pid,
    engine_client,
    ensure_dockerd_running,
    require_engine,
    require_engine_to_ourselves,
    run_parallel,
    start_dockerd,
    stop_dockerd,
    wait_until,
)

require_engine()

pytestmark = pytest.mark.integration

PREFIX = "keepalived."
ENABLE = {f"{PREFIX}enable": "true"}


class Recorder:
    """Collects what the watcher calls back with, thread-safely."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.snapshots: list[Snapshot] = []
        self.times: list[float] = []  # time.monotonic() of each on_snapshot call
        self.events: list[ContainerEvent] = []

    def on_snapshot(self, snapshot: Snapshot) -> None:
        with self._lock:
            self.snapshots.append(snapshot)
            self.times.append(time.monotonic())

    def reconnected_after(self, since: float) -> float | None:
        """Monotonic time of the first on_snapshot call back to reachable after an unreachable one after `since`."""
        with self._lock:
            calls = [(t, s.engine_reachable) for t, s in zip(self.times, self.snapshots, strict=True) if t >= since]
        down = next((i for i, (_, ok) in enumerate(calls) if not ok), None)
        if down is None:
            return None
        return next((t for t, ok in calls[down:] if ok), None)

    def on_event(self, event: ContainerEvent) -> None:
        with self._lock:
            self.events.append(event)

    def actions(self, container_id: str) -> list[str]:
        with self._lock:
            return [e.action for e in self.events if e.id == container_id]

    def snapshot_count(self) -> int:
        with self._lock:
            return len(self.snapshots)


WatchFactory = Callable[..., tuple[DockerWatcher, Recorder]]


@pytest.fixture
def client() -> Iterator[docker.DockerClient]:
    ensure_dockerd_running()
    c = engine_client()
    try:
        yield c
    finally:
        c.close()


@pytest.fixture
def watch(docker_lab: ContainerLab) -> Iterator[WatchFactory]:
    watchers: list[DockerWatcher] = []

    def make(
        selector: Mapping[str, str] | None = None, start: bool = True, **kwargs: Any
    ) -> tuple[DockerWatcher, Recorder]:
        recorder = Recorder()
        kwargs.setdefault("watchdog_interval", 1.0)
        kwargs.setdefault("retry_initial", 0.1)
        kwargs.setdefault("retry_max", 1.0)
        watcher = DockerWatcher(
            on_snapshot=recorder.on_snapshot,
            selector=docker_lab.selector if selector is None else selector,
            label_prefix=PREFIX,
            on_event=recorder.on_event,
            **kwargs,
        )
        watchers.append(watcher)
        if start:
            watcher.start()
        return watcher, recorder

    try:
        yield make
    finally:
        for watcher in watchers:
            watcher.stop()


def reachable(watcher: DockerWatcher) -> Callable[[], bool]:
    return lambda: watcher.snapshot.engine_reachable


def truth(client: docker.DockerClient, run_id: str) -> dict[str, bool]:
    """What the engine says: id -> running, for this run's containers in scope."""
    found = client.api.containers(all=True, filters={"label": [f"{TEST_LABEL}={run_id}", f"{PREFIX}enable"]})
    return {c["Id"]: c["State"] == "running" for c in found}


def seen(watcher: DockerWatcher) -> dict[str, bool]:
    snapshot = watcher.snapshot
    return {cid: info.running for cid, info in snapshot.containers.items()} if snapshot.engine_reachable else {}


def test_container_lifecycle_follows_events(watch: WatchFactory, docker_lab: ContainerLab) -> None:
    watcher, recorder = watch()
    wait_until(reachable(watcher), 20, "the watcher to connect")

    # No keepalived.* label, but it matches the selector: the selector alone selects (zero-touch fronting).
    unlabelled = docker_lab.create(labels={"other": "x"})
    a = docker_lab.create(labels=ENABLE, name=f"kat-watch-{docker_lab.run_id}")
    aid = a.id or ""
    wait_until(
        lambda: aid in watcher.snapshot.containers and watcher.snapshot.containers[aid].running,
        20,
        "container A to appear running",
    )
    info = watcher.snapshot.containers[aid]
    assert info.running and info.name == f"kat-watch-{docker_lab.run_id}"
    assert info.labels[f"{PREFIX}enable"] == "true"
    assert info.addresses.get("bridge"), info.addresses
    wait_until(lambda: unlabelled.id in watcher.snapshot.containers, 20, "the selector alone to select")

    a.pause()
    wait_until(lambda: watcher.snapshot.containers[aid].paused, 20, "A to show paused")
    assert not watcher.snapshot.containers[aid].running
    a.unpause()
    wait_until(lambda: watcher.snapshot.containers[aid].running, 20, "A to run again after unpause")

    a.stop(timeout=1)
    wait_until(lambda: not watcher.snapshot.containers[aid].running, 20, "A to show stopped")
    wait_until(lambda: "die" in recorder.actions(aid), 20, "the die event of A")

    a.remove()
    wait_until(lambda: aid not in watcher.snapshot.containers, 20, "A to disappear")
    wait_until(lambda: "destroy" in recorder.actions(aid), 20, "the destroy event of A")

    labels = {f"{PREFIX}vip": "198.51.100.10", f"{PREFIX}port": "80"}
    b = docker_lab.create(
        labels=labels, name=f"kat-watch-{docker_lab.run_id}", ports={"80/tcp": None}, command="httpd -f -p 80"
    )
    bid = b.id or ""
    wait_until(
        lambda: bid in watcher.snapshot.containers and watcher.snapshot.containers[bid].running,
        20,
        "the recreated container to appear running",
    )
    info = watcher.snapshot.containers[bid]
    assert {k: v for k, v in info.labels.items() if k.startswith(PREFIX)} == labels
    assert [(p.container_port, p.protocol) for p in info.ports][:1] == [(80, "tcp")]
    assert all(p.host_port > 0 for p in info.ports)
    assert set(watcher.snapshot.containers) == {bid, unlabelled.id}


def test_health_status_reaches_snapshot_and_on_event(watch: WatchFactory, docker_lab: ContainerLab) -> None:
    watcher, recorder = watch()
    wait_until(reachable(watcher), 20, "the watcher to connect")
    c = docker_lab.create(
        labels=ENABLE,
        command="touch /ok; sleep 3600",
        healthcheck={"test": ["CMD-SHELL", "test -f /ok"], "interval": 200_000_000, "retries": 1},
        network_mode="none",
    )
    cid = c.id or ""
    wait_until(
        lambda: cid in watcher.snapshot.containers and watcher.snapshot.containers[cid].health == "healthy",
        20,
        "the container to turn healthy",
    )
    c.exec_run(["rm", "/ok"])
    wait_until(lambda: watcher.snapshot.containers[cid].health == "unhealthy", 20, "the container to turn unhealthy")
    actions = recorder.actions(cid)
    assert "health_status: healthy" in actions and "health_status: unhealthy" in actions, actions
    assert not any(a.startswith("exec_") for a in actions), actions


def test_selector_scopes_to_this_host(watch: WatchFactory, docker_lab: ContainerLab) -> None:
    mine_before = docker_lab.create(labels={**ENABLE, "kat.host": "h1"}, network_mode="none")
    theirs_before = docker_lab.create(labels={**ENABLE, "kat.host": "h2"}, network_mode="none")
    watcher, _ = watch(selector={**docker_lab.selector, "kat.host": "h1"})
    wait_until(lambda: mine_before.id in watcher.snapshot.containers, 20, "the relist to find h1's container")
    assert theirs_before.id not in watcher.snapshot.containers

    theirs = docker_lab.create(labels={**ENABLE, "kat.host": "h2"}, network_mode="none")
    mine = docker_lab.create(labels={**ENABLE, "kat.host": "h1"}, network_mode="none")
    wait_until(lambda: mine.id in watcher.snapshot.containers, 20, "h1's new container to appear")
    # Events are handled in order: h2's container, created first, would be there by now if it leaked through.
    assert set(watcher.snapshot.containers) == {mine_before.id, mine.id}
    assert theirs.id not in watcher.snapshot.containers


def test_dockerd_outages_converge_to_truth(
    watch: WatchFactory, docker_lab: ContainerLab, caplog: pytest.LogCaptureFixture
) -> None:
    require_engine_to_ourselves(docker_lab.client, docker_lab.run_id)
    caplog.set_level(logging.INFO, logger="supervisor.adapters.docker_watch")
    watcher, recorder = watch()
    wait_until(reachable(watcher), 20, "the watcher to connect")
    try:
        for round_no in range(1, 4):
            a = docker_lab.create(labels=ENABLE, network_mode="none")
            wait_until(
                lambda: seen(watcher) == truth(docker_lab.client, docker_lab.run_id),
                20,
                f"round {round_no}: the snapshot to match the engine before the outage",
            )
            stopping = time.monotonic()
            stop_dockerd()  # A dies with the engine
            stopped = time.monotonic() - stopping
            wait_until(
                lambda: not watcher.snapshot.engine_reachable, 20, f"round {round_no}: the watcher to notice the outage"
            )
            start_dockerd()
            up = time.monotonic()
            # Changes right after the restart: the engine's event buffer starts empty, only a relist can see them.
            docker_lab.reconnect()
            docker_lab.remove(a.id or "")
            b = docker_lab.create(labels=ENABLE, network_mode="none")
            wait_until(reachable(watcher), 30, f"round {round_no}: the watcher to reconnect")
            expected = truth(docker_lab.client, docker_lab.run_id)
            assert a.id not in expected and expected.get(b.id or "") is True
            wait_until(
                lambda: seen(watcher) == truth(docker_lab.client, docker_lab.run_id),
                30,
                f"round {round_no}: the snapshot to match the engine after the outage",
            )
            converged = time.monotonic() - up
            reconnected = recorder.reconnected_after(stopping)
            assert reconnected is not None
            print(
                f"round {round_no}: dockerd took {stopped:.1f} s to stop; reconnected "
                f"{reconnected - up:+.2f} s after dockerd answered, converged {converged:.2f} s after it; "
                f"{len(expected)} containers ({sum(expected.values())} running)"
            )
    finally:
        ensure_dockerd_running()
    reconnects = [r for r in caplog.records if r.getMessage().startswith("connected to docker engine")]
    # One connection per outage plus the first; a restarting engine may drop a fresh stream once more.
    assert len(reconnects) >= 4, [r.getMessage() for r in reconnects]


def test_hung_engine_is_caught_by_the_watchdog(
    watch: WatchFactory, docker_lab: ContainerLab, caplog: pytest.LogCaptureFixture
) -> None:
    """dockerd frozen (SIGSTOP): the stream stays open but silent; the watchdog's ping times out -> reconnect."""
    require_engine_to_ourselves(docker_lab.client, docker_lab.run_id)
    caplog.set_level(logging.INFO, logger="supervisor.adapters.docker_watch")
    pid = dockerd_pid()
    if pid is None:
        pytest.skip("no dockerd pid in /var/run/docker.pid to freeze")
    a = docker_lab.create(labels=ENABLE, network_mode="none")
    watcher, _ = watch(client_factory=lambda: engine_client(timeout=2))
    wait_until(lambda: a.id in watcher.snapshot.containers, 20, "the watcher to list A")
    os.kill(pid, signal.SIGSTOP)
    try:
        noticed = wait_until(
            lambda: not watcher.snapshot.engine_reachable, 30, "the watchdog to declare the engine gone"
        )
    finally:
        os.kill(pid, signal.SIGCONT)
    resumed = time.monotonic()
    docker_lab.remove(a.id or "")
    b = docker_lab.create(labels=ENABLE, network_mode="none")
    wait_until(lambda: set(seen(watcher)) == {b.id}, 30, "the snapshot to show only B after the freeze")
    print(f"frozen engine noticed after {noticed:.2f} s; converged {time.monotonic() - resumed:.2f} s after SIGCONT")
    assert any("watchdog" in r.getMessage() for r in caplog.records), [r.getMessage() for r in caplog.records]


def test_event_storm_converges(watch: WatchFactory, docker_lab: ContainerLab) -> None:
    count = 200
    watcher, recorder = watch()
    wait_until(reachable(watcher), 20, "the watcher to connect")
    before = recorder.snapshot_count()
    ids: list[str] = [""] * count

    def create(i: int) -> None:
        ids[i] = docker_lab.create(labels=ENABLE, network_mode="none", command="sleep 600").id or ""

    def remove(i: int) -> None:
        docker_lab.remove(ids[i])

    started = time.monotonic()
    run_parallel(create, count)
    created = time.monotonic()
    run_parallel(remove, count)
    removed = time.monotonic()

    def all_destroyed() -> bool:
        with recorder._lock:
            destroyed = {e.id for e in recorder.events if e.action == "destroy"}
        return destroyed >= set(ids) and not watcher.snapshot.containers

    wait_until(all_destroyed, 60, "every storm container's destroy event and an empty snapshot")
    converged = time.monotonic()
    calls = recorder.snapshot_count() - before
    peak = max(len(s.containers) for s in recorder.snapshots[before:])
    events = sum(1 for e in recorder.events if e.id in set(ids))
    print(
        f"storm: {count} containers created+started in {created - started:.1f} s, removed in {removed - created:.1f} s; "
        f"{events} events, {calls} on_snapshot calls (peak {peak} containers); "
        f"converged {converged - removed:.2f} s after the last removal"
    )
    assert peak > 0
    assert watcher.snapshot.containers == {}
    assert truth(docker_lab.client, docker_lab.run_id) == {}


def test_unreachable_engine_at_start(watch: WatchFactory, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="supervisor.adapters.docker_watch")

    def nowhere() -> docker.DockerClient:
        return docker.DockerClient(base_url="unix:///tmp/nonexistent.sock")

    watcher, recorder = watch(client_factory=nowhere, start=False, retry_initial=0.05, retry_max=0.2)
    watcher.start()  # must not raise
    assert watcher.snapshot.engine_reachable is False

    def retries() -> int:
        return sum(1 for r in caplog.records if "unreachable" in r.getMessage() and r.levelno == logging.WARNING)

    wait_until(lambda: retries() >= 3, 20, "the watcher to keep retrying in the background")
    assert watcher.snapshot.engine_reachable is False
    assert recorder.snapshot_count() == 0
    watcher.stop()
    assert not any(t.name.startswith("docker-watch-") for t in threading.enumerate())


def test_engine_arriving_later_gets_listed(watch: WatchFactory, docker_lab: ContainerLab) -> None:
    present = docker_lab.create(labels=ENABLE, network_mode="none")
    attempts = 0

    def flaky() -> docker.DockerClient:
        nonlocal attempts
        attempts += 1
        if attempts < 4:
            return docker.DockerClient(base_url="unix:///tmp/nonexistent.sock")
        return engine_client()

    watcher, recorder = watch(client_factory=flaky, retry_initial=0.05, retry_max=0.2)
    wait_until(lambda: present.id in watcher.snapshot.containers, 20, "the late connection to list the container")
    assert attempts == 4
    assert recorder.snapshots[0].engine_reachable and present.id in recorder.snapshots[0].containers


GARBAGE: list[object] = [
    None,
    "die",
    42,
    ["die"],
    {},
    {"Action": "die"},
    {"Type": "container", "Action": "die", "time": "yesterday", "timeNano": "soon"},
    {"Type": "container", "Action": "die", "Actor": "not an object", "id": 12},
    {"Type": "container", "Action": 7, "Actor": {"ID": "abc", "Attributes": ["not", "a", "dict"]}, "time": 1.5},
    {"Type": "container", "Action": "die", "Actor": {"ID": "0" * 64, "Attributes": "x"}, "timeNano": True},
]


class GarbageFirstStream:
    """A real event stream with garbage in front of it."""

    def __init__(self, garbage: Iterable[object], stream: Any) -> None:
        self._garbage = list(garbage)
        self._stream = stream

    def __iter__(self) -> Iterator[Any]:
        yield from self._garbage
        yield from self._stream

    def close(self) -> None:
        self._stream.close()


class GarbageFirstClient:
    """A real client whose event subscriptions yield malformed events before the engine's own."""

    def __init__(self, client: docker.DockerClient) -> None:
        self._client = client
        self.api = client.api

    def ping(self) -> bool:
        return bool(self._client.ping())

    def events(self, **kwargs: Any) -> GarbageFirstStream:
        return GarbageFirstStream(GARBAGE, self._client.events(**kwargs))

    def close(self) -> None:
        self._client.close()


def test_malformed_events_are_dropped_and_a_later_die_still_arrives(
    watch: WatchFactory, docker_lab: ContainerLab, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="supervisor.adapters.docker_watch")
    watcher, recorder = watch(client_factory=lambda: cast(docker.DockerClient, GarbageFirstClient(engine_client())))
    wait_until(reachable(watcher), 20, "the watcher to connect")
    c = docker_lab.create(labels=ENABLE, network_mode="none")
    cid = c.id or ""
    wait_until(lambda: cid in watcher.snapshot.containers, 20, "the container to appear after the garbage")
    c.kill()
    wait_until(lambda: "die" in recorder.actions(cid), 20, "the real die event after the garbage")
    wait_until(lambda: not watcher.snapshot.containers[cid].running, 20, "the snapshot to show the container dead")
    assert watcher.problem() is None
    assert all(e.id == cid for e in recorder.events), [(e.id[:12], e.action) for e in recorder.events]
    malformed = [r for r in caplog.records if "malformed docker event" in r.getMessage()]
    assert malformed, [r.getMessage() for r in caplog.records]
    assert len(malformed) < len(GARBAGE)  # rate-limited
    assert not [r for r in caplog.records if "disconnected" in r.getMessage()]  # no reconnect was needed
