"""Notify hooks: the scripts run in order, with keepalived's arguments, as the unprivileged user, killed at the
timeout, never blocking the caller; insecure scripts are refused. Real scripts in a root-owned directory under /run
(a script under /tmp would rightly be refused: /tmp is world-writable)."""

from __future__ import annotations

import logging
import os
import pwd
import shutil
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from supervisor.adapters.hooks import NotifyHooks, _Call, _enqueue, hook_problems, script_refusal

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root: scripts run as another user")

# Each recording script appends one line: its tag, then every argument after a "|", so argc is exact.
RECORD = """#!/bin/sh
{{ printf '%s' '{tag}'; for arg in "$@"; do printf '|%s' "$arg"; done; printf '\\n'; }} >> {out}
"""


def wait_for(predicate: Callable[[], bool], what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.02)


class Scripts:
    """A root-owned 0755 directory of scripts and a directory `out` the script user may write to."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.out = root / "out"
        self.out.mkdir(mode=0o755)
        nobody = pwd.getpwnam("nobody")
        os.chown(self.out, nobody.pw_uid, nobody.pw_gid)
        self.calls = self.out / "calls"

    def write(self, name: str, body: str, mode: int = 0o755, directory: Path | None = None) -> str:
        path = (directory or self.root) / name
        path.write_text(body)
        os.chown(path, 0, 0)
        path.chmod(mode)
        return str(path)

    def recorder(self, tag: str, **kwargs: object) -> str:
        return self.write(tag, RECORD.format(tag=tag, out=self.calls), **kwargs)  # type: ignore[arg-type]

    def lines(self) -> list[str]:
        return self.calls.read_text().splitlines() if self.calls.exists() else []


@pytest.fixture
def scripts() -> Iterator[Scripts]:
    if os.geteuid() != 0:
        pytest.skip("needs root: scripts run as another user")
    root = Path(f"/run/kat-hooks-test-{uuid.uuid4().hex[:12]}")
    root.mkdir(mode=0o755)
    try:
        root.chmod(0o755)  # whatever the umask
        for parent in root.parents:  # /run and / must be root-owned and not writable by others already
            info = parent.stat()
            assert info.st_uid == 0 and not info.st_mode & 0o022, f"{parent} is not a safe place for test scripts"
        yield Scripts(root)
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def make_hooks() -> Iterator[Callable[..., NotifyHooks]]:
    made: list[NotifyHooks] = []

    def make(
        every: str | None = None,
        master: str | None = None,
        backup: str | None = None,
        fault: str | None = None,
        user: str = "nobody",
        timeout: float = 10.0,
    ) -> NotifyHooks:
        hooks = NotifyHooks(every, master, backup, fault, user, timeout)
        made.append(hooks)
        return hooks

    yield make
    for hooks in made:
        hooks.stop(0)


def test_master_runs_every_then_master_with_keepalived_arguments(
    scripts: Scripts, make_hooks: Callable[..., NotifyHooks]
) -> None:
    hooks = make_hooks(
        scripts.recorder("every"), scripts.recorder("master"), scripts.recorder("backup"), scripts.recorder("fault")
    )
    hooks.on_transition("VI_51", "MASTER", 150)
    wait_for(lambda: len(scripts.lines()) == 2, "both scripts")
    assert scripts.lines() == ["every|INSTANCE|VI_51|MASTER|150", "master|INSTANCE|VI_51|MASTER|150"]
    assert hooks.problem() is None


def test_backup_fault_and_other_states_run_their_scripts_in_order(
    scripts: Scripts, make_hooks: Callable[..., NotifyHooks]
) -> None:
    hooks = make_hooks(
        scripts.recorder("every"), scripts.recorder("master"), scripts.recorder("backup"), scripts.recorder("fault")
    )
    hooks.on_transition("VI_51", "BACKUP", 100)
    hooks.on_transition("VI_52", "FAULT", 0)
    hooks.on_transition("VI_51", "STOP", None)  # no state script; without a priority, no fourth argument
    wait_for(lambda: len(scripts.lines()) == 5, "five script runs")
    assert scripts.lines() == [
        "every|INSTANCE|VI_51|BACKUP|100",
        "backup|INSTANCE|VI_51|BACKUP|100",
        "every|INSTANCE|VI_52|FAULT|0",
        "fault|INSTANCE|VI_52|FAULT|0",
        "every|INSTANCE|VI_51|STOP",
    ]


def test_runs_as_the_unprivileged_user_in_a_minimal_environment(
    scripts: Scripts, make_hooks: Callable[..., NotifyHooks]
) -> None:
    report = scripts.out / "report"
    body = f"""#!/bin/sh
{{ echo "uid=$(id -u)"; echo "gid=$(id -g)"; echo "groups=$(id -G)"; echo "cwd=$(pwd)"; echo "PATH=$PATH"
   echo "HOME=${{HOME-unset}}"; cat >/dev/null && echo "stdin=empty"; }} > {report}
