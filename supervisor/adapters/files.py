"""Writing files safely: atomic replacement that never follows a symlink, and bounded reads.

Every file the supervisor writes (keepalived.conf, track files, status.json) lives under RUN_DIR and goes through
``write_atomically``: readers see the old or the new bytes, never a mix, and a symlink planted at the path is
replaced, not followed. ``read_bounded`` reads a file that something else may have planted: it opens neither a
symlink nor a FIFO or device, and never reads more than asked.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import stat
import tempfile
from pathlib import Path

_MOUNTINFO_ESCAPE_RE = re.compile(r"\\([0-7]{3})")


class UnsafeFileError(ValueError):
    """A file that `read_bounded` refuses to read."""


class NotARegularFile(UnsafeFileError):
    """The path is a symlink, a FIFO, a device, a directory or a socket: not a regular file."""


class FileTooLarge(UnsafeFileError):
    """The file holds more bytes than the caller's limit."""


def _unescape_mountinfo(field: str) -> str:
    """Mount points in /proc/self/mountinfo escape space, tab, newline and backslash as octal (\\040 ...)."""
    return _MOUNTINFO_ESCAPE_RE.sub(lambda match: chr(int(match.group(1), 8)), field)


def is_bind_mount(path: Path) -> bool:
    """True when `path` itself is a mount point (a bind-mounted file cannot be replaced by rename).

    A symlink is never a mount point here, even when it points at one: the link is what gets replaced.
    """
    try:
        if stat.S_ISLNK(os.lstat(path).st_mode):
            return False
    except OSError:
        return False
    target = os.path.join(os.path.realpath(path.parent), path.name)
    try:
        mountinfo = Path("/proc/self/mountinfo").read_text(encoding="utf-8")
    except OSError:
        return False
    for line in mountinfo.splitlines():
        fields = line.split()
        if len(fields) > 4 and _unescape_mountinfo(fields[4]) == target:
            return True
    return False


def _write_in_place(path: Path, data: bytes) -> None:
    """Overwrite a bind-mounted regular file through a descriptor that cannot be a symlink's target."""
    fd = os.open(path, os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise NotARegularFile(f"{path} is a mount point but not a regular file")
        view = memoryview(data)
        offset = 0
        while offset < len(data):
            offset += os.pwrite(fd, view[offset:], offset)
        os.ftruncate(fd, len(data))
        os.fsync(fd)
    finally:
        os.close(fd)


def _sync_directory(directory: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_atomically(path: Path, text: str, mode: int = 0o600) -> None:
    """Replace `path` with `text` so readers see the old or the new file, never a mix.

    The new bytes go to a fresh temporary file (created O_EXCL, never through a symlink) that is renamed over
    `path`; a symlink at `path` is replaced by the regular file, whatever it points at. Only a path that is itself
    a mount point and not a symlink (a bind-mounted file, over which rename fails with EBUSY) is written in place.
    """
    data = text.encode("utf-8")
    # mkstemp opens with O_CREAT | O_EXCL | O_NOFOLLOW: it never reuses or follows an existing name.
    fd, temp_name = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fchmod(handle.fileno(), mode)
            os.fsync(handle.fileno())
        try:
            os.replace(temp_name, path)  # a symlink at `path` is itself replaced, never followed
        except OSError as error:
            if error.errno not in {errno.EBUSY, errno.EXDEV} or not is_bind_mount(path):
                raise
            os.unlink(temp_name)
            _write_in_place(path, data)  # a bind-mounted file: rename cannot replace it
            return
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp_name)
        raise
    _sync_directory(path.parent)


def read_bounded(path: Path, limit: int) -> bytes:
    """The bytes of the regular file `path`, at most `limit` of them.

    Opens with O_NOFOLLOW | O_NONBLOCK (a symlink is refused and a FIFO cannot block the caller) and checks the
    opened descriptor is a regular file. Raises NotARegularFile or FileTooLarge (both ValueError), or the OSError of
    the open (FileNotFoundError when the file does not exist).
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise NotARegularFile(f"{path} is a symlink, not a regular file") from error
        raise
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise NotARegularFile(f"{path} is not a regular file")
        if info.st_size > limit:
            raise FileTooLarge(f"{path} holds {info.st_size} bytes, more than the limit of {limit}")
        chunks: list[bytes] = []
        size = 0
        while size <= limit:
            chunk = os.read(fd, limit + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        if size > limit:
            raise FileTooLarge(f"{path} holds more than the limit of {limit} bytes")
        return b"".join(chunks)
    finally:
        os.close(fd)
