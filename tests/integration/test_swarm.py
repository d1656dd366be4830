"""docker-stack.yml on a real single-node swarm: the global supervisor service holds the VIP on the node's interface,
releases it when the front end's task container is killed and takes it back once swarm has replaced the task.

The engine joins a swarm of its own for the test (`docker swarm init`, listening on 127.0.0.1 only) and always
leaves it again; an engine that already is in a swarm is left alone (the test skips). What swarm would create in the
machine's namespace stays within the test ranges: docker_gwbridge is created beforehand on 198.18.251.0/24, overlay
subnets come from 198.19.0.0/16, and the ingress network (the only overlay, with its VXLAN socket) is removed right
after the init: both services use the host network. The VIP's interface is a veth pair katsw0/katsw1
(198.51.100.250/24 on katsw0) in the machine's namespace, deleted afterwards; the VIP is 198.51.100.251.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import docker.errors
import docker.types
import pytest
import yaml
from docker.models.networks import Network

from lab.engine import IMAGE, REPO, SUPERVISOR_IMAGE, engine_client, new_run_id, wait_until
from tests.conftest import require
from tests.integration.dockerlab import require_engine

pytestmark = pytest.mark.integration

DOCKER = "/usr/bin/docker"  # Debian's 20.10 client; a newer one may come first on PATH
STACK_FILE = REPO / "docker-stack.yml"
SETTINGS_SOURCE = (REPO / "supervisor" / "core" / "settings.py").read_text()
INTERFACE, PEER = "katsw0", "katsw1"
HOST_ADDRESS, VIP = "198.51.100.250", "198.51.100.251"
GWBRIDGE = "docker_gwbridge"
GWBRIDGE_SUBNET = "198.18.251.0/24"
ADDRESS_POOL = "198.19.0.0/16"
FRONT_END_PORT = 18090
RESTART_DELAY = 8  # seconds swarm waits before replacing a dead front-end task: the window without a front end


def docker_cli(*args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([DOCKER, *args], capture_output=True, text=True, timeout=timeout, check=False)
    if check and result.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)} failed ({result.returncode}): {result.stderr.strip()}")
    return result


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30, check=check)


def addresses(interface: str) -> set[str]:
    out = ip("-j", "addr", "show", "dev", interface, check=False).stdout
    return {info["local"] for link in json.loads(out or "[]") for info in link.get("addr_info", [])}


def swarm_state(client: docker.DockerClient) -> str:
    return str(client.info().get("Swarm", {}).get("LocalNodeState", "unknown"))


# --- the stack file as written -----------------------------------------------------------------------------------


def test_stack_file_shape() -> None:
    spec = yaml.safe_load(STACK_FILE.read_text())
    service = spec["services"]["keepalived"]
    assert service["image"] == SUPERVISOR_IMAGE
    assert service["deploy"]["mode"] == "global"
    assert service["deploy"]["restart_policy"]["condition"] == "any"
    assert service["networks"] == ["hostnet"]
    assert spec["networks"]["hostnet"] == {"external": True, "name": "host"}
    assert set(service["cap_add"]) == {"NET_ADMIN", "NET_BROADCAST", "NET_RAW"}
    assert not service.get("privileged")
    assert "/var/run:/host-run:ro" in service["volumes"]
    environment = service["environment"]
    assert environment["DOCKER_HOST"] == "unix:///host-run/docker.sock"
    for name in environment:
        assert f'"{name}"' in SETTINGS_SOURCE or name == "DOCKER_HOST", f"{name} is not a setting"


# --- a real swarm ------------------------------------------------------------------------------------------------


@pytest.fixture
def client() -> Iterator[docker.DockerClient]:
    require_engine()
    require(os.geteuid() == 0, "needs root for a swarm and a test interface")
    require(Path(DOCKER).exists(), f"needs the docker CLI at {DOCKER} (apt-get install docker.io)")
    client = engine_client()
    try:
        try:
            client.images.get(SUPERVISOR_IMAGE)
            built = True
        except docker.errors.ImageNotFound:
            built = False
        require(built, f"the image {SUPERVISOR_IMAGE} is not built (scripts/test.sh builds it from the Dockerfile)")
        yield client
    finally:
        client.close()


@pytest.fixture
def swarm(client: docker.DockerClient) -> Iterator[None]:
    """A single-node swarm this test created, left (with everything it made) afterwards, also on failure."""
    state = swarm_state(client)
    require(state == "inactive", f"the engine is already in a swarm ({state}) this test did not create: left alone")
    created_gwbridge = attempted = False
    try:
        if not named_networks(client, GWBRIDGE):
            client.networks.create(
                GWBRIDGE,
                driver="bridge",
                ipam=docker.types.IPAMConfig(pool_configs=[docker.types.IPAMPool(subnet=GWBRIDGE_SUBNET)]),
                options={
                    "com.docker.network.bridge.name": GWBRIDGE,
                    "com.docker.network.bridge.enable_icc": "false",
                    "com.docker.network.bridge.enable_ip_masquerade": "false",
                },
            )
            created_gwbridge = True
        attempted = True
        docker_cli(
            "swarm", "init", "--advertise-addr", "127.0.0.1", "--listen-addr", "127.0.0.1:2377",
            "--data-path-addr", "127.0.0.1", "--default-addr-pool", ADDRESS_POOL,
        )  # fmt: skip
        # The routing mesh is not needed (host network only) and would keep a VXLAN socket open on every address.
        for network in named_networks(client, "ingress"):
            if network.attrs.get("Ingress"):
                network.remove()
        yield
    finally:
        if attempted and swarm_state(client) != "inactive":
            docker_cli("swarm", "leave", "--force", check=False)
            wait_until(lambda: swarm_state(client) == "inactive", 30, "the engine out of the swarm", interval=0.5)
        if created_gwbridge:
            _remove_network(client, GWBRIDGE)


def named_networks(client: docker.DockerClient, name: str) -> list[Network]:
    """Networks called exactly `name` (the engine's name filter also matches parts of names)."""
    return [network for network in client.networks.list(names=[name]) if network.name == name]


def _remove_network(client: docker.DockerClient, name: str) -> None:
    def removed() -> bool:
        for network in named_networks(client, name):
            with contextlib.suppress(docker.errors.NotFound, docker.errors.APIError):
                network.remove()
        return not named_networks(client, name)

    wait_until(removed, 30, f"network {name} removed", interval=0.5)


@pytest.fixture
def interface() -> Iterator[str]:
    """The veth pair katsw0/katsw1 in the machine's namespace, 198.51.100.250/24 on katsw0; deleted afterwards."""
    for name in (INTERFACE, PEER):
        exists = ip("link", "show", "dev", name, check=False).returncode == 0
        require(not exists, f"interface {name} already exists (a leftover? `ip link del {name}`): left alone")
    try:
        ip("link", "add", INTERFACE, "type", "veth", "peer", "name", PEER)
        ip("addr", "add", f"{HOST_ADDRESS}/24", "dev", INTERFACE)
        ip("link", "set", PEER, "up")
        ip("link", "set", INTERFACE, "up")
        yield INTERFACE
    finally:
        ip("link", "del", INTERFACE, check=False)


def stack_spec(run_id: str) -> dict[str, Any]:
    """docker-stack.yml with this test's environment, plus a labelled busybox front end on the host network."""
    spec: dict[str, Any] = yaml.safe_load(STACK_FILE.read_text())
    service = spec["services"]["keepalived"]
    service["environment"] = {
        "DOCKER_HOST": service["environment"]["DOCKER_HOST"],
        "INTERFACE": INTERFACE,
        "VIRTUAL_IP": VIP,
        "VRID": "181",
        "PRIORITY": "150",
        "LABEL_SELECTOR": f"kat.swarm={run_id}",
        # The task shares the machine's namespace: no metrics listener on its addresses (an image without
        # metrics ignores the variable).
        "METRICS_ADDR": "",
    }
    # httpd binds the loopback address only: the front end shares the machine's namespace (its uplink too).
    serve = f"mkdir -p /www && echo {run_id} > /www/index.html && exec httpd -f -p 127.0.0.1:{FRONT_END_PORT} -h /www"
    spec["services"]["web"] = {
        "image": IMAGE,
        "command": ["sh", "-c", serve],
        "networks": ["hostnet"],
        "labels": {  # container labels (deploy.labels would be the service's)
            "kat.swarm": run_id,
            "keepalived.enable": "true",
            "keepalived.check": "none",  # Docker events alone decide
        },
        "stop_grace_period": "1s",
        "deploy": {"replicas": 1, "restart_policy": {"condition": "any", "delay": f"{RESTART_DELAY}s"}},
    }
    return spec


def running_front_ends(client: docker.DockerClient, run_id: str) -> list[str]:
    return [c.id or "" for c in client.containers.list(filters={"label": f"kat.swarm={run_id}", "status": "running"})]


def stack_containers(client: docker.DockerClient, stack: str) -> list[str]:
    return [
        c.id or "" for c in client.containers.list(all=True, filters={"label": f"com.docker.stack.namespace={stack}"})
    ]


def test_global_service_follows_the_front_end_task(
    client: docker.DockerClient, swarm: None, interface: str, tmp_path: Path
) -> None:
    run_id = new_run_id()
    stack = f"kat{run_id}"
    path = tmp_path / "docker-stack.yml"
    path.write_text(yaml.safe_dump(stack_spec(run_id), sort_keys=False))
    try:
        docker_cli("stack", "deploy", "--resolve-image", "never", "-c", str(path), stack)
        wait_until(lambda: len(running_front_ends(client, run_id)) == 1, 60, "the front-end task running")
        wait_until(lambda: VIP in addresses(interface), 60, f"the VIP on {interface} (a lone node is MASTER)")

        (first,) = running_front_ends(client, run_id)
        client.api.kill(first)
        wait_until(lambda: VIP not in addresses(interface), 30, "the VIP released after the front end was killed")
        assert HOST_ADDRESS in addresses(interface)

        def replaced() -> list[str]:
            return [c for c in running_front_ends(client, run_id) if c != first]

        wait_until(lambda: len(replaced()) == 1, RESTART_DELAY + 60, "swarm replacing the killed front-end task")
        wait_until(lambda: VIP in addresses(interface), 60, "the VIP back once the new task runs")
    except BaseException:
        logs = docker_cli("service", "logs", "--raw", "--tail", "60", f"{stack}_keepalived", check=False)
        print(f"supervisor logs:\n{logs.stdout}{logs.stderr}")
        raise
    finally:
        docker_cli("stack", "rm", stack, check=False)
        wait_until(lambda: not stack_containers(client, stack), 60, f"the containers of stack {stack} removed", 0.5)
