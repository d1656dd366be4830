"""The watcher's reader -> worker queue (supervisor.core.events.PendingEvents, EventQueue) and the watcher's
robustness against garbage, crashes and storms, with a fake engine (no Docker needed).

The queue merges a container's events (each action once, at its latest place), never merges failures away, hands
containers with a pending failure out first, keeps control items and generations in order, and stays bounded.
"""

from __future__ import annotations

import itertools
import queue
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator
from typing import Any, cast

import docker
import docker.errors
import pytest

from supervisor.adapters.docker_watch import ContainerEvent, DockerWatcher, EventQueue
from supervisor.core.events import FAIL_ACTIONS, Batch, PendingEvents
from supervisor.core.snapshot import Snapshot

LABELS = {"keepalived.enable": "true"}
NON_FAILURES = ("start", "health_status: healthy", "update", "rename", "unpause", "create")


def ev(cid: str, action: str, t: int = 0, attributes: dict[str, str] | None = None) -> ContainerEvent:
    return ContainerEvent(id=cid, action=action, time_nano=t, attributes=LABELS if attributes is None else attributes)


def cid(n: int) -> str:
    return f"{n:064x}"


Entries = tuple[tuple[str, tuple[ContainerEvent, ...]], ...]


def drain(pending: PendingEvents[str, str], limit: int = 1000) -> list[str | Batch[str]]:
    out: list[str | Batch[str]] = []
    while (item := pending.take(limit)) is not None:
        out.append(item)
    return out


def actions_of(entries: Entries) -> dict[str, list[str]]:
    return {container: [e.action for e in events] for container, events in entries}


# --- merging -------------------------------------------------------------------------------------------------


def test_repeats_collapse_to_the_latest_place() -> None:
    pending: PendingEvents[str, str] = PendingEvents()
    for t, action in enumerate(["start", "health_status: healthy", "start", "die", "start", "die", "start"]):
        pending.add_event(1, "client", ev("a", action, t))
    assert pending.pending_containers == 1 and pending.pending_events == 3
    [batch] = drain(pending)
    assert isinstance(batch, Batch)
    assert batch.generation == 1 and batch.context == "client" and not batch.relist
    [(container, events)] = batch.containers
    assert container == "a"
    assert [(e.action, e.time_nano) for e in events] == [("health_status: healthy", 1), ("die", 5), ("start", 6)]
    assert pending.merged == 4 and pending.received == 7
    assert len(pending) == 0 and pending.pending_events == 0


@pytest.mark.parametrize(
    ("sequence", "expected"),
    [
        (["die", "start"], ["die", "start"]),
        (["start", "die"], ["start", "die"]),
        (["die", "start", "die"], ["start", "die"]),
        (["start", "die", "start"], ["die", "start"]),
        (
            ["kill", "die", "stop", "start", "health_status: healthy"],
            ["kill", "die", "stop", "start", "health_status: healthy"],
        ),
    ],
)
def test_failure_and_recovery_keep_their_order(sequence: list[str], expected: list[str]) -> None:
    pending: PendingEvents[str, str] = PendingEvents()
    for t, action in enumerate(sequence):
        pending.add_event(1, "c", ev("a", action, t))
    [batch] = drain(pending)
    assert isinstance(batch, Batch)
    assert actions_of(batch.containers) == {"a": expected}
    # The container's last action stays last: the worker's re-inspect follows the latest one.
    assert batch.containers[0][1][-1].action == sequence[-1]


def test_equal_attributes_are_shared() -> None:
    pending: PendingEvents[str, str] = PendingEvents()
    for t, action in enumerate(["start", "update", "rename"]):
        pending.add_event(1, "c", ev("a", action, t, {"keepalived.enable": "true", "name": "x"}))
    pending.add_event(1, "c", ev("a", "die", 9, {"keepalived.enable": "true", "name": "x", "exitCode": "1"}))
    [batch] = drain(pending)
    assert isinstance(batch, Batch)
    events = batch.containers[0][1]
    assert events[0].attributes is events[1].attributes is events[2].attributes
    assert events[3].attributes["exitCode"] == "1"


