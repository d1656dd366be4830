"""The keepalived child process: config test, atomic install, start, SIGHUP reload, stop, stale cleanup.

keepalived runs in the foreground (``--dont-fork``) as our child, VRRP only, logging to its console, which we
forward line by line to the ``keepalived`` logger. Its own child (the VRRP process) dies with it, sending its
priority-0 advert and removing its VIPs. Every config is checked with ``keepalived --config-test`` before it
replaces the installed one, so a rejected config never reaches the running daemon.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from supervisor.adapters.files import write_atomically
from supervisor.core.validate import IPAddress

log = logging.getLogger(__name__)
keepalived_log = logging.getLogger("keepalived")

CONFIG_TEST_TIMEOUT = 20.0


_VIP_LINE = re.compile(r"^\s+([0-9A-Fa-f.:]+)/\d+ dev \S+\s*$", re.MULTILINE)


def installed_vips(text: str | None) -> frozenset[IPAddress]:
    """The VIPs of an installed keepalived.conf (ours, rendered by the template), for telling them from host
    addresses after a restart."""
    found: set[IPAddress] = set()
    for match in _VIP_LINE.finditer(text or ""):
        with contextlib.suppress(ValueError):
            found.add(ipaddress.ip_address(match.group(1)))
    return frozenset(found)


class ConfigRejected(Exception):
    """keepalived --config-test refused a rendered config; the message is keepalived's own."""


@dataclass(frozen=True)
class KeepalivedPaths:
    """Where keepalived's files live: all under the supervisor's run directory."""

    run_dir: Path

    @property
    def config(self) -> Path:
        return self.run_dir / "keepalived.conf"

    @property
    def candidate(self) -> Path:
        return self.run_dir / "keepalived.conf.candidate"

    @property
    def pid_files(self) -> tuple[Path, Path, Path]:
        return (self.run_dir / "keepalived.pid", self.run_dir / "vrrp.pid", self.run_dir / "checkers.pid")


def _run_with_sigterm_blocked(command: list[str], timeout: float) -> subprocess.CompletedProcess[bytes]:
    """Run `command` with SIGTERM blocked in the child (a blocked mask survives exec); ours is restored at once."""
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    try:
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        raise
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


def _process_cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


class Keepalived:
    """One supervised keepalived daemon."""

    def __init__(self, binary: str, paths: KeepalivedPaths, on_exit: Callable[[], None] | None = None) -> None:
        self.binary = binary
        self.on_exit = on_exit
        self.paths = paths
        self._process: subprocess.Popen[bytes] | None = None
        self._reader: threading.Thread | None = None

    # -- configuration -------------------------------------------------------------------------------------------

    def config_test(self, text: str) -> None:
        """Raise ConfigRejected with keepalived's message when it refuses exactly `text`.

        keepalived 2.2.7's --config-test sends itself SIGTERM after checking a vrrp_script as a non-root script_user
        (a parent-death check that its config-test mode forgets to skip). keepalived is therefore started with
        SIGTERM blocked: the stray signal stays pending, the test runs to its end and reports its real verdict, on the
        very bytes that are then installed.
        """
        write_atomically(self.paths.candidate, text)
        try:
            result = _run_with_sigterm_blocked(
                [self.binary, "--config-test", "-l", "-f", str(self.paths.candidate)], CONFIG_TEST_TIMEOUT
            )
        except subprocess.TimeoutExpired:
            raise ConfigRejected(f"keepalived --config-test did not finish within {CONFIG_TEST_TIMEOUT:g} s") from None
        except OSError as error:
            raise ConfigRejected(f"cannot run {self.binary}: {error.strerror}") from None
        finally:
            with contextlib.suppress(OSError):
                self.paths.candidate.unlink()
        if result.returncode != 0:
            output = (result.stderr + result.stdout).decode(errors="replace").strip()
            raise ConfigRejected(f"keepalived --config-test exit {result.returncode}: {output or 'no message'}")

    def installed_text(self) -> str | None:
        try:
            return self.paths.config.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None

    def install(self, text: str) -> None:
        """Install a config that passed config_test, atomically."""
        write_atomically(self.paths.config, text)

    # -- process -------------------------------------------------------------------------------------------------

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None and self._process.poll() is None else None

    def exit_status(self) -> int | None:
        """None while running (or never started), else the exit status of the last run."""
        if self._process is None:
            return None
        return self._process.poll()

    def clean_stale(self) -> None:
        """Remove pid files (and stop their keepalived) left by an earlier unclean stop."""
        for pid_file in self.paths.pid_files:
            try:
                pid = int(pid_file.read_text().strip() or "0")
            except (FileNotFoundError, ValueError):
                pid = 0
            if pid > 0 and "keepalived" in _process_cmdline(pid) and str(self.paths.config) in _process_cmdline(pid):
                log.warning("stopping keepalived pid %d left by an earlier run", pid)
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)
                deadline = time.monotonic() + 5
                while _process_cmdline(pid) and time.monotonic() < deadline:
                    time.sleep(0.05)
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            if pid_file.exists():
                log.info("removing stale pid file %s", pid_file)
                pid_file.unlink()

    def start(self) -> None:
        self.clean_stale()
        pid_file, vrrp_pid, checkers_pid = self.paths.pid_files
        command = [
            self.binary,
            "--dont-fork",
            "--log-console",
            "--log-detail",
            "--no-syslog",
            "--vrrp",
            "--use-file",
            str(self.paths.config),
            "--pid",
            str(pid_file),
            "--vrrp_pid",
            str(vrrp_pid),
            "--checkers_pid",
            str(checkers_pid),
        ]
        self._process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self._reader = threading.Thread(
            target=self._forward_output, args=(self._process,), name="keepalived-log", daemon=True
        )
        self._reader.start()
        log.info("keepalived started, pid %d", self._process.pid)

    def _forward_output(self, process: subprocess.Popen[bytes]) -> None:
        """Forward keepalived's console to our log; at its end (keepalived exited) tell the owner."""
        assert process.stdout is not None
        for raw in process.stdout:
            line = raw.decode(errors="replace").rstrip()
            # keepalived prefixes its console lines with a date; the supervisor's logger adds its own.
            _, sep, message = line.partition(": ")
            keepalived_log.info("%s", message if sep and line[:3].isalpha() else line)
        process.wait()
        if self.on_exit is not None:
            self.on_exit()

    def reload(self) -> None:
        if self.pid is None:
            return
        os.kill(self.pid, signal.SIGHUP)

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM keepalived (it sends priority 0 and removes its VIPs) and wait; SIGKILL after `timeout`."""
        process = self._process
        if process is None:
            return None
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                log.error("keepalived did not stop within %g s; killing it", timeout)
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        if self._reader is not None:
            self._reader.join(2)
        self.clean_stale()
        return process.returncode
