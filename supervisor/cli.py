"""Command line: `keepalived-supervisor run | render | check | status`.

`run` is the container's entrypoint. `render` prints the config `run` would install, `check` validates settings
(and labels when the engine is reachable) and exits 2 with one line per problem, `status` reports the running
supervisor's view of every instance.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import threading
from collections.abc import Sequence
from dataclasses import replace

from supervisor.core.model import DesiredState
from supervisor.core.settings import Settings, SettingsError, load_settings
from supervisor.core.snapshot import Snapshot

EXIT_OK, EXIT_FAILED, EXIT_INVALID, EXIT_NOT_RUNNING = 0, 1, 2, 3


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

    watcher = DockerWatcher(on_snapshot, dict(settings.label_selector), settings.label_prefix, retry_max=1.0)
    watcher.start()
    try:
        arrived.wait(timeout)
    finally:
        watcher.stop()
    return seen[-1] if seen else None


def desired_from_engine(settings: Settings) -> DesiredState:
    """The desired state `run` would start with: env plus labelled containers when the engine answers."""
    from supervisor.core.labels import parse_services
    from supervisor.core.model import build_desired_state

    snapshot = engine_snapshot(settings)
    if snapshot is None:
        print("docker engine not reachable: rendering from the environment alone", file=sys.stderr)
        return build_desired_state(settings, [])
    specs, problems = parse_services(snapshot.containers.values(), settings.label_prefix)
    state = build_desired_state(settings, specs)
    return replace(state, problems=(*problems, *state.problems))


def cmd_render(_args: argparse.Namespace) -> int:
    settings = _load()
    if settings is None:
        return EXIT_INVALID
    from supervisor.core.render import render

    state = desired_from_engine(settings)
    for problem in state.problems:
        print(f"problem: {problem}", file=sys.stderr)
    sys.stdout.write(render(state))
    return EXIT_OK


def cmd_check(_args: argparse.Namespace) -> int:
    settings = _load()
    if settings is None:
        return EXIT_INVALID
    from supervisor.adapters.preflight import script_problems

    problems = script_problems(settings) + list(desired_from_engine(settings).problems)
    for problem in problems:
        print(problem, file=sys.stderr)
    if problems:
        return EXIT_INVALID
    print("configuration ok")
    return EXIT_OK


def cmd_status(args: argparse.Namespace) -> int:
    from supervisor.adapters.status import format_status, read_status

    settings = _load()
    if settings is None:
        return EXIT_INVALID
    try:
        data = read_status(settings.run_dir)
    except FileNotFoundError:
        print(f"supervisor not running: no status in {settings.run_dir}", file=sys.stderr)
        return EXIT_NOT_RUNNING
    running = _pid_alive(data.get("supervisor_pid"))
    keepalived_running = running and _pid_alive(data.get("keepalived", {}).get("pid"))
    if args.quiet:
        pass
    elif args.json:
        print(json.dumps({**data, "running": running, "keepalived_running": keepalived_running}, indent=2))
    else:
        print(format_status(data, running))
    if not running:
        return EXIT_NOT_RUNNING
    return EXIT_OK if keepalived_running else EXIT_FAILED


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="keepalived-supervisor",
        description="Keeps virtual IPs on the host whose front end answers (keepalived, driven by Docker).",
    )
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
    status.set_defaults(func=cmd_status)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
