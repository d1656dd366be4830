"""The newer variables (metrics, log format, notify, VIP lease, Rancher metadata, AUTH_TYPE), secrets read from
files (NAME_FILE, Docker secrets), and osixia/keepalived's variables read as ours."""

from __future__ import annotations

import ipaddress
import os
import re
from pathlib import Path

import pytest

from supervisor.core import settings as settings_module
from supervisor.core.plan import HostFacts, make_plan
from supervisor.core.settings import (
    FILE_SUFFIX,
    OSIXIA_UNSUPPORTED,
    OSIXIA_VARIABLES,
    SETTING_SPECS,
    Settings,
    SettingsError,
    load_settings,
)
from supervisor.core.snapshot import Snapshot
from supervisor.core.validate import split_listen_address

BASE = {"VIRTUAL_IP": "10.0.0.208", "RUN_DIR": "/run/kat-test"}
HOST = HostFacts(
    interfaces={
        "eth0": (ipaddress.ip_address("10.0.0.11"),),
        "eth1": (ipaddress.ip_address("10.0.1.11"),),
    }
)
README = Path(__file__).resolve().parents[2] / "README.md"


def load(**env: str) -> Settings:
    return load_settings({**BASE, **env})


def problems(env: dict[str, str]) -> list[str]:
    with pytest.raises(SettingsError) as caught:
        load_settings(env)
    return caught.value.problems


def text(env: dict[str, str]) -> str:
    return make_plan(load_settings(env), Snapshot(), HOST).text


# --- the new variables, valid and invalid ------------------------------------------------------------------------


def test_defaults_of_the_new_variables() -> None:
    s = load_settings({})
    assert s.metrics_addr == "0.0.0.0:9655"
    assert s.log_format == "text"
    assert (s.notify, s.notify_master, s.notify_backup, s.notify_fault) == (None, None, None, None)
    assert s.notify_timeout == 10.0
    assert s.vip_lease == 2
    assert s.rancher_metadata_url == "http://rancher-metadata/2015-12-19"
    assert s.auth_type is None
    assert s.notes == ()


VALID = [
    ("METRICS_ADDR", "0.0.0.0:9655", lambda s: s.metrics_addr == "0.0.0.0:9655"),
    ("METRICS_ADDR", " 127.0.0.1:1 ", lambda s: s.metrics_addr == "127.0.0.1:1"),
    ("METRICS_ADDR", ":65535", lambda s: s.metrics_addr == ":65535"),
    ("METRICS_ADDR", "[::]:9655", lambda s: s.metrics_addr == "[::]:9655"),
    ("METRICS_ADDR", "[FD00:0::1]:80", lambda s: s.metrics_addr == "[fd00::1]:80"),
    ("METRICS_ADDR", "", lambda s: s.metrics_addr is None),
    ("METRICS_ADDR", "  ", lambda s: s.metrics_addr is None),
    ("LOG_FORMAT", "json", lambda s: s.log_format == "json"),
    ("LOG_FORMAT", " TEXT ", lambda s: s.log_format == "text"),
    ("NOTIFY", "/usr/local/bin/notify.sh", lambda s: s.notify == "/usr/local/bin/notify.sh"),
    ("NOTIFY_MASTER", "/bin/echo master --now", lambda s: s.notify_master == "/bin/echo master --now"),
    ("NOTIFY_BACKUP", "/bin/true", lambda s: s.notify_backup == "/bin/true"),
    ("NOTIFY_FAULT", "/bin/false x", lambda s: s.notify_fault == "/bin/false x"),
    ("NOTIFY_TIMEOUT", "0.1", lambda s: s.notify_timeout == 0.1),
    ("NOTIFY_TIMEOUT", "300", lambda s: s.notify_timeout == 300.0),
    ("VIP_LEASE", "0", lambda s: s.vip_lease == 0),
    ("VIP_LEASE", "1", lambda s: s.vip_lease == 1),
    ("VIP_LEASE", "3600", lambda s: s.vip_lease == 3600),
    ("RANCHER_METADATA_URL", "off", lambda s: s.rancher_metadata_url is None),
    ("RANCHER_METADATA_URL", "None", lambda s: s.rancher_metadata_url is None),
    (
        "RANCHER_METADATA_URL",
        "http://169.254.169.250/latest/",
        lambda s: s.rancher_metadata_url == "http://169.254.169.250/latest",
    ),
    ("RANCHER_METADATA_URL", "http://[fd00::5]:8080/x", lambda s: s.rancher_metadata_url == "http://[fd00::5]:8080/x"),
    ("RANCHER_METADATA_URL", "http://meta", lambda s: s.rancher_metadata_url == "http://meta"),
]


