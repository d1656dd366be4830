"""Host checks that settings alone cannot make: does the interface exist, would keepalived run CHECK_SCRIPT?

keepalived silently drops a vrrp_script it considers insecure (it says so only in its log) and then never checks
it; we refuse such a script up front, in `check` and at `run` start, with a line saying why.
"""

from __future__ import annotations

import os
import pwd
import stat
from pathlib import Path

from supervisor.adapters import net
from supervisor.core.model import DesiredState
from supervisor.core.settings import Settings


def script_problems(settings: Settings) -> list[str]:
    """Why keepalived would not run CHECK_SCRIPT as configured (empty when it would)."""
    command = settings.check.script
    if command is None:
        return []
    problems = []
    try:
        pwd.getpwnam(settings.script_user)
    except KeyError:
        problems.append(
            f"SCRIPT_USER={settings.script_user!r}: no such user; create it (useradd -r -s /usr/sbin/nologin "
            f"{settings.script_user}) or set SCRIPT_USER to an existing unprivileged user"
        )
    program = Path(command.split()[0])
    shown = f"CHECK_SCRIPT={command!r}"
    if not program.exists():
        return [*problems, f"{shown}: {program} does not exist"]
    if not program.is_file() or not os.access(program, os.X_OK):
        return [*problems, f"{shown}: {program} is not an executable file"]
    resolved = program.resolve()
    for path in (resolved, *resolved.parents):
        info = path.stat()
        if info.st_uid != 0 or info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            problems.append(
                f"{shown}: keepalived's script security refuses it: {path} is writable by a non-root user "
                "(it must be owned by root and not group- or world-writable, and so must every directory above it)"
            )
            break
    return problems


def interface_problems(state: DesiredState) -> list[str]:
    problems = []
    for instance in state.instances:
        if not net.interface_exists(instance.interface):
            variable = "INTERFACE" if instance.source == "environment" else f"interface of {instance.source}"
            problems.append(f"{variable}={instance.interface!r}: no such interface on this host")
    return problems
