"""Labels -> service specs, and the desired state built from settings plus specs (conflicts, members, peers)."""

from __future__ import annotations

import ipaddress

import pytest

from supervisor.core.labels import parse_services
from supervisor.core.model import build_desired_state
from supervisor.core.settings import load_settings
from supervisor.core.snapshot import ContainerInfo


def container(name: str, labels: dict[str, str], created: float = 1.0) -> ContainerInfo:
    return ContainerInfo(id=f"{name:0<64}"[:64], name=name, labels=labels, running=True, created=created)


def test_every_label_parsed() -> None:
    labels = {
        "keepalived.vip": "10.0.0.9/24",
        "keepalived.vrid": "9",
        "keepalived.port": "8080/tcp",
        "keepalived.check": "http:/healthz",
        "keepalived.interface": "bond0.100",
        "keepalived.priority": "200",
    }
    specs, problems = parse_services([container("web", labels)], "keepalived.")
    assert problems == []
    (spec,) = specs
    assert (str(spec.vip), spec.vrid, spec.port, spec.check, spec.http_path) == (
        "10.0.0.9/24",
        9,
        8080,
        "http",
        "/healthz",
    )
    assert (spec.interface, spec.priority, spec.defines_instance) == ("bond0.100", 200, True)


def test_enable_rules_and_prefix() -> None:
    containers = [
        container("plain", {"other": "x"}),
        container("off", {"keepalived.port": "80", "keepalived.enable": "false"}),
        container("on", {"keepalived.enable": "true"}),
        container("implicit", {"keepalived.port": "80"}),
        container("custom", {"lb.port": "81"}),
    ]
    specs, problems = parse_services(containers, "keepalived.")
    assert problems == [] and {s.container_name: s.check for s in specs} == {"on": "none", "implicit": "tcp"}
    specs, _ = parse_services(containers, "lb.")
    assert [s.container_name for s in specs] == ["custom"]


BAD = [
    ({"keepalived.vip": "10.0.0.300", "keepalived.vrid": "5"}, "keepalived.vip", "IPv4 address"),
    ({"keepalived.vip": "10.0.0.3"}, "keepalived.vrid", "required with a vip label"),
    ({"keepalived.vrid": "0"}, "keepalived.vrid", "from 1 to 255"),
    ({"keepalived.port": "http"}, "keepalived.port", "TCP port"),
    ({"keepalived.port": "53/udp"}, "keepalived.port", "TCP port like 80"),
    ({"keepalived.port": "80", "keepalived.check": "icmp"}, "keepalived.check", "tcp, http"),
    ({"keepalived.check": "http"}, "keepalived.port", "required with check=http"),
    ({"keepalived.interface": "eth0\n}"}, "keepalived.interface", "interface name"),
    ({"keepalived.priority": "255"}, "keepalived.priority", "from 1 to 254"),
    ({"keepalived.enable": "sometimes"}, "keepalived.enable", "true or false"),
    ({"keepalived.vip": '10.0.0.3" }', "keepalived.vrid": "5"}, "keepalived.vip", "IPv4 address"),
    ({"keepalived.port": "80", "keepalived.check": "http:/a b"}, "keepalived.check", "HTTP path"),
]


@pytest.mark.parametrize(("labels", "label", "expected"), BAD, ids=[b[1] + ":" + repr(b[0]) for b in BAD])
def test_invalid_label_skips_only_that_container(labels: dict[str, str], label: str, expected: str) -> None:
    good = container("good", {"keepalived.port": "80"}, created=2.0)
    specs, problems = parse_services([container("bad", labels), good], "keepalived.")
    assert [s.container_name for s in specs] == ["good"]
    assert len(problems) == 1
    line = problems[0]
    assert "container bad" in line and f"label {label}=" in line and expected in line and "skipped" in line, line


ENV = {"VIRTUAL_IP": "10.0.0.208", "VRID": "51", "RUN_DIR": "/run/kat-test"}


def test_containers_join_env_instance_or_define_their_own() -> None:
    settings = load_settings(ENV)
    containers = [
        container("joiner", {"keepalived.port": "80"}),
        container("own", {"keepalived.vip": "10.0.0.9", "keepalived.vrid": "9", "keepalived.priority": "180"}),
    ]
    specs, _ = parse_services(containers, settings.label_prefix)
    state = build_desired_state(settings, specs)
    by_vrid = {i.vrid: i for i in state.instances}
    assert sorted(by_vrid) == [9, 51]
    assert [m.container_name for m in by_vrid[51].members] == ["joiner"]
    assert by_vrid[9].priority == 180 and by_vrid[9].source == "container own"
    assert str(by_vrid[9].track_file) == "/run/kat-test/health/VI_9"
    assert state.problems == ()


def test_conflicting_claims_earlier_wins_and_both_reported() -> None:
    settings = load_settings(ENV)
    containers = [
        container("second", {"keepalived.vip": "10.0.0.20", "keepalived.vrid": "9"}, created=5.0),
        container("first", {"keepalived.vip": "10.0.0.10", "keepalived.vrid": "9"}, created=1.0),
        container("same-vip", {"keepalived.vip": "10.0.0.10", "keepalived.vrid": "9"}, created=6.0),
        container("env-clash", {"keepalived.vip": "10.0.0.30", "keepalived.vrid": "51"}, created=0.5),
    ]
    specs, _ = parse_services(containers, "keepalived.")
    state = build_desired_state(settings, specs)
    nine = next(i for i in state.instances if i.vrid == 9)
    assert [str(v) for v in nine.vips] == ["10.0.0.10/32"]
    assert [m.container_name for m in nine.members] == ["first", "same-vip"]
    assert len(state.problems) == 2
    second = next(p for p in state.problems if "container second" in p)
    assert "conflicts with the earlier claim by container first" in second and "10.0.0.10/32" in second
    clash = next(p for p in state.problems if "env-clash" in p)
    assert "earlier claim by environment" in clash


def test_vrid_without_instance_and_ipv6_on_v2() -> None:
    settings = load_settings({"VRRP_VERSION": "2", "RUN_DIR": "/run/kat-test"})
    containers = [
        container("orphan", {"keepalived.vrid": "7"}),
        container("v6", {"keepalived.vip": "fd00::7", "keepalived.vrid": "8"}),
        container("nothing", {"keepalived.port": "80"}),
    ]
    specs, _ = parse_services(containers, "keepalived.")
    state = build_desired_state(settings, specs)
    assert state.instances == ()
    assert any("keepalived.vrid=7 names no instance" in p for p in state.problems)
    assert any("keepalived.vip=fd00::7/128 is IPv6, which needs VRRP_VERSION=3" in p for p in state.problems)
    assert any("container nothing" in p and "no label keepalived.vrid and no VIRTUAL_IP" in p for p in state.problems)


def test_local_addresses_dropped_from_unicast_peers() -> None:
    settings = load_settings({**ENV, "UNICAST_PEERS": "10.0.0.1,10.0.0.2,10.0.0.3"})
    state = build_desired_state(settings, [], frozenset({ipaddress.ip_address("10.0.0.2")}))
    assert [str(p) for p in state.instances[0].unicast_peers] == ["10.0.0.1", "10.0.0.3"]
