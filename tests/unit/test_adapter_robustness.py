"""The host adapters survive the host: symlinks planted in RUN_DIR, a full or vanished disk, racing threads, a
callback that raises, a track file changed behind the supervisor's back, a FIFO that disappears."""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import stat
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from supervisor.adapters import health, status
from supervisor.adapters.files import FileTooLarge, NotARegularFile, is_bind_mount, read_bounded, write_atomically
from supervisor.adapters.health import HealthMonitor
from supervisor.adapters.notify import NotifyFifoReader, Transition
from supervisor.adapters.status import InstanceStatus, StatusBoard, format_status, health_verdict, read_status
from supervisor.core.checks import Member, Probe


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        time.sleep(0.02)


def enospc(*_args: object, **_kwargs: object) -> None:
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


# -- files -----------------------------------------------------------------------------------------------------------


def test_a_symlink_is_replaced_never_written_through(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    victim = elsewhere / "passwd"
    victim.write_text("root:x:0:0\n")
    link = tmp_path / "keepalived.conf"
    link.symlink_to(victim)
    write_atomically(link, "new\n", mode=0o640)
    assert victim.read_text() == "root:x:0:0\n"
    assert not link.is_symlink() and link.read_text() == "new\n"
    assert stat.S_IMODE(link.stat().st_mode) == 0o640
    dangling = tmp_path / "track"
    dangling.symlink_to(elsewhere / "created-through-the-link")
    write_atomically(dangling, "0\n")
    assert not (elsewhere / "created-through-the-link").exists()
    assert not dangling.is_symlink() and dangling.read_text() == "0\n"
    assert stat.S_IMODE(dangling.stat().st_mode) == 0o600
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "no temp file left behind"


def test_a_symlink_to_a_mount_point_is_not_a_mount_point(tmp_path: Path) -> None:
    assert is_bind_mount(Path("/proc"))
    link = tmp_path / "proc"
    link.symlink_to("/proc")
    assert not is_bind_mount(link)
    assert not is_bind_mount(tmp_path / "missing")


def test_a_failed_write_leaves_the_old_file_and_no_temp_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "status.json"
    target.write_text("old\n")
    monkeypatch.setattr(os, "replace", enospc)
    with pytest.raises(OSError, match="No space"):
        write_atomically(target, "new\n")
    assert target.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["status.json"]


def test_read_bounded(tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.write_bytes(b"12345")
    assert read_bounded(plain, 5) == b"12345"
    with pytest.raises(FileTooLarge):
        read_bounded(plain, 4)
    link = tmp_path / "link"
    link.symlink_to(plain)
    with pytest.raises(NotARegularFile):
        read_bounded(link, 100)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(NotARegularFile):
        read_bounded(fifo, 100)  # must not block waiting for a writer
    with pytest.raises(NotARegularFile):
        read_bounded(tmp_path, 100)
    with pytest.raises(FileNotFoundError):
        read_bounded(tmp_path / "missing", 100)
    with pytest.raises(FileTooLarge):  # st_size is 0 there: the read itself must stop at limit + 1
        read_bounded(Path("/proc/self/status"), 10)
    assert issubclass(NotARegularFile, ValueError) and issubclass(FileTooLarge, ValueError)


# -- status ----------------------------------------------------------------------------------------------------------


def board_with_instances(run_dir: Path, names: list[str]) -> StatusBoard:
    board = StatusBoard(run_dir)
    for vrid, name in enumerate(names, start=1):
        board.instances[name] = InstanceStatus(name, vrid, "eth0", 100, [f"10.0.0.{vrid}/24"], "env")
    board.write()
    return board


def without_updated(data: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in data.items() if key != "updated"}


def on_disk(board: StatusBoard) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(board.path.read_text())
    return data


def test_racing_writers_never_leave_an_older_board_on_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "fsync", lambda _fd: None)  # durability is not under test here; ordering is
    names = ["VI_1", "VI_2", "VI_3"]
    for trial in range(200):
        run_dir = tmp_path / str(trial)
        run_dir.mkdir()
        board = board_with_instances(run_dir, names)
        barrier = threading.Barrier(3)

        def worker(index: int, board: StatusBoard = board, barrier: threading.Barrier = barrier) -> None:
            barrier.wait()
            for step in range(3):
                name = names[(index + step) % len(names)]
                board.record_transition(name, ("MASTER", "BACKUP", "FAULT")[(index + step) % 3], 100 + index)
                board.record_vips_held(name, (index + step) % 2 == 0)
                board.record_health(name, step % 2 == 0, f"worker {index} step {step}")
                board.record_component(f"part{index}", step % 2 == 1, f"step {step}")
                board.record_pending_problems([f"worker {index} step {step}"])
            board.record_reload()

        threads = [threading.Thread(target=worker, args=(index,)) for index in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert without_updated(on_disk(board)) == without_updated(board.as_dict()), f"trial {trial}"


def test_a_full_disk_never_reaches_the_callers_and_the_next_write_catches_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    board = board_with_instances(tmp_path, ["VI_1"])
    with monkeypatch.context() as patch, caplog.at_level(logging.WARNING, logger=status.__name__):
        patch.setattr(os, "replace", enospc)
        board.record_transition("VI_1", "MASTER", 150)
        board.record_vips_held("VI_1", True)
        board.record_component("health", False, "track file not written")
        board.record_reload()
        assert board.write() is False
        assert board.write_error() is not None and "No space left" in board.write_error()  # type: ignore[operator]
    warnings = [record for record in caplog.records if record.levelno == logging.WARNING]
    assert len(warnings) == 1, "one warning per distinct error, not one per write"
    assert on_disk(board)["instances"][0]["state"] == "UNKNOWN", "the old file stays while the disk is full"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "no temp file left behind"
    board.record_engine(True)  # the next change writes everything missed
    assert without_updated(on_disk(board)) == without_updated(board.as_dict())
    assert on_disk(board)["instances"][0]["state"] == "MASTER" and board.write_error() is None


def test_a_vanished_run_dir_is_survived(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    board = board_with_instances(run_dir, ["VI_1"])
    shutil.rmtree(run_dir)
    board.record_transition("VI_1", "BACKUP", None)  # must not raise
    assert board.instances["VI_1"].state == "BACKUP"
    run_dir.mkdir()
    board.record_start(42)
    assert on_disk(board)["instances"][0]["state"] == "BACKUP" and on_disk(board)["keepalived"]["pid"] == 42


def test_components_and_pending_problems(tmp_path: Path) -> None:
    board = StatusBoard(tmp_path)
    board.record_component("health", True, "ok")
    board.record_component("notify", True, "ok")
    data = on_disk(board)
    assert data["components"]["health"]["ok"] is True and data["pending_problems"] == []
    assert health_verdict(data) == (True, "all components ok")
    board.record_pending_problems(["SETTINGS_FILE: VRID must be 1-255"])
    assert health_verdict(on_disk(board))[0], "a pending settings edit never makes the node unhealthy"
    board.record_component("health", False, "track file of VI_1 not written")
    since = on_disk(board)["components"]["health"]["since"]
    time.sleep(0.01)
    board.record_component("health", False, "track file of VI_1 not written for 6 s")
    data = on_disk(board)
    assert data["components"]["health"]["since"] == since, "since is when ok last changed"
    assert health_verdict(data) == (False, "health: track file of VI_1 not written for 6 s")
    text = format_status(data, running=True)
    assert "component health: FAILED since" in text and "not written for 6 s" in text
    assert "component notify" not in text, "components that are ok stay quiet"
    assert "pending problem (settings edit not applied, waits for SIGHUP): SETTINGS_FILE: VRID must be 1-255" in text
    assert health_verdict({}) == (True, "all components ok")
    assert health_verdict({"components": {"x": "garbage"}})[0] is False


# -- health ----------------------------------------------------------------------------------------------------------

PROBE = Probe("tcp", "127.0.0.1", 9, interval=0.1, timeout=0.1, rise=1, fall=1)


@pytest.fixture
def probes_ok(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    calls: list[int] = []

    async def fake_probe(_probe: Probe) -> tuple[bool, str]:
        calls.append(1)
        return True, ""

    monkeypatch.setattr(health, "run_probe", fake_probe)
    yield calls


def started_monitor(
    tmp_path: Path, probe: Probe | None, enforce_interval: float = 0.5, problem_after: float = 5.0
) -> tuple[HealthMonitor, Path]:
    track_dir = tmp_path / "health"
    track_dir.mkdir()
    track = track_dir / "VI_1"
    monitor = HealthMonitor("any", enforce_interval=enforce_interval, problem_after=problem_after)
    monitor.start()
    member = Member("c1", "web", "VI_1", True, "running", probe)
    monitor.update({"VI_1": (member,)}, {"VI_1": track})
    return monitor, track


def probe_alive(monitor: HealthMonitor) -> bool:
    task = monitor._tasks.get(("VI_1", "c1"))
    return task is not None and not task.done()


def test_unwritable_track_files_are_survived_reported_and_caught_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, probes_ok: list[int]
) -> None:
    monitor, track = started_monitor(tmp_path, PROBE, enforce_interval=0.1, problem_after=0.3)
    try:
        wait_for(lambda: track.read_text() == "0\n", 2, "the first verdict is written")
        assert monitor.problem() is None
        with monkeypatch.context() as patch:
            patch.setattr(health, "write_atomically", enospc)
            monitor.on_container_event("c1", "die")  # must not raise
            assert monitor.verdicts()["VI_1"][0] is False
            wait_for(lambda: "track file of VI_1" in (monitor.problem() or ""), 2, "the write failure is reported")
            assert "No space left" in (monitor.problem() or "")
            assert track.read_text() == "0\n"
            calls = len(probes_ok)
            wait_for(lambda: len(probes_ok) > calls + 2, 2, "probes keep running while writes fail")
            assert probe_alive(monitor)
        wait_for(lambda: track.read_text() == "1\n", 2, "the verdict reaches the file once writes work")
        assert monitor.problem() is None and probe_alive(monitor)
        shutil.rmtree(track.parent)  # the directory itself vanishes: real ENOENT on every write
        monitor.on_container_event("c1", "start")  # then the reconcile sees it running again:
        monitor.update({"VI_1": (Member("c1", "web", "VI_1", True, "running", PROBE),)}, {"VI_1": track})
        wait_for(lambda: monitor.verdicts()["VI_1"][0], 2, "the probe confirms the restart")
        track.parent.mkdir()
        wait_for(lambda: track.exists() and track.read_text() == "0\n", 2, "written again once the directory is back")
        assert probe_alive(monitor) and monitor.problem() is None
    finally:
        monitor.stop()


def test_a_track_file_changed_by_hand_is_put_back(tmp_path: Path) -> None:
    monitor, track = started_monitor(tmp_path, None)  # no probe: only the periodic enforce can put it back
    try:
        wait_for(lambda: track.read_text() == "0\n", 2, "the first verdict is written")
        track.write_text("1\n")
        wait_for(lambda: track.read_text() == "0\n", 2, "put back within the enforce interval")
        track.unlink()
        wait_for(lambda: track.exists() and track.read_text() == "0\n", 2, "re-created")
        elsewhere = tmp_path / "elsewhere"
        elsewhere.write_text("1\n")
        track.unlink()
        track.symlink_to(elsewhere)
        wait_for(lambda: not track.is_symlink() and track.read_text() == "0\n", 2, "a planted symlink replaced")
        assert elsewhere.read_text() == "1\n"
    finally:
        monitor.stop()


def test_a_probe_task_that_dies_is_restarted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []

    async def flaky_probe(_probe: Probe) -> tuple[bool, str]:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("a bug in a probe")
        return True, ""

    monkeypatch.setattr(health, "run_probe", flaky_probe)
    monitor, track = started_monitor(tmp_path, PROBE, enforce_interval=0.1)
    try:
        wait_for(lambda: len(calls) >= 3, 3, "the probe runs again after dying")
        wait_for(lambda: track.read_text() == "0\n", 2, "its verdict is written")
        assert probe_alive(monitor) and monitor.problem() is None
    finally:
        monitor.stop()


def test_a_raising_verdict_callback_never_reaches_the_callers(tmp_path: Path) -> None:
    def broken(_name: str, _healthy: bool, _reason: str) -> None:
        raise RuntimeError("board broken")

    track = tmp_path / "VI_1"
    monitor = HealthMonitor("any", on_verdict=broken)
    member = Member("c1", "web", "VI_1", True, "running", None)
    monitor.update({"VI_1": (member,)}, {"VI_1": track})
    monitor.on_container_event("c1", "die")
    assert track.read_text() == "1\n"
    assert monitor.problem() == "the health monitor thread is not running"


# -- notify ----------------------------------------------------------------------------------------------------------


def send(fifo: Path, text: str) -> None:
    fd = os.open(fifo, os.O_WRONLY)  # the reader holds it open: never blocks; writes block until it reads
    try:
        data = text.encode()
        while data:
            data = data[os.write(fd, data) :]
    finally:
        os.close(fd)


@pytest.fixture
def reader(tmp_path: Path) -> Iterator[tuple[NotifyFifoReader, list[Transition]]]:
    seen: list[Transition] = []

    def on_transition(transition: Transition) -> None:
        seen.append(transition)
        if len(seen) == 1:
            raise RuntimeError("the first callback fails")

    fifo = tmp_path / "notify.fifo"
    fifo.write_text("a regular file planted here\n")
    reader = NotifyFifoReader(fifo, on_transition)
    reader.start()
    try:
        yield reader, seen
    finally:
        reader.stop()


def test_a_raising_callback_and_bad_lines_do_not_stop_the_reader(
    reader: tuple[NotifyFifoReader, list[Transition]],
) -> None:
    fifo_reader, seen = reader
    assert stat.S_ISFIFO(os.lstat(fifo_reader.path).st_mode)
    send(fifo_reader.path, 'INSTANCE "VI_1" BACKUP 100\n')
    wait_for(lambda: len(seen) == 1, 2, "the first line")
    send(fifo_reader.path, "garbage \xff\x00 line\n" + "x" * 70000 + "\n")
    send(fifo_reader.path, 'INSTANCE "VI_1" MASTER 150\n')
    wait_for(lambda: len(seen) == 2, 2, "the second line after a raising callback and garbage")
    assert seen[1] == Transition("VI_1", "MASTER", 150)
    assert fifo_reader.problem() is None


def test_a_vanished_fifo_is_created_again(tmp_path: Path, reader: tuple[NotifyFifoReader, list[Transition]]) -> None:
    fifo_reader, seen = reader
    send(fifo_reader.path, 'INSTANCE "VI_1" BACKUP 100\n')
    wait_for(lambda: len(seen) == 1, 2, "the first line")
    fifo_reader.path.unlink()
    wait_for(lambda: fifo_reader.path.exists(), 3, "the FIFO is created again")
    assert stat.S_ISFIFO(os.lstat(fifo_reader.path).st_mode)
    send(fifo_reader.path, 'INSTANCE "VI_2" FAULT\n')
    wait_for(lambda: len(seen) == 2, 2, "a line through the new FIFO")
    assert seen[1] == Transition("VI_2", "FAULT", None)
    victim = tmp_path / "victim"
    victim.write_text("keep\n")
    fifo_reader.path.unlink()
    fifo_reader.path.symlink_to(victim)
    wait_for(lambda: stat.S_ISFIFO(os.lstat(fifo_reader.path).st_mode), 3, "a planted symlink replaced by a FIFO")
    assert victim.read_text() == "keep\n" and fifo_reader.problem() is None
    fifo_reader.stop()
    assert fifo_reader.problem() == "the notify FIFO reader thread is not running"


def test_read_status_refuses_what_the_board_never_writes(tmp_path: Path) -> None:
    board = StatusBoard(tmp_path)
    board.record_engine(True)
    assert read_status(tmp_path)["engine_reachable"] is True
    board.path.unlink()
    with pytest.raises(FileNotFoundError):
        read_status(tmp_path)
    os.mkfifo(board.path)
    with pytest.raises(NotARegularFile):
        read_status(tmp_path)  # a FIFO must not hang `status --quiet`
    board.path.unlink()
    board.path.write_text("[1, 2]")
    with pytest.raises(ValueError, match="JSON object"):
        read_status(tmp_path)
