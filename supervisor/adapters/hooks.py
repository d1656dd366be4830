"""User notify scripts (NOTIFY, NOTIFY_MASTER, NOTIFY_BACKUP, NOTIFY_FAULT), run by us on keepalived's transitions.

keepalived can run notify scripts itself, but then a slow or hanging script runs inside keepalived's own process
tree under keepalived's rules, and what it printed is lost. We already hear every transition on the notify FIFO, so
we run the scripts here instead, with the same contract keepalived gives them (arguments ``INSTANCE <name> <STATE>
<priority>``, the same script security) and with guarantees VRRP needs:

* the FIFO reader is never blocked: `NotifyHooks.on_transition` only queues the call, one worker thread runs them
  in order, and the queue is bounded (on overflow an instance's older transitions go first, its latest stays);
* a script runs as the unprivileged SCRIPT_USER (no supplementary groups), with a minimal environment, in ``/``,
  in a session of its own, and is killed with its whole process group after the timeout;
* what it prints is logged (truncated), and whatever goes wrong (a non-zero exit, a timeout, a missing user or
  program, a script keepalived's security would refuse) is logged and nothing else happens.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pwd
import select
import signal
import stat
import subprocess
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

MAX_PENDING = 100  # queued calls; on overflow an instance's older transitions are dropped first
OUTPUT_LIMIT = 4096  # bytes of a script's output that are logged; the rest is read and dropped
SCRIPT_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
STOP_KILL_WAIT = 2.0  # after stop() kills a running script, how long to wait for the worker to notice
STATE_VARIABLES = {"MASTER": "NOTIFY_MASTER", "BACKUP": "NOTIFY_BACKUP", "FAULT": "NOTIFY_FAULT"}


@dataclass(frozen=True)
class _Call:
    instance: str
    state: str
    priority: int | None


# -- script security ------------------------------------------------------------------------------------------------


def script_refusal(command: str, user: pwd.struct_passwd | None = None) -> str | None:
    """Why keepalived-style script security would not run `command`'s program (None when it would).

    The program must be an absolute path to an executable file owned by root and not group- or world-writable, and
    so must every directory above it (both along the path as written and along its resolved path, so a symlink in a
    writable place is refused too). With `user`, the file must also be executable, and every directory searchable,
    by that user.
    """
    words = command.split()
    if not words:
        return "the command is empty"
    program = Path(words[0])
    if not program.is_absolute():
        return f"{program} is not an absolute path"
    try:
        info = program.stat()
    except FileNotFoundError:
        return f"{program} does not exist"
    except OSError as error:
        return f"{program} cannot be examined: {error.strerror or error}"
    if not stat.S_ISREG(info.st_mode) or not info.st_mode & 0o111:
        return f"{program} is not an executable file"
    resolved = program.resolve()
    seen: set[Path] = set()
    for path in (*program.parents, resolved, *resolved.parents):
        if path in seen:
            continue
        seen.add(path)
        try:
            info = path.stat()
        except OSError as error:
            return f"{path} cannot be examined: {error.strerror or error}"
        if info.st_uid != 0 or info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            return (
                f"keepalived's script security refuses it: {path} is writable by a non-root user (it must be owned "
                "by root and not group- or world-writable, and so must every directory above it)"
            )
        if user is not None and not _allows(info, user, stat.S_IXUSR, stat.S_IXGRP, stat.S_IXOTH):
            what = "execute" if path == resolved else "enter"
            return f"SCRIPT_USER {user.pw_name} may not {what} {path}"
    return None


def _allows(info: os.stat_result, user: pwd.struct_passwd, owner_bit: int, group_bit: int, other_bit: int) -> bool:
    """Whether `user` (primary group only: scripts run without supplementary groups) has the permission."""
    if user.pw_uid == 0:
        return bool(info.st_mode & (owner_bit | group_bit | other_bit)) or stat.S_ISDIR(info.st_mode)
    if info.st_uid == user.pw_uid:
        return bool(info.st_mode & owner_bit)
    if info.st_gid == user.pw_gid:
        return bool(info.st_mode & group_bit)
    return bool(info.st_mode & other_bit)


def hook_problems(every: str | None, master: str | None, backup: str | None, fault: str | None, user: str) -> list[str]:
    """For `check`: why a configured NOTIFY* script would not run (empty when all would, or none is set)."""
    scripts = {"NOTIFY": every, "NOTIFY_MASTER": master, "NOTIFY_BACKUP": backup, "NOTIFY_FAULT": fault}
    configured = {variable: command for variable, command in scripts.items() if command is not None}
    if not configured:
        return []
    problems = []
    account: pwd.struct_passwd | None = None
    try:
        account = pwd.getpwnam(user)
    except KeyError:
        problems.append(
            f"SCRIPT_USER={user!r}: no such user, so the NOTIFY scripts cannot run; create it (useradd -r -s "
            f"/usr/sbin/nologin {user}) or set SCRIPT_USER to an existing unprivileged user"
        )
    for variable, command in configured.items():
        reason = script_refusal(command, account)
        if reason is not None:
            problems.append(f"{variable}={command!r}: {reason}")
    return problems


# -- the queue ------------------------------------------------------------------------------------------------------


def _enqueue(pending: deque[_Call], call: _Call, limit: int) -> _Call | None:
    """Append `call`; when that makes more than `limit`, drop and return one: the oldest call that is not its
    instance's latest, or (every queued call being the latest of its instance) the oldest one."""
    pending.append(call)
    if len(pending) <= limit:
        return None
    latest: dict[str, int] = {}
    for index, queued in enumerate(pending):
        latest[queued.instance] = index
    victim = next((index for index, queued in enumerate(pending) if latest[queued.instance] != index), 0)
    dropped = pending[victim]
    del pending[victim]
    return dropped


