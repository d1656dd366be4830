"""The README's first command, run as a user would: it must work and leave nothing behind."""

from __future__ import annotations

import subprocess

from lab.engine import REPO, TEST_LABEL, engine_client
from tests.integration.dockerlab import require_engine


def test_demo_runs_and_cleans_up() -> None:
    require_engine()
    result = subprocess.run(
        ["bash", str(REPO / "scripts" / "demo.sh")],
        capture_output=True,
        text=True,
        timeout=900,
        stdin=subprocess.DEVNULL,
    )
    print(result.stdout)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert any("held by h1" in line for line in lines)
    assert any(line.startswith("VIP moved to h2 within") for line in lines)
    assert any("client answered by the backup's front end" in line and "NEVER" not in line for line in lines)
    assert any("VIP back on h1" in line for line in lines)
    assert lines[-1] == "cleaned up: containers and networks removed"
    client = engine_client()
    assert not client.containers.list(all=True, filters={"label": TEST_LABEL}), "the demo left containers behind"
    assert not client.networks.list(filters={"label": TEST_LABEL}), "the demo left networks behind"