@pytest.mark.parametrize(("name", "value", "holds"), VALID, ids=[f"{n}={v!r}" for n, v, _ in VALID])
def test_valid_values(name: str, value: str, holds: object) -> None:
    settings = load(**{name: value})
    assert callable(holds) and holds(settings), settings


INVALID = [
    ("METRICS_ADDR", "9655", "HOST:PORT"),
    ("METRICS_ADDR", "0.0.0.0:0", "port from 1 to 65535"),
    ("METRICS_ADDR", "0.0.0.0:65536", "port from 1 to 65535"),
    ("METRICS_ADDR", "localhost:9655", "IPv4 address"),
    ("METRICS_ADDR", "::1:9655", "[IPv6]"),
    ("METRICS_ADDR", "[fe80::1%eth0]:9655", "HOST:PORT"),
    ("METRICS_ADDR", "0.0.0.0:97a", "HOST:PORT"),
    ("LOG_FORMAT", "xml", "text or json"),
    ("NOTIFY", "notify.sh", "absolute path"),
    ("NOTIFY_MASTER", "/bin/echo $HOME", "'$'"),
    ("NOTIFY_BACKUP", "/bin/echo 'x'", "quotes"),
    ("NOTIFY_FAULT", "/bin/x " + "a" * 600, "at most 512 bytes"),
    ("NOTIFY_TIMEOUT", "0", "from 0.1 to 300"),
    ("NOTIFY_TIMEOUT", "301", "from 0.1 to 300"),
    ("NOTIFY_TIMEOUT", "soon", "number of seconds"),
    ("VIP_LEASE", "-1", "from 0 to 3600"),
    ("VIP_LEASE", "3601", "from 0 to 3600"),
    ("VIP_LEASE", "1.5", "whole number"),
    ("RANCHER_METADATA_URL", "https://rancher-metadata", "http:// URL"),
    ("RANCHER_METADATA_URL", "http://rancher metadata", "http:// URL"),
    ("RANCHER_METADATA_URL", 'http://x/"y', "http:// URL"),
    ("RANCHER_METADATA_URL", "http://x/$y", "http:// URL"),
    ("RANCHER_METADATA_URL", "http://x/?q=1", "http:// URL"),
    ("RANCHER_METADATA_URL", "http://user@x/", "http:// URL"),
    ("RANCHER_METADATA_URL", "http://x:70000/", "http:// URL"),
    ("RANCHER_METADATA_URL", "rancher-metadata", "http:// URL"),
    ("AUTH_TYPE", "MD5", "PASS or AH"),
]


@pytest.mark.parametrize(("name", "value", "expected"), INVALID, ids=[f"{n}={v[:30]!r}" for n, v, _ in INVALID])
def test_invalid_values_give_one_line_naming_variable_value_and_form(name: str, value: str, expected: str) -> None:
    found = problems({**BASE, "AUTH_PASS": "s3cret", name: value})
    assert len(found) == 1, found
    assert found[0].startswith(f"{name}="), found
    assert repr(value.strip())[:50] in found[0], found
    assert expected in found[0], found


