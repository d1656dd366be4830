"""supervisor.core.rancher on answers shaped like Rancher 1.6's metadata service (field names and null-heavy values
as rancher/rancher-metadata serves them under API 2015-12-19 and 2016-07-29), and on malformed ones."""

from __future__ import annotations

import copy
import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from supervisor.core.rancher import (
    MAX_PROBLEMS,
    MalformedObject,
    RancherContainer,
    RancherHost,
    RancherPort,
    RancherView,
    build_view,
    container_id_from_cgroup,
    container_id_from_mountinfo,
    describe,
    discovered_external_ids,
    parse_container,
    parse_containers,
    parse_host,
    parse_hosts,
    parse_port_spec,
    parse_version,
    peer_addresses,
    published_ports,
)
from supervisor.core.snapshot import PortBinding

OWN_ID = "5e0f6bd05a4c2f1f3d7c1c1c5b1f3a0e3d2b1a09f8e7d6c5b4a3928170605040"
LB_ID = "92e14804f0d79607e948d521c47086b782149aed3579ed077519b1f83f68a4fe"
H1, H2, H3 = (
    "0d6c9b5e-0d41-4c8c-9f55-3a1f3f2b7a11",
    "7f3e2c1a-5b6d-4e8f-9a0b-1c2d3e4f5a62",
    "c4d5e6f7-a8b9-4c0d-8e1f-2a3b4c5d6e73",
)


def host(uuid: str, name: str, agent_ip: str | None) -> dict[str, Any]:
    """A /hosts entry of API 2015-12-19 (which still has hostId)."""
    return {
        "agent_ip": agent_ip,
        "hostId": 1,
        "hostname": name,
        "labels": {"io.rancher.host.docker_version": "1.12"},
        "local_storage_mb": 19892,
        "memory": 2097934336,
        "milli_cpu": 2000,
        "name": name,
        "uuid": uuid,
    }


def container(
    name: str,
    host_uuid: str,
    *,
    stack: str | None,
    service: str | None,
    ports: list[str] | None = None,
    external_id: str | None = None,
    state: str = "running",
    uuid: str | None = None,
) -> dict[str, Any]:
    """A /containers entry as the service serves it: every field present, many of them null."""
    return {
        "create_index": 1,
        "dns": ["169.254.169.250"],
        "dns_search": ["rancher.internal"],
        "external_id": external_id or (name.encode().hex() * 8)[:64],
        "health_check_hosts": None,
        "health_state": None,
        "host_uuid": host_uuid,
        "hostname": None,
        "ips": ["10.42.81.15"],
        "labels": {
            "io.rancher.container.uuid": uuid or f"uuid-{name}",
            **({"io.rancher.stack_service.name": f"{stack}/{service}"} if stack and service else {}),
        },
        "links": None,
        "memory_reservation": None,
        "milli_cpu_reservation": None,
        "name": name,
        "network_from_container_uuid": None,
        "network_uuid": "6b5f3f5c-5e8e-4e0b-a0a8-2b8c1e0f7a6d",
        "ports": ports,
        "primary_ip": "10.42.81.15",
        "primary_mac_address": "02:d6:fb:12:7e:43",
        "service_index": "1",
        "service_name": service,
        "stack_name": stack,
        "stack_uuid": None,
        "start_count": 1,
        "state": state,
        "system": False,
        "uuid": uuid or f"uuid-{name}",
    }


HOSTS = [host(H1, "node1", "192.0.2.11"), host(H2, "node2", "192.0.2.12"), host(H3, "node3", "192.0.2.13")]
CONTAINERS = [
    container("keepalived-keepalived-1", H1, stack="keepalived", service="keepalived", external_id=OWN_ID),
    container("keepalived-keepalived-2", H2, stack="keepalived", service="keepalived"),
    container("keepalived-keepalived-3", H3, stack="keepalived", service="keepalived"),
    container("lb-haproxy-1", H1, stack="lb", service="haproxy", ports=["192.0.2.11:80:80/tcp"], external_id=LB_ID),
    container("lb-haproxy-2", H2, stack="lb", service="haproxy", ports=["192.0.2.12:80:80/tcp"]),
    container("web-nginx-1", H1, stack="web", service="nginx", ports=["192.0.2.11:8080:80/tcp"]),
    container("dns-udp-1", H1, stack="dns", service="bind", ports=["192.0.2.11:80:53/udp"]),
]