def test_actions_per_container_are_bounded_but_failures_stay() -> None:
    pending: PendingEvents[str, str] = PendingEvents(max_actions=10)
    pending.add_event(1, "c", ev("a", "die", 0))
    pending.add_event(1, "c", ev("a", "health_status: unhealthy", 1))
    for n in range(1000):
        pending.add_event(1, "c", ev("a", f"odd-action-{n}", n + 2))
    assert pending.pending_events == 10
    [batch] = drain(pending)
    assert isinstance(batch, Batch)
    actions = actions_of(batch.containers)["a"]
    assert actions[:2] == ["die", "health_status: unhealthy"]
    assert actions[-1] == "odd-action-999"


# --- order: failures first, control items and generations in place -------------------------------------------


def test_containers_come_in_arrival_order_but_failures_first() -> None:
    pending: PendingEvents[str, str] = PendingEvents()
    for n in range(5):
        pending.add_event(1, "c", ev(cid(n), "start"))
    pending.add_event(1, "c", ev(cid(3), "die"))
    pending.add_event(1, "c", ev(cid(1), "health_status: unhealthy"))
    pending.add_event(1, "c", ev(cid(0), "update"))  # a later event keeps the container's place
    [batch] = drain(pending)
    assert isinstance(batch, Batch)
    assert [c for c, _ in batch.containers] == [cid(3), cid(1), cid(0), cid(2), cid(4)]
    assert actions_of(batch.containers)[cid(3)] == ["start", "die"]
    assert actions_of(batch.containers)[cid(0)] == ["start", "update"]


def test_a_die_after_100000_events_is_handed_out_first() -> None:
    pending: PendingEvents[str, str] = PendingEvents()
    for n in range(100_000):
        pending.add_event(1, "c", ev(cid(n % 2000), NON_FAILURES[n % len(NON_FAILURES)], n))
    pending.add_event(1, "c", ev(cid(1234), "die", 100_000))
    # Between two inspects the worker asks for failures only: the die is there at once, with what preceded it.
    urgent = pending.take_urgent(1, 500)
    assert [c for c, _ in urgent] == [cid(1234)]
    assert urgent[0][1][-1].action == "die"
    assert pending.take_urgent(1, 500) == ()
    # ...and a plain take would also have put it first.
    pending.add_event(1, "c", ev(cid(7), "oom", 100_001))
    batch = pending.take(500)
    assert isinstance(batch, Batch)
    assert batch.containers[0][0] == cid(7) and len(batch.containers) == 500


def test_control_items_and_generations_keep_their_order() -> None:
    pending: PendingEvents[str, str] = PendingEvents()
    pending.add_control("connected-1")
    pending.add_event(1, "c1", ev("a", "start"))
    pending.add_event(1, "c1", ev("b", "start"))
    pending.add_control("disconnected-1")
    pending.add_control("connected-2")
    pending.add_event(2, "c2", ev("a", "die"))
    pending.add_event(2, "c2", ev("c", "start"))
    # Urgent failures of generation 2 must wait for generation 1 and the control items before them.
    assert pending.take_urgent(2, 10) == ()
    assert pending.take_urgent(1, 10) == ()  # generation 1 has no failure
    assert pending.take(10) == "connected-1"
    assert pending.take_urgent(2, 10) == ()
    first = pending.take(10)
    assert isinstance(first, Batch) and first.generation == 1 and first.context == "c1"
    assert actions_of(first.containers) == {"a": ["start"], "b": ["start"]}
    assert pending.take(10) == "disconnected-1"
    assert pending.take(10) == "connected-2"
    assert actions_of(pending.take_urgent(2, 10)) == {"a": ["die"]}
    second = pending.take(10)
    assert isinstance(second, Batch) and second.generation == 2 and second.context == "c2"
    assert actions_of(second.containers) == {"c": ["start"]}
    assert pending.take(10) is None and len(pending) == 0


def test_events_after_a_drained_segment_open_a_new_one_in_order() -> None:
    pending: PendingEvents[str, str] = PendingEvents()
    pending.add_event(1, "c", ev("a", "start"))
    assert isinstance(pending.take(10), Batch)
    pending.add_event(1, "c", ev("a", "die"))
    pending.add_control("disconnected-1")
    items = drain(pending)
    assert isinstance(items[0], Batch) and actions_of(items[0].containers) == {"a": ["die"]}
    assert items[1:] == ["disconnected-1"]