def test_listen_address_splits_for_bind() -> None:
    assert split_listen_address("0.0.0.0:9655") == ("0.0.0.0", 9655)
    assert split_listen_address("[::1]:80") == ("::1", 80)
    assert split_listen_address(":80") == ("", 80)


# --- AUTH_TYPE ---------------------------------------------------------------------------------------------------


def test_auth_type_defaults_to_pass_with_a_password() -> None:
    s = load(AUTH_PASS="s3cret")
    assert (s.auth_type, s.vrrp_version) == ("PASS", 2)
    assert "auth_type PASS\n        auth_pass s3cret\n" in text({**BASE, "AUTH_PASS": "s3cret"})


def test_ah_renders_auth_type_ah() -> None:
    s = load(AUTH_PASS="s3cret", AUTH_TYPE="ah")
    assert (s.auth_type, s.vrrp_version) == ("AH", 2)
    rendered = text({**BASE, "AUTH_PASS": "s3cret", "AUTH_TYPE": "AH"})
    assert "    authentication {\n        auth_type AH\n        auth_pass s3cret\n    }\n" in rendered
    assert "auth_type PASS" not in rendered


def test_auth_type_applies_to_label_defined_instances_too() -> None:
    from supervisor.core.snapshot import ContainerInfo

    container = ContainerInfo(
        id="c" * 64, name="api", labels={"keepalived.vip": "10.0.0.209", "keepalived.vrid": "52"}, running=True
    )
    settings = load(AUTH_PASS="s3cret", AUTH_TYPE="AH")
    plan = make_plan(settings, Snapshot({container.id: container}, engine_reachable=True), HOST)
    assert plan.text.count("auth_type AH") == 2, plan.text


@pytest.mark.parametrize("value", ["AH", "PASS"])
def test_auth_type_needs_a_password(value: str) -> None:
    found = problems({**BASE, "AUTH_TYPE": value})
    assert len(found) == 1 and found[0].startswith(f"AUTH_TYPE='{value}': needs AUTH_PASS"), found
    assert ("AH key" in found[0]) == (value == "AH")


def test_auth_type_with_vrrp_v3_names_what_the_user_set() -> None:
    found = problems({**BASE, "AUTH_TYPE": "AH", "AUTH_PASS": "s3cret", "VRRP_VERSION": "3"})
    assert found == ["AUTH_PASS=(value hidden): is only supported with VRRP_VERSION=2 (VRRP v3 has no authentication)"]


def test_ah_with_ipv6_is_refused() -> None:
    found = problems({"VIRTUAL_IP": "fd00::10", "AUTH_TYPE": "AH", "AUTH_PASS": "s3cret"})
    assert len(found) == 1 and "IPv6" in found[0] and found[0].startswith("AUTH_PASS="), found


# --- secrets from files ------------------------------------------------------------------------------------------

SECRET = "Sup3r!x"  # refused as a password ('!'): a value that no problem line may show


def secret_file(tmp_path: Path, content: bytes, name: str = "auth_pass") -> Path:
    path = tmp_path / name
    path.write_bytes(content)
    return path


def test_every_secret_variable_has_a_file_variable() -> None:
    secrets = [spec for spec in SETTING_SPECS if spec.secret]
    names = {spec.name for spec in SETTING_SPECS}
    assert secrets, "AUTH_PASS at least"
    for spec in secrets:
        assert spec.name + FILE_SUFFIX in names, spec.name
        file_spec = getattr(settings_module, spec.name + FILE_SUFFIX)
        assert not file_spec.secret, "a path is not a secret; the content is"


@pytest.mark.parametrize("spec", [s for s in SETTING_SPECS if s.secret], ids=lambda s: s.name)
def test_every_secret_file_variable_is_read(tmp_path: Path, spec: object) -> None:
    name = getattr(spec, "name", "")
    value = {"AUTH_PASS": "s3cret"}[name]  # a valid value for each secret variable (add one for a new secret)
    path = secret_file(tmp_path, value.encode() + b"\n")
    assert load(**{name + FILE_SUFFIX: str(path)}) == load(**{name: value})


