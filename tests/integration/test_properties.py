"""Property-based tests (hypothesis) over every variable and every label, through the one plan and real keepalived.

Each generated value is either rejected with a problem that names it, or planned; a planned text is parsed back and
must hold exactly the directives the settings ask for (an independent expectation, not the template), and
``keepalived --config-test`` must accept those exact bytes, in a network namespace that has an eth0.

CI runs a bounded number of examples (FUZZ_EXAMPLES, default 150 per test); ``scripts/fuzz.sh`` runs a long one.
"""

from __future__ import annotations

import ipaddress
import json
import os
import signal
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from supervisor.adapters.preflight import script_problems
from supervisor.core.labels import KNOWN_KEYS
from supervisor.core.plan import HostFacts, make_plan
from supervisor.core.render import format_seconds
from supervisor.core.settings import (
    OSIXIA_UNSUPPORTED,
    OSIXIA_VARIABLES,
    SETTING_SPECS,
    Settings,
    SettingsError,
    load_settings,
)
from supervisor.core.snapshot import ContainerInfo, Snapshot
from tests.conftest import require_root_netns

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "150"))
# SCRIPT_USER must exist for keepalived to accept any script; the image creates keepalived_script, this host has nobody.
BASE = {"VIRTUAL_IP": "198.51.100.100", "INTERFACE": "eth0", "RUN_DIR": "/run/kat-fuzz", "SCRIPT_USER": "nobody"}
HOST_ADDRESS = ipaddress.ip_address("198.51.100.11")
HOST = HostFacts(interfaces={"eth0": (HOST_ADDRESS,), "lo": (ipaddress.ip_address("127.0.0.1"),)})
# Read from files or the process, never rendered: fuzzing them here says nothing about the config.
NOT_RENDERED = {"SETTINGS_FILE", "KEEPALIVED_BIN", "DOCKER_HOST"}
VARIABLES = sorted(spec.name for spec in SETTING_SPECS if spec.name not in NOT_RENDERED)

HOSTILE = [
    "",
    " ",
    "$_RANDOM",
    "${PWD}",
    "a$b",
    '"',
    "'",
    "{",
    "}",
    "#",
    "!",
    "\\",
    ";",
    "\n",
    "x\ny",
    "eth0 {",
    "*",
    "/run/*",
    "/run/[ab]",
    "?",
    "\u0663",
    "\u00e9\u00e9\u00e9\u00e9\u00e9",
    "9" * 5000,
    "1" * 19,
    "-1",
    "+5",
    "0x10",
    "1e3",
    "nan",
    "inf",
    "0",
    "255",
    "256",
    "65535",
    "0.001",
    "A" * 1200,
    "/" + "a" * 1100,
    "198.51.100.100",
    "198.51.100.11",
    "198.51.100.999",
    "fd00::10",
    "127.0.0.1",
    "224.0.0.18",
    "198.51.100.0/24",
    "true",
    "false",
    "MASTER",
    "BACKUP",
    "http:/healthz",
    "/usr/local/bin/check.sh",
    "/usr/local/bin/check.sh --port 80",
]
VALUES = st.one_of(
    st.sampled_from(HOSTILE),
    st.integers(min_value=-(10**6), max_value=10**6).map(str),
    st.floats(min_value=0, max_value=300, allow_nan=False).map(lambda f: f"{f:.3f}".rstrip("0").rstrip(".")),
    st.text(max_size=30),
    st.ip_addresses(v=4).map(str),
    st.text(alphabet="abcdefghij0123456789._-/", min_size=1, max_size=20),
)


@pytest.fixture(scope="module")
def netns() -> Iterator[str]:
    require_root_netns()
    name = f"kat-fuzz-{uuid.uuid4().hex[:6]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        peer = f"kf{uuid.uuid4().hex[:6]}"
        subprocess.run(["ip", "-n", name, "link", "add", "eth0", "type", "veth", "peer", "name", peer], check=True)
        subprocess.run(["ip", "-n", name, "addr", "add", f"{HOST_ADDRESS}/24", "dev", "eth0"], check=True)
        subprocess.run(["ip", "-n", name, "link", "set", "eth0", "up"], check=True)
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


