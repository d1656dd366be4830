"""Shared test policy: integration tests skip with a reason when prerequisites are missing, and fail instead when
REQUIRE_INTEGRATION=1 (CI sets it), so a green run never hides a skipped suite."""

from __future__ import annotations

import os
import shutil

import pytest


def require(condition: bool, reason: str) -> None:
    """Skip (or fail under REQUIRE_INTEGRATION=1) when an integration prerequisite is missing."""
    if condition:
        return
    if os.environ.get("REQUIRE_INTEGRATION") == "1":
        pytest.fail(f"integration prerequisite missing (REQUIRE_INTEGRATION=1): {reason}")
    pytest.skip(reason, allow_module_level=True)


def require_root_netns() -> None:
    require(os.geteuid() == 0, "needs root to create network namespaces")
    require(shutil.which("ip") is not None, "needs iproute2 (ip)")
    require(shutil.which("keepalived") is not None, "needs keepalived (apt-get install keepalived)")
