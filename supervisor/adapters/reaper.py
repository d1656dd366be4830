"""Zombie reaping for when the supervisor is PID 1 in its container.

Orphans (a check script whose keepalived died, anything a `docker exec` left behind) are re-parented to PID 1,
which must collect them. We reap only zombies that are not our own subprocess children, so subprocess.Popen
still sees the real exit status of keepalived and of config tests.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Collection
from pathlib import Path


def reap_orphans(own_children: Collection[int]) -> list[int]:
    """When PID 1, wait for every zombie child not in `own_children`; returns the reaped pids."""
    if os.getpid() != 1:
        return []
    reaped = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) in own_children:
            continue
        try:
            stat = Path(f"/proc/{entry.name}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[-1].split()
        if len(fields) > 1 and fields[0] == "Z" and fields[1] == "1":
            with contextlib.suppress(ChildProcessError):
                os.waitpid(int(entry.name), os.WNOHANG)
                reaped.append(int(entry.name))
    return reaped
