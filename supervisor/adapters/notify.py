"""keepalived's notify FIFO -> state transitions, so status reports what keepalived itself says.

keepalived writes lines like ``INSTANCE "VI_51" MASTER 100`` to ``vrrp_notify_fifo``. We create the FIFO and
read it in a thread that only parses and hands each transition to a callback.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import select
import stat
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

_LINE_RE = re.compile(r'^INSTANCE "(?P<name>[^"]+)" (?P<state>[A-Z_]+)(?: (?P<priority>\d+))?$')


@dataclass(frozen=True)
class Transition:
    instance: str
    state: str
    priority: int | None


def parse_notify_line(line: str) -> Transition | None:
    match = _LINE_RE.match(line.strip())
    if match is None:
        return None
    priority = match.group("priority")
    return Transition(match.group("name"), match.group("state"), int(priority) if priority else None)


MAX_LINE = 65536  # a longer line without a newline is dropped, so a stray writer cannot grow memory
RETRY_DELAY = 0.5
POLL_SECONDS = 1.0  # a line wakes the reader at once; this only bounds how long a stop waits
CHECK_PATH_EVERY = 1.0


class NotifyFifoReader:
    """Reads the FIFO until stopped; calls `on_transition` for each instance line.

    The thread survives anything: a line that does not parse is skipped, a callback that raises is logged, a read
    error reopens the FIFO, and a FIFO that vanished (or was replaced by something else) is created again. The
    previous FIFO stays open beside the new one, so a keepalived still writing to the old one is heard until the
    next replacement.
    """

    def __init__(self, path: Path, on_transition: Callable[[Transition], None]) -> None:
        self.path = path
        self.on_transition = on_transition
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="notify-fifo", daemon=True)
        self._fds: list[int] = []  # the current FIFO last; at most one previous one before it
        self._buffers: dict[int, bytes] = {}
        self._error: str | None = None
        self._started = False

    def start(self) -> None:
        self._ensure_fifo()
        self._started = True
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(2)

    def problem(self) -> str | None:
        """Why transitions may not be heard right now, or None."""
        if not self._started or not self._thread.is_alive():
            return "the notify FIFO reader thread is not running"
        error = self._error
        if error is not None:
            return f"the notify FIFO {self.path} cannot be read: {error}"
        return None

    # -- the FIFO ------------------------------------------------------------------------------------------------

    def _ensure_fifo(self) -> None:
        """Make `path` a FIFO: anything else there (a file, a symlink) is removed first."""
        try:
            mode = os.lstat(self.path).st_mode
        except FileNotFoundError:
            mode = None
        if mode is not None and not stat.S_ISFIFO(mode):
            self.path.unlink()
            mode = None
        if mode is None:
            os.mkfifo(self.path, 0o600)

    def _open(self) -> None:
        """Open the FIFO at `path` (creating it when needed) as the current one."""
        self._ensure_fifo()
        # O_RDWR: the open never blocks and reads never see EOF when keepalived restarts.
        fd = os.open(self.path, os.O_RDWR | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
        if not stat.S_ISFIFO(os.fstat(fd).st_mode):
            os.close(fd)
            raise OSError(f"{self.path} is not a FIFO")
        self._fds.append(fd)
        self._buffers[fd] = b""
        while len(self._fds) > 2:
            self._close(self._fds[0])

    def _close(self, fd: int) -> None:
        self._fds.remove(fd)
        self._buffers.pop(fd, None)
        with contextlib.suppress(OSError):
            os.close(fd)

    def _path_is_current(self) -> bool:
        """The FIFO at `path` is the one we read (not removed, not replaced)."""
        if not self._fds:
            return False
        try:
            here, ours = os.lstat(self.path), os.fstat(self._fds[-1])
        except OSError:
            return False
        return stat.S_ISFIFO(here.st_mode) and (here.st_dev, here.st_ino) == (ours.st_dev, ours.st_ino)

    # -- the thread ----------------------------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                try:
                    self._serve()
                except Exception as error:
                    self._failed(error)
                    self._stop.wait(RETRY_DELAY)
        finally:
            for fd in list(self._fds):
                self._close(fd)

    def _failed(self, error: Exception) -> None:
        description = f"{type(error).__name__}: {error}"
        if description != self._error:
            log.error("notify FIFO %s: %s (retrying)", self.path, description)
        self._error = description

    def _serve(self) -> None:
        """Read until stopped; returns or raises on a problem, after which _run retries."""
        next_check = 0.0
        while not self._stop.is_set():
            now = time.monotonic()
            if now >= next_check:
                next_check = now + CHECK_PATH_EVERY
                if not self._path_is_current():
                    if self._fds:
                        log.warning("notify FIFO %s vanished or was replaced: creating it again", self.path)
                    self._open()
                if self._error is not None:
                    log.info("notify FIFO %s: reading again", self.path)
                    self._error = None
            ready, _, _ = select.select(list(self._fds), [], [], POLL_SECONDS)
            for fd in ready:
                self._read(fd)

    def _read(self, fd: int) -> None:
        try:
            chunk = os.read(fd, 65536)
        except BlockingIOError:
            return
        except OSError as error:
            self._close(fd)
            raise OSError(f"read failed: {error}") from error
        *lines, rest = (self._buffers.get(fd, b"") + chunk).split(b"\n")
        if len(rest) > MAX_LINE:
            log.warning("notify FIFO %s: dropping %d bytes without a newline", self.path, len(rest))
            rest = b""
        self._buffers[fd] = rest
        for raw in lines:
            self._handle(raw)

    def _handle(self, raw: bytes) -> None:
        try:
            transition = parse_notify_line(raw.decode(errors="replace"))
            if transition is not None:
                self.on_transition(transition)
        except Exception:
            log.exception("notify FIFO %s: handling %r failed; continuing", self.path, raw[:200])
