"""Fixtures for integration tests: a namespace lab per test, always torn down."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import require_root_netns
from tests.integration.netlab import Lab


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    require_root_netns()
    lab = Lab(tmp_path)
    try:
        yield lab
    finally:
        lab.close()
