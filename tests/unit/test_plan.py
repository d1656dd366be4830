"""The one plan: each container stands alone, host facts decide what can run here, and the text is the whole truth."""

from __future__ import annotations

import ipaddress

from supervisor.core.plan import HostFacts, make_plan
from supervisor.core.settings import load_settings
from supervisor.core.snapshot import ContainerInfo, Snapshot

ENV = {"RUN_DIR": "/run/kat-plan", "VIRTUAL_IP": "198.51.100.100", "VRID": "100", "INTERFACE": "eth0"}
HOST = HostFacts(
    interfaces={"eth0": (ipaddress.ip_address("198.51.100.11"),), "lo": (ipaddress.ip_address("127.0.0.1"),)}
)


def container(name: str, labels: dict[str, str], created: float) -> ContainerInfo:
    return ContainerInfo(id=f"{name:0>64}"[-64:], name=name, labels=labels, running=True, created=created)


def snapshot(*containers: ContainerInfo) -> Snapshot:
    return Snapshot({c.id: c for c in containers}, engine_reachable=True)


GOOD = container("good", {"keepalived.vip": "198.51.100.20", "keepalived.vrid": "120", "keepalived.port": "80"}, 99.0)


def plan_with(*hostile: ContainerInfo, env: dict[str, str] | None = None, host: HostFacts = HOST):  # type: ignore[no-untyped-def]
    return make_plan(load_settings({**ENV, **(env or {})}), snapshot(*hostile, GOOD), host)


def only_problem_names(plan, name: str, fragment: str) -> None:  # type: ignore[no-untyped-def]
    assert len(plan.problems) == 1, plan.problems
    assert f"container {name} " in plan.problems[0] and fragment in plan.problems[0], plan.problems[0]
    assert {i.vrid for i in plan.state.instances} == {100, 120}, "the good container and the env still apply"
    assert "198.51.100.20/32 dev eth0" in plan.text


def test_huge_integer_label_leaves_out_that_container_only() -> None:
    plan = plan_with(container("huge", {"keepalived.port": "9" * 5000}, 1.0))
    only_problem_names(plan, "huge", "keepalived.port")
    assert "9" * 100 not in plan.problems[0], "the problem line stays short"


def test_unknown_key_under_the_prefix_is_a_problem() -> None:
    plan = plan_with(container("typo", {"keepalived.prot": "80"}, 1.0))
    only_problem_names(plan, "typo", "keepalived.prot")


def test_missing_interface_leaves_out_that_container_only() -> None:
    labels = {"keepalived.vip": "198.51.100.30", "keepalived.vrid": "130", "keepalived.interface": "nosuch0"}
    plan = plan_with(container("elsewhere", labels, 1.0))
    only_problem_names(plan, "elsewhere", "no such interface")
    assert "nosuch0" not in plan.text


def test_environment_vip_under_another_vrid_is_refused() -> None:
    plan = plan_with(container("thief", {"keepalived.vip": "198.51.100.100", "keepalived.vrid": "101"}, 1.0))
    only_problem_names(plan, "thief", "already claimed")
    assert plan.text.count("198.51.100.100/32") == 1


def test_same_vip_under_two_container_vrids_keeps_the_earlier() -> None:
    late = container("late", {"keepalived.vip": "198.51.100.20", "keepalived.vrid": "121"}, 200.0)
    plan = plan_with(late)
    only_problem_names(plan, "late", "already claimed")


def test_vip_equal_to_host_address_source_or_peer_is_refused() -> None:
    env = {"UNICAST_SRC_IP": "198.51.100.11", "UNICAST_PEERS": "198.51.100.12"}
    for name, vip, what in (
        ("hostaddr", "198.51.100.11", "UNICAST_SRC_IP"),
        ("peer", "198.51.100.12", "unicast peer"),
    ):
        plan = plan_with(container(name, {"keepalived.vip": vip, "keepalived.vrid": "140"}, 1.0), env=env)
        only_problem_names(plan, name, what)
    other = HostFacts(interfaces={"eth0": (ipaddress.ip_address("198.51.100.13"),)})
    plan = plan_with(container("own", {"keepalived.vip": "198.51.100.13", "keepalived.vrid": "140"}, 1.0), host=other)
    only_problem_names(plan, "own", "an address of this host")