def view_of(
    containers: list[Any] | None = None,
    hosts: list[Any] | None = None,
    *,
    self_host: object = "default",
    self_container: object = None,
    self_service: object = None,
    own: str | None = OWN_ID,
) -> RancherView:
    chosen_hosts = HOSTS if hosts is None else hosts
    return build_view(
        "42",
        self_host=chosen_hosts[0] if self_host == "default" else self_host,
        self_container=self_container,
        self_service=self_service,
        containers=CONTAINERS if containers is None else containers,
        hosts=chosen_hosts,
        own_container_id=own,
    )


# --- parsing ---------------------------------------------------------------------------------------------------


def test_a_host_keeps_the_fields_the_supervisor_uses() -> None:
    parsed = parse_host(HOSTS[0])
    assert parsed == RancherHost(
        uuid=H1,
        name="node1",
        agent_ip="192.0.2.11",
        hostname="node1",
        labels={"io.rancher.host.docker_version": "1.12"},
    )


def test_a_container_keeps_the_fields_the_service_returns_and_null_means_missing() -> None:
    parsed = parse_container(CONTAINERS[3])
    assert parsed.name == "lb-haproxy-1"
    assert parsed.uuid == "uuid-lb-haproxy-1"
    assert parsed.external_id == LB_ID
    assert parsed.host_uuid == H1
    assert parsed.ports == ("192.0.2.11:80:80/tcp",)
    assert parsed.primary_ip == "10.42.81.15"
    assert parsed.labels["io.rancher.stack_service.name"] == "lb/haproxy"
    assert (parsed.stack_name, parsed.service_name, parsed.state) == ("lb", "haproxy", "running")
    assert parsed.health_state == ""  # null
    bare = parse_container({"uuid": "u1", "ports": None, "labels": None, "name": None, "system": None})
    assert bare == RancherContainer(
        name="", uuid="u1", external_id="", host_uuid="", ports=(), primary_ip="", labels={}
    )


def test_lists_are_sorted_by_uuid_so_the_services_map_order_does_not_matter() -> None:
    shuffled = copy.deepcopy(CONTAINERS)
    random.Random(7).shuffle(shuffled)
    assert parse_containers(shuffled) == parse_containers(CONTAINERS)
    a = view_of(shuffled, list(reversed(HOSTS)), self_host=HOSTS[0])
    b = view_of()
    assert a == b


def test_the_version_is_not_part_of_a_views_equality() -> None:
    a = view_of()
    b = RancherView(
        version="43",
        self_host=a.self_host,
        self_service_name=a.self_service_name,
        self_stack_name=a.self_stack_name,
        containers=a.containers,
        hosts=a.hosts,
        problems=a.problems,
        self_source=a.self_source,
    )
    assert a == b and a.version != b.version


@pytest.mark.parametrize(
    ("value", "expected"),
    [("c5f4a2a0-8d3e-4bd1-9b53-7f1f3a0d2e11", "c5f4a2a0-8d3e-4bd1-9b53-7f1f3a0d2e11"), ("1234", "1234"), (7, "7")],
)
def test_parse_version(value: object, expected: str) -> None:
    assert parse_version(value) == expected


@pytest.mark.parametrize("value", [None, "", True, [], {}, {"version": "1"}])
def test_parse_version_refuses_what_is_not_a_version(value: object) -> None:
    with pytest.raises(MalformedObject):
        parse_version(value)


# --- malformed objects -------------------------------------------------------------------------------------------