@pytest.mark.parametrize(
    "content", [b"s3cret", b"s3cret\n", b"s3cret\r\n", b"  s3cret  \n"], ids=["bare", "lf", "crlf", "spaces"]
)
def test_auth_pass_file_gives_the_password(tmp_path: Path, content: bytes) -> None:
    path = secret_file(tmp_path, content)
    s = load(AUTH_PASS_FILE=str(path))
    assert s.auth_pass is not None and s.auth_pass.reveal() == "s3cret"
    assert (s.auth_type, s.vrrp_version) == ("PASS", 2)
    assert text({**BASE, "AUTH_PASS_FILE": str(path), "AUTH_TYPE": "AH"}) == text(
        {**BASE, "AUTH_PASS": "s3cret", "AUTH_TYPE": "AH"}
    )


@pytest.mark.parametrize(
    "content", [SECRET.encode(), b"pass word", b"toolongpassword\n", b"s3cret\n\x00", "m\u00f6t\u00f6r".encode()]
)
def test_an_invalid_password_from_a_file_names_the_file_never_the_content(tmp_path: Path, content: bytes) -> None:
    path = secret_file(tmp_path, content)
    found = problems({**BASE, "AUTH_PASS_FILE": str(path)})
    assert found == [
        f"AUTH_PASS_FILE={str(path)!r} (content not shown): expected 1 to 8 bytes of printable ASCII without spaces, "
        "quotes, braces, '#', '!', '\\', ';' or '$'"
    ]
    shown = content.decode(errors="replace").strip()
    assert shown not in "\n".join(found)


def test_combination_problems_with_a_file_password_name_the_file(tmp_path: Path) -> None:
    path = secret_file(tmp_path, b"s3cret\n")
    found = problems({**BASE, "AUTH_PASS_FILE": str(path), "VRRP_VERSION": "3"})
    assert found == [
        f"AUTH_PASS_FILE={str(path)!r} (content not shown): is only supported with VRRP_VERSION=2 "
        "(VRRP v3 has no authentication)"
    ]


def test_both_a_secret_and_its_file_is_a_problem_naming_both(tmp_path: Path) -> None:
    path = secret_file(tmp_path, b"s3cret\n")
    found = problems({**BASE, "AUTH_PASS": "s3cret", "AUTH_PASS_FILE": str(path)})
    assert found == ["AUTH_PASS and AUTH_PASS_FILE are both set: expected only one of them"]
    found = problems({**BASE, "AUTH_PASS": SECRET, "AUTH_PASS_FILE": str(path)})  # and AUTH_PASS is invalid
    assert "AUTH_PASS and AUTH_PASS_FILE are both set: expected only one of them" in found
    assert SECRET not in "\n".join(found)


def test_unusable_secret_files_are_problems_naming_the_file(tmp_path: Path) -> None:
    cases: dict[str, tuple[Path | str, str]] = {
        "missing": (tmp_path / "missing", "cannot be read (No such file or directory)"),
        "directory": (tmp_path, "expected a regular file, found a directory"),
        "too big": (secret_file(tmp_path, b"x" * 4097, "big"), "expected a file of at most 4096 bytes (4 KiB)"),
        "empty": (secret_file(tmp_path, b"\n", "empty"), "expected a file holding AUTH_PASS: it is empty"),
        "not UTF-8": (secret_file(tmp_path, b"\xff\xfe!x", "latin"), "expected UTF-8 text (the content is not shown)"),
        "relative": ("run/secrets/x", "expected the absolute path of a file, like /run/secrets/auth_pass"),
    }
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    cases["fifo"] = (fifo, "expected a regular file, found a FIFO")
    for what, (path, expected) in cases.items():
        found = problems({**BASE, "AUTH_PASS_FILE": str(path)})
        assert found == [f"AUTH_PASS_FILE={str(path)!r}: {expected}"], what