def test_a_vip_held_here_is_not_mistaken_for_the_hosts_address() -> None:
    held = HostFacts(
        interfaces={"eth0": (ipaddress.ip_address("198.51.100.11"), ipaddress.ip_address("198.51.100.20"))},
        managed_vips=frozenset({ipaddress.ip_address("198.51.100.20")}),
    )
    plan = make_plan(load_settings(ENV), snapshot(GOOD), held)
    assert plan.problems == ()
    assert plan.members["VI_120"][0].probe is not None
    assert plan.members["VI_120"][0].probe.host == "198.51.100.11", "probes go to the host's own address"


def test_environment_interface_missing_is_fatal_but_containers_are_still_planned() -> None:
    plan = plan_with(env={"INTERFACE": "nosuch1"})
    assert plan.fatal and "INTERFACE='nosuch1'" in plan.fatal[0]


def test_own_address_in_unicast_peers_is_dropped_from_the_text() -> None:
    plan = plan_with(env={"UNICAST_PEERS": "198.51.100.11,198.51.100.12"})
    peers_block = plan.text.split("unicast_peer {")[1].split("}")[0]
    assert "198.51.100.12" in peers_block and "198.51.100.11" not in peers_block


def test_script_settings_only_when_a_script_runs() -> None:
    assert "script_user" not in plan_with().text
    assert "enable_script_security" not in plan_with().text
    scripted = plan_with(env={"CHECK_SCRIPT": "/usr/local/bin/check.sh"})
    assert "script_user keepalived_script" in scripted.text and "enable_script_security" in scripted.text


def test_unknown_host_skips_interface_checks() -> None:
    labels = {"keepalived.vip": "198.51.100.30", "keepalived.vrid": "130", "keepalived.interface": "eth9"}
    plan = plan_with(container("c", labels, 1.0), host=HostFacts(known=False))
    assert plan.problems == () and plan.fatal == ()


def test_a_parser_crash_costs_only_its_container(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import supervisor.core.plan as plan_module

    real = plan_module.parse_service  # type: ignore[attr-defined]

    def explode(c: ContainerInfo, prefix: str):  # type: ignore[no-untyped-def]
        if c.name == "boom":
            raise RuntimeError("unexpected")
        return real(c, prefix)

    monkeypatch.setattr(plan_module, "parse_service", explode)
    plan = plan_with(container("boom", {"keepalived.port": "80"}, 1.0))
    only_problem_names(plan, "boom", "not understood")


def test_selector_alone_joins_the_environment_instance_with_the_env_check() -> None:
    lb = container("lb", {"io.rancher.stack_service.name": "lb/haproxy"}, 1.0)
    env = {"LABEL_SELECTOR": "io.rancher.stack_service.name=lb/haproxy", "CHECK_PORT": "80"}
    plan = make_plan(load_settings({**ENV, **env}), snapshot(lb), HOST)
    (instance,) = plan.state.instances
    assert [(m.container_name, m.joined_by) for m in instance.members] == [("lb", "selector")]
    (member,) = plan.members["VI_100"]  # no separate environment member: the container carries the check
    assert member.key == lb.id and member.probe is not None and member.probe.port == 80
    disabled = container("off", {"io.rancher.stack_service.name": "lb/haproxy", "keepalived.enable": "false"}, 2.0)
    plan = make_plan(load_settings({**ENV, **env}), snapshot(disabled), HOST)
    assert plan.state.instances[0].members == ()


def test_a_container_publishing_check_port_is_discovered() -> None:
    from supervisor.core.snapshot import PortBinding

    web = ContainerInfo(
        id="w" * 64, name="web", running=True, created=1.0, ports=(PortBinding(80, "tcp", "0.0.0.0", 8080),)
    )
    other = ContainerInfo(
        id="o" * 64, name="other", running=True, created=2.0, ports=(PortBinding(80, "tcp", "0.0.0.0", 9090),)
    )
    settings = load_settings({**ENV, "CHECK_PORT": "8080"})
    plan = make_plan(settings, snapshot(web, other), HOST)
    assert [(m.container_name, m.joined_by) for m in plan.state.instances[0].members] == [("web", "check_port")]
    off = make_plan(load_settings({**ENV, "CHECK_PORT": "8080", "DISCOVER_CHECK_PORT": "false"}), snapshot(web), HOST)
    assert off.state.instances[0].members == ()
    assert [m.key for m in off.members["VI_100"]] == ["environment"], "without discovery the env check stays"
