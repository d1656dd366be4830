"""container_info_from_attrs, event_from_raw and the small pure helpers of the Docker watcher
(supervisor.core.docker_json), on inspect results shaped like dockerd 20.10's (trimmed from real `docker inspect`
output) and on malformed event messages."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

import pytest

from supervisor.core.docker_json import (
    ContainerEvent,
    EventResume,
    MalformedEvent,
    container_info_from_attrs,
    event_from_raw,
    event_since,
    has_prefixed_label,
    parse_created,
)
from supervisor.core.snapshot import PortBinding

RUNNING: dict[str, Any] = {
    "Id": "92e14804f0d79607e948d521c47086b782149aed3579ed077519b1f83f68a4fe",
    "Name": "/kat-probe",
    "Created": "2026-11-25T03:41:43.997304641Z",
    "State": {
        "Status": "running",
        "Running": True,
        "Paused": False,
        "Restarting": False,
        "Pid": 6549,
        "FinishedAt": "0001-01-01T00:00:00Z",
        "Health": {"Status": "healthy", "FailingStreak": 0, "Log": []},
    },
    "Config": {"Labels": {"keepalived.enable": "true", "keepalived.vip": "198.51.100.10"}},
    "HostConfig": {"NetworkMode": "default"},
    "NetworkSettings": {
        "Ports": {
            "443/udp": [{"HostIp": "127.0.0.1", "HostPort": "18443"}],
            "80/tcp": [{"HostIp": "0.0.0.0", "HostPort": "18080"}, {"HostIp": "::", "HostPort": "18080"}],
            "8080/tcp": None,
        },
        "Networks": {
            "bridge": {"IPAddress": "172.17.0.2", "GlobalIPv6Address": ""},
            "v6only": {"IPAddress": "", "GlobalIPv6Address": "2001:db8::5"},
            "detached": {"IPAddress": "", "GlobalIPv6Address": ""},
        },
    },
}


def attrs(**changes: Any) -> dict[str, Any]:
    result = copy.deepcopy(RUNNING)
    for dotted, value in changes.items():
        *parents, last = dotted.split("__")
        node = result
        for key in parents:
            node = node[key]
        node[last] = value
    return result


def test_running_container_converts_every_field() -> None:
    info = container_info_from_attrs(RUNNING)
    assert info.id == RUNNING["Id"]
    assert info.name == "kat-probe"
    assert info.labels == {"keepalived.enable": "true", "keepalived.vip": "198.51.100.10"}
    assert info.running is True
    assert info.paused is False
    assert info.health == "healthy"
    assert info.ports == (
        PortBinding(container_port=80, protocol="tcp", host_ip="0.0.0.0", host_port=18080),
        PortBinding(container_port=80, protocol="tcp", host_ip="::", host_port=18080),
        PortBinding(container_port=443, protocol="udp", host_ip="127.0.0.1", host_port=18443),
    )
    assert info.addresses == {"bridge": "172.17.0.2", "v6only": "2001:db8::5"}
    assert info.host_network is False
    expected = datetime(2026, 11, 25, 3, 41, 43, tzinfo=UTC).timestamp() + 0.997304641
    assert info.created == pytest.approx(expected, abs=1e-6)


def test_paused_container_is_not_running() -> None:
    info = container_info_from_attrs(attrs(State__Paused=True))
    assert info.paused is True
    assert info.running is False


def test_stopped_container_has_no_ports_and_no_health() -> None:
    stopped = attrs(State__Running=False, NetworkSettings__Ports={}, NetworkSettings__Networks={})
    del stopped["State"]["Health"]
    info = container_info_from_attrs(stopped)
    assert (info.running, info.health, info.ports, info.addresses) == (False, None, (), {})


@pytest.mark.parametrize(
    ("mode", "expected"),
    [("host", True), ("container:3f4e5d", True), ("default", False), ("bridge", False), ("none", False), ("", False)],
)
def test_host_network_modes(mode: str, expected: bool) -> None:
    assert container_info_from_attrs(attrs(HostConfig__NetworkMode=mode)).host_network is expected


def test_odd_port_entries_are_skipped() -> None:
    ports = {
        "80/tcp": [{"HostIp": "", "HostPort": "8080"}, {"HostIp": "0.0.0.0", "HostPort": ""}, "junk"],
        "bad/tcp": [{"HostIp": "", "HostPort": "1"}],
        "53": [{"HostPort": "5353"}],
    }
    info = container_info_from_attrs(attrs(NetworkSettings__Ports=ports))
    assert info.ports == (
        PortBinding(container_port=53, protocol="tcp", host_ip="", host_port=5353),
        PortBinding(container_port=80, protocol="tcp", host_ip="", host_port=8080),
    )


def test_minimal_and_null_sections_do_not_raise() -> None:
    info = container_info_from_attrs(
        {"Id": "abc", "Name": "x", "Config": {"Labels": None}, "State": None, "NetworkSettings": None}
    )
    assert (info.id, info.name, info.labels, info.running, info.created) == ("abc", "x", {}, False, 0.0)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-05-01T10:00:00Z", datetime(2024, 5, 1, 10, tzinfo=UTC).timestamp()),
        ("2024-05-01T10:00:00.5Z", datetime(2024, 5, 1, 10, tzinfo=UTC).timestamp() + 0.5),
        ("2024-05-01T10:00:00.123456789Z", datetime(2024, 5, 1, 10, tzinfo=UTC).timestamp() + 0.123456789),
        ("2024-05-01T12:00:00.25+02:00", datetime(2024, 5, 1, 10, tzinfo=UTC).timestamp() + 0.25),
        ("2024-05-01T05:00:00-0500", datetime(2024, 5, 1, 10, tzinfo=UTC).timestamp()),
        ("0001-01-01T00:00:00Z", 0.0),
        ("yesterday", 0.0),
        ("", 0.0),
        (None, 0.0),
        (1714557600, 0.0),
    ],
)
def test_parse_created(text: object, expected: float) -> None:
    assert parse_created(text) == pytest.approx(expected, abs=1e-6)


def test_created_orders_by_microseconds() -> None:
    assert parse_created("2024-05-01T10:00:00.000001001Z") < parse_created("2024-05-01T10:00:00.000002900Z")


def test_event_since_keeps_nanoseconds() -> None:
    assert event_since(1795578020368924562) == "1795578020.368924562"
    assert event_since(1795578020000000007) == "1795578020.000000007"


def test_prefix_scope() -> None:
    assert has_prefixed_label({"keepalived.enable": "false"}, "keepalived.")
    assert has_prefixed_label({"keepalived.vip": "198.51.100.1"}, "keepalived.")
    assert not has_prefixed_label({"keepalivedenable": "true", "other": "x"}, "keepalived.")


def test_event_verb_strips_health_detail() -> None:
    event = ContainerEvent(id="a", action="health_status: unhealthy", time_nano=1)
    assert event.verb == "health_status"


def raw_event(time_nano: int, cid: str = "c1", action: str = "start") -> dict[str, Any]:
    return {"id": cid, "Action": action, "timeNano": time_nano, "Actor": {"ID": cid, "Attributes": {}}}


def test_resume_drops_only_repeats() -> None:
    resume = EventResume()
    assert resume.since() is None
    assert resume.accept(raw_event(2_000000005))
    # Published out of timeNano order under concurrency: older but new, must pass.
    assert resume.accept(raw_event(2_000000003, "c2"))
    assert resume.since() == "2.000000005"
    # A resumed stream repeats the boundary event (and anything else already seen); same time, other event passes.
    assert not resume.accept(raw_event(2_000000005))
    assert not resume.accept(raw_event(2_000000003, "c2"))
    assert resume.accept(raw_event(2_000000005, "c1", "die"))
    assert resume.accept(raw_event(3_000000000))
    assert resume.since() == "3.000000000"


def test_resume_forgets_beyond_capacity() -> None:
    resume = EventResume(capacity=2)
    for t in (1, 2, 3):
        assert resume.accept(raw_event(t))
    assert resume.accept(raw_event(1))  # forgotten: accepted again (the engine replays far fewer than capacity)
    assert not resume.accept(raw_event(3))


# --- event_from_raw: real shapes convert, garbage raises MalformedEvent and nothing else ------------------------

DIE: dict[str, Any] = {
    "status": "die",
    "id": "92e14804f0d79607e948d521c47086b782149aed3579ed077519b1f83f68a4fe",
    "from": "busybox",
    "Type": "container",
    "Action": "die",
    "Actor": {
        "ID": "92e14804f0d79607e948d521c47086b782149aed3579ed077519b1f83f68a4fe",
        "Attributes": {"exitCode": "137", "image": "busybox", "keepalived.enable": "true", "name": "kat-probe"},
    },
    "scope": "local",
    "time": 1795578020,
    "timeNano": 1795578020368924562,
}


def test_event_from_raw_real_shape() -> None:
    event = event_from_raw(DIE)
    assert event == ContainerEvent(
        id=DIE["id"], action="die", time_nano=1795578020368924562, attributes=DIE["Actor"]["Attributes"]
    )
    assert event.attributes["exitCode"] == "137"


def test_event_from_raw_falls_back_to_legacy_fields_and_time() -> None:
    legacy = {"status": "start", "id": "abc", "time": 12}
    assert event_from_raw(legacy) == ContainerEvent(id="abc", action="start", time_nano=12_000_000_000)
    assert event_from_raw({**legacy, "time": "12"}).time_nano == 12_000_000_000
    assert event_from_raw({**legacy, "timeNano": "12000000005"}).time_nano == 12_000_000_005


@pytest.mark.parametrize(
    "change",
    [
        {"time": "yesterday", "timeNano": None},
        {"time": 1.5, "timeNano": "soon"},
        {"time": None, "timeNano": True},
        {"time": [1], "timeNano": {"n": 1}},
        {"time": -5, "timeNano": -7},
    ],
)
def test_event_with_unusable_time_keeps_id_and_action(change: dict[str, Any]) -> None:
    event = event_from_raw({**DIE, **change})
    assert (event.id, event.action, event.time_nano) == (DIE["id"], "die", 0)


@pytest.mark.parametrize(
    "attributes",
    [None, "labels", ["a", "b"], 42, {"k": None, "n": 1, 3: "x"}],
    ids=["none", "str", "list", "int", "odd"],
)
def test_event_with_odd_attributes_converts(attributes: object) -> None:
    raw = copy.deepcopy(DIE)
    raw["Actor"]["Attributes"] = attributes
    event = event_from_raw(raw)
    assert event.action == "die"
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in event.attributes.items())


def test_event_without_actor_uses_the_top_level_id() -> None:
    raw = {k: v for k, v in DIE.items() if k != "Actor"}
    assert event_from_raw(raw).id == DIE["id"]
    assert event_from_raw({**raw, "Actor": "nonsense"}).id == DIE["id"]


class _Exploding(dict[str, Any]):
    def get(self, key: str, default: Any = None) -> Any:
        raise RuntimeError("boom")


@pytest.mark.parametrize(
    "raw",
    [
        None,
        "die",
        42,
        ["die"],
        b"{}",
        {},
        {"Action": "die"},
        {"Actor": {"ID": 12}, "Action": "die"},
        {"id": "", "Action": "die"},
        {"id": "abc"},
        {"id": "abc", "Action": 7, "status": None},
        {"id": "abc", "Action": "   "},
        {"id": "x" * 1000, "Action": "die"},
        {"Type": "network", "Action": "connect", "Actor": {"ID": "net1"}},
        _Exploding(id="abc", Action="die"),
    ],
    ids=lambda raw: type(raw).__name__ + ":" + repr(raw)[:30],
)
def test_malformed_events_raise_malformed_event_only(raw: object) -> None:
    with pytest.raises(MalformedEvent):
        event_from_raw(raw)
    assert issubclass(MalformedEvent, ValueError)


@pytest.mark.parametrize(
    "raw",
    [None, "x", 3, [], {}, {"timeNano": "1"}, {"timeNano": True}, {"timeNano": -1}, _Exploding(timeNano=1)],
    ids=repr,
)
def test_resume_accepts_garbage_without_raising_or_moving(raw: object) -> None:
    resume = EventResume()
    assert resume.accept(raw) is True
    assert resume.since() is None