def config_test(netns: str, path: Path, text: str) -> subprocess.CompletedProcess[bytes]:
    path.write_text(text)
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})  # keepalived 2.2.7's stray self-SIGTERM
    try:
        process = subprocess.Popen(
            ["ip", "netns", "exec", netns, "keepalived", "--config-test", "-l", "-f", str(path)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)
    out, err = process.communicate(timeout=30)
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


# --- a small parser for keepalived.conf: directives with arguments and nested blocks -----------------------------


def tokens(text: str) -> list[str]:
    result: list[str] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", "!")):
            continue
        words: list[str] = []
        rest = line
        while rest:
            rest = rest.lstrip()
            if rest.startswith('"'):
                end = rest.index('"', 1)
                words.append(rest[1:end])
                rest = rest[end + 1 :]
            else:
                word, _, rest = rest.partition(" ")
                words.append(word)
        result.extend([*words, "\n"])
    return result


def parse(text: str) -> list[tuple[str, list[str], list[Any]]]:
    """[(directive, args, children)] where a line ending in `{` opens a block until the matching `}`."""
    stack: list[list[tuple[str, list[str], list[Any]]]] = [[]]
    line: list[str] = []
    for token in tokens(text):
        if token != "\n":
            line.append(token)
            continue
        if line == ["}"]:
            stack.pop()
        elif line and line[-1] == "{":
            children: list[Any] = []
            stack[-1].append((line[0], line[1:-1], children))
            stack.append(children)
        elif line:
            stack[-1].append((line[0], line[1:], []))
        line = []
    assert len(stack) == 1, "unbalanced braces"
    return stack[0]


def block(
    tree: list[tuple[str, list[str], list[Any]]], name: str, *args: str
) -> list[tuple[str, list[str], list[Any]]]:
    found = [children for directive, a, children in tree if directive == name and tuple(a) == args]
    assert len(found) == 1, f"expected one {name} {' '.join(args)}"
    return found[0]


def flat(children: list[tuple[str, list[str], list[Any]]]) -> dict[str, list[str]]:
    return {directive: args for directive, args, _ in children}


def expected_instance(s: Settings) -> dict[str, list[str]]:
    """The directives of the environment's vrrp_instance, derived from the settings alone."""
    expected = {
        "state": [s.state],
        "interface": [s.interface],
        "virtual_router_id": [str(s.vrid)],
        "priority": [str(s.priority)],
        "advert_int": [format_seconds(s.advert_int)],
        "version": [str(s.vrrp_version)],
        "virtual_ipaddress": [],
        "track_file": [],
    }
    if s.virtual_ips[0].version == 6:
        expected["native_ipv6"] = []
    if s.nopreempt:
        expected["nopreempt"] = []
    if s.preempt_delay is not None:
        expected["preempt_delay"] = [format_seconds(s.preempt_delay)]
    if s.auth_pass is not None:
        expected["authentication"] = []
    peers = [p for p in s.unicast_peers if p != HOST_ADDRESS]
    if s.unicast_src_ip is not None and peers:  # keepalived refuses a unicast source without peers
        expected["unicast_src_ip"] = [str(s.unicast_src_ip)]
    if peers:
        expected["unicast_peer"] = []
    if s.check.script is not None:
        expected["track_script"] = []
    return expected


def check_text(s: Settings, text: str) -> None:
    tree = parse(text)
    if not s.virtual_ips:
        assert not [d for d, a, _ in tree if d == "vrrp_instance" and a == [f"VI_{s.vrid}"]]
        return
    instance = block(tree, "vrrp_instance", f"VI_{s.vrid}")
    assert flat(instance) == expected_instance(s)
    vips = [" ".join([d, *a]) for d, a, _ in block(instance, "virtual_ipaddress")]
    assert vips == [f"{vip} dev {s.interface}" for vip in s.virtual_ips]
    if s.auth_pass is not None:
        auth = flat(block(instance, "authentication"))
        assert auth == {"auth_type": [s.auth_type], "auth_pass": [s.auth_pass.reveal()]}
    peers = [d for d, _, _ in block(instance, "unicast_peer")] if "unicast_peer" in flat(instance) else []
    assert peers == [str(p) for p in s.unicast_peers if p != HOST_ADDRESS]
    global_defs = flat(block(tree, "global_defs"))
    assert ("script_user" in global_defs) == (s.check.script is not None)
    if s.check.script is not None:
        script = flat(block(tree, "vrrp_script", f"chk_VI_{s.vrid}"))
        assert script["script"] == [s.check.script]
        assert script["interval"] == [format_seconds(s.check.interval)]
    assert all(len(line.encode()) < 1000 for line in text.splitlines()), "a line keepalived would split"


def _problems(env: dict[str, str]) -> list[str]:
    try:
        load_settings(env)
    except SettingsError as error:
        return list(error.problems)
    return []


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=st.sampled_from(VARIABLES), value=VALUES)
def test_every_variable_is_rejected_by_name_or_rendered_exactly(
    netns: str, tmp_path: Path, name: str, value: str
) -> None:
    env = {**BASE, name: value}
    try:
        parsed = load_settings(env)
    except SettingsError as error:
        assert error.problems
        assert any(name in problem for problem in error.problems), (name, value, error.problems)
        if name == "AUTH_PASS":  # the message must not depend on the secret: the same for any invalid one
            reference = _problems({**BASE, name: "x" * 9})
            mine = [p for p in error.problems if p.startswith("AUTH_PASS")]
            assert all(p in reference for p in mine), (mine, reference)
        return
    plan = make_plan(parsed, Snapshot(), HOST)
    refused = [*plan.fatal, *script_problems(parsed)]  # what `run` and `check` refuse before keepalived sees it
    if refused:
        assert any(name in problem for problem in refused), (name, value, refused)
        return
    check_text(parsed, plan.text)
    result = config_test(netns, tmp_path / "keepalived.conf", plan.text)
    assert result.returncode == 0, (name, value, result.stderr.decode(errors="replace"), plan.text)


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(key=st.sampled_from((*KNOWN_KEYS, "prot", "vipp", "")), value=VALUES)
def test_every_label_is_rejected_by_name_or_planned_exactly(netns: str, tmp_path: Path, key: str, value: str) -> None:
    labels = {"keepalived.vip": "198.51.100.30", "keepalived.vrid": "130", "keepalived.check": "none"}
    labels[f"keepalived.{key}"] = value
    container = ContainerInfo(id="f" * 64, name="fuzzed", labels=labels, running=True, created=1.0)
    parsed = load_settings(BASE)
    plan = make_plan(parsed, Snapshot({container.id: container}, engine_reachable=True), HOST)
    if plan.problems:
        assert len(plan.problems) == 1 and "container fuzzed " in plan.problems[0], plan.problems
        assert f"keepalived.{key}" in plan.problems[0] or "label keepalived." in plan.problems[0], plan.problems
        assert "VI_130" not in plan.text and "vrid 130" not in plan.text
    elif key == "enable" and "VI_130" not in plan.text:
        assert value.strip().lower() in {"", "0", "false", "no", "off"}, "only enable=false leaves a container out"
    else:
        vrid = str(int(labels["keepalived.vrid"].strip() or "130"))
        own = flat(block(parse(plan.text), "vrrp_instance", f"VI_{vrid}"))
        assert own["virtual_router_id"] == [vrid]
        assert own["interface"] == [labels.get("keepalived.interface", "").strip() or "eth0"]
    check_text(parsed, plan.text)
    result = config_test(netns, tmp_path / "keepalived.conf", plan.text)
    assert result.returncode == 0, (key, value, result.stderr.decode(errors="replace"), plan.text)


