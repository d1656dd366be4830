"""Watcher benchmark: Docker event -> installed keepalived config, and keepalived reloads per container storm.

A supervisor from this checkout runs in a network namespace of its own (a simulated host) and watches the real
engine. Latency: for each of N labelled containers (each defining its own VRRP instance), the time from the return of
the engine's timestamp of its create event to the installed config containing the instance (polled every ms). Storm: 200 labelled containers started and then
removed (16 API threads), counting keepalived reloads. Prints figures and writes bench/results/reconcile.json.
Usage: python -m bench.reconcile [--starts 20] [--storm 200]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from lab.containers import ContainerLab
from lab.engine import engine_client, wait_until
from lab.netns import Lab

RESULTS = Path(__file__).resolve().parent / "results"


def installed(config: Path, marker: str) -> Callable[[], bool]:
    return lambda: config.exists() and marker in config.read_text()


def own(vrid: int, vip: str) -> dict[str, str]:
    return {"keepalived.vip": vip, "keepalived.vrid": str(vrid), "keepalived.check": "none"}


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--starts", type=int, default=20)
    parser.add_argument("--storm", type=int, default=200)
    args = parser.parse_args()
    starts, storm = max(1, min(args.starts, 100)), max(1, min(args.storm, 250))
    with tempfile.TemporaryDirectory(prefix="kat-bench-") as workdir:
        lab = Lab(Path(workdir))
        containers = ContainerLab(engine_client())
        try:
            node = lab.add_node("a", 11)
            node.start_supervisor({"DOCKER_HOST": "unix:///var/run/docker.sock", "RECONCILE_MIN_WAIT": "0.1",
                                   "LABEL_SELECTOR": f"kat.test={containers.run_id}"})  # fmt: skip
            wait_until(lambda: node.status().get("engine_reachable") is True, 30, "the supervisor watching")
            config = node.run_dir / "keepalived.conf"
            latencies = []
            for index in range(starts):
                before = time.time()
                # Created, not started: the create event alone adds the instance (a stopped container keeps its
                # instance, in FAULT), so nothing else falls into the debounce window of the measurement.
                created = containers.create(own(index + 1, f"198.51.100.{150 + index}"), start=False)
                marker = f"virtual_router_id {index + 1}\n"
                wait_until(installed(config, marker), 30, "the instance installed", interval=0.001)
                seen = time.time()
                # The engine's own timestamp of the container's first event (create), same clock as ours.
                events = containers.client.events(
                    since=int(before) - 1, until=int(seen) + 1, decode=True,
                    filters={"container": created.id or "", "event": "create"},
                )  # fmt: skip
                first = min(int(event["timeNano"]) for event in events) / 1e9
                latencies.append(seen - first)
                print(f"start {index + 1:2d}: installed after {latencies[-1] * 1000:6.1f} ms", flush=True)
            containers.remove_all_labelled()
            wait_until(lambda: "vrrp_instance" not in config.read_text(), 60, "all instances removed")

            reloads_before = node.reloads()
            began = time.monotonic()

            def start(index: int) -> str:
                return containers.create(own(index + 1, f"203.0.113.{index + 1}"), network_mode="none").id or ""

            with ThreadPoolExecutor(16) as pool:
                ids = list(pool.map(start, range(storm)))
            wait_until(lambda: config.read_text().count("vrrp_instance") == storm, 300, "the storm installed")
            with ThreadPoolExecutor(16) as pool:
                list(pool.map(containers.remove, ids))
            wait_until(lambda: "vrrp_instance" not in config.read_text(), 300, "the storm removed")
            storm_reloads = node.reloads() - reloads_before
            storm_seconds = time.monotonic() - began
        finally:
            containers.close()
            lab.close()
    results = {
        "event_to_installed_config_ms": {
            "median": round(statistics.median(latencies) * 1000, 1),
            "p95": round(sorted(latencies)[int(0.95 * (len(latencies) - 1))] * 1000, 1),
            "samples": [round(x * 1000, 1) for x in latencies],
        },
        "storm": {"containers": storm, "reloads": storm_reloads, "seconds": round(storm_seconds, 1)},
    }
    print(f"event -> installed config: median {results['event_to_installed_config_ms']['median']} ms "
          f"over {starts} starts")  # fmt: skip
    print(f"storm of {storm} containers started and removed in {storm_seconds:.1f} s: {storm_reloads} reloads")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "reconcile.json").write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