def test_a_file_just_under_the_limit_is_read(tmp_path: Path) -> None:
    path = secret_file(tmp_path, b"s3cret" + b" " * (4096 - 7) + b"\n")
    assert path.stat().st_size == 4096
    assert load(AUTH_PASS_FILE=str(path)).auth_pass is not None


def test_secret_files_also_come_from_settings_file(tmp_path: Path) -> None:
    path = secret_file(tmp_path, b"s3cret\n")
    settings_file = tmp_path / "kat.env"
    settings_file.write_text(f"AUTH_PASS_FILE={path}\nAUTH_TYPE=AH\n")
    s = load(SETTINGS_FILE=str(settings_file))
    assert s.auth_pass is not None and s.auth_pass.reveal() == "s3cret" and s.auth_type == "AH"


# --- osixia/keepalived's variables ---------------------------------------------------------------------------------


def same_render(osixia: dict[str, str], ours: dict[str, str]) -> None:
    base = {"RUN_DIR": "/run/kat-test"}
    mine = load_settings({**base, **osixia})
    theirs = load_settings({**base, **ours})
    assert mine == theirs
    assert text({**base, **osixia}) == text({**base, **ours})


EQUIVALENT = [
    ({"KEEPALIVED_INTERFACE": "eth1"}, {"INTERFACE": "eth1"}),
    ({"KEEPALIVED_PRIORITY": "150"}, {"PRIORITY": "150"}),
    ({"KEEPALIVED_ROUTER_ID": "52"}, {"VRID": "52"}),
    ({"KEEPALIVED_STATE": "MASTER"}, {"STATE": "MASTER"}),
    ({"KEEPALIVED_PASSWORD": "d0cker"}, {"AUTH_PASS": "d0cker"}),
    ({"KEEPALIVED_NOTIFY": "/usr/local/bin/notify.sh"}, {"NOTIFY": "/usr/local/bin/notify.sh"}),
    ({"KEEPALIVED_UNICAST_PEERS": "#PYTHON2BASH:['10.0.0.12', '10.0.0.13']"}, {"UNICAST_PEERS": "10.0.0.12,10.0.0.13"}),
    ({"KEEPALIVED_UNICAST_PEERS": '#JSON2BASH:["10.0.0.12","10.0.0.13"]'}, {"UNICAST_PEERS": "10.0.0.12,10.0.0.13"}),
    ({"KEEPALIVED_UNICAST_PEERS": "10.0.0.12, 10.0.0.13"}, {"UNICAST_PEERS": "10.0.0.12,10.0.0.13"}),
]


@pytest.mark.parametrize(
    ("osixia", "ours"), EQUIVALENT, ids=[f"{i}-{next(iter(o))}" for i, (o, _) in enumerate(EQUIVALENT)]
)
def test_each_osixia_variable_renders_as_ours(osixia: dict[str, str], ours: dict[str, str]) -> None:
    same_render({"VIRTUAL_IP": "10.0.0.208", **osixia}, {"VIRTUAL_IP": "10.0.0.208", **ours})


@pytest.mark.parametrize(
    ("value", "ours"),
    [
        ("#PYTHON2BASH:['10.0.0.231', '10.0.0.232']", "10.0.0.231,10.0.0.232"),
        ("#PYTHON2BASH:[ '10.0.0.231/24 dev eth0' , \"10.0.0.232\", ]", "10.0.0.231/24,10.0.0.232"),
        ('#JSON2BASH:["10.0.0.231", "10.0.0.232/28"]', "10.0.0.231,10.0.0.232/28"),
        ("10.0.0.231, 10.0.0.232", "10.0.0.231,10.0.0.232"),
        ("10.0.0.231/24 dev eth0,10.0.0.232 dev eth0", "10.0.0.231/24,10.0.0.232"),
        ("10.0.0.231 10.0.0.232 dev eth0", "10.0.0.231,10.0.0.232"),
    ],
)
def test_osixia_virtual_ips_in_every_list_form(value: str, ours: str) -> None:
    same_render({"KEEPALIVED_VIRTUAL_IPS": value}, {"VIRTUAL_IP": ours})


