"""Golden rendered configs (UPDATE_GOLDEN=1 rewrites them; review the diff), determinism, number formats."""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path

import pytest

from supervisor.core.plan import HostFacts, make_plan
from supervisor.core.render import format_seconds
from supervisor.core.settings import load_settings
from supervisor.core.snapshot import ContainerInfo, Snapshot

GOLDEN = Path(__file__).parent / "golden"
RUN_DIR = {"RUN_DIR": "/run/kat-test"}
HOST = HostFacts(
    interfaces={
        name: (ipaddress.ip_address("198.51.100.11"), ipaddress.ip_address("fd00:198:51::11"))
        for name in ("eth0", "eth1", "ens3", "bond0.100")
    }
)

CASES: dict[str, tuple[dict[str, str], dict[str, dict[str, str]]]] = {
    "minimal": ({"VIRTUAL_IP": "10.0.0.208"}, {}),
    "full": (
        {
            "VIRTUAL_IP": "10.0.0.208/24,10.0.0.209",
            "VRID": "206",
            "INTERFACE": "bond0.100",
            "PRIORITY": "150",
            "AUTH_PASS": "s3cret",
            "UNICAST_SRC_IP": "10.0.0.1",
            "UNICAST_PEERS": "10.0.0.1,10.0.0.2,10.0.0.3",
            "NOPREEMPT": "true",
            "CHECK_SCRIPT": "/usr/local/bin/check-haproxy --port 80",
            "CHECK_INTERVAL": "2",
            "CHECK_FALL": "3",
            "SCRIPT_USER": "keepalived_script",
        },
        {},
    ),
    "ipv6": ({"VIRTUAL_IP": "fd00::10/64", "VRID": "61", "ADVERT_INT": "0.25", "PREEMPT_DELAY": "2.5"}, {}),
    "labels": (
        {"VIRTUAL_IP": "10.0.0.208", "VRID": "51"},
        {
            "api": {"keepalived.vip": "10.0.0.209/24", "keepalived.vrid": "52", "keepalived.port": "80"},
            "admin": {
                "keepalived.vip": "10.0.0.210",
                "keepalived.vrid": "53",
                "keepalived.interface": "eth1",
                "keepalived.priority": "90",
            },
            "haproxy": {"keepalived.port": "80", "keepalived.check": "http:/healthz"},
        },
    ),
}


def rendered(name: str) -> str:
    env, labelled = CASES[name]
    settings = load_settings({**env, **RUN_DIR})
    containers = [
        ContainerInfo(id=f"{index:064d}", name=cname, labels=labels, running=True, created=float(index))
        for index, (cname, labels) in enumerate(labelled.items())
    ]
    snapshot = Snapshot({container.id: container for container in containers}, engine_reachable=True)
    plan = make_plan(settings, snapshot, HOST)
    assert plan.problems == () and plan.fatal == ()
    return plan.text


@pytest.mark.parametrize("name", sorted(CASES))
def test_golden(name: str) -> None:
    path = GOLDEN / f"{name}.conf"
    text = rendered(name)
    if os.environ.get("UPDATE_GOLDEN") == "1":
        path.write_text(text)
    assert text == path.read_text(), f"{path} differs; run with UPDATE_GOLDEN=1 and review the diff"


@pytest.mark.parametrize("name", sorted(CASES))
def test_same_input_same_bytes(name: str) -> None:
    assert rendered(name) == rendered(name)


def test_format_seconds() -> None:
    assert [format_seconds(v) for v in (1.0, 0.5, 0.25, 2.5, 40.95, 0.0)] == ["1", "0.5", "0.25", "2.5", "40.95", "0"]


def test_the_last_line_of_defence_refuses_what_keepalived_reinterprets() -> None:
    from supervisor.core.render import UnsafeConfig, check_text

    check_text("global_defs {\n    vrrp_garp_master_refresh 60\n}\n")
    for bad in ("x" * 1000, "auth_pass a$_RANDOM", 'script "/bin/x\u0007"'):
        with pytest.raises(UnsafeConfig):
            check_text(f"global_defs {{\n    {bad}\n}}\n")