MALFORMED_CONTAINERS: list[object] = [
    "not an object",
    None,
    42,
    {"name": "no-uuid"},
    {"uuid": ["a"], "name": "uuid-not-a-string"},
    {"uuid": "u-ports", "name": "ports-not-a-list", "ports": "80:80/tcp"},
    {"uuid": "u-ports2", "name": "ports-not-strings", "ports": [80]},
    {"uuid": "u-labels", "name": "labels-not-an-object", "labels": ["a=b"]},
    {"uuid": "u-labels2", "name": "label-value-an-object", "labels": {"a": {"b": 1}}},
    {"uuid": "u-system", "name": "system-not-a-bool", "system": [1]},
    {"uuid": "u-host", "name": "host-uuid-an-object", "host_uuid": {}},
]


def test_malformed_containers_are_skipped_and_reported_one_line_each() -> None:
    good = copy.deepcopy(CONTAINERS)
    view = view_of([*good, *MALFORMED_CONTAINERS])
    assert view.containers == view_of(good).containers
    skipped = [p for p in view.problems if p.startswith("rancher metadata /containers:")]
    assert len(skipped) == len(MALFORMED_CONTAINERS)
    assert any("no uuid" in p and "no-uuid" in p for p in skipped)
    assert any("ports is not a list of strings" in p for p in skipped)


def test_a_repeated_uuid_keeps_the_first_and_is_reported() -> None:
    twice = [CONTAINERS[0], {**CONTAINERS[1], "uuid": CONTAINERS[0]["uuid"]}]
    parsed, problems = parse_containers(twice)
    assert [c.name for c in parsed] == ["keepalived-keepalived-1"]
    assert len(problems) == 1 and "listed twice" in problems[0]


def test_malformed_hosts_are_skipped_and_reported() -> None:
    hosts = [*HOSTS, {"name": "no-uuid"}, host("h-bad", "bad", "not-an-ip"), "junk"]
    parsed, problems = parse_hosts(hosts)
    assert [h.uuid for h in parsed] == sorted([H1, H2, H3])
    assert len(problems) == 3
    assert any("agent_ip 'not-an-ip' is not an address" in p for p in problems)


@pytest.mark.parametrize("value", ["a string", {"data": []}, 3])
def test_a_list_that_is_not_a_list_gives_nothing_and_one_problem(value: object) -> None:
    parsed, problems = parse_containers(value)
    assert parsed == () and len(problems) == 1


def test_malformed_self_objects_are_ignored_and_reported() -> None:
    view = view_of(self_host="junk", self_container=["x"], self_service=7, own=None)
    assert view.self_host is None and view.self_service is None
    assert any("/self/host" in p for p in view.problems)
    assert any("/self/container" in p for p in view.problems)
    assert any("/self/service" in p for p in view.problems)


def test_problems_are_capped() -> None:
    view = view_of([{"name": f"no-uuid-{i}"} for i in range(MAX_PROBLEMS + 10)], own=None)
    assert len(view.problems) == MAX_PROBLEMS + 1
    assert view.problems[-1].endswith("10 more problem(s) like these not shown")


@settings(max_examples=300, deadline=None)
@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=20),
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=6),
        max_leaves=30,
    ),
    st.sampled_from(["containers", "hosts", "self_host", "self_container", "self_service"]),
)
def test_build_view_never_raises(junk: object, where: str) -> None:
    arguments: dict[str, object] = {
        "self_host": HOSTS[0],
        "self_container": None,
        "self_service": None,
        "containers": CONTAINERS,
        "hosts": HOSTS,
    }
    arguments[where] = junk
    view = build_view("1", own_container_id=OWN_ID, **arguments)
    peer_addresses(view)
    discovered_external_ids(view, 80)
    list(describe(view))


