"""The image's entry forms, as users type them: `IMAGE check`, `IMAGE keepalived-supervisor check`, `IMAGE sh`."""

from __future__ import annotations

import docker

from lab.engine import SUPERVISOR_IMAGE, engine_client
from supervisor import __version__
from tests.integration.dockerlab import require_engine


def run(client: docker.DockerClient, *command: str) -> tuple[int, str]:
    container = client.containers.run(SUPERVISOR_IMAGE, list(command), detach=True, network_mode="none")
    try:
        status = container.wait(timeout=60)
        return int(status["StatusCode"]), bytes(container.logs()).decode(errors="replace")
    finally:
        container.remove(force=True)


def test_entry_forms() -> None:
    require_engine()
    client = engine_client()
    try:
        code, output = run(client, "check")
        assert code == 0 and "configuration ok" in output, output
        code, output = run(client, "keepalived-supervisor", "check")
        assert code == 0 and "configuration ok" in output, output
        code, output = run(client, "sh", "-c", "echo shell-works")
        assert code == 0 and "shell-works" in output
        code, output = run(client, "--version")
        assert code == 0 and __version__ in output
        code, output = run(client, "keepalived-supervisor", "--version")
        assert code == 0 and __version__ in output
        code, output = run(client, "sh", "-c", "VRID=999 keepalived-supervisor check")
        assert code == 2 and "VRID='999'" in output, output
    finally:
        client.close()
