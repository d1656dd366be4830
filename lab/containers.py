"""Containers on the real engine for tests and benchmarks: labelled busybox containers that are always removed,
and control over dockerd itself (stop/start) for outage cases.

Every container carries ``kat.test=<run id>``; watchers under test put that label in their selector, so they never see
or touch containers that are not theirs.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import docker
import docker.errors
from docker.models.containers import Container

from lab.engine import IMAGE, REPO, TEST_LABEL, engine_client, ensure_image, new_run_id, wait_until

DOCKERD_PID = Path("/var/run/docker.pid")
DOCKERD_LOG = Path("/var/log/kat-dockerd.log")


WEDGED_AFTER = 20
"""Seconds an engine that answers /_ping may take over /info before it counts as wedged."""


def engine_wedged() -> bool:
    """The engine answers /_ping but not /info: dockerd 20.10's libnetwork can deadlock when containers exit while
    networks change (seen here after the tests that restart and freeze dockerd, under a 200-container storm: every
    call that lists networks, /info among them, then hangs for good)."""
    try:
        client = engine_client(timeout=WEDGED_AFTER)
    except docker.errors.DockerException:
        return False
    try:
        client.ping()
    except (docker.errors.DockerException, OSError):
        return False  # not answering at all: not wedged, just down
    try:
        client.info()
        client.api.networks()
        return False
    except (docker.errors.DockerException, OSError):  # requests' timeouts are OSErrors
        return True
    finally:
        client.close()


def engine_problem() -> str | None:
    """Why the local engine cannot be used, or None when it can. A wedged engine is restarted first (the tests own
    this engine; a deadlocked one serves nobody), with a warning on the output."""
    if engine_wedged():
        print(f"warning: dockerd answers /_ping but not /info within {WEDGED_AFTER:g} s (deadlocked): restarting it")
        stop_dockerd()
        start_dockerd()
    try:
        client = engine_client(timeout=5)
    except docker.errors.DockerException as exc:
        return f"docker engine not reachable: {exc}"
    try:
        client.ping()
        ensure_image(client)
    except (docker.errors.DockerException, OSError) as exc:
        return f"docker engine not usable: {exc}"
    finally:
        client.close()
    return None


class ContainerLab:
    """Creates labelled busybox containers for one test and removes every one of them in `close`."""

    def __init__(self, client: docker.DockerClient, run_id: str | None = None) -> None:
        self.client = client
        self.run_id = run_id or new_run_id()
        self._created: list[str] = []
        self._lock = threading.Lock()

    @property
    def selector(self) -> dict[str, str]:
        return {TEST_LABEL: self.run_id}

    def create(
        self,
        labels: Mapping[str, str] | None = None,
        command: str = "sleep 3600",
        start: bool = True,
        name: str | None = None,
        **kwargs: Any,
    ) -> Container:
        """Create (and by default start) a container carrying the run label plus `labels`."""
        all_labels = {TEST_LABEL: self.run_id, **(labels or {})}
        container = self.client.containers.create(
            IMAGE,
            ["sh", "-c", command],
            labels=all_labels,
            name=name,
            stop_signal="SIGKILL",  # sh as pid 1 ignores SIGTERM: stop at once
            **kwargs,
        )
        with self._lock:
            self._created.append(container.id or "")
        if start:
            container.start()
        return container

    def reconnect(self) -> None:
        """A fresh client after an engine restart (the old one's pooled connections died with the engine)."""
        old, self.client = self.client, engine_client()
        old.close()

    def remove(self, container_id: str) -> None:
        try:
            self.client.api.remove_container(container_id, force=True)
        except docker.errors.NotFound:
            return
        except docker.errors.APIError as exc:
            if exc.status_code != 409:  # 409: removal already in progress
                raise

    def remove_all_labelled(self) -> None:
        """Remove every container of this run, also ones created by threads that failed half-way."""
        found = self.client.api.containers(all=True, quiet=True, filters={"label": f"{TEST_LABEL}={self.run_id}"})
        with self._lock:
            ids = set(self._created) | {c["Id"] for c in found}
        with ThreadPoolExecutor(max_workers=16) as pool:
            list(pool.map(self.remove, ids))

    def close(self) -> None:
        try:
            self.remove_all_labelled()
        except docker.errors.DockerException:
            # The engine may be down (an outage test failing half-way): bring it back, then clean up.
            ensure_dockerd_running()
            self.client = engine_client()
            self.remove_all_labelled()
        finally:
            self.client.close()


# --- dockerd control -------------------------------------------------------------------------------------------


def _dockerd_script() -> Path | None:
    script = REPO / "scripts" / "dockerd.sh"
    return script if script.exists() else None


def _run_script(script: Path, action: str, timeout: float) -> None:
    """Run scripts/dockerd.sh ACTION. Its exit status is only reported: callers wait for the effect itself."""
    done = subprocess.run(["bash", str(script), action], timeout=timeout, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        print(f"warning: {script.name} {action} exited {done.returncode}: {(done.stderr or done.stdout).strip()}")


def dockerd_up() -> bool:
    try:
        client = docker.from_env(timeout=3)
    except docker.errors.DockerException:
        return False
    try:
        return bool(client.ping())
    except (docker.errors.DockerException, OSError):
        return False
    finally:
        client.close()


def dockerd_pid() -> int | None:
    try:
        pid = int(DOCKERD_PID.read_text().strip())
    except (OSError, ValueError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    return pid


def stop_dockerd(timeout: float = 60) -> None:
    """Stop the engine (its containers die with it) and wait until it is gone."""
    script = _dockerd_script()
    if script is not None:
        _run_script(script, "stop", timeout)
    else:
        pid = dockerd_pid()
        if pid is not None:
            os.kill(pid, signal.SIGTERM)
    wait_until(lambda: dockerd_pid() is None and not dockerd_up(), timeout, "dockerd to stop", interval=0.1)


def start_dockerd(timeout: float = 60) -> None:
    """Start the engine and wait until it answers."""
    script = _dockerd_script()
    if script is not None:
        _run_script(script, "start", timeout)
    else:
        with DOCKERD_LOG.open("ab") as log:
            subprocess.Popen(
                ["dockerd"], stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
            )
    wait_until(dockerd_up, timeout, "dockerd to answer", interval=0.1)


def foreign_running_containers(client: docker.DockerClient, run_id: str) -> list[str]:
    """Names of running containers that are not this run's: an engine restart would kill them."""
    return sorted(
        c["Names"][0].lstrip("/") if c.get("Names") else c["Id"][:12]
        for c in client.api.containers(filters={"status": "running"})
        if (c.get("Labels") or {}).get(TEST_LABEL) != run_id
    )


def ensure_dockerd_running() -> None:
    if not dockerd_up():
        start_dockerd()


def run_parallel(fn: Callable[[int], object], count: int, workers: int = 16) -> None:
    """Run fn(0..count-1) on a thread pool; re-raise the first failure."""
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for _ in pool.map(fn, range(count)):
            pass


def ids(containers: Iterable[Container]) -> set[str]:
    return {c.id or "" for c in containers}
