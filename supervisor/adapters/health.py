"""The health authority: runs the probes, applies Docker events at once, writes each instance's track file.

keepalived watches every track file with inotify (weight 0: a non-zero value puts the instance in FAULT, it sends
a priority-0 advert and the peer takes over after its skew time). A health change therefore needs no reload.

Probes run as asyncio tasks on a loop in their own thread, so a hung service never blocks anything: each probe is
cut at its timeout and counts as a failure. Docker events (die, stop, kill, pause, destroy, unhealthy) arrive from
the watcher's thread and flip the verdict synchronously, before any probe could notice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import threading
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from pyroute2 import DiagSocket

from supervisor.adapters.files import write_atomically
from supervisor.core.checks import Member, Probe, ProbeCounter, instance_verdict, member_healthy
from supervisor.core.events import FAIL_ACTIONS, RECOVER_ACTIONS

log = logging.getLogger(__name__)

TCP_LISTEN = 10

Key = tuple[str, str]  # (instance name, member key)


def listener_present(port: int) -> bool:
    """A TCP socket listening on `port` on any address of this network namespace (netlink sock_diag)."""
    with DiagSocket() as diag:
        diag.bind()
        for family in (socket.AF_INET, socket.AF_INET6):
            for message in diag.get_sock_stats(family=family, states=1 << TCP_LISTEN):
                if int(message["idiag_sport"]) == port:
                    return True
    return False


async def _tcp_connect(host: str, port: int, timeout: float) -> None:
    _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()


async def _http_get(probe: Probe, host: str) -> None:
    async def exchange() -> int:
        reader, writer = await asyncio.open_connection(host, probe.port)
        try:
            authority = f"[{host}]" if ":" in host else host
            request = (
                f"GET {probe.http_path} HTTP/1.0\r\nHost: {authority}:{probe.port}\r\n"
                "User-Agent: keepalived-supervisor\r\nConnection: close\r\n\r\n"
            )
            writer.write(request.encode("ascii", errors="replace"))
            await writer.drain()
            status_line = await reader.readline()
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
        parts = status_line.decode(errors="replace").split()
        if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
            raise ConnectionError(f"not an HTTP response: {status_line[:60]!r}")
        return int(parts[1])

    status = await asyncio.wait_for(exchange(), probe.timeout)
    if status != probe.http_status:
        raise ConnectionError(f"HTTP status {status}, expected {probe.http_status}")


async def run_probe(probe: Probe) -> tuple[bool, str]:
    """Run one probe; (ok, error). Never raises, never outlives probe.timeout by much."""
    loop = asyncio.get_running_loop()
    try:
        if probe.kind == "listen":
            found = await asyncio.wait_for(loop.run_in_executor(None, listener_present, probe.port), probe.timeout)
            return (True, "") if found else (False, f"no listener on port {probe.port}")
        if probe.kind == "port":
            found = await asyncio.wait_for(loop.run_in_executor(None, listener_present, probe.port), probe.timeout)
            if found:
                return True, ""
        if probe.host is None:
            return False, "no host address on the instance's interface"
        if probe.kind == "http":
            await _http_get(probe, probe.host)
        else:
            await _tcp_connect(probe.host, probe.port, probe.timeout)
        return True, ""
    except TimeoutError:
        return False, f"no answer within {probe.timeout:g} s"
    except OSError as error:
        return False, error.strerror or str(error)
    except Exception as error:  # a probe must never take the monitor down
        return False, str(error) or type(error).__name__


class HealthMonitor:
    """Keeps one verdict per instance and its track file in step with probes and Docker events."""

    def __init__(self, policy: str, on_verdict: Callable[[str, bool, str], None] | None = None) -> None:
        self.policy = policy
        self.on_verdict = on_verdict
        self._lock = threading.RLock()
        self._members: dict[Key, Member] = {}
        self._counters: dict[Key, ProbeCounter] = {}
        self._tasks: dict[Key, asyncio.Task[None]] = {}
        self._kicks: dict[Key, asyncio.Event] = {}
        self._track_files: dict[str, Path] = {}
        self._written: dict[str, bool] = {}
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="health", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        async def cancel_all() -> None:
            tasks = list(self._tasks.values())
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        if self._thread.is_alive():
            with contextlib.suppress(Exception):
                asyncio.run_coroutine_threadsafe(cancel_all(), self._loop).result(5)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)

    # -- inputs ------------------------------------------------------------------------------------------------

    def update(self, members: dict[str, tuple[Member, ...]], track_files: dict[str, Path]) -> None:
        """Take the members of every instance (after a reconcile or a snapshot change)."""
        with self._lock:
            self._track_files = dict(track_files)
            fresh = {(instance, member.key): member for instance, group in members.items() for member in group}
            for key in list(self._members):
                if key not in fresh:
                    self._forget(key)
            for key, member in fresh.items():
                old = self._members.get(key)
                self._members[key] = member
                if member.probe is None:
                    self._forget_probe(key)
                elif old is None or old.probe != member.probe:
                    self._forget_probe(key)
                    self._counters[key] = ProbeCounter(member.probe.rise, member.probe.fall)
                    self._loop.call_soon_threadsafe(self._start_probe, key, member.probe)
            for instance in [name for name in self._written if name not in members]:
                del self._written[instance]
            for instance in members:
                self._decide(instance)

    def on_container_event(self, container_id: str, action: str) -> None:
        """A Docker event for a container: failures count at once, recoveries wait for a probe to confirm."""
        with self._lock:
            for key, member in list(self._members.items()):
                if member.key != container_id:
                    continue
                if action in FAIL_ACTIONS:
                    self._members[key] = replace(member, docker_ok=False, docker_reason=f"Docker event {action}")
                    log.info("health: %s %s -> failed at once", member.name, action)
                elif action in RECOVER_ACTIONS:
                    counter = self._counters.get(key)
                    if counter is not None:
                        counter.reset()
                    kick = self._kicks.get(key)
                    if kick is not None:
                        self._loop.call_soon_threadsafe(kick.set)
                else:
                    continue
                self._decide(key[0])

    # -- verdicts ----------------------------------------------------------------------------------------------

    def verdicts(self) -> dict[str, tuple[bool, str]]:
        with self._lock:
            return {instance: self._verdict(instance) for instance in self._track_files}

    def _verdict(self, instance: str) -> tuple[bool, str]:
        results = [
            member_healthy(member, self._counters.get(key))
            for key, member in self._members.items()
            if key[0] == instance
        ]
        return instance_verdict(results, self.policy)

    def _decide(self, instance: str) -> None:
        healthy, reason = self._verdict(instance)
        path = self._track_files.get(instance)
        if path is None or self._written.get(instance) == healthy:
            return
        write_atomically(path, "0\n" if healthy else "1\n", mode=0o644)
        self._written[instance] = healthy
        log.log(
            logging.INFO if healthy else logging.WARNING,
            "health: %s is %s: %s",
            instance,
            "healthy" if healthy else "FAILED",
            reason,
        )
        if self.on_verdict is not None:
            self.on_verdict(instance, healthy, reason)

    # -- probes (on the loop thread) ---------------------------------------------------------------------------

    def _forget(self, key: Key) -> None:
        self._forget_probe(key)
        self._members.pop(key, None)

    def _forget_probe(self, key: Key) -> None:
        self._counters.pop(key, None)
        task = self._tasks.pop(key, None)
        self._kicks.pop(key, None)
        if task is not None:
            self._loop.call_soon_threadsafe(task.cancel)

    def _start_probe(self, key: Key, probe: Probe) -> None:
        with self._lock:
            member = self._members.get(key)
            if member is None or member.probe != probe or key in self._tasks:
                return
            kick = asyncio.Event()
            self._kicks[key] = kick
            self._tasks[key] = self._loop.create_task(self._probe_loop(key, probe, kick))

    async def _probe_loop(self, key: Key, probe: Probe, kick: asyncio.Event) -> None:
        while True:
            ok, error = await run_probe(probe)
            with self._lock:
                member = self._members.get(key)
                counter = self._counters.get(key)
                if member is None or counter is None or member.probe != probe:
                    return
                before = counter.healthy
                counter.record(ok, error)
                if counter.healthy != before:
                    log.info("health: %s: %s %s", member.name, probe.describe(), "ok" if ok else f"failed: {error}")
                self._decide(key[0])
            kick.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(kick.wait(), probe.interval)