def test_batches_are_limited_and_cover_everything_once() -> None:
    pending: PendingEvents[str, str] = PendingEvents()
    for n in range(2500):
        pending.add_event(1, "c", ev(cid(n), "start"))
    batches = drain(pending, limit=1000)
    assert [len(b.containers) for b in batches if isinstance(b, Batch)] == [1000, 1000, 500]
    seen = [c for b in batches if isinstance(b, Batch) for c, _ in b.containers]
    assert seen == [cid(n) for n in range(2500)]


# --- the storm: bounded, failures never lost ------------------------------------------------------------------


def test_storm_of_600000_events_on_2000_containers_is_bounded_and_keeps_every_failure() -> None:
    pending: PendingEvents[str, str] = PendingEvents()
    actions = (*NON_FAILURES, "health_status: unhealthy", "die")
    dies: dict[str, int] = {}
    for n in range(600_000):
        container = cid(n % 2000)
        action = actions[(n // 2000) % len(actions)] if n % 997 else "die"
        if action == "die":
            dies[container] = n
        pending.add_event(1, "c", ev(container, action, n))
    # Bounded by containers x distinct actions, whatever the number of events.
    assert pending.pending_containers == 2000
    assert pending.pending_events <= 2000 * len(actions)
    assert pending.received == 600_000
    batches = drain(pending)
    got = {c: events for b in batches if isinstance(b, Batch) for c, events in b.containers}
    assert len(got) == 2000
    for container, last_die in dies.items():
        die = [e for e in got[container] if e.action == "die"]
        assert die and die[0].time_nano == last_die, container
    # The last action of each container is the last one that arrived for it.
    for n in range(600_000 - 2000, 600_000):
        container = cid(n % 2000)
        assert got[container][-1].time_nano == n


def test_storm_memory_is_small() -> None:
    tracemalloc.start()
    try:
        pending: PendingEvents[str, str] = PendingEvents()
        for n in range(200_000):
            attributes = {"keepalived.enable": "true", "name": f"c{n % 2000}", "image": "busybox"}
            pending.add_event(1, "c", ev(cid(n % 2000), NON_FAILURES[(n // 2000) % len(NON_FAILURES)], n, attributes))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert pending.pending_events == 2000 * len(NON_FAILURES)
    assert peak < 12 * 2**20, f"peak {peak / 2**20:.1f} MiB"


def test_overflow_goes_to_a_relist_and_failures_evict_plain_containers() -> None:
    pending: PendingEvents[str, str] = PendingEvents(max_containers=4)
    for n in range(6):
        pending.add_event(1, "c", ev(cid(n), "start"))
    assert pending.pending_containers == 4 and pending.overflowed == 2
    pending.add_event(1, "c", ev(cid(10), "die"))  # a failure evicts the oldest container without one
    assert pending.pending_containers == 4
    items = drain(pending)
    assert len(items) == 1 and isinstance(items[0], Batch)
    assert items[0].relist is True
    assert [c for c, _ in items[0].containers] == [cid(10), cid(1), cid(2), cid(3)]


def test_failures_are_kept_up_to_twice_the_bound_then_left_to_the_relist() -> None:
    pending: PendingEvents[str, str] = PendingEvents(max_containers=3)
    for n in range(8):
        pending.add_event(1, "c", ev(cid(n), "die"))
    assert pending.pending_containers == 6 and pending.failures_overflowed == 2
    batch = pending.take(100)
    assert isinstance(batch, Batch) and batch.relist and len(batch.containers) == 6


def test_a_relist_batch_comes_even_when_nothing_was_stored() -> None:
    pending: PendingEvents[str, str] = PendingEvents(max_containers=1)
    pending.add_event(1, "c", ev("a", "start"))
    pending.add_control("disconnected-1")
    pending.add_event(2, "c2", ev("b", "start"))  # no room: generation 2 only gets a relist
    assert len(pending) == 3
    items = drain(pending)
    assert isinstance(items[0], Batch) and not items[0].relist
    assert items[1] == "disconnected-1"
    assert isinstance(items[2], Batch) and items[2].relist and items[2].containers == () and items[2].generation == 2


def test_fail_actions_are_what_health_acts_on() -> None:
    assert {"die", "stop", "kill", "pause", "destroy", "oom", "health_status: unhealthy"} == FAIL_ACTIONS


# --- EventQueue: the locked, blocking wrapper -----------------------------------------------------------------


def test_event_queue_blocks_wakes_and_tracks_waiting() -> None:
    q = EventQueue()
    assert q.get(timeout=0.01) is None
    assert q.waiting_since() is None
    got: list[object] = []
    consumer = threading.Thread(target=lambda: got.append(q.get()))
    consumer.start()
    time.sleep(0.05)
    client = cast(docker.DockerClient, object())
    q.put_event(1, client, ev("a", "die"))
    consumer.join(2)
    assert len(got) == 1 and isinstance(got[0], Batch)
    assert q.waiting_since() is None
    q.put_event(1, client, ev("a", "start"))
    q.put_event(1, client, ev("b", "die"))
    waiting = q.waiting_since()
    assert waiting is not None
    assert actions_of(q.take_urgent(1)) == {"b": ["die"]}
    assert q.stats()["pending_containers"] == 1


def test_event_queue_under_concurrent_producer() -> None:
    q = EventQueue()
    client = cast(docker.DockerClient, object())
    total = 50_000

    def produce() -> None:
        for n in range(total):
            q.put_event(1, client, ev(cid(n % 100), "start" if n % 2 else "die", n))

    producer = threading.Thread(target=produce)
    producer.start()
    last: dict[str, int] = {}
    while producer.is_alive() or len(q):
        item = q.get(timeout=0.1)
        if isinstance(item, Batch):
            for container, events in item.containers:
                times = [e.time_nano for e in events]
                assert times == sorted(times)
                assert times[0] > last.get(container, -1)
                last[container] = times[-1]
    producer.join()
    assert all(last[cid(n % 100)] >= n for n in range(total - 100, total))


# --- the watcher with a fake engine ---------------------------------------------------------------------------

_END = object()


class FakeStream:
    def __init__(self) -> None:
        self._items: queue.Queue[object] = queue.Queue()

    def push(self, raw: object) -> None:
        self._items.put(raw)

    def __iter__(self) -> Iterator[Any]:
        while (item := self._items.get()) is not _END:
            yield item

    def close(self) -> None:
        self._items.put(_END)


class FakeAPI:
    base_url = "fake://engine"

    def __init__(self, engine: FakeEngine) -> None:
        self._engine = engine

    def inspect_container(self, container_id: str) -> dict[str, Any]:
        running = self._engine.running.get(container_id)
        if running is None:
            raise docker.errors.NotFound(f"no container {container_id}")
        return {"Id": container_id, "Name": "/x", "State": {"Running": running}, "Config": {"Labels": LABELS}}

    def containers(self, all: bool = False, filters: object = None) -> list[dict[str, Any]]:
        return [{"Id": c, "Labels": LABELS} for c in self._engine.running]


class FakeEngine:
    """A client factory: every client shares the same containers; each subscription is a FakeStream."""

    def __init__(self) -> None:
        self.running: dict[str, bool] = {}
        self.streams: list[FakeStream] = []
        self.reachable = True

    def __call__(self) -> docker.DockerClient:
        return cast(docker.DockerClient, FakeClient(self))

    def event(self, container_id: str, action: str, t: int) -> dict[str, Any]:
        return {
            "Type": "container",
            "Action": action,
            "timeNano": t,
            "Actor": {"ID": container_id, "Attributes": LABELS},
        }

    def push(self, raw: object) -> None:
        self.streams[-1].push(raw)


class FakeClient:
    def __init__(self, engine: FakeEngine) -> None:
        self._engine = engine
        self.api = FakeAPI(engine)

    def ping(self) -> bool:
        if not self._engine.reachable:
            raise ConnectionError("engine down")
        return True

    def events(self, **_: object) -> FakeStream:
        stream = FakeStream()
        self._engine.streams.append(stream)
        return stream

    def close(self) -> None:
        pass


class Recorder:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.events: list[ContainerEvent] = []
        self.snapshots: list[Snapshot] = []

    def on_event(self, event: ContainerEvent) -> None:
        with self.lock:
            self.events.append(event)

    def on_snapshot(self, snapshot: Snapshot) -> None:
        with self.lock:
            self.snapshots.append(snapshot)

    def actions(self, container_id: str) -> list[str]:
        with self.lock:
            return [e.action for e in self.events if e.id == container_id]


def wait_for(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.005)


@pytest.fixture
def watched() -> Iterator[Callable[..., tuple[DockerWatcher, FakeEngine, Recorder]]]:
    watchers: list[DockerWatcher] = []

    def make(engine: FakeEngine | None = None, **kwargs: Any) -> tuple[DockerWatcher, FakeEngine, Recorder]:
        engine = engine or FakeEngine()
        recorder = Recorder()
        kwargs.setdefault("retry_initial", 0.01)
        kwargs.setdefault("retry_max", 0.05)
        watcher = DockerWatcher(
            on_snapshot=recorder.on_snapshot,
            selector={},
            label_prefix="keepalived.",
            on_event=recorder.on_event,
            client_factory=engine,
            **kwargs,
        )
        watchers.append(watcher)
        watcher.start()
        return watcher, engine, recorder

    yield make
    for watcher in watchers:
        watcher.stop()


GARBAGE: list[object] = [
    None,
    "die",
    17,
    [1, 2],
    {},
    {"Action": "die"},
    {"id": "abc"},
    {"Actor": "x", "Action": "die", "time": "yesterday"},
    {"Actor": {"ID": 5}, "Action": "die", "timeNano": "soon"},
    {"Type": "container", "Action": "die", "Actor": {"ID": "zz", "Attributes": ["not", "a", "dict"]}, "time": "x"},
]


def test_garbage_events_do_not_stop_the_watcher(
    watched: Callable[..., tuple[DockerWatcher, FakeEngine, Recorder]],
) -> None:
    engine = FakeEngine()
    engine.running[cid(1)] = True
    watcher, engine, recorder = watched(engine)
    wait_for(lambda: cid(1) in watcher.snapshot.containers)
    for raw in GARBAGE:
        engine.push(raw)
    engine.running[cid(1)] = False
    engine.push(engine.event(cid(1), "die", 10))
    wait_for(lambda: "die" in recorder.actions(cid(1)) and not watcher.snapshot.containers[cid(1)].running)
    # The garbage with a usable id and action ("zz" die, odd attributes) is delivered only if in scope: it is not.
    assert all(e.id == cid(1) for e in recorder.events)
    assert watcher.problem() is None
    assert len(engine.streams) == 1  # no reconnect was needed either


def test_die_then_start_reaches_on_event_in_order_and_the_snapshot_says_running(
    watched: Callable[..., tuple[DockerWatcher, FakeEngine, Recorder]],
) -> None:
    watcher, engine, recorder = watched()
    wait_for(lambda: watcher.snapshot.engine_reachable)
    engine.running[cid(2)] = True
    for t, action in enumerate(["create", "start", "die", "start"]):
        engine.push(engine.event(cid(2), action, t + 1))
    wait_for(lambda: cid(2) in watcher.snapshot.containers and recorder.actions(cid(2))[-1:] == ["start"])
    actions = recorder.actions(cid(2))
    assert actions.index("die") < len(actions) - 1 and actions[-1] == "start"
    assert watcher.snapshot.containers[cid(2)].running


def test_a_crashing_worker_is_restarted_and_relists(
    watched: Callable[..., tuple[DockerWatcher, FakeEngine, Recorder]], monkeypatch: pytest.MonkeyPatch
) -> None:
    import supervisor.adapters.docker_watch as docker_watch

    monkeypatch.setattr(docker_watch, "_RESTART_INITIAL", 0.01)
    watcher, engine, recorder = watched()
    wait_for(lambda: watcher.snapshot.engine_reachable)
    original = watcher._deliver
    calls = itertools.count()

    def flaky(*args: Any) -> None:
        if next(calls) == 0:
            raise RuntimeError("bug")
        original(*args)

    monkeypatch.setattr(watcher, "_deliver", flaky)
    engine.running[cid(3)] = True
    engine.push(engine.event(cid(3), "start", 1))  # lost to the crash: the relist must still find the container
    wait_for(lambda: cid(3) in watcher.snapshot.containers)
    engine.push(engine.event(cid(3), "die", 2))
    wait_for(lambda: recorder.actions(cid(3)) == ["die"])
    assert watcher.problem() is None


def test_a_thread_whose_loop_dies_is_restarted(
    watched: Callable[..., tuple[DockerWatcher, FakeEngine, Recorder]], monkeypatch: pytest.MonkeyPatch
) -> None:
    import supervisor.adapters.docker_watch as docker_watch

    monkeypatch.setattr(docker_watch, "_RESTART_INITIAL", 0.01)
    engine = FakeEngine()
    watcher = DockerWatcher(on_snapshot=lambda s: None, selector={}, label_prefix="keepalived.", client_factory=engine)
    real_get = watcher._queue.get
    calls = itertools.count()

    def broken_get(*args: Any, **kwargs: Any) -> Any:
        if next(calls) < 2:
            raise RuntimeError("queue bug")
        return real_get(*args, **kwargs)

    monkeypatch.setattr(watcher._queue, "get", broken_get)
    watcher.start()
    try:
        wait_for(lambda: watcher.snapshot.engine_reachable)
        assert watcher._crashes.get("docker-watch-worker") == 2
        assert watcher.problem() is None
    finally:
        watcher.stop()


def test_problem_reports_a_dead_thread(watched: Callable[..., tuple[DockerWatcher, FakeEngine, Recorder]]) -> None:
    watcher, _, _ = watched()
    wait_for(lambda: watcher.snapshot.engine_reachable)
    dead = threading.Thread(target=lambda: None, name="docker-watch-watchdog")
    dead.start()
    dead.join()
    watcher._threads[2] = dead
    assert watcher.problem() == "docker watcher thread docker-watch-watchdog is dead"


def test_problem_reports_a_stuck_worker(watched: Callable[..., tuple[DockerWatcher, FakeEngine, Recorder]]) -> None:
    entered, release = threading.Event(), threading.Event()

    def hang(event: ContainerEvent) -> None:
        entered.set()
        release.wait(10)

    watcher, engine, _ = watched(stuck_after=0.2)
    wait_for(lambda: watcher.snapshot.engine_reachable)
    watcher._on_event = hang
    try:
        engine.running[cid(4)] = True
        engine.push(engine.event(cid(4), "start", 1))
        assert entered.wait(5)  # the worker hangs in on_event
        engine.push(engine.event(cid(5), "start", 2))  # and this waits behind it
        wait_for(lambda: len(watcher._queue) == 1)
        assert watcher.problem() is None
        wait_for(lambda: (watcher.problem() or "").startswith("docker watcher worker stuck: 1 item(s) waiting"))
    finally:
        release.set()
    wait_for(lambda: watcher.problem() is None)


def test_problem_reports_an_unreachable_engine(
    watched: Callable[..., tuple[DockerWatcher, FakeEngine, Recorder]],
) -> None:
    engine = FakeEngine()
    engine.reachable = False
    watcher, _, _ = watched(engine, unreachable_after=0.2)
    assert watcher.problem() is None
    wait_for(lambda: (watcher.problem() or "").startswith("docker engine unreachable since "))
    engine.reachable = True
    wait_for(lambda: watcher.snapshot.engine_reachable)
    assert watcher.problem() is None
    # A disconnect starts the clock again.
    engine.reachable = False
    engine.streams[-1].close()
    wait_for(lambda: (watcher.problem() or "").startswith("docker engine unreachable since "))


def test_failures_arriving_during_delivery_jump_ahead_but_keep_each_containers_order() -> None:
    delivered: list[tuple[str, str]] = []
    watcher = DockerWatcher(on_snapshot=lambda s: None, selector={}, label_prefix="keepalived.")
    client = cast(docker.DockerClient, object())

    def on_event(event: ContainerEvent) -> None:
        delivered.append((event.id, event.action))
        if len(delivered) == 1:  # while the batch is being delivered, failures arrive for "c" (ahead) and "x"
            watcher._queue.put_event(1, client, ev("c", "die"))
            watcher._queue.put_event(1, client, ev("x", "kill"))

    watcher._on_event = on_event
    entries = tuple((name, (ev(name, "start"),)) for name in ("a", "b", "c", "d"))
    todo: dict[str, str] = {}
    watcher._deliver(entries, lambda _: True, todo, 1)
    assert delivered == [("a", "start"), ("c", "start"), ("c", "die"), ("x", "kill"), ("b", "start"), ("d", "start")]
    assert todo == {"a": "start", "c": "die", "x": "kill", "b": "start", "d": "start"}
