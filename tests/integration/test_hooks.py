"""NOTIFY and NOTIFY_MASTER run, as SCRIPT_USER, when a real keepalived started by the supervisor becomes MASTER."""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from lab.netns import Lab, wait_until

VIP = "198.51.100.100"

# One line per run: the script's tag, the uid it ran as, then each argument after a "|" (so argc is exact).
RECORD = """#!/bin/sh
{{ printf '%s|%s' '{tag}' "$(id -u)"; for arg in "$@"; do printf '|%s' "$arg"; done; printf '\\n'; }} >> {out}
"""


@pytest.fixture
def script_dir() -> Iterator[Path]:
    """A root-owned 0755 directory under /run (keepalived-style security refuses anything under /tmp), with an
    `out` directory the unprivileged script user may write to."""
    root = Path(f"/run/kat-hooks-it-{uuid.uuid4().hex[:12]}")
    root.mkdir(mode=0o755)
    try:
        root.chmod(0o755)
        out = root / "out"
        out.mkdir(mode=0o755)
        nobody = pwd.getpwnam("nobody")
        os.chown(out, nobody.pw_uid, nobody.pw_gid)
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def recorder(root: Path, tag: str) -> str:
    path = root / tag
    path.write_text(RECORD.format(tag=tag, out=root / "out" / "calls"))
    os.chown(path, 0, 0)
    path.chmod(0o755)
    return str(path)


def calls(root: Path) -> list[str]:
    path = root / "out" / "calls"
    return path.read_text().splitlines() if path.exists() else []


def test_notify_scripts_run_as_script_user_on_master(lab: Lab, script_dir: Path) -> None:
    uid = pwd.getpwnam("nobody").pw_uid
    a = lab.add_node("a", 11)
    a.start_supervisor(
        {
            "VIRTUAL_IP": VIP,
            "VRID": "64",
            "PRIORITY": "150",
            "NOTIFY": recorder(script_dir, "notify"),
            "NOTIFY_MASTER": recorder(script_dir, "notify-master"),
            "SCRIPT_USER": "nobody",
        }
    )
    wait_until(lambda: a.instance_state("VI_64") == "MASTER" and a.has(VIP), 20, "a lone node MASTER with the VIP")
    every = f"notify|{uid}|INSTANCE|VI_64|MASTER|150"
    master = f"notify-master|{uid}|INSTANCE|VI_64|MASTER|150"
    wait_until(lambda: {every, master} <= set(calls(script_dir)), 10, "NOTIFY and NOTIFY_MASTER for MASTER")
    seen = calls(script_dir)
    assert seen.index(every) < seen.index(master), f"NOTIFY runs before NOTIFY_MASTER: {seen}"
    assert seen.count(every) == 1 and seen.count(master) == 1, seen
    assert all(line.split("|")[1] == str(uid) for line in seen), f"every script runs as SCRIPT_USER: {seen}"
    assert not any(line.startswith("notify-master|") and "|MASTER|" not in line for line in seen), seen
    before_stop = len(seen)

    a.signal(signal.SIGTERM)
    assert a.process is not None
    assert a.process.wait(20) == 0, a.log_text()
    assert not a.has(VIP), "the stopped node must release the VIP"
    after_stop = calls(script_dir)[before_stop:]
    # What keepalived reports on its way down (a STOP, perhaps a BACKUP or FAULT) may or may not reach the scripts
    # before the supervisor exits; only NOTIFY may see it, NOTIFY_MASTER must not run again.
    assert all(line.startswith("notify|") for line in after_stop), after_stop
    print(f"script calls before SIGTERM: {seen}; after: {after_stop}")
