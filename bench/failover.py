"""Failover benchmark: `docker kill` of the master's front end -> first client answer from the backup via the VIP.

Two simulated hosts (DESIGN.md), the Rancher case (front ends behind DNAT, no listener on the host), a client on
the same bridge. For each run the bench kills the master's front end and a client process inside the client
container's network namespace connects to VIP:80 every few milliseconds until the backup's front end answers.
Two modes, measured in the same run:

* event: this supervisor's way: the Docker `die` event flips the track file; keepalived goes FAULT at once.
* polling: the old image's way: keepalived runs a vrrp_script TCP check through the DNAT every 1 s, fall 2.

Prints one line per run and a summary, and writes bench/results/failover.json. Bounded: RUNS per mode, each run
at most 20 s. Usage: python -m bench.failover [--runs N]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from lab.engine import wait_until
from lab.hosts import HostLab, SimHost, write_check_script

VIP = "198.51.100.100"
RESULTS = Path(__file__).resolve().parent / "results"


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]


def start_supervisors(lab: HostLab, mode: str) -> tuple[SimHost, SimHost]:
    h1, h2 = lab.hosts
    peers = f"{h1.address},{h2.address}"
    for host, priority in ((h1, 254), (h2, 250)):
        env = {"VIRTUAL_IP": VIP, "VRID": "81", "PRIORITY": str(priority), "UNICAST_PEERS": peers, "ADVERT_INT": "1"}
        if mode == "polling":
            script = write_check_script(
                f"tcp-80-{host.name}", f"exec timeout 1 bash -c 'exec 3<>/dev/tcp/{host.address}/80'"
            )
            env.update({"CHECK_SCRIPT": str(script), "CHECK_INTERVAL": "1", "CHECK_TIMEOUT": "1", "CHECK_FALL": "2",
                        "CHECK_RISE": "1", "LABEL_SELECTOR": "kat.nothing=selected"})  # fmt: skip
        host.start_supervisor(env)
    return h1, h2


def measure_mode(lab: HostLab, mode: str, runs: int) -> list[float]:
    h1, h2 = start_supervisors(lab, mode)
    timings: list[float] = []
    try:
        for run in range(runs):
            wait_until(lambda: h1.has(VIP) and not h2.has(VIP) and lab.fetch(VIP) == "s1", 30, "VIP on h1 serving s1")
            time.sleep(1.0)  # let the restored front end's health settle
            client = lab.client_process("first", VIP, "s2", "20")
            time.sleep(0.3)  # the client is connecting (and answered by s1) before the kill
            killed_at = time.time()
            h1.services[0].kill()
            out, _ = client.communicate(timeout=30)
            if client.returncode != 0:
                raise RuntimeError(f"{mode} run {run}: the backup never answered within 20 s")
            took = float(out.strip()) - killed_at
            timings.append(took)
            print(f"{mode:8s} run {run + 1:2d}: {took * 1000:7.1f} ms", flush=True)
            h1.services[0].start()
    finally:
        for host in (h1, h2):
            if host.supervisor is not None:
                host.supervisor.stop()
                host.supervisor = None
    return timings


def summary(values: list[float]) -> dict[str, float]:
    return {
        "median_ms": round(statistics.median(values) * 1000, 1),
        "p95_ms": round(percentile(values, 0.95) * 1000, 1),
        "min_ms": round(min(values) * 1000, 1),
        "max_ms": round(max(values) * 1000, 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    runs = max(1, min(args.runs, 50))
    results: dict[str, Any] = {"runs": runs, "setup": "2 hosts, Rancher DNAT, unicast VRRP v3, advert 1 s, 254/250"}
    with tempfile.TemporaryDirectory(prefix="kat-bench-") as workdir:
        lab = HostLab(Path(workdir))
        try:
            h1, h2 = lab.add_host("h1", 11), lab.add_host("h2", 12)
            labels = {"keepalived.enable": "true", "keepalived.port": "80", "keepalived.check": "tcp"}
            h1.add_service("s1", labels)
            h2.add_service("s2", labels)
            for mode in ("event", "polling"):
                timings = measure_mode(lab, mode, runs)
                results[mode] = {**summary(timings), "samples_ms": [round(t * 1000, 1) for t in timings]}
        finally:
            lab.close()
    results["speedup_median"] = round(results["polling"]["median_ms"] / results["event"]["median_ms"], 1)
    for mode in ("event", "polling"):
        r = results[mode]
        print(f"{mode:8s} median {r['median_ms']:7.1f} ms  p95 {r['p95_ms']:7.1f} ms  "
              f"min {r['min_ms']:7.1f}  max {r['max_ms']:7.1f}")  # fmt: skip
    print(f"speedup (median): {results['speedup_median']}x")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "failover.json").write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {RESULTS / 'failover.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
