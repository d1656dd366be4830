"""Command line: `keepalived-supervisor run | render | check | status`.

`run` is the container's entrypoint. `render` prints the config `run` would install, `check` validates settings
(and labels when the engine is reachable) and exits 2 with one line per problem, `status` reports the running
supervisor's view of every instance.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

from supervisor import __version__
from supervisor.core.plan import Plan
from supervisor.core.settings import Settings, SettingsError, load_settings
from supervisor.core.snapshot import Snapshot
from supervisor.core.validate import IPAddress

EXIT_OK, EXIT_FAILED, EXIT_INVALID, EXIT_NOT_RUNNING = 0, 1, 2, 3
DEFAULT_RUN_DIR = Path("/run/keepalived-supervisor")


def _load() -> Settings | None:
    try:
        return load_settings(os.environ)
    except SettingsError as error:
        for problem in error.problems:
            print(problem, file=sys.stderr)
        return None


def _pid_alive(pid: object) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def cmd_run(_args: argparse.Namespace) -> int:
    settings = _load()
    if settings is None:
        return EXIT_INVALID
    from supervisor.app import run

    return run(settings)


def engine_snapshot(settings: Settings, timeout: float = 5.0) -> Snapshot | None:
    """One look at the engine through the watcher (list + inspect), or None when it is unreachable."""
    import docker

    from supervisor.adapters.docker_watch import DockerWatcher, default_client_factory

    try:
        default_client_factory().ping()
    except docker.errors.DockerException:
        return None
    logging.getLogger("supervisor.adapters.docker_watch").setLevel(logging.ERROR)  # a one-shot look: no retry chatter
    seen: list[Snapshot] = []
    arrived = threading.Event()

    def on_snapshot(snapshot: Snapshot) -> None:
        if snapshot.engine_reachable:
            seen.append(snapshot)
            arrived.set()

    watcher = DockerWatcher(
        on_snapshot,
        dict(settings.label_selector),
        settings.label_prefix,
        retry_max=1.0,
        watch_unlabelled=settings.discover_check_port and settings.check.port is not None,  # CHECK_PORT / Rancher
    )
    watcher.start()
    try:
        arrived.wait(timeout)
    finally:
        watcher.stop()
    return seen[-1] if seen else None


def _managed_vips(settings: Settings) -> frozenset[IPAddress]:
    """The VIPs keepalived may hold here: the environment's and those of the installed config (which a running
    supervisor installed from its plan), so they are not taken for the host's own addresses."""
    from supervisor.adapters.keepalived import KeepalivedPaths, installed_vips

    vips: set[IPAddress] = {vip.address for vip in settings.virtual_ips}
    with contextlib.suppress(OSError, UnicodeDecodeError):
        vips |= installed_vips(KeepalivedPaths(settings.run_dir).config.read_text(encoding="utf-8"))
    return frozenset(vips)


def plan_here(settings: Settings) -> Plan:
    """The plan `run` would make on this host now: env, labelled containers when the engine answers, host facts."""
    from supervisor.adapters.net import host_facts
    from supervisor.core.plan import make_plan

    snapshot = engine_snapshot(settings)
    if snapshot is None:
        print("docker engine not reachable: rendering from the environment alone", file=sys.stderr)
        snapshot = Snapshot()
    return make_plan(settings, snapshot, host_facts(_managed_vips(settings)))


def cmd_render(_args: argparse.Namespace) -> int:
    settings = _load()
    if settings is None:
        return EXIT_INVALID
    plan = plan_here(settings)
    for problem in (*plan.fatal, *plan.problems):
        print(f"problem: {problem}", file=sys.stderr)
    sys.stdout.write(plan.text)
    return EXIT_OK