def test_an_osixia_setup_renders_exactly_like_ours() -> None:
    osixia = {
        "KEEPALIVED_INTERFACE": "eth1",
        "KEEPALIVED_VIRTUAL_IPS": "#PYTHON2BASH:['10.0.1.231/24 dev eth1', '10.0.1.232']",
        "KEEPALIVED_UNICAST_PEERS": "#PYTHON2BASH:['10.0.1.10', '10.0.1.11']",
        "KEEPALIVED_PRIORITY": "150",
        "KEEPALIVED_PASSWORD": "d0cker",
        "KEEPALIVED_ROUTER_ID": "61",
        "KEEPALIVED_STATE": "BACKUP",
        "KEEPALIVED_NOTIFY": "/usr/local/bin/notify.sh",
    }
    ours = {
        "INTERFACE": "eth1",
        "VIRTUAL_IP": "10.0.1.231/24,10.0.1.232",
        "UNICAST_PEERS": "10.0.1.10,10.0.1.11",
        "PRIORITY": "150",
        "AUTH_PASS": "d0cker",
        "VRID": "61",
        "STATE": "BACKUP",
        "NOTIFY": "/usr/local/bin/notify.sh",
    }
    same_render(osixia, ours)
    s = load_settings(osixia)
    assert (s.vrrp_version, s.auth_type, s.notes) == (2, "PASS", ())
    assert "auth_type PASS" in text(osixia)


def test_ours_win_with_a_note() -> None:
    s = load_settings({**BASE, "PRIORITY": "20", "KEEPALIVED_PRIORITY": "300", "KEEPALIVED_VIRTUAL_IPS": "[nonsense"})
    assert s.priority == 20 and [str(v) for v in s.virtual_ips] == ["10.0.0.208/32"]
    assert s.notes == (
        "KEEPALIVED_VIRTUAL_IPS ignored: VIRTUAL_IP is set",
        "KEEPALIVED_PRIORITY ignored: PRIORITY is set",
    )


def test_osixia_password_gives_way_to_auth_pass_file(tmp_path: Path) -> None:
    path = secret_file(tmp_path, b"s3cret\n")
    s = load(AUTH_PASS_FILE=str(path), KEEPALIVED_PASSWORD="d0cker")
    assert s.auth_pass is not None and s.auth_pass.reveal() == "s3cret"
    assert s.notes == ("KEEPALIVED_PASSWORD ignored: AUTH_PASS_FILE is set",)


def test_osixia_password_file(tmp_path: Path) -> None:
    path = secret_file(tmp_path, b"d0cker\n")
    assert load(KEEPALIVED_PASSWORD_FILE=str(path)) == load(AUTH_PASS="d0cker")
    found = problems({**BASE, "KEEPALIVED_PASSWORD_FILE": str(path), "KEEPALIVED_PASSWORD": "d0cker"})
    assert found == ["KEEPALIVED_PASSWORD and KEEPALIVED_PASSWORD_FILE are both set: expected only one of them"]
    found = problems({**BASE, "KEEPALIVED_PASSWORD_FILE": str(tmp_path / "nope")})
    assert found == [f"KEEPALIVED_PASSWORD_FILE={str(tmp_path / 'nope')!r}: cannot be read (No such file or directory)"]