# --- ports -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("0.0.0.0:80:80/tcp", [RancherPort("0.0.0.0", 80, 80, "tcp")]),  # API 2016-07-29
        ("192.0.2.11:8080:80/tcp", [RancherPort("192.0.2.11", 8080, 80, "tcp")]),  # API 2015-12-19
        ("80:80/tcp", [RancherPort("0.0.0.0", 80, 80, "tcp")]),  # Cattle's own form
        ("8080:80", [RancherPort("0.0.0.0", 8080, 80, "tcp")]),
        ("53:53/udp", [RancherPort("0.0.0.0", 53, 53, "udp")]),
        ("0.0.0.0:53:53/UDP", [RancherPort("0.0.0.0", 53, 53, "udp")]),
        ("[::]:443:8443/tcp", [RancherPort("::", 443, 8443, "tcp")]),
        ("::1:443:8443/tcp", [RancherPort("::1", 443, 8443, "tcp")]),
        (" 192.0.2.11:80:80/tcp ", [RancherPort("192.0.2.11", 80, 80, "tcp")]),
        (
            "8000-8001:80-81/tcp",
            [RancherPort("0.0.0.0", 8000, 80, "tcp"), RancherPort("0.0.0.0", 8001, 81, "tcp")],
        ),
        ("%!s(<nil>):80:80/tcp", [RancherPort("", 80, 80, "tcp")]),  # a host without agent_ip, API 2015-12-19
        ("192.0.2.11:80/tcp", []),  # normalised from "80/tcp": exposed, publishes nothing known
        ("0.0.0.0:80/tcp", []),
        ("80/tcp", []),
        ("80", []),
        ("0.0.0.0::80/tcp", []),  # no public port
    ],
)
def test_port_strings(spec: str, expected: list[RancherPort]) -> None:
    assert parse_port_spec(spec) == expected


@pytest.mark.parametrize(
    "spec",
    ["", "abc", "a:b:c", "80:http/tcp", "80:70000/tcp", "0:80/tcp", "80:80/icmp", "8000-8002:80-81", "1-2000:1-2000"],
)
def test_port_strings_not_understood(spec: str) -> None:
    with pytest.raises(MalformedObject):
        parse_port_spec(spec)


def test_published_ports_skips_what_it_cannot_read_and_the_view_says_so() -> None:
    entry = container("odd-1", H1, stack="odd", service="odd", ports=["80:80/tcp", "bogus", "443:443/udp"])
    parsed = parse_container(entry)
    assert published_ports(parsed) == [RancherPort("0.0.0.0", 80, 80, "tcp"), RancherPort("0.0.0.0", 443, 443, "udp")]
    view = view_of([entry])
    assert view.containers == (parsed,)
    assert any("odd-1" in p and "'bogus'" in p for p in view.problems)


def test_a_rancher_port_is_a_port_binding_too() -> None:
    assert RancherPort("0.0.0.0", 8080, 80, "tcp").binding() == PortBinding(
        container_port=80, protocol="tcp", host_ip="0.0.0.0", host_port=8080
    )


# --- discovery ---------------------------------------------------------------------------------------------------


def test_discovery_finds_the_containers_on_this_host_that_publish_check_port_over_tcp() -> None:
    view = view_of()
    # lb-haproxy-2 publishes 80 too, but on node2; dns-udp-1 publishes 80 over UDP; web-nginx-1 publishes 8080.
    assert discovered_external_ids(view, 80) == {LB_ID}
    assert discovered_external_ids(view, 8080) == {parse_container(CONTAINERS[5]).external_id}
    assert discovered_external_ids(view, 443) == set()
    assert discovered_external_ids(view, None) == set()


def test_discovery_follows_this_host() -> None:
    on_node2 = view_of(self_host=HOSTS[1], own=None)
    assert discovered_external_ids(on_node2, 80) == {parse_container(CONTAINERS[4]).external_id}
    unknown = view_of(self_host=None, own=None)
    assert unknown.self_host is None
    assert discovered_external_ids(unknown, 80) == set()


