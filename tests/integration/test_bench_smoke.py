"""The benchmark command in its smoke form (one run of each case): it runs end to end and writes every key.

Figures are not judged here (speed goals live in the benchmark); only that the one command still works.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from lab.engine import REPO
from tests.integration.dockerlab import require_engine

KEYS = {
    "service_death_ms": {"ours", "selector", "check_port", "polling", "no_check_failing_ms", "advert_0.1"},
    "host_loss_ms": {"advert_1", "advert_0.2", "bound_advert_1", "bound_advert_0.2"},
    "graceful_ms": {"p50", "p95", "n"},
    "convergence_ms": {"p50", "p95", "n", "debounce_ms"},
    "cold_start_ms": set(),
    "return_ms": {"p50", "p95", "n"},
    "storm": {"containers", "reloads", "exact", "converge_ms", "die_after_burst_ms"},
    "reload_quiet": {"changes", "transitions", "failed_connects"},
    "footprint": {"rss_mb", "idle_cpu_pct", "image_mb", "one_probe"},
    "faults": set(),
}


def test_run_all_smoke_writes_every_key(tmp_path: Path) -> None:
    require_engine()
    out = tmp_path / "results.json"
    done = subprocess.run(
        [sys.executable, "-m", "bench.run_all", "--smoke", "--out", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=1500,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    results = json.loads(out.read_text())
    for key, inner in KEYS.items():
        assert key in results, key
        if inner:
            assert inner <= set(results[key]), (key, inner - set(results[key]))
    errors = {k: v["error"] for k, v in results.items() if isinstance(v, dict) and "error" in v}
    errors |= {f"service_death_ms.{k}": v["error"] for k, v in results["service_death_ms"].items()
               if isinstance(v, dict) and "error" in v}  # fmt: skip
    errors |= {f"host_loss_ms.{k}": v["error"] for k, v in results["host_loss_ms"].items()
               if isinstance(v, dict) and "error" in v}  # fmt: skip
    assert not errors, errors
    assert results["service_death_ms"]["ours"]["n"] == 1
