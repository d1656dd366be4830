"""Pure health decisions: endpoints, the old variables' mapping, rise/fall, member and instance verdicts."""

from __future__ import annotations

import pytest

from supervisor.core.checks import (
    Member,
    Probe,
    ProbeCounter,
    docker_verdict,
    env_probe,
    instance_verdict,
    member_healthy,
    plan_members,
    published_endpoint,
)
from supervisor.core.labels import parse_services
from supervisor.core.model import build_desired_state
from supervisor.core.settings import load_settings
from supervisor.core.snapshot import ContainerInfo, PortBinding


def info(**kwargs: object) -> ContainerInfo:
    fields: dict[str, object] = {"id": "c" * 64, "name": "web", "running": True}
    fields.update(kwargs)
    return ContainerInfo(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("bindings", "expected"),
    [
        ((PortBinding(80, "tcp", "0.0.0.0", 8080),), ("192.0.2.10", 8080)),
        ((PortBinding(80, "tcp", "::", 8081),), ("192.0.2.10", 8081)),
        ((PortBinding(80, "tcp", "", 8082),), ("192.0.2.10", 8082)),
        ((PortBinding(80, "tcp", "127.0.0.1", 8083),), ("192.0.2.10", 8083)),
        ((PortBinding(80, "tcp", "192.0.2.99", 8084),), ("192.0.2.99", 8084)),
        ((PortBinding(80, "udp", "0.0.0.0", 9000),), ("192.0.2.10", 80)),
        ((), ("192.0.2.10", 80)),  # no binding (host network, Rancher's own DNAT): the same port on the host
    ],
)
def test_published_endpoint(bindings: tuple[PortBinding, ...], expected: tuple[str, int]) -> None:
    assert published_endpoint(info(ports=bindings), 80, "192.0.2.10") == expected


def test_old_variables_map_onto_probes() -> None:
    alone = env_probe(load_settings({"CHECK_PORT": "80"}).check, "192.0.2.10")
    assert alone is not None and (alone.kind, alone.host, alone.port) == ("port", "192.0.2.10", 80)
    with_ip = env_probe(load_settings({"CHECK_PORT": "80", "CHECK_IP": "192.0.2.5"}).check, "192.0.2.10")
    assert with_ip is not None and (with_ip.kind, with_ip.host) == ("tcp", "192.0.2.5")
    http = env_probe(load_settings({"CHECK_PORT": "80", "CHECK_HTTP_PATH": "/hz"}).check, "192.0.2.10")
    assert http is not None and (http.kind, http.host, http.http_path) == ("http", "192.0.2.10", "/hz")
    assert env_probe(load_settings({}).check, "192.0.2.10") is None


def test_docker_verdicts() -> None:
    assert docker_verdict(None) == (False, "container gone")
    assert docker_verdict(info(running=False))[0] is False
    assert docker_verdict(info(paused=True))[1] == "container paused"
    assert docker_verdict(info(health="starting")) == (False, "Docker health is starting")
    assert docker_verdict(info(health="unhealthy"))[0] is False
    assert docker_verdict(info(health="healthy"))[0] is True
    assert docker_verdict(info()) == (True, "running")


def test_probe_counter_first_result_decides_then_rise_and_fall() -> None:
    counter = ProbeCounter(rise=2, fall=2)
    assert counter.record(True) is True
    assert counter.record(False, "refused") is True  # one failure: still healthy (fall 2)
    assert counter.record(False, "refused") is False
    assert counter.record(True) is False  # one success: still failed (rise 2)
    assert counter.record(True) is True
    counter.reset()
    assert counter.healthy is None
    assert counter.record(False, "timeout") is False and counter.last_error == "timeout"


def test_member_and_instance_verdicts() -> None:
    probe = Probe("tcp", "192.0.2.10", 80)
    up = Member("a", "a", "VI_1", True, "running", probe)
    down = Member("b", "b", "VI_1", False, "Docker event die", probe)
    counter = ProbeCounter(2, 2)
    assert member_healthy(up, counter) == (False, "a: waiting for TCP connect to 192.0.2.10:80")
    counter.record(True)
    assert member_healthy(up, counter)[0] is True
    assert member_healthy(down, counter) == (False, "b: Docker event die")
    results = [member_healthy(up, counter), member_healthy(down, counter)]
    assert instance_verdict(results, "any")[0] is True
    assert instance_verdict(results, "all") == (False, "b: Docker event die")
    assert instance_verdict([], "all") == (True, "no check configured")


def test_plan_members_uses_published_ports_and_env_check() -> None:
    settings = load_settings({"VIRTUAL_IP": "192.0.2.100", "CHECK_PORT": "443"})
    web = info(labels={"keepalived.port": "80", "keepalived.check": "http:/hz"},
               ports=(PortBinding(80, "tcp", "0.0.0.0", 8080),))  # fmt: skip
    specs, _ = parse_services([web], settings.label_prefix)
    state = build_desired_state(settings, specs)
    members = plan_members(state, {web.id: web}, settings, {"eth0": "192.0.2.10"})["VI_51"]
    env, container = members
    assert env.probe is not None and env.probe.describe() == (
        "port 443 (listener on any address, or connect to 192.0.2.10:443)"
    )
    assert container.probe is not None and container.probe.describe() == "HTTP GET http://192.0.2.10:8080/hz"
