"""Every environment variable, valid and invalid, table-driven; the old image's bugs; secrets never echoed."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from supervisor.core.model import build_desired_state
from supervisor.core.render import render
from supervisor.core.settings import Settings, SettingsError, load_settings

BASE = {"VIRTUAL_IP": "10.0.0.208"}


def load(**env: str) -> Settings:
    return load_settings({**BASE, **env})


def problems(**env: str) -> list[str]:
    with pytest.raises(SettingsError) as caught:
        load(**env)
    return caught.value.problems


VALID = [
    ("VIRTUAL_IP", "10.0.0.208", lambda s: [str(v) for v in s.virtual_ips] == ["10.0.0.208/32"]),
    (
        "VIRTUAL_IP",
        "10.0.0.208/24, 10.0.0.209",
        lambda s: [str(v) for v in s.virtual_ips] == ["10.0.0.208/24", "10.0.0.209/32"],
    ),
    ("VIRTUAL_IP", "fd00::10", lambda s: str(s.virtual_ips[0]) == "fd00::10/128"),
    ("VIRTUAL_MASK", "24", lambda s: s.virtual_ips[0].prefix == 24),
    ("VRID", "206", lambda s: s.vrid == 206),
    ("VRID", "217", lambda s: s.vrid == 217),
    ("VRID", "1", lambda s: s.vrid == 1),
    ("VRID", "255", lambda s: s.vrid == 255),
    ("INTERFACE", "eth0", lambda s: s.interface == "eth0"),
    ("INTERFACE", "ens3", lambda s: s.interface == "ens3"),
    ("INTERFACE", "bond0.100", lambda s: s.interface == "bond0.100"),
    ("INTERFACE", "br-lan", lambda s: s.interface == "br-lan"),
    ("INTERFACE", "enp0s31f6_abc", lambda s: s.interface == "enp0s31f6_abc"),
    ("PRIORITY", "254", lambda s: s.priority == 254),
    ("STATE", "master", lambda s: s.state == "MASTER"),
    ("ADVERT_INT", "0.5", lambda s: s.advert_int == 0.5),
    ("ADVERT_INT", "3", lambda s: s.advert_int == 3.0),
    ("VRRP_VERSION", "2", lambda s: s.vrrp_version == 2),
    (
        "AUTH_PASS",
        "s3cret",
        lambda s: s.auth_pass is not None and s.auth_pass.reveal() == "s3cret" and s.vrrp_version == 2,
    ),
    ("UNICAST_SRC_IP", "10.0.0.1", lambda s: str(s.unicast_src_ip) == "10.0.0.1"),
    ("UNICAST_PEERS", "10.0.0.2,10.0.0.3", lambda s: [str(p) for p in s.unicast_peers] == ["10.0.0.2", "10.0.0.3"]),
    (
        "UNICAST_PEERS",
        "10.0.0.2 10.0.0.3\t10.0.0.2",
        lambda s: [str(p) for p in s.unicast_peers] == ["10.0.0.2", "10.0.0.3"],
    ),
    ("NOPREEMPT", "yes", lambda s: s.nopreempt is True),
    ("NOPREEMPT", "0", lambda s: s.nopreempt is False),
    ("PREEMPT_DELAY", "5", lambda s: s.preempt_delay == 5.0),
    ("CHECK_PORT", "80", lambda s: s.check.port == 80 and s.check.ip is None),
    ("CHECK_INTERVAL", "0.5", lambda s: s.check.interval == 0.5),
    ("CHECK_TIMEOUT", "2", lambda s: s.check.timeout == 2.0),
    ("CHECK_RISE", "3", lambda s: s.check.rise == 3),
    ("CHECK_FALL", "1", lambda s: s.check.fall == 1),
    (
        "CHECK_SCRIPT",
        "/usr/local/bin/check.sh --port 80",
        lambda s: s.check.script == "/usr/local/bin/check.sh --port 80",
    ),
    ("HEALTH_POLICY", "ALL", lambda s: s.health_policy == "all"),
    ("LABEL_PREFIX", "lb.", lambda s: s.label_prefix == "lb."),
    ("LABEL_SELECTOR", "host=a, tier=edge", lambda s: s.label_selector == (("host", "a"), ("tier", "edge"))),
    ("SCRIPT_USER", "nobody", lambda s: s.script_user == "nobody"),
    ("RUN_DIR", "/var/run/kat", lambda s: s.run_dir == Path("/var/run/kat")),
    ("KEEPALIVED_BIN", "/usr/sbin/keepalived", lambda s: s.keepalived_bin == "/usr/sbin/keepalived"),
    ("RECONCILE_MIN_WAIT", "0.2", lambda s: s.reconcile_min_wait == 0.2),
    ("RECONCILE_MAX_WAIT", "5", lambda s: s.reconcile_max_wait == 5.0),
    ("LOG_LEVEL", "debug", lambda s: s.log_level == "DEBUG"),
]


@pytest.mark.parametrize(("name", "value", "holds"), VALID, ids=[f"{n}={v}" for n, v, _ in VALID])
def test_valid_values(name: str, value: str, holds: object) -> None:
    env = {name: value}
    if name in {"CHECK_IP", "CHECK_HTTP_PATH"}:
        env["CHECK_PORT"] = "80"
    settings = load(**env)
    assert callable(holds) and holds(settings), settings


def test_check_ip_and_http() -> None:
    settings = load(CHECK_PORT="8080", CHECK_IP="10.0.0.5", CHECK_HTTP_PATH="/healthz", CHECK_HTTP_STATUS="204")
    assert settings.check.ip == ipaddress.ip_address("10.0.0.5")
    assert settings.check.http_path == "/healthz" and settings.check.http_status == 204
    assert load(CHECK_PORT="80", CHECK_IP="any").check.ip is None


def test_defaults() -> None:
    settings = load_settings({})
    assert settings.virtual_ips == () and settings.vrid == 51 and settings.interface == "eth0"
    assert settings.priority == 100 and settings.state == "BACKUP" and settings.vrrp_version == 3
    assert settings.label_prefix == "keepalived." and settings.run_dir == Path("/run/keepalived-supervisor")


INVALID = [
    ("VIRTUAL_IP", "10.0.0.999", "IPv4 address"),
    ("VIRTUAL_IP", "127.0.0.1", "not loopback"),
    ("VIRTUAL_IP", "10.0.0.1/33", "prefix length from 1 to 32"),
    ("VIRTUAL_MASK", "0", "whole number from 1 to 128"),
    ("VRID", "0", "from 1 to 255"),
    ("VRID", "256", "from 1 to 255"),
    ("VRID", "5a", "from 1 to 255"),
    ("INTERFACE", "a-very-long-interface-name", "1 to 15"),
    ("INTERFACE", "eth0 }", "interface name"),
    ("INTERFACE", "..", "interface name"),
    ("PRIORITY", "255", "from 1 to 254"),
    ("STATE", "LEADER", "MASTER or BACKUP"),
    ("ADVERT_INT", "0", "from 0.01 to 255"),
    ("ADVERT_INT", "-1", "number of seconds"),
    ("VRRP_VERSION", "4", "from 2 to 3"),
    ("UNICAST_SRC_IP", "10.0.0", "IPv4 address"),
    ("UNICAST_PEERS", "10.0.0.2,nope", "IPv4 address"),
    ("NOPREEMPT", "perhaps", "true or false"),
    ("PREEMPT_DELAY", "1001", "from 0 to 1000"),
    ("CHECK_PORT", "70000", "TCP port number"),
    ("CHECK_HTTP_STATUS", "99", "from 100 to 599"),
    ("CHECK_SCRIPT", "check.sh", "absolute path"),
    ("CHECK_INTERVAL", "0", "number of seconds"),
    ("CHECK_TIMEOUT", "fast", "number of seconds"),
    ("CHECK_RISE", "0", "from 1 to 100"),
    ("CHECK_FALL", "101", "from 1 to 100"),
    ("HEALTH_POLICY", "most", "any"),
    ("LABEL_PREFIX", "-bad", "label prefix"),
    ("LABEL_SELECTOR", "novalue", "key=value"),
    ("SCRIPT_USER", "root user", "user name"),
    ("RUN_DIR", "relative/dir", "absolute path"),
    ("KEEPALIVED_BIN", "keepalived;rm", "program"),
    ("RECONCILE_MIN_WAIT", "x", "number of seconds"),
    ("LOG_LEVEL", "LOUD", "DEBUG, INFO"),
]


@pytest.mark.parametrize(("name", "value", "expected"), INVALID, ids=[f"{n}={v}" for n, v, _ in INVALID])
def test_invalid_values_give_one_line_naming_variable_value_and_form(name: str, value: str, expected: str) -> None:
    found = problems(**{name: value})
    assert len(found) == 1, found
    line = found[0]
    assert (line.startswith(f"{name}=") and repr(value.strip()) in line) or repr(value) in line, line
    assert expected in line, line


def test_check_ip_and_path_need_check_port() -> None:
    found = problems(CHECK_IP="10.0.0.5", CHECK_HTTP_PATH="/x")
    assert [line.split("=")[0] for line in found] == ["CHECK_IP", "CHECK_HTTP_PATH"]
    assert all("needs CHECK_PORT" in line for line in found)


def test_ipv6_with_vrrp_v2_says_v3_is_needed() -> None:
    found = problems(VIRTUAL_IP="fd00::10", VRRP_VERSION="2")
    assert found == ["VRRP_VERSION='2': expected 3: IPv6 virtual IPs need VRRP version 3"]


def test_sub_second_advert_needs_v3() -> None:
    assert "sub-second needs VRRP_VERSION=3" in problems(ADVERT_INT="0.5", VRRP_VERSION="2")[0]
    assert load(ADVERT_INT="0.5", VRRP_VERSION="3").advert_int == 0.5


def test_mixed_families_and_family_mismatch() -> None:
    assert "one family" in problems(VIRTUAL_IP="10.0.0.208,fd00::1")[0]
    assert "IPv4 addresses like the virtual IPs" in problems(UNICAST_PEERS="fd00::2")[0]


def test_nopreempt_needs_backup() -> None:
    assert "expected BACKUP" in problems(NOPREEMPT="true", STATE="MASTER")[0]


def test_script_timing_must_be_whole_seconds() -> None:
    found = problems(CHECK_SCRIPT="/bin/true", CHECK_INTERVAL="0.5")
    assert len(found) == 1 and found[0].startswith("CHECK_INTERVAL='0.5'") and "whole seconds" in found[0]


def test_several_problems_at_once_one_line_each() -> None:
    found = problems(VRID="0", INTERFACE="eth0 {", PRIORITY="999", STATE="x")
    assert sorted(line.split("=")[0] for line in found) == ["INTERFACE", "PRIORITY", "STATE", "VRID"]


@pytest.mark.parametrize("secret", ["Sup3rS3cr3tPassw0rd", 'pa"ss', "hunter2", "ab#cd"])
def test_auth_pass_is_never_echoed(secret: str) -> None:
    env = {**BASE, "AUTH_PASS": secret, "VRRP_VERSION": "3", "VRID": "0"}
    with pytest.raises(SettingsError) as caught:
        load_settings(env)
    text = "\n".join(caught.value.problems) + str(caught.value)
    assert secret not in text
    assert any(line.startswith("AUTH_PASS=(value hidden)") for line in caught.value.problems)
    valid = load_settings({**BASE, "AUTH_PASS": "hunter2"})
    assert "hunter2" not in repr(valid) and "hunter2" not in str(valid.auth_pass)


def test_own_source_address_dropped_from_peers() -> None:
    settings = load(UNICAST_SRC_IP="10.0.0.1", UNICAST_PEERS="10.0.0.1,10.0.0.2")
    assert [str(p) for p in settings.unicast_peers] == ["10.0.0.2"]


def test_old_readme_example_loads_and_renders() -> None:
    for check_ip in ({}, {"CHECK_IP": "any"}):
        env = {"VIRTUAL_IP": "10.0.0.208", "VIRTUAL_MASK": "24", "CHECK_PORT": "80", "VRID": "206", "INTERFACE": "eth0"}
        settings = load_settings({**env, **check_ip})
        text = render(build_desired_state(settings, []))
        assert "virtual_router_id 206" in text and "10.0.0.208/24 dev eth0" in text


def test_settings_file_overrides_env(tmp_path: Path) -> None:
    path = tmp_path / "kat.env"
    path.write_text("# comment\n\nVRID=77\nexport PRIORITY=\"200\"\nINTERFACE='ens3'\n")
    settings = load_settings({**BASE, "VRID": "5", "SETTINGS_FILE": str(path)})
    assert (settings.vrid, settings.priority, settings.interface) == (77, 200, "ens3")
    assert settings.settings_file == path


def test_settings_file_problems(tmp_path: Path) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings({"SETTINGS_FILE": str(tmp_path / "missing.env")})
    assert caught.value.problems[0].startswith("SETTINGS_FILE=") and "cannot be read" in caught.value.problems[0]
    bad = tmp_path / "bad.env"
    bad.write_text("VRID 5\n")
    with pytest.raises(SettingsError) as caught:
        load_settings({"SETTINGS_FILE": str(bad)})
    assert "line 1 is not KEY=VALUE" in caught.value.problems[0]


INJECTION = '10.0.0.1"\n}\nvrrp_script evil {\n script "/bin/sh -c id"\n}\n#'
STRING_VARIABLES = [
    "VIRTUAL_IP",
    "INTERFACE",
    "STATE",
    "AUTH_PASS",
    "UNICAST_SRC_IP",
    "UNICAST_PEERS",
    "CHECK_IP",
    "CHECK_HTTP_PATH",
    "CHECK_SCRIPT",
    "LABEL_PREFIX",
    "LABEL_SELECTOR",
    "SCRIPT_USER",
    "RUN_DIR",
    "KEEPALIVED_BIN",
    "LOG_LEVEL",
    "HEALTH_POLICY",
    "AUTH_TYPE",
    "NOTIFY",
    "NOTIFY_MASTER",
    "NOTIFY_BACKUP",
    "NOTIFY_FAULT",
    "RANCHER_METADATA_URL",
    "LOG_FORMAT",
    "METRICS_ADDR",
    "KEEPALIVED_INTERFACE",
    "KEEPALIVED_UNICAST_PEERS",
]


@pytest.mark.parametrize("name", STRING_VARIABLES)
@pytest.mark.parametrize("payload", [INJECTION, "x { y", "a}b", "a#b", "a\nb", 'a"b', "/bin/x!y"])
def test_injection_attempts_are_rejected_or_cannot_change_the_config(name: str, payload: str) -> None:
    env = {**BASE, "CHECK_PORT": "80", "VRRP_VERSION": "2", name: payload}
    try:
        settings = load_settings(env)
    except SettingsError as error:
        assert any(line.startswith((f"{name}=", f"{name}:")) for line in error.problems), error.problems
        return
    # Accepted (a selector value may hold such characters: it never reaches the config): the structure is intact.
    text = render(build_desired_state(settings, []))
    assert "evil" not in text and text.count("{") == text.count("}")
    reference = render(build_desired_state(load_settings({**BASE, "CHECK_PORT": "80", "VRRP_VERSION": "2"}), []))
    assert text.count("\n") == reference.count("\n")
