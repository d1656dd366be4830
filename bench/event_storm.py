"""Event-storm benchmark: 100,000 Docker events for 2,000 containers, then one `die` -> the track file says "1".

The real DockerWatcher reads from a fake engine client whose event stream yields the storm as fast as Python can
produce it (ping ok, inspect and list answer from memory), and feeds the real HealthMonitor, which writes a real track
file in a temporary directory: one instance "VI_1", policy "all", one member per container (docker_ok, no probe).
Right behind the storm comes one `die` for one container. Measured:

* die -> track file: from the moment the fake stream hands the die to the watcher's reader to the moment the track
  file reads "1" (polled every 0.2 ms; the time the HealthMonitor's on_verdict fired is shown too);
* the peak RSS of the whole process (getrusage ru_maxrss), which includes the interpreter, docker-py and pyroute2;
* how long the watcher took to drain the storm, and how many events the queue merged.

Goal: die -> track file under 1 s, peak RSS under 100 MB. Prints a table and writes bench/results/event_storm.json.
Usage: python -m bench.event_storm [--events N] [--containers N]
"""

from __future__ import annotations

import argparse
import json
import logging
import resource
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import docker
import docker.errors

from supervisor.adapters.docker_watch import ContainerEvent, DockerWatcher
from supervisor.adapters.health import HealthMonitor
from supervisor.core.checks import Member
from supervisor.core.snapshot import Snapshot

RESULTS = Path(__file__).resolve().parent / "results"
PREFIX = "keepalived."
LABELS = {f"{PREFIX}enable": "true", f"{PREFIX}vip": "198.51.100.10"}
STORM_ACTIONS = ("health_status: healthy", "update", "start", "rename", "unpause")
INSTANCE = "VI_1"


def container_id(n: int) -> str:
    return f"{n:064x}"