"""
    hooks = make_hooks(every=scripts.write("identity", body))
    hooks.on_transition("VI_51", "MASTER", 150)
    wait_for(lambda: report.exists() and "stdin=" in report.read_text(), "the identity report")
    nobody = pwd.getpwnam("nobody")
    assert report.read_text().splitlines() == [
        f"uid={nobody.pw_uid}",
        f"gid={nobody.pw_gid}",
        f"groups={nobody.pw_gid}",
        "cwd=/",
        "PATH=/usr/sbin:/usr/bin:/sbin:/bin",
        "HOME=unset",
        "stdin=empty",
    ]


def test_on_transition_returns_before_the_script_finishes(
    scripts: Scripts, make_hooks: Callable[..., NotifyHooks]
) -> None:
    slow = scripts.write("slow", f"#!/bin/sh\nsleep 3\necho done >> {scripts.calls}\n")
    hooks = make_hooks(master=slow)
    hooks.on_transition("VI_51", "MASTER", 150)
    assert scripts.lines() == [], "on_transition must only queue the call, not wait for the script"
    wait_for(lambda: scripts.lines() == ["done"], "the slow script to finish in the background")


def test_a_hanging_script_is_killed_with_its_group_and_the_next_call_still_runs(
    scripts: Scripts, make_hooks: Callable[..., NotifyHooks], caplog: pytest.LogCaptureFixture
) -> None:
    pids = scripts.out / "pids"
    hang = scripts.write(
        "hang", f"#!/bin/sh\necho started\nsleep 300 &\necho $$ $! > {pids}\nwait\necho finished >> {scripts.calls}\n"
    )
    hooks = make_hooks(master=hang, backup=scripts.recorder("backup"), timeout=1.0)
    with caplog.at_level(logging.INFO, logger="supervisor.adapters.hooks"):
        hooks.on_transition("VI_51", "MASTER", 150)
        hooks.on_transition("VI_51", "BACKUP", 100)
        wait_for(lambda: scripts.lines() == ["backup|INSTANCE|VI_51|BACKUP|100"], "the call after the hanging one")
    assert "finished" not in scripts.lines()
    for pid in pids.read_text().split():  # the script and the sleep it started: both killed
        state = Path(f"/proc/{pid}/stat")
        assert not state.exists() or state.read_text().rsplit(")", 1)[-1].split()[0] in ("Z", "X"), pid
    messages = [(record.levelno, record.getMessage()) for record in caplog.records]
    assert (logging.INFO, f"notify {hang}: started") in messages
    assert (logging.WARNING, f"notify {hang}: not finished after 1 s; killed with its process group") in messages


def test_a_failing_script_is_logged_with_its_output(
    scripts: Scripts, make_hooks: Callable[..., NotifyHooks], caplog: pytest.LogCaptureFixture
) -> None:
    fail = scripts.write("fail", "#!/bin/sh\necho boom\necho 'to stderr' >&2\nexit 3\n")
    hooks = make_hooks(every=fail, master=scripts.recorder("master"))
    with caplog.at_level(logging.INFO, logger="supervisor.adapters.hooks"):
        hooks.on_transition("VI_51", "MASTER", 150)
        wait_for(lambda: scripts.lines() == ["master|INSTANCE|VI_51|MASTER|150"], "the script after the failing one")
    messages = [(record.levelno, record.getMessage()) for record in caplog.records]
    assert (logging.INFO, f"notify {fail}: boom") in messages
    assert (logging.INFO, f"notify {fail}: to stderr") in messages
    assert (logging.WARNING, f"notify {fail}: exit status 3") in messages
    assert hooks.problem() is None


def test_long_output_is_truncated(
    scripts: Scripts, make_hooks: Callable[..., NotifyHooks], caplog: pytest.LogCaptureFixture
) -> None:
    chatty = scripts.write("chatty", f"#!/bin/sh\nyes line | head -n 100000\necho done >> {scripts.calls}\n")
    hooks = make_hooks(every=chatty)
    with caplog.at_level(logging.INFO, logger="supervisor.adapters.hooks"):
        hooks.on_transition("VI_51", "MASTER", 150)
        wait_for(lambda: scripts.lines() == ["done"], "the chatty script")
        hooks.stop(10)
    lines = [record.getMessage() for record in caplog.records if record.getMessage().startswith(f"notify {chatty}:")]
    assert len(lines) <= 4096 // len("line\n") + 2
    assert lines[-1] == f"notify {chatty}: ... (495904 more bytes of output not logged)"


@pytest.mark.parametrize("flaw", ["group-writable", "world-writable", "owned by nobody", "in a writable directory"])
def test_an_insecure_script_is_refused_and_logged_once(
    scripts: Scripts, make_hooks: Callable[..., NotifyHooks], caplog: pytest.LogCaptureFixture, flaw: str
) -> None:
    if flaw == "in a writable directory":
        unsafe = scripts.root / "unsafe"
        unsafe.mkdir()
        unsafe.chmod(0o777)
        script = scripts.recorder("bad", directory=unsafe)
    else:
        script = scripts.recorder("bad", mode={"group-writable": 0o775, "world-writable": 0o757}.get(flaw, 0o755))
        if flaw == "owned by nobody":
            os.chown(script, pwd.getpwnam("nobody").pw_uid, 0)
    hooks = make_hooks(every=script, master=scripts.recorder("master"))
    with caplog.at_level(logging.INFO, logger="supervisor.adapters.hooks"):
        hooks.on_transition("VI_51", "MASTER", 150)
        hooks.on_transition("VI_51", "MASTER", 150)
        wait_for(lambda: len(scripts.lines()) == 2, "the secure script, twice")
    assert scripts.lines() == ["master|INSTANCE|VI_51|MASTER|150"] * 2, "the insecure script must not run"
    refusals = [record for record in caplog.records if record.getMessage().startswith(f"notify {script}: not run")]
    assert len(refusals) == 1 and refusals[0].levelno == logging.WARNING
    assert "keepalived's script security refuses it" in refusals[0].getMessage()


def test_a_missing_user_or_program_is_logged_and_nothing_runs(
    scripts: Scripts, make_hooks: Callable[..., NotifyHooks], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="supervisor.adapters.hooks"):
        no_user = make_hooks(every=scripts.recorder("every"), user="kat-no-such-user")
        no_user.on_transition("VI_51", "MASTER", 150)
        no_program = make_hooks(every=str(scripts.root / "absent"))
        no_program.on_transition("VI_51", "MASTER", 150)
        no_user.stop(10)
        no_program.stop(10)
    assert scripts.lines() == []
    warnings = [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]
    assert "notify hooks: SCRIPT_USER='kat-no-such-user': no such user; notify scripts are not run" in warnings
    assert f"notify {scripts.root}/absent: not run: {scripts.root}/absent does not exist" in warnings


def test_stop_runs_what_is_queued_then_kills_what_is_left(
    scripts: Scripts, make_hooks: Callable[..., NotifyHooks]
) -> None:
    hooks = make_hooks(every=scripts.recorder("every"))
    for priority in range(3):
        hooks.on_transition("VI_51", "MASTER", priority)
    hooks.stop(10)
    assert len(scripts.lines()) == 3
    assert hooks.problem() is None
    hooks.on_transition("VI_51", "BACKUP", 100)  # after stop: ignored
    assert len(scripts.lines()) == 3

    hang = scripts.write("hang", f"#!/bin/sh\nsleep 300\necho finished >> {scripts.calls}\n")
    stuck = make_hooks(every=hang, timeout=300)
    stuck.on_transition("VI_51", "MASTER", 150)
    wait_for(lambda: bool(stuck.children()), "the hanging script to start")
    stuck.stop(0.2)
    assert stuck.children() == set()
    assert len(scripts.lines()) == 3


def test_no_scripts_no_thread() -> None:
    hooks = NotifyHooks(None, None, None, None, "nobody", 5)
    hooks.on_transition("VI_51", "MASTER", 150)
    assert hooks.problem() is None
    hooks.stop(1)


def test_overflow_drops_an_instances_older_transitions_first() -> None:
    pending: deque[_Call] = deque()
    assert _enqueue(pending, _Call("VI_1", "BACKUP", 100), 3) is None
    assert _enqueue(pending, _Call("VI_2", "BACKUP", 100), 3) is None
    assert _enqueue(pending, _Call("VI_1", "MASTER", 150), 3) is None
    # Full: VI_1's BACKUP is not its latest, so it goes, though VI_2's BACKUP is as old.
    assert _enqueue(pending, _Call("VI_3", "MASTER", 150), 3) == _Call("VI_1", "BACKUP", 100)
    assert list(pending) == [_Call("VI_2", "BACKUP", 100), _Call("VI_1", "MASTER", 150), _Call("VI_3", "MASTER", 150)]
    # Every queued call is its instance's latest: the oldest goes.
    assert _enqueue(pending, _Call("VI_4", "FAULT", 0), 3) == _Call("VI_2", "BACKUP", 100)
    assert [call.instance for call in pending] == ["VI_1", "VI_3", "VI_4"]


@needs_root
def test_overflow_is_logged_and_the_latest_transition_kept(scripts: Scripts, caplog: pytest.LogCaptureFixture) -> None:
    gate = scripts.out / "gate"
    blocker = scripts.write("block", f"#!/bin/sh\nwhile [ ! -e {gate} ]; do sleep 0.05; done\n")
    hooks = NotifyHooks(blocker, None, None, None, "nobody", 60, max_pending=3)
    try:
        with caplog.at_level(logging.INFO, logger="supervisor.adapters.hooks"):
            hooks.on_transition("VI_0", "MASTER", 1)
            wait_for(lambda: bool(hooks.children()), "the blocking script to start")
            for priority in range(2, 7):
                hooks.on_transition("VI_1", "BACKUP" if priority % 2 else "MASTER", priority)
            gate.touch()
            hooks.stop(30)
    finally:
        hooks.stop(0)
    drops = [record for record in caplog.records if "transitions waiting" in record.getMessage()]
    assert len(drops) == 2 and all(record.levelno == logging.WARNING for record in drops)
    assert (
        drops[0].getMessage()
        == "notify hooks: more than 3 transitions waiting; the scripts for VI_1 MASTER are not run"
    )


@needs_root
def test_hook_problems_name_the_variable(scripts: Scripts) -> None:
    good = scripts.recorder("good")
    group_writable = scripts.recorder("gw", mode=0o775)
    missing = str(scripts.root / "missing.sh")
    assert hook_problems(good, good, None, None, "nobody") == []
    assert hook_problems(None, None, None, None, "kat-no-such-user") == []
    problems = hook_problems(f"{good} --flag", missing, group_writable, None, "kat-no-such-user")
    assert problems[0].startswith("SCRIPT_USER='kat-no-such-user': no such user")
    assert problems[1:] == [
        f"NOTIFY_MASTER='{missing}': {missing} does not exist",
        f"NOTIFY_BACKUP='{group_writable}': keepalived's script security refuses it: {group_writable} is writable by "
        "a non-root user (it must be owned by root and not group- or world-writable, and so must every directory "
        "above it)",
    ]


@needs_root
def test_script_refusal_checks_the_whole_path_and_the_user(scripts: Scripts) -> None:
    nobody = pwd.getpwnam("nobody")
    good = scripts.recorder("good")
    assert script_refusal(good, nobody) is None
    assert script_refusal("relative.sh") == "relative.sh is not an absolute path"
    assert script_refusal(str(scripts.root)) == f"{scripts.root} is not an executable file"
    owner_only = scripts.recorder("owner-only", mode=0o700)
    assert script_refusal(owner_only) is None  # root may run it
    assert script_refusal(owner_only, nobody) == f"SCRIPT_USER nobody may not execute {owner_only}"
    # A symlink in a safe place to a script in an unsafe one, and the other way round: both refused.
    unsafe = scripts.root / "unsafe"
    unsafe.mkdir()
    unsafe.chmod(0o1777)
    hidden = scripts.recorder("hidden", directory=unsafe)
    (scripts.root / "link-out").symlink_to(hidden)
    assert f"{unsafe} is writable by a non-root user" in (script_refusal(str(scripts.root / "link-out")) or "")
    (unsafe / "link-in").symlink_to(good)
    assert f"{unsafe} is writable by a non-root user" in (script_refusal(str(unsafe / "link-in")) or "")