def test_discovery_keeps_a_stopped_container_and_drops_one_being_removed() -> None:
    stopped = [*CONTAINERS[:3], {**CONTAINERS[3], "state": "stopped"}]
    assert discovered_external_ids(view_of(stopped), 80) == {LB_ID}
    for state in ("removed", "removing", "purged"):
        gone = [*CONTAINERS[:3], {**CONTAINERS[3], "state": state}]
        assert discovered_external_ids(view_of(gone), 80) == set()


def test_discovery_needs_a_docker_id() -> None:
    no_id = [{**CONTAINERS[3], "external_id": None}]
    assert discovered_external_ids(view_of(no_id, own=None), 80) == set()


# --- peers -------------------------------------------------------------------------------------------------------


def test_peers_are_the_other_hosts_of_the_own_service() -> None:
    view = view_of()
    assert view.self_source == "container id"
    assert view.self_service == ("keepalived", "keepalived")
    assert peer_addresses(view) == ("192.0.2.11", ["192.0.2.12", "192.0.2.13"])


def test_peers_ignore_other_services_and_hosts_without_one() -> None:
    only_two = [c for c in CONTAINERS if c["name"] != "keepalived-keepalived-3"]
    assert peer_addresses(view_of(only_two)) == ("192.0.2.11", ["192.0.2.12"])


def test_peers_are_sorted_by_address_without_duplicates() -> None:
    hosts = [host(H1, "node1", "192.0.2.11"), host(H2, "node2", "192.0.2.100"), host(H3, "node3", "192.0.2.9")]
    extra = container("keepalived-keepalived-4", H2, stack="keepalived", service="keepalived", uuid="u4")
    assert peer_addresses(view_of([*CONTAINERS, extra], hosts)) == ("192.0.2.11", ["192.0.2.9", "192.0.2.100"])


def test_peers_skip_hosts_without_an_address_and_containers_being_removed() -> None:
    hosts = [HOSTS[0], host(H2, "node2", None)]  # node3 is not listed at all
    assert peer_addresses(view_of(hosts=hosts)) == ("192.0.2.11", [])
    removing = [*CONTAINERS[:2], {**CONTAINERS[2], "state": "removing"}]
    assert peer_addresses(view_of(removing)) == ("192.0.2.11", ["192.0.2.12"])


def test_a_peer_with_this_hosts_address_is_dropped() -> None:
    hosts = [HOSTS[0], host(H2, "node2", "192.0.2.11"), HOSTS[2]]
    assert peer_addresses(view_of(hosts=hosts)) == ("192.0.2.11", ["192.0.2.13"])


def test_names_compare_case_insensitively_as_api_2016_07_29_lower_cases_them() -> None:
    upper = [
        {**c, "stack_name": "KeepAlived"} if c["stack_name"] == "keepalived" and c is not CONTAINERS[0] else c
        for c in CONTAINERS
    ]
    assert peer_addresses(view_of(upper)) == ("192.0.2.11", ["192.0.2.12", "192.0.2.13"])


def test_without_the_own_service_there_are_no_peers() -> None:
    view = view_of(own=None)
    assert view.self_service is None and view.self_source == ""
    assert peer_addresses(view) == ("192.0.2.11", [])


def test_without_this_host_the_source_is_unknown() -> None:
    view = view_of(self_host=None, own=None, self_service={"name": "keepalived", "stack_name": "keepalived"})
    assert peer_addresses(view) == (None, ["192.0.2.11", "192.0.2.12", "192.0.2.13"])


# --- which service is mine -----------------------------------------------------------------------------------------


def test_the_own_container_id_wins_over_self_container_and_self_service() -> None:
    # On the host's network /self/container may describe another host-network container of this host.
    other = container("other-svc-1", H1, stack="other", service="svc")
    view = view_of(self_container=other, self_service={"name": "svc", "stack_name": "other"})
    assert view.self_source == "container id" and view.self_service == ("keepalived", "keepalived")


def test_a_short_own_id_matches() -> None:
    assert view_of(own=OWN_ID[:12]).self_source == "container id"