def cmd_check(_args: argparse.Namespace) -> int:
    settings = _load()
    if settings is None:
        return EXIT_INVALID
    from supervisor.adapters.hooks import hook_problems
    from supervisor.adapters.preflight import script_problems

    plan = plan_here(settings)
    hooks = hook_problems(
        settings.notify, settings.notify_master, settings.notify_backup, settings.notify_fault, settings.script_user
    )
    problems = [*plan.fatal, *script_problems(settings), *hooks, *plan.problems]
    for problem in problems:
        print(problem, file=sys.stderr)
    if problems:
        return EXIT_INVALID
    print("configuration ok")
    return EXIT_OK


def _status_dir() -> Path:
    """RUN_DIR alone: `status` must not fail because of a pending edit elsewhere in the settings."""
    raw = os.environ.get("RUN_DIR", "").strip()
    return Path(raw) if raw.startswith("/") else DEFAULT_RUN_DIR


def cmd_status(args: argparse.Namespace) -> int:
    from supervisor.adapters.status import format_status, health_verdict, read_status

    run_dir = _status_dir()
    if args.dump:
        return _dump(run_dir)
    try:
        data = read_status(run_dir)
    except (OSError, ValueError) as error:
        print(f"supervisor not running: no readable status in {run_dir} ({error})", file=sys.stderr)
        return EXIT_NOT_RUNNING
    running = _pid_alive(data.get("supervisor_pid"))
    keepalived_running = running and _pid_alive(data.get("keepalived", {}).get("pid"))
    healthy, reason = health_verdict(data)
    if not running:
        reason = "the supervisor is not running"
    elif not keepalived_running:
        reason = "keepalived is not running"
    if args.quiet:
        if reason and not (running and keepalived_running and healthy):
            print(reason, file=sys.stderr)
    elif args.json:
        print(json.dumps({**data, "running": running, "keepalived_running": keepalived_running}, indent=2))
    else:
        print(format_status(data, running))
    if not running:
        return EXIT_NOT_RUNNING
    return EXIT_OK if keepalived_running and healthy else EXIT_FAILED


def _dump(run_dir: Path) -> int:
    """keepalived's own dump: SIGUSR1 to the supervisor (which passes it on), then keepalived's data file."""
    import signal
    import time

    from supervisor.adapters.status import read_status

    try:
        pid = int(read_status(run_dir).get("supervisor_pid") or 0)
    except (OSError, ValueError):
        pid = 0
    if not _pid_alive(pid):
        print(f"supervisor not running: no live supervisor in {run_dir}", file=sys.stderr)
        return EXIT_NOT_RUNNING
    data_file = Path(os.environ.get("TMPDIR") or "/tmp") / "keepalived.data"  # where keepalived writes it
    before = data_file.stat().st_mtime_ns if data_file.exists() else 0
    os.kill(pid, signal.SIGUSR1)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if data_file.exists() and data_file.stat().st_mtime_ns != before:
            time.sleep(0.1)  # let keepalived finish writing
            sys.stdout.write(data_file.read_text(errors="replace"))
            return EXIT_OK
        time.sleep(0.05)
    print(f"keepalived wrote no new {data_file} within 5 s", file=sys.stderr)
    return EXIT_FAILED


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="keepalived-supervisor",
        description="Keeps virtual IPs on the host whose front end answers (keepalived, driven by Docker).",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("run", help="supervise keepalived (the container entrypoint)").set_defaults(func=cmd_run)
    commands.add_parser("render", help="print the keepalived.conf that run would install").set_defaults(func=cmd_render)
    commands.add_parser("check", help="validate settings and labels; exit 2 listing the problems").set_defaults(
        func=cmd_check
    )
    status = commands.add_parser("status", help="state, priority, VIPs and health of every instance")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.add_argument(
        "--quiet", action="store_true", help="print nothing; exit 0 when supervisor and keepalived run (healthcheck)"
    )
    status.add_argument(
        "--dump", action="store_true", help="print keepalived's own data dump (SIGUSR1, then TMPDIR/keepalived.data)"
    )
    status.set_defaults(func=cmd_status)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