# osixia/keepalived's variables, each without the variable of ours it stands for (ours would win), plus unknown ones.
OSIXIA = {var.name: var.ours.name for var in OSIXIA_VARIABLES}
OSIXIA_NAMES = sorted([*OSIXIA, *OSIXIA_UNSUPPORTED, "KEEPALIVED_PRIORITI", "KEEPALIVED_"])
LIST_ITEMS = st.one_of(
    st.sampled_from(HOSTILE),
    st.ip_addresses(v=4).map(str),
    st.sampled_from(["198.51.100.100 dev eth0", "198.51.100.101/24 dev eth0", "198.51.100.102 dev eth1"]),
    st.text(max_size=12),
)
OSIXIA_VALUES = st.one_of(
    VALUES,
    st.lists(LIST_ITEMS, max_size=4).map(lambda items: f"#PYTHON2BASH:{items!r}"),
    st.lists(LIST_ITEMS, max_size=4).map(lambda items: "#JSON2BASH:" + json.dumps(items)),
    st.lists(LIST_ITEMS, max_size=4).map(", ".join),
)


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=st.sampled_from(OSIXIA_NAMES), value=OSIXIA_VALUES)
def test_every_osixia_variable_is_rejected_by_name_or_rendered_exactly(
    netns: str, tmp_path: Path, name: str, value: str
) -> None:
    env = {key: v for key, v in BASE.items() if key != OSIXIA.get(name)}
    env[name] = value
    try:
        parsed = load_settings(env)
    except SettingsError as error:
        assert error.problems
        assert any(name in problem for problem in error.problems), (name, value, error.problems)
        if name == "KEEPALIVED_PASSWORD":  # as for AUTH_PASS: the message does not depend on the secret
            reference = _problems({**env, name: "x" * 9})
            mine = [p for p in error.problems if p.startswith(name)]
            assert all(p in reference for p in mine), (mine, reference)
        return
    if name in OSIXIA and value.strip() and OSIXIA[name] != "VIRTUAL_IP" and OSIXIA[name] != "UNICAST_PEERS":
        assert parsed == load_settings({**env, OSIXIA[name]: value}), "read exactly as ours"
    plan = make_plan(parsed, Snapshot(), HOST)
    refused = [*plan.fatal, *script_problems(parsed)]
    if refused:
        assert any(OSIXIA.get(name, name) in problem for problem in refused), (name, value, refused)
        return
    check_text(parsed, plan.text)
    result = config_test(netns, tmp_path / "keepalived.conf", plan.text)
    assert result.returncode == 0, (name, value, result.stderr.decode(errors="replace"), plan.text)


@pytest.mark.parametrize("auth_type", ["PASS", "AH"])
@pytest.mark.parametrize("unicast", [False, True], ids=["multicast", "unicast"])
def test_authentication_is_accepted_by_keepalived(netns: str, tmp_path: Path, auth_type: str, unicast: bool) -> None:
    env = {**BASE, "AUTH_TYPE": auth_type, "AUTH_PASS": "s3cret"}
    if unicast:
        env["UNICAST_PEERS"] = "198.51.100.11,198.51.100.12"
    parsed = load_settings(env)
    plan = make_plan(parsed, Snapshot(), HOST)
    check_text(parsed, plan.text)
    assert f"auth_type {auth_type}" in plan.text
    result = config_test(netns, tmp_path / "keepalived.conf", plan.text)
    assert result.returncode == 0, (result.stderr.decode(errors="replace"), plan.text)