class StormStream:
    """The event stream: the storm, then (once told) the die, then nothing until closed."""

    def __init__(self, bench: FakeEngine) -> None:
        self._bench = bench
        self._closed = threading.Event()

    def __iter__(self) -> Iterator[dict[str, Any]]:
        bench = self._bench
        base = time.time_ns()
        for n in range(bench.events):
            cid = container_id(n % bench.containers)
            yield {
                "status": STORM_ACTIONS[n % len(STORM_ACTIONS)],
                "id": cid,
                "from": "busybox",
                "Type": "container",
                "Action": STORM_ACTIONS[(n // bench.containers) % len(STORM_ACTIONS)],
                "Actor": {
                    "ID": cid,
                    "Attributes": {**LABELS, "image": "busybox", "name": f"storm-{n % bench.containers}"},
                },
                "scope": "local",
                "time": (base + n) // 1_000_000_000,
                "timeNano": base + n,
            }
        bench.storm_sent = time.monotonic()
        victim = container_id(bench.victim)
        bench.running[victim] = False
        die = {
            "status": "die",
            "id": victim,
            "Type": "container",
            "Action": "die",
            "Actor": {"ID": victim, "Attributes": {**LABELS, "exitCode": "137", "name": f"storm-{bench.victim}"}},
            "time": (base + bench.events) // 1_000_000_000,
            "timeNano": base + bench.events,
        }
        bench.die_sent = time.monotonic()
        yield die
        self._closed.wait()

    def close(self) -> None:
        self._closed.set()


class FakeAPI:
    base_url = "fake://storm"

    def __init__(self, bench: FakeEngine) -> None:
        self._bench = bench

    def inspect_container(self, cid: str) -> dict[str, Any]:
        running = self._bench.running.get(cid)
        if running is None:
            raise docker.errors.NotFound(cid)
        return {
            "Id": cid,
            "Name": f"/storm-{int(cid, 16)}",
            "Created": "2026-01-01T00:00:00.000000001Z",
            "State": {"Running": running, "Paused": False},
            "Config": {"Labels": LABELS},
            "HostConfig": {"NetworkMode": "default"},
            "NetworkSettings": {"Ports": {}, "Networks": {"bridge": {"IPAddress": "172.17.0.2"}}},
        }

    def containers(self, all: bool = False, filters: object = None) -> list[dict[str, Any]]:
        return [{"Id": cid, "Labels": LABELS, "State": "running"} for cid in self._bench.running]


class FakeEngine:
    def __init__(self, events: int, containers: int) -> None:
        self.events = events
        self.containers = containers
        self.victim = containers * 5 // 8
        self.running = {container_id(n): True for n in range(containers)}
        self.storm_sent: float | None = None
        self.die_sent: float | None = None
        self.subscriptions = 0

    def client(self) -> docker.DockerClient:
        return cast(docker.DockerClient, FakeClient(self))


class FakeClient:
    def __init__(self, bench: FakeEngine) -> None:
        self._bench = bench
        self.api = FakeAPI(bench)

    def ping(self) -> bool:
        return True

    def events(self, **_: object) -> StormStream:
        self._bench.subscriptions += 1
        return StormStream(self._bench)

    def close(self) -> None:
        pass


def mib(kib: int) -> float:
    return kib / 1024


def run(events: int, containers: int) -> dict[str, Any]:
    bench = FakeEngine(events, containers)
    verdict_at: list[float] = []
    health = HealthMonitor(
        "all", on_verdict=lambda instance, ok, reason: None if ok else verdict_at.append(time.monotonic())
    )
    seen_events = [0]
    drained_at: list[float] = []

    def on_event(event: ContainerEvent) -> None:
        seen_events[0] += 1
        health.on_container_event(event.id, event.action)

    def on_snapshot(snapshot: Snapshot) -> None:
        pass

    with tempfile.TemporaryDirectory(prefix="event-storm-") as tmp:
        track = Path(tmp) / "VI_1.track"
        members = tuple(
            Member(
                key=container_id(n),
                name=f"storm-{n}",
                instance=INSTANCE,
                docker_ok=True,
                docker_reason="running",
                probe=None,
            )
            for n in range(containers)
        )
        health.start()
        health.update({INSTANCE: members}, {INSTANCE: track})
        assert track.read_text() == "0\n", "the track file must start healthy"
        watcher = DockerWatcher(
            on_snapshot=on_snapshot, selector={}, label_prefix=PREFIX, on_event=on_event, client_factory=bench.client
        )
        started = time.monotonic()
        watcher.start()
        flipped: float | None = None
        deadline = started + 120
        while time.monotonic() < deadline:
            if flipped is None and bench.die_sent is not None and track.read_text() == "1\n":
                flipped = time.monotonic()
            if flipped is not None and not drained_at:
                stats = watcher.queue_stats()
                if stats["received"] >= events + 1 and stats["pending_containers"] == 0:
                    drained_at.append(time.monotonic())
                    break
            time.sleep(0.0002)
        stats = watcher.queue_stats()
        problem = watcher.problem()
        watcher.stop()
        health.stop()
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if flipped is None or bench.die_sent is None:
        raise SystemExit("the track file never flipped to 1 within 120 s")
    return {
        "events": events,
        "containers": containers,
        "die_to_track_file_s": flipped - bench.die_sent,
        "die_to_on_verdict_s": verdict_at[0] - bench.die_sent if verdict_at else None,
        "storm_sent_s": (bench.storm_sent or started) - started,
        "drained_s": drained_at[0] - started if drained_at else None,
        "peak_rss_mib": round(mib(peak_kib), 1),
        "on_event_calls": seen_events[0],
        "queue": stats,
        "watcher_problem": problem,
        "python": sys.version.split()[0],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--containers", type=int, default=2_000)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    result = run(args.events, args.containers)
    rows = [
        ("events / containers", f"{result['events']:,} / {result['containers']:,}"),
        ("storm handed to the watcher in", f"{result['storm_sent_s']:.2f} s"),
        ("die -> track file '1'", f"{result['die_to_track_file_s'] * 1000:.1f} ms  (goal < 1000 ms)"),
        (
            "die -> on_verdict",
            f"{result['die_to_on_verdict_s'] * 1000:.1f} ms" if result["die_to_on_verdict_s"] is not None else "-",
        ),
        ("storm drained after", f"{result['drained_s']:.2f} s" if result["drained_s"] is not None else "-"),
        ("on_event calls", f"{result['on_event_calls']:,}"),
        ("events merged in the queue", f"{result['queue']['merged']:,} of {result['queue']['received']:,}"),
        ("peak RSS", f"{result['peak_rss_mib']:.1f} MiB  (goal < 100 MB)"),
        ("watcher problem", str(result["watcher_problem"])),
    ]
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "event_storm.json").write_text(json.dumps(result, indent=2) + "\n")
    ok = result["die_to_track_file_s"] < 1.0 and result["peak_rss_mib"] * 1024 * 1024 < 100e6
    print(f"wrote {RESULTS / 'event_storm.json'}: {'within' if ok else 'OUTSIDE'} the goals")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
