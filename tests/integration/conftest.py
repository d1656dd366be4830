"""Fixtures for integration tests: a namespace lab per test, always torn down."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from lab.hosts import HostLab
from lab.netns import Lab
from tests.conftest import require_root_netns
from tests.integration.dockerlab import ContainerLab, engine_client, require_engine


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    require_root_netns()
    lab = Lab(tmp_path)
    try:
        yield lab
    finally:
        lab.close()


@pytest.fixture
def docker_lab() -> Iterator[ContainerLab]:
    """Labelled busybox containers for one test (``kat.test=<run id>``), all removed afterwards."""
    require_engine()
    lab = ContainerLab(engine_client())
    try:
        yield lab
    finally:
        lab.close()


@pytest.fixture
def hostlab(tmp_path: Path) -> Iterator[HostLab]:
    """Simulated hosts on the real engine (lab.hosts), all removed afterwards."""
    require_engine()
    lab = HostLab(tmp_path)
    try:
        yield lab
    finally:
        lab.close()