def test_self_container_then_self_service_when_the_own_id_is_unknown() -> None:
    me = CONTAINERS[1]
    by_container = view_of(self_container=me, own=None)
    assert by_container.self_source == "self/container"
    assert by_container.self_service == ("keepalived", "keepalived")
    by_service = view_of(self_service={"name": "keepalived", "stack_name": "keepalived", "kind": "service"}, own=None)
    assert by_service.self_source == "self/service"
    assert by_service.self_service == ("keepalived", "keepalived")


def test_an_own_id_not_listed_is_reported_and_the_self_answers_are_used() -> None:
    view = view_of(self_container=CONTAINERS[1], own="f" * 64)
    assert view.self_source == "self/container"
    assert any("ffffffffffff" in p and "not listed" in p for p in view.problems)


def test_a_standalone_own_container_has_no_service() -> None:
    alone = [container("standalone", H1, stack=None, service=None, external_id=OWN_ID)]
    view = view_of(alone)
    assert view.self_source == "container id" and view.self_service is None


def test_this_host_comes_from_the_own_container_when_self_host_is_missing() -> None:
    view = view_of(self_host=None)
    assert view.self_host is not None and view.self_host.uuid == H1
    assert peer_addresses(view) == ("192.0.2.11", ["192.0.2.12", "192.0.2.13"])


def test_describe() -> None:
    lines = list(describe(view_of()))
    assert lines == [
        "version 42",
        "this host: node1 (192.0.2.11)",
        "own service: keepalived/keepalived (from container id)",
        "peers: 192.0.2.12, 192.0.2.13",
    ]


# --- which container am I ------------------------------------------------------------------------------------------

MOUNTINFO = f"""\
1183 1066 0:112 / / rw,relatime master:498 - overlay overlay rw,lowerdir=/var/lib/docker/overlay2/l/X
1184 1183 0:115 / /proc rw,nosuid,nodev,noexec,relatime - proc proc rw
1190 1183 8:1 /var/lib/docker/containers/{OWN_ID}/resolv.conf /etc/resolv.conf rw,relatime - ext4 /dev/sda1 rw
1191 1183 8:1 /var/lib/docker/containers/{OWN_ID}/hostname /etc/hostname rw,relatime - ext4 /dev/sda1 rw
1192 1183 8:1 /var/lib/docker/containers/{OWN_ID}/hosts /etc/hosts rw,relatime - ext4 /dev/sda1 rw
1193 1183 8:1 /var/lib/docker/containers/{LB_ID}/hosts /mnt/other-hosts ro,relatime - ext4 /dev/sda1 rw
"""


def test_the_own_container_id_from_mountinfo() -> None:
    assert container_id_from_mountinfo(MOUNTINFO) == OWN_ID
    data_root_elsewhere = MOUNTINFO.replace("/var/lib/docker/", "/docker/")
    assert container_id_from_mountinfo(data_root_elsewhere) == OWN_ID


def test_no_or_two_container_ids_in_mountinfo_give_none() -> None:
    assert container_id_from_mountinfo("1 0 8:1 / / rw - ext4 /dev/sda1 rw\n") is None
    mixed = MOUNTINFO.replace(f"{OWN_ID}/hosts /etc/hosts", f"{LB_ID}/hosts /etc/hosts")
    assert container_id_from_mountinfo(mixed) is None
    assert container_id_from_mountinfo("garbage\n\n") is None


def test_the_own_container_id_from_cgroup_v1_and_systemd() -> None:
    v1 = f"12:memory:/docker/{OWN_ID}\n11:cpu,cpuacct:/docker/{OWN_ID}\n1:name=systemd:/docker/{OWN_ID}\n"
    assert container_id_from_cgroup(v1) == OWN_ID
    assert container_id_from_cgroup(f"0::/system.slice/docker-{OWN_ID}.scope\n") == OWN_ID
    assert container_id_from_cgroup("0::/\n") is None
