"""The supervisor against a real dockerd: labelled containers drive the installed keepalived config.

The supervisor runs from this checkout in a network namespace of its own (a simulated host with eth0 on a lab
bridge) and watches the real engine, scoped to this test's containers by LABEL_SELECTOR.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Callable

import pytest

from lab.netns import Lab, Node
from tests.integration.dockerlab import (
    ContainerLab,
    require_engine_to_ourselves,
    start_dockerd,
    stop_dockerd,
    wait_until,
)

NONE = {"keepalived.check": "none"}


@pytest.fixture
def node(lab: Lab, docker_lab: ContainerLab) -> Node:
    node = lab.add_node("a", 11)
    node.start_supervisor(
        {
            "DOCKER_HOST": "unix:///var/run/docker.sock",
            "LABEL_SELECTOR": f"kat.test={docker_lab.run_id}",
            "VIRTUAL_IP": "198.51.100.100",
            "VRID": "60",
            "ADVERT_INT": "0.5",
        }
    )
    wait_until(lambda: node.has("198.51.100.100"), 20, "the env instance's VIP")
    return node


def config(node: Node) -> str:
    path = node.run_dir / "keepalived.conf"
    return path.read_text() if path.exists() else ""


def instances(node: Node) -> set[int]:
    return {int(vrid) for vrid in re.findall(r"virtual_router_id (\d+)", config(node))}


def logged(node: Node, *parts: str) -> Callable[[], bool]:
    return lambda: any(all(part in line for part in parts) for line in node.log_text().splitlines())


def configured(node: Node, vrids: set[int]) -> Callable[[], bool]:
    return lambda: instances(node) == vrids


def own_instance(vrid: int, vip: str) -> dict[str, str]:
    return {"keepalived.vip": vip, "keepalived.vrid": str(vrid), **NONE}


def test_container_lifecycle_drives_the_installed_config(node: Node, docker_lab: ContainerLab) -> None:
    c1 = docker_lab.create(own_instance(90, "198.51.100.120"))
    wait_until(lambda: instances(node) == {60, 90}, 15, "VI_90 in the installed config after start")
    wait_until(lambda: node.has("198.51.100.120"), 15, "the container's VIP on the node")

    c1.stop(timeout=0)
    # Stopped: the instance stays configured (a restart needs no reload) but is in FAULT; its VIP leaves the host.
    wait_until(lambda: not node.has("198.51.100.120"), 15, "the VIP released after the container stopped")
    assert instances(node) == {60, 90}
    assert (node.run_dir / "health" / "VI_90").read_text().strip() == "1"
    wait_until(lambda: node.instance_state("VI_90") == "FAULT", 10, "VI_90 in FAULT")

    c1.start()
    wait_until(lambda: node.has("198.51.100.120"), 15, "the VIP back after the container started")

    c1.remove(force=True)
    wait_until(lambda: instances(node) == {60}, 15, "VI_90 gone after the container was removed")
    wait_until(lambda: not node.has("198.51.100.120"), 10, "VIP .120 gone with its instance")

    # Relabelled by recreate: the config follows.
    docker_lab.create(own_instance(91, "198.51.100.121"), name=f"kat-{docker_lab.run_id}-recreated")
    wait_until(lambda: instances(node) == {60, 91}, 15, "VI_91 after the recreate")
    wait_until(lambda: node.has("198.51.100.121"), 15, "the new VIP")
    assert "198.51.100.120" not in config(node)


def test_render_includes_labelled_containers(node: Node, docker_lab: ContainerLab) -> None:
    docker_lab.create(own_instance(98, "198.51.100.130"))
    env = {**node.env, "VIRTUAL_IP": "198.51.100.100", "VRID": "60"}
    result = subprocess.run([sys.executable, "-m", "supervisor", "render"], env=env, capture_output=True, text=True,
                            timeout=60, check=True)  # fmt: skip
    assert "virtual_router_id 98" in result.stdout and "198.51.100.130/32" in result.stdout
    assert "not reachable" not in result.stderr


INVALID_LABELS = {
    "bad-vip": ({"keepalived.vip": "198.51.100.999", "keepalived.vrid": "93"}, "keepalived.vip"),
    "bad-vrid": ({"keepalived.vip": "198.51.100.123", "keepalived.vrid": "256"}, "keepalived.vrid"),
    "vip-without-vrid": ({"keepalived.vip": "198.51.100.124"}, "keepalived.vrid"),
    "bad-port": ({"keepalived.port": "99999"}, "keepalived.port"),
    "bad-check": ({"keepalived.port": "80", "keepalived.check": "ping"}, "keepalived.check"),
    "bad-interface": (
        {"keepalived.vip": "198.51.100.125", "keepalived.vrid": "94", "keepalived.interface": "eth0 {"},
        "keepalived.interface",
    ),
    "bad-priority": (
        {"keepalived.vip": "198.51.100.126", "keepalived.vrid": "95", "keepalived.priority": "0"},
        "keepalived.priority",
    ),
    "bad-enable": ({"keepalived.enable": "maybe"}, "keepalived.enable"),
    "injection": ({"keepalived.vip": '198.51.100.127"\n}\nvrrp_script x {', "keepalived.vrid": "96"}, "keepalived.vip"),
    "conflict": ({"keepalived.vip": "198.51.100.128", "keepalived.vrid": "60"}, "conflicts with the earlier claim"),
}


def test_every_invalid_label_skips_only_its_container(node: Node, docker_lab: ContainerLab) -> None:
    for name, (labels, _) in INVALID_LABELS.items():
        docker_lab.create({**NONE, **labels}, name=f"kat-{docker_lab.run_id}-{name}")
    docker_lab.create(own_instance(97, "198.51.100.129"), name=f"kat-{docker_lab.run_id}-valid")
    wait_until(lambda: instances(node) == {60, 97}, 20, "only the valid container's instance added")
    for name, (_, expected) in INVALID_LABELS.items():
        container_name = f"kat-{docker_lab.run_id}-{name}"
        wait_until(logged(node, container_name, expected), 10, f"one log line naming {container_name} and {expected}")
    text = config(node)
    assert "vrrp_script x" not in text and "198.51.100.127" not in text
    status_problems = node.status()["problems"]
    assert isinstance(status_problems, list) and len(status_problems) == len(INVALID_LABELS)


def test_storm_of_200_containers_converges_with_few_reloads(node: Node, docker_lab: ContainerLab) -> None:
    from concurrent.futures import ThreadPoolExecutor

    reloads_before = node.reloads()

    def start(index: int) -> str:
        vrid = index + 1 if index + 1 < 60 else index + 2  # 1-201, skipping the env instance's 60
        labels = own_instance(vrid, f"203.0.113.{index + 1}")
        return docker_lab.create(labels, network_mode="none").id or ""

    with ThreadPoolExecutor(16) as pool:
        ids = list(pool.map(start, range(200)))
    wait_until(lambda: len(instances(node)) == 201, 120, "all 200 storm instances in the installed config")
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(docker_lab.remove, ids))
    wait_until(lambda: instances(node) == {60}, 120, "every storm instance gone")
    reloads = node.reloads() - reloads_before
    print(f"storm: 200 containers started and removed, {reloads} keepalived reloads")
    assert reloads <= 60, f"the debouncer should batch a storm; {reloads} reloads"
    assert node.has("198.51.100.100"), "the env instance kept its VIP through the storm"


def test_engine_restarts_three_times_and_supervisor_converges(node: Node, docker_lab: ContainerLab) -> None:
    require_engine_to_ourselves(docker_lab.client, docker_lab.run_id)
    current = docker_lab.create(own_instance(110, "198.51.100.140"))
    wait_until(lambda: instances(node) == {60, 110}, 15, "the first container's instance")
    rounds = int(os.environ.get("KAT_ENGINE_RESTARTS", "3"))  # bench.run_all asks for 10
    for round_ in range(rounds):
        stop_dockerd()
        start_dockerd()
        docker_lab.reconnect()
        # After the restart (the engine's replay buffer is empty): remove the old, create a new one.
        docker_lab.remove(current.id or "")
        vrid = 111 + round_
        current = docker_lab.create(own_instance(vrid, f"198.51.100.{141 + round_ % 50}"))
        wait_until(configured(node, {60, vrid}), 60, f"convergence after engine restart {round_ + 1}")
    assert node.process is not None and node.process.poll() is None
    assert node.has("198.51.100.100")
    print(f"engine restarts: {rounds} rounds, each converged to the engine's true state")


def test_engine_unreachable_at_start_serves_env_instance(lab: Lab) -> None:
    node = lab.add_node("a", 11)
    node.start_supervisor({"VIRTUAL_IP": "198.51.100.100", "DOCKER_HOST": "unix:///nonexistent/docker.sock"})
    wait_until(lambda: node.has("198.51.100.100"), 20, "the env instance's VIP without an engine")
    wait_until(lambda: "docker engine unreachable" in node.log_text(), 10, "the retry logged")
    assert node.status()["engine_reachable"] is False