def test_problems_with_a_mapped_value_name_the_osixia_variable() -> None:
    env = {
        "KEEPALIVED_VIRTUAL_IPS": "#PYTHON2BASH:['10.0.0.999', '10.0.0.20']",
        "KEEPALIVED_PRIORITY": "300",
        "KEEPALIVED_ROUTER_ID": "0",
        "KEEPALIVED_STATE": "LEADER",
        "KEEPALIVED_INTERFACE": "eth0 {",
        "KEEPALIVED_NOTIFY": "notify.sh",
        "KEEPALIVED_UNICAST_PEERS": "10.0.0.20",
    }
    found = problems(env)
    assert sorted(line.split("=")[0] for line in found) == sorted(
        [
            "KEEPALIVED_VIRTUAL_IPS",
            "KEEPALIVED_VIRTUAL_IPS",  # 10.0.0.20 is also a peer: the line names both osixia variables
            "KEEPALIVED_PRIORITY",
            "KEEPALIVED_ROUTER_ID",
            "KEEPALIVED_STATE",
            "KEEPALIVED_INTERFACE",
            "KEEPALIVED_NOTIFY",
        ]
    ), found
    assert "KEEPALIVED_VIRTUAL_IPS='10.0.0.999': expected an IPv4 address" in "\n".join(found)
    assert any("other than the KEEPALIVED_UNICAST_PEERS" in line for line in found), found
    assert "KEEPALIVED_PRIORITY='300': expected a whole number from 1 to 254" in found


def test_osixia_password_is_hidden_and_implies_v2() -> None:
    found = problems({**BASE, "KEEPALIVED_PASSWORD": SECRET})
    assert found == [
        "KEEPALIVED_PASSWORD=(value hidden): expected 1 to 8 bytes of printable ASCII without spaces, quotes, "
        "braces, '#', '!', '\\', ';' or '$'"
    ]
    found = problems({"VIRTUAL_IP": "fd00::10", "KEEPALIVED_PASSWORD": "d0cker"})
    assert len(found) == 1 and found[0].startswith("KEEPALIVED_PASSWORD=(value hidden): cannot be used with IPv6")
    found = problems({**BASE, "KEEPALIVED_PASSWORD": "d0cker", "ADVERT_INT": "0.5"})
    assert found[0].startswith("ADVERT_INT='0.5'")
    found = problems({**BASE, "KEEPALIVED_PASSWORD": "d0cker", "VRRP_VERSION": "3"})
    assert found[0].startswith("KEEPALIVED_PASSWORD=(value hidden): is only supported with VRRP_VERSION=2")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("#PYTHON2BASH:['10.0.0.231' '10.0.0.232']", "expected a list like"),
        ("#PYTHON2BASH:[['10.0.0.231']]", "expected a list like"),
        ("#PYTHON2BASH:['10.0.0.231'", "expected a list like"),
        ("#PYTHON2BASH:'10.0.0.231'", "expected a list like"),
        ("#PYTHON2BASH:[10]", "expected a list like"),
        ("#PYTHON2BASH:['a\\'b']", "expected a list like"),
        ('#JSON2BASH:["10.0.0.231",]', "expected a list like"),
        ("#JSON2BASH:['10.0.0.231']", "expected a list like"),
        ("#YAML2BASH:['10.0.0.231']", "expected a list like"),
        ("['10.0.0.231']", "expected a list like"),
        ("#PYTHON2BASH:['10.0.0.231 dev eth1']", "found dev eth1"),
        ("10.0.0.231 dev eth1", "found dev eth1"),
        ("#PYTHON2BASH:['10.0.0.231 label eth0:1']", "ADDR dev IFACE"),
        ("#PYTHON2BASH:['10.0.0.231,10.0.0.232']", "ADDR dev IFACE"),
        ("#PYTHON2BASH:['10.0.0.231 dev']", "ADDR dev IFACE"),
        ("10.0.0.231 dev", "needs an interface name"),
        ("dev eth0 10.0.0.231", "follows an address"),
        ("10.0.0.1," * 600, "at most 4096 bytes"),
    ],
)
def test_bad_osixia_vip_lists_name_the_variable(value: str, expected: str) -> None:
    found = problems({"KEEPALIVED_VIRTUAL_IPS": value})
    assert len(found) == 1 and found[0].startswith("KEEPALIVED_VIRTUAL_IPS="), found
    assert expected in found[0], found