# -- the runner -----------------------------------------------------------------------------------------------------


class NotifyHooks:
    """Runs the notify scripts for each transition, in order, in one worker thread.

    Each command is a command line already validated by the settings (an absolute program path and plain arguments,
    split on whitespace); None means no script. For a transition the worker runs `every`, then the script for the
    new state (MASTER, BACKUP, FAULT; other states such as STOP run only `every`), each with the arguments
    ``INSTANCE <name> <STATE> <priority>`` as `user`, killed after `timeout` seconds.
    """

    def __init__(
        self,
        every: str | None,
        master: str | None,
        backup: str | None,
        fault: str | None,
        user: str,
        timeout: float,
        *,
        max_pending: int = MAX_PENDING,
    ) -> None:
        self.every = every.split() if every else None
        self.by_state = {
            state: command.split()
            for state, command in (("MASTER", master), ("BACKUP", backup), ("FAULT", fault))
            if command
        }
        self.user = user
        self.timeout = timeout
        self.max_pending = max_pending
        self._pending: deque[_Call] = deque()
        self._wakeup = threading.Condition()
        self._closing = False  # stop() was called: no new calls, the worker drains what is queued
        self._abort = False  # stop() timed out: the worker drops what is left
        self._running: subprocess.Popen[bytes] | None = None
        self._refused: dict[str, str] = {}  # program -> the refusal already logged for it
        self._user_problem: str | None = None
        self._thread: threading.Thread | None = None
        if self.every is not None or self.by_state:
            self._thread = threading.Thread(target=self._run, name="notify-hooks", daemon=True)
            self._thread.start()

    # -- the caller's side (the notify FIFO thread): never blocks on a script ------------------------------------

    def on_transition(self, instance: str, state: str, priority: int | None) -> None:
        """Queue the scripts for this transition and return at once."""
        if self._thread is None:
            return
        with self._wakeup:
            if self._closing:
                log.debug("notify hooks are stopping: %s %s not run", instance, state)
                return
            dropped = _enqueue(self._pending, _Call(instance, state, priority), self.max_pending)
            self._wakeup.notify()
        if dropped is not None:
            log.warning(
                "notify hooks: more than %d transitions waiting; the scripts for %s %s are not run",
                self.max_pending,
                dropped.instance,
                dropped.state,
            )

    def problem(self) -> str | None:
        """Why notify scripts are not being run right now, or None."""
        if self._thread is None or self._closing:
            return None
        if not self._thread.is_alive():
            return "the notify hook worker thread is not running"
        return None

    def children(self) -> set[int]:
        """The pid of the script running now, if any (a PID-1 reaper must leave it to us)."""
        running = self._running
        return {running.pid} if running is not None else set()

    def stop(self, timeout: float) -> None:
        """Run what is queued for up to `timeout` seconds, then kill the running script and drop the rest."""
        thread = self._thread
        if thread is None:
            return
        with self._wakeup:
            self._closing = True
            self._wakeup.notify()
        thread.join(max(0.0, timeout))
        if not thread.is_alive():
            return
        with self._wakeup:
            self._abort = True
            left = len(self._pending)
            self._pending.clear()
            self._wakeup.notify()
        running = self._running
        if running is not None and running.returncode is None:
            _kill_group(running)
        log.warning(
            "notify hooks: still busy after %.1f s at stop; script killed, %d transitions dropped", timeout, left
        )
        thread.join(STOP_KILL_WAIT)

    # -- the worker ----------------------------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._wakeup:
                while not self._pending and not self._closing:
                    self._wakeup.wait()
                if not self._pending or self._abort:
                    return
                call = self._pending.popleft()
            try:
                self._handle(call)
            except Exception:
                log.exception("notify hooks: running the scripts for %s %s failed", call.instance, call.state)

    def _handle(self, call: _Call) -> None:
        commands = [self.every, self.by_state.get(call.state)]
        arguments = ["INSTANCE", call.instance, call.state]
        if call.priority is not None:
            arguments.append(str(call.priority))
        for command in commands:
            if command is None or self._abort:
                continue
            self._run_one(command, arguments)

    def _account(self) -> pwd.struct_passwd | None:
        try:
            account = pwd.getpwnam(self.user)
        except KeyError:
            problem = f"SCRIPT_USER={self.user!r}: no such user; notify scripts are not run"
            if problem != self._user_problem:
                log.warning("notify hooks: %s", problem)
            self._user_problem = problem
            return None
        if self._user_problem is not None:
            log.info("notify hooks: SCRIPT_USER=%r exists again; notify scripts run again", self.user)
            self._user_problem = None
        return account

    def _secure(self, command: list[str], account: pwd.struct_passwd) -> bool:
        program = command[0]
        refusal = script_refusal(program, account)
        if refusal is None:
            if self._refused.pop(program, None) is not None:
                log.info("notify %s: no longer refused; running it again", program)
            return True
        if self._refused.get(program) != refusal:
            log.warning("notify %s: not run: %s", program, refusal)
        self._refused[program] = refusal
        return False

    def _run_one(self, command: list[str], arguments: list[str]) -> None:
        account = self._account()
        if account is None or not self._secure(command, account):
            return
        program = command[0]
        started = time.monotonic()
        try:
            process = subprocess.Popen(
                [*command, *arguments],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                cwd="/",
                env={"PATH": SCRIPT_PATH},
                user=account.pw_uid,
                group=account.pw_gid,
                extra_groups=[],
                start_new_session=True,
            )
        except OSError as error:
            log.warning("notify %s: could not be started: %s", program, error)
            return
        self._running = process
        try:
            output, dropped, timed_out = _collect(process, started + self.timeout)
        finally:
            self._running = None
        _log_output(program, output, dropped)
        if timed_out:
            log.warning("notify %s: not finished after %g s; killed with its process group", program, self.timeout)
        elif process.returncode != 0:
            log.warning("notify %s: %s", program, _describe_status(process.returncode))


