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


class NotifyFifoReader:
    """Reads the FIFO until stopped; calls `on_transition` for each instance line."""

    def __init__(self, path: Path, on_transition: Callable[[Transition], None]) -> None:
        self.path = path
        self.on_transition = on_transition
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="notify-fifo", daemon=True)

    def start(self) -> None:
        if self.path.exists() and not stat.S_ISFIFO(self.path.stat().st_mode):
            self.path.unlink()
        if not self.path.exists():
            os.mkfifo(self.path, 0o600)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(2)

    def _run(self) -> None:
        # O_RDWR: the open never blocks and reads never see EOF when keepalived restarts.
        fd = os.open(self.path, os.O_RDWR | os.O_NONBLOCK)
        buffer = b""
        try:
            while not self._stop.is_set():
                ready, _, _ = select.select([fd], [], [], 0.2)
                if not ready:
                    continue
                with contextlib.suppress(BlockingIOError):
                    buffer += os.read(fd, 65536)
                *lines, buffer = buffer.split(b"\n")
                for raw in lines:
                    transition = parse_notify_line(raw.decode(errors="replace"))
                    if transition is not None:
                        self.on_transition(transition)
        finally:
            os.close(fd)
