"""The Docker engine side of the lab: the tiny local test image, a client, run ids, and polling with a deadline.

Shared by the tests, the benchmarks and the demo. Every container and network the lab creates carries
``kat.test=<run id>``, so nothing outside the lab is ever touched.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import docker
import docker.errors

REPO = Path(__file__).resolve().parents[1]
IMAGE = "kat-busybox:latest"
SUPERVISOR_IMAGE = "docker-keepalived:latest"
TEST_LABEL = "kat.test"
BUSYBOX = Path("/bin/busybox")


def wait_until(predicate: Callable[[], bool], timeout: float, what: str, interval: float = 0.05) -> float:
    """Poll `predicate` until true; return the seconds it took, or fail naming `what`."""
    start = time.monotonic()
    deadline = start + timeout
    while True:
        if predicate():
            return time.monotonic() - start
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


def engine_client(timeout: int = 30) -> docker.DockerClient:
    return docker.from_env(timeout=timeout, max_pool_size=32)  # room for the tests' thread pools


def ensure_image(client: docker.DockerClient) -> None:
    """Build kat-busybox:latest (FROM scratch + static busybox) when it is missing."""
    try:
        client.images.get(IMAGE)
        return
    except docker.errors.ImageNotFound:
        pass
    if not BUSYBOX.exists():
        raise docker.errors.DockerException(f"{BUSYBOX} missing (apt-get install busybox-static) to build {IMAGE}")
    with tempfile.TemporaryDirectory(prefix="kat-busybox-") as ctx:
        shutil.copy2(BUSYBOX, Path(ctx, "busybox"))
        Path(ctx, "Dockerfile").write_text(
            'FROM scratch\nCOPY busybox /bin/busybox\nRUN ["/bin/busybox", "--install", "-s", "/bin"]\n'
        )
        client.images.build(path=ctx, tag=IMAGE, rm=True, forcerm=True)


def new_run_id() -> str:
    return uuid.uuid4().hex[:12]


def terminate(process: subprocess.Popen[bytes], timeout: float = 20) -> int:
    """SIGTERM a process started in its own session and wait; SIGKILL its whole group after `timeout`."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    return process.returncode