def test_dev_follows_the_osixia_interface() -> None:
    same_render(
        {"KEEPALIVED_INTERFACE": "eth1", "KEEPALIVED_VIRTUAL_IPS": "10.0.1.231 dev eth1"},
        {"INTERFACE": "eth1", "VIRTUAL_IP": "10.0.1.231"},
    )
    found = problems(
        {"INTERFACE": "eth0", "KEEPALIVED_INTERFACE": "eth1", "KEEPALIVED_VIRTUAL_IPS": "10.0.1.231 dev eth1"}
    )
    assert len(found) == 1 and "interface eth0 (INTERFACE): found dev eth1" in found[0], found


@pytest.mark.parametrize("value", ["#PYTHON2BASH:['10.0.0.12 dev eth0']", "10.0.0.12 dev eth0", "#PYTHON2BASH:[12]"])
def test_bad_osixia_peer_lists_name_the_variable(value: str) -> None:
    found = problems({**BASE, "KEEPALIVED_UNICAST_PEERS": value})
    assert len(found) == 1 and found[0].startswith("KEEPALIVED_UNICAST_PEERS="), found


def test_an_empty_osixia_list_sets_nothing() -> None:
    s = load_settings({"KEEPALIVED_VIRTUAL_IPS": "#PYTHON2BASH:[]", "KEEPALIVED_UNICAST_PEERS": "#JSON2BASH:[]"})
    assert s.virtual_ips == () and s.unicast_peers == ()


def test_unknown_keepalived_variables_are_problems_that_never_show_the_value() -> None:
    found = problems({**BASE, "KEEPALIVED_PASWORD": SECRET, "KEEPALIVED_COMMAND_LINE_ARGUMENTS": "--log-detail"})
    assert [line.split(":")[0] for line in found] == ["KEEPALIVED_COMMAND_LINE_ARGUMENTS", "KEEPALIVED_PASWORD"]
    assert "not supported" in found[0] and "unknown variable" in found[1]
    assert "KEEPALIVED_BIN" in found[1] and "KEEPALIVED_PASSWORD" in found[1]
    assert SECRET not in "\n".join(found) and "--log-detail" not in "\n".join(found)


def test_our_own_keepalived_variables_and_empty_ones_are_not_problems() -> None:
    ours = [spec.name for spec in SETTING_SPECS if spec.name.startswith("KEEPALIVED_")]
    assert ours == ["KEEPALIVED_BIN"]
    s = load(KEEPALIVED_BIN="/usr/sbin/keepalived", KEEPALIVED_SOMETHING="", KEEPALIVED_PRIORITY=" ")
    assert s.keepalived_bin == "/usr/sbin/keepalived" and s.priority == 100 and s.notes == ()


def test_osixia_variables_reach_through_settings_file(tmp_path: Path) -> None:
    settings_file = tmp_path / "kat.env"
    settings_file.write_text("KEEPALIVED_PRIORITY=150\nKEEPALIVED_TYPO=1\n")
    found = problems({**BASE, "SETTINGS_FILE": str(settings_file)})
    assert len(found) == 1 and found[0].startswith("KEEPALIVED_TYPO: unknown variable"), found
    settings_file.write_text("KEEPALIVED_PRIORITY=150\n")
    assert load(SETTINGS_FILE=str(settings_file)).priority == 150


def test_readme_lists_the_osixia_variables() -> None:
    section = README.read_text(encoding="utf-8").split("## Coming from osixia/keepalived", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `(KEEPALIVED_[A-Z_]+)` \| (.+?) \|$", section, flags=re.MULTILINE)
    assert [name for name, _ in rows] == [var.name for var in OSIXIA_VARIABLES] + list(OSIXIA_UNSUPPORTED)
    for (name, read_as), var in zip(rows, OSIXIA_VARIABLES, strict=False):
        assert read_as == f"`{var.ours.name}`", name
