"""Test-side helpers for the real Docker engine: the lab's containers (lab.containers) plus the pytest policy,
skip with a reason when the engine is missing, fail instead under REQUIRE_INTEGRATION=1."""

from __future__ import annotations

import os

import docker
import docker.errors
import pytest

from lab.containers import (
    ContainerLab,
    dockerd_pid,
    dockerd_up,
    engine_problem,
    ensure_dockerd_running,
    foreign_running_containers,
    ids,
    run_parallel,
    start_dockerd,
    stop_dockerd,
)
from lab.engine import IMAGE, REPO, SUPERVISOR_IMAGE, TEST_LABEL, engine_client, ensure_image, new_run_id, wait_until
from tests.conftest import require

__all__ = [
    "IMAGE",
    "REPO",
    "TEST_LABEL",
    "ContainerLab",
    "dockerd_pid",
    "dockerd_up",
    "engine_client",
    "ensure_dockerd_running",
    "ensure_image",
    "ids",
    "new_run_id",
    "run_parallel",
    "start_dockerd",
    "stop_dockerd",
    "wait_until",
]


def require_engine_to_ourselves(client: docker.DockerClient, run_id: str) -> None:
    """Skip (fail under REQUIRE_INTEGRATION=1) a test that stops or freezes dockerd while others' containers run."""
    others = foreign_running_containers(client, run_id)
    if not others:
        return
    reason = f"would disturb {len(others)} running container(s) of others by stopping dockerd: {', '.join(others[:5])}"
    if os.environ.get("REQUIRE_INTEGRATION") == "1":
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason)


def require_engine() -> None:
    """Skip the calling test module when the engine is unusable, or fail under REQUIRE_INTEGRATION=1."""
    problem = engine_problem()
    require(problem is None, problem or "")


def require_image() -> None:
    """Skip (fail under REQUIRE_INTEGRATION=1) when the supervisor image was not built from the Dockerfile."""
    require_engine()
    try:
        engine_client().images.get(SUPERVISOR_IMAGE)
        built = True
    except docker.errors.ImageNotFound:
        built = False
    require(built, f"the image {SUPERVISOR_IMAGE} is not built (scripts/test.sh builds it from the Dockerfile)")
