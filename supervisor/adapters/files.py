"""Writing files safely: atomic replacement that never follows a symlink, and bounded reads.

Every file the supervisor writes (keepalived.conf, track files, status.json) lives under RUN_DIR and goes through
``write_atomically``: readers see the old or the new bytes, never a mix, and a symlink planted at the path is
replaced, not followed.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


def is_bind_mount(path: Path) -> bool:
    """True when `path` itself is a mount point (a bind-mounted file cannot be replaced by rename)."""
    target = str(path.resolve())
    try:
        mountinfo = Path("/proc/self/mountinfo").read_text(encoding="utf-8")
    except OSError:
        return False
    for line in mountinfo.splitlines():
        fields = line.split()
        if len(fields) > 4 and fields[4].replace("\\040", " ") == target:
            return True
    return False


def write_atomically(path: Path, text: str, mode: int = 0o600) -> None:
    """Replace `path` with `text` so readers see the old or the new file, never a mix."""
    data = text.encode("utf-8")
    if path.exists() and is_bind_mount(path):
        with path.open("r+b") as handle:  # rename over a bind mount fails (EBUSY): write in place
            handle.truncate(0)
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        return
    fd, temp_name = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temp_name, mode)
        os.replace(temp_name, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp_name)
        raise