def _collect(process: subprocess.Popen[bytes], deadline: float) -> tuple[bytes, int, bool]:
    """Read the script's output until it closes it, then wait for it; kill its group at `deadline`.

    Returns the first OUTPUT_LIMIT bytes, how many more were dropped, and whether it was killed for the timeout.
    """
    assert process.stdout is not None
    stream = process.stdout
    fd = stream.fileno()
    kept = bytearray()
    dropped = 0
    timed_out = False
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                timed_out = True
                break
            ready, _, _ = select.select([fd], [], [], left)
            if not ready:
                continue
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            room = OUTPUT_LIMIT - len(kept)
            kept += chunk[:room]
            dropped += max(0, len(chunk) - room)
        if not timed_out:
            try:
                process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                timed_out = True
        if timed_out:
            _kill_group(process)
            process.wait()
    finally:
        stream.close()
    return bytes(kept), dropped, timed_out


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL the script's process group (it leads one: start_new_session), or the script alone."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        process.kill()


def _log_output(program: str, output: bytes, dropped: int) -> None:
    for line in output.decode(errors="replace").splitlines():
        log.info("notify %s: %s", program, line)
    if dropped:
        log.info("notify %s: ... (%d more bytes of output not logged)", program, dropped)


def _describe_status(returncode: int) -> str:
    if returncode < 0:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-returncode).name}"
        return f"killed by signal {-returncode}"
    return f"exit status {returncode}"
