"""Hardening of the parsers and of load_settings: bounded ASCII numbers, no '$' or globs, bounded line lengths,
secret-blind AUTH_PASS messages, problems naming what the user set, a SETTINGS_FILE that cannot hang or bloat,
VIPs distinct from the unicast addresses, and a restart backoff that cannot overflow."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType

import pytest

from supervisor.core.debounce import restart_delay
from supervisor.core.model import build_desired_state
from supervisor.core.render import render
from supervisor.core.settings import (
    AUTH_FORM_EXPECTED,
    SECRET_VARIABLES,
    SETTINGS_FILE_MAX_BYTES,
    Settings,
    SettingsError,
    load_settings,
    read_settings_file,
)
from supervisor.core.validate import (
    MAX_COMMAND_BYTES,
    MAX_HTTP_PATH_BYTES,
    MAX_PATH_BYTES,
    MAX_WORD_BYTES,
    InvalidValue,
    parse_command,
    parse_config_word,
    parse_http_path,
    parse_int,
    parse_path,
    parse_seconds,
)

BASE = {"VIRTUAL_IP": "10.0.0.208"}


def problems(env: dict[str, str]) -> list[str]:
    with pytest.raises(SettingsError) as caught:
        load_settings(env)
    return caught.value.problems


def rendered(settings: Settings) -> str:
    return render(build_desired_state(settings, []))


# --- 1. numbers: ASCII digits, bounded length ---------------------------------------------------------------
# Other scripts' digits (Arabic-Indic 3, fullwidth 5, superscript 2, mathematical bold 5) pass str.isdigit() and \d.


@pytest.mark.parametrize(
    "raw", ["\u0663", "1\u0663", "\uff15", "\u00b2", "\U0001d7d3", "1" * 5000, "0" * 33 + "1", "-" + "9" * 4999, "1_0"]
)
def test_parse_int_takes_bounded_ascii_digits_only(raw: str) -> None:
    with pytest.raises(InvalidValue, match="whole number from 1 to 255"):
        parse_int(raw, 1, 255)


def test_parse_int_still_takes_ordinary_numbers() -> None:
    assert parse_int(" 42 ", 1, 255) == 42
    assert parse_int("+5", 1, 255) == 5
    assert parse_int("0" * 30 + "7", 1, 255) == 7


@pytest.mark.parametrize(
    "raw", ["\u0660.\u0665", "1.\u0665", "\uff11", "1" * 5000, "0." + "5" * 5000, "1e3", "inf", "nan", "0x10"]
)
def test_parse_seconds_takes_bounded_ascii_decimals_only(raw: str) -> None:
    with pytest.raises(InvalidValue, match="number of seconds"):
        parse_seconds(raw, 0, 1000)


def test_parse_seconds_still_takes_ordinary_numbers() -> None:
    assert parse_seconds("0.5", 0, 10) == 0.5
    assert parse_seconds(".25", 0, 10) == 0.25
    assert parse_seconds(" 3 ", 0, 10) == 3.0


@pytest.mark.parametrize("name", ["VRID", "PRIORITY", "CHECK_PORT", "ADVERT_INT", "VIRTUAL_MASK", "CHECK_RISE"])
def test_huge_numbers_give_a_short_problem_line_not_a_traceback(name: str) -> None:
    found = problems({**BASE, name: "7" * 5000})
    assert len(found) == 1 and found[0].startswith(f"{name}="), found
    assert len(found[0]) < 400 and "5000 bytes" in found[0]


def test_huge_vip_prefix_is_a_problem() -> None:
    found = problems({"VIRTUAL_IP": "10.0.0.208/" + "3" * 5000})
    assert len(found) == 1 and found[0].startswith("VIRTUAL_IP=") and "prefix length" in found[0]


# --- 2. no '$' anywhere a value reaches keepalived, no glob characters in paths ----------------------------


@pytest.mark.parametrize("raw", ["a$b", "$_RANDOM", "${HOME}", "$_PWD", "x$"])
def test_dollar_is_rejected_by_every_config_parser(raw: str) -> None:
    with pytest.raises(InvalidValue, match=r"\$"):
        parse_config_word(raw, "word")
    with pytest.raises(InvalidValue, match=r"\$"):
        parse_command("/usr/bin/check " + raw)
    with pytest.raises(InvalidValue, match=r"\$"):
        parse_http_path("/" + raw)
    with pytest.raises(InvalidValue, match=r"\$"):
        parse_path("/run/" + raw)


@pytest.mark.parametrize("raw", ["/run/k*", "/run/k?", "/run/[ab]", "/run/a]b"])
def test_glob_characters_are_rejected_in_paths(raw: str) -> None:
    with pytest.raises(InvalidValue, match="glob"):
        parse_path(raw)
    found = problems({**BASE, "RUN_DIR": raw})
    assert len(found) == 1 and found[0].startswith("RUN_DIR=") and "glob" in found[0]


def test_keepalived_bin_is_a_name_or_a_path_without_globs() -> None:
    assert load_settings({"KEEPALIVED_BIN": "keepalived"}).keepalived_bin == "keepalived"
    assert load_settings({"KEEPALIVED_BIN": "/usr/sbin/keepalived"}).keepalived_bin == "/usr/sbin/keepalived"
    for raw in ("/usr/sbin/keep*", "/usr/sbin/k[e]epalived", "bin/keepalived", "$KEEPALIVED"):
        found = problems({"KEEPALIVED_BIN": raw})
        assert len(found) == 1 and found[0].startswith("KEEPALIVED_BIN="), (raw, found)


DOLLAR_VARIABLES = [
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
]


@pytest.mark.parametrize("name", DOLLAR_VARIABLES)
@pytest.mark.parametrize("payload", ["$_RANDOM", "/x/${HOME}", "/bin/check $_PWD", "a$b"])
def test_no_dollar_reaches_the_config(name: str, payload: str) -> None:
    env = {**BASE, "CHECK_PORT": "80", "VRRP_VERSION": "2", name: payload}
    try:
        settings = load_settings(env)
    except SettingsError as error:
        assert any(line.startswith(f"{name}=") for line in error.problems), error.problems
        return
    assert "$" not in rendered(settings)


# --- 3. every config line stays under 1000 bytes ------------------------------------------------------------


def test_byte_limits_of_free_form_values() -> None:
    two = "é"  # two bytes in UTF-8
    cases = [
        ("SCRIPT_USER", "u" * MAX_WORD_BYTES, "u" * (MAX_WORD_BYTES + 1), MAX_WORD_BYTES),
        ("SCRIPT_USER", two * (MAX_WORD_BYTES // 2), two * (MAX_WORD_BYTES // 2 + 1), MAX_WORD_BYTES),
        ("RUN_DIR", "/" + "r" * (MAX_PATH_BYTES - 1), "/" + "r" * MAX_PATH_BYTES, MAX_PATH_BYTES),
        ("KEEPALIVED_BIN", "k" * MAX_WORD_BYTES, "k" * (MAX_WORD_BYTES + 1), MAX_WORD_BYTES),
        ("KEEPALIVED_BIN", "/" + "k" * (MAX_PATH_BYTES - 1), "/" + "k" * MAX_PATH_BYTES, MAX_PATH_BYTES),
        ("CHECK_SCRIPT", "/" + "c" * (MAX_COMMAND_BYTES - 1), "/" + "c" * MAX_COMMAND_BYTES, MAX_COMMAND_BYTES),
        (
            "CHECK_SCRIPT",
            "/bin/x " + two * ((MAX_COMMAND_BYTES - 7) // 2),
            "/bin/x " + two * ((MAX_COMMAND_BYTES - 7) // 2 + 1),
            MAX_COMMAND_BYTES,
        ),
        (
            "CHECK_HTTP_PATH",
            "/" + "h" * (MAX_HTTP_PATH_BYTES - 1),
            "/" + "h" * MAX_HTTP_PATH_BYTES,
            MAX_HTTP_PATH_BYTES,
        ),
        ("LABEL_PREFIX", "l" * MAX_WORD_BYTES, "l" * (MAX_WORD_BYTES + 1), MAX_WORD_BYTES),
        ("LABEL_SELECTOR", "k=" + "v" * 1022, "k=" + "v" * 1023, 1024),
    ]
    for name, fits, too_long, limit in cases:
        env = {**BASE, "CHECK_PORT": "80", name: fits}
        load_settings(env)
        found = problems({**env, name: too_long})
        assert len(found) == 1 and found[0].startswith(f"{name}=") and f"{limit}" in found[0], found


def test_longest_accepted_values_render_lines_under_1000_bytes() -> None:
    many = ",".join(f"fd00::{index:x}/64" for index in range(1, 200))
    env = {
        "VIRTUAL_IP": many,
        "UNICAST_SRC_IP": "fd00:1111:2222:3333:4444:5555:6666:7777",
        "UNICAST_PEERS": ",".join(f"fd00:1111:2222:3333:4444:5555:6666:{index:x}" for index in range(1, 50)),
        "INTERFACE": "i" * 15,
        "SCRIPT_USER": "é" * (MAX_WORD_BYTES // 2),
        "RUN_DIR": "/" + "ř" * ((MAX_PATH_BYTES - 1) // 2),
        "CHECK_SCRIPT": "/bin/x " + "ü" * ((MAX_COMMAND_BYTES - 7) // 2),
        "VRID": "255",
        "PREEMPT_DELAY": "999.999999",
        "ADVERT_INT": "40.95",
    }
    text = rendered(load_settings(env))
    longest = max(len(line.encode("utf-8")) for line in text.splitlines())
    assert longest < 1000, longest
    assert "script_user é" in text


# --- 4. AUTH_PASS: bytes, printable ASCII, one fixed message ---------------------------------------------------


@pytest.mark.parametrize("good", ["a", "s3cret", "abcdefgh", "P@ss-w0r", "~()*&^%+"])
def test_auth_pass_accepts_1_to_8_printable_ascii_bytes(good: str) -> None:
    settings = load_settings({**BASE, "AUTH_PASS": good})
    assert settings.auth_pass is not None and settings.auth_pass.reveal() == good


BAD_PASSWORDS = ["abcdefghi", "éé", "ééééé", "pa ss", 'pa"s', "ab#cd", "a$b", "x!y", "a\\b", "a;b", "{}", "a\x01b"]


@pytest.mark.parametrize("bad", BAD_PASSWORDS)
def test_auth_pass_problem_is_one_fixed_line(bad: str) -> None:
    found = problems({**BASE, "AUTH_PASS": bad})
    assert found == [f"AUTH_PASS=(value hidden): {AUTH_FORM_EXPECTED}"]
    assert bad not in "\n".join(found)


def test_two_invalid_passwords_give_byte_identical_messages() -> None:
    first = problems({**BASE, "AUTH_PASS": "toolongpassword"})
    second = problems({**BASE, "AUTH_PASS": "a#b"})
    third = problems({**BASE, "AUTH_PASS": "ü"})
    assert first == second == third
    text = "\n".join(first)
    assert "toolongpassword" not in text and "a#b" not in text and "ü" not in text
    assert "8 bytes" in AUTH_FORM_EXPECTED and "'$'" in AUTH_FORM_EXPECTED


def test_auth_pass_with_v3_does_not_depend_on_the_secret() -> None:
    one = problems({**BASE, "AUTH_PASS": "hunter2", "VRRP_VERSION": "3"})
    two = problems({**BASE, "AUTH_PASS": "x", "VRRP_VERSION": "3"})
    assert one == two and one[0].startswith("AUTH_PASS=(value hidden): ")


# --- 5. a problem names a variable the user set, with its value ----------------------------------------------


COMBINATIONS = [
    ({"RECONCILE_MIN_WAIT": "5"}, "RECONCILE_MIN_WAIT='5'"),
    ({"RECONCILE_MAX_WAIT": "0.05"}, "RECONCILE_MAX_WAIT='0.05'"),
    ({"RECONCILE_MIN_WAIT": "5", "RECONCILE_MAX_WAIT": "2"}, "RECONCILE_MAX_WAIT='2'"),
    ({"STATE": "MASTER", "NOPREEMPT": "true"}, "STATE='MASTER'"),
    ({"STATE": "MASTER", "PREEMPT_DELAY": "5"}, "STATE='MASTER'"),
    ({"NOPREEMPT": "yes", "PREEMPT_DELAY": "5"}, "PREEMPT_DELAY='5'"),
    ({"VIRTUAL_IP": "fd00::10", "VRRP_VERSION": "2"}, "VRRP_VERSION='2'"),
    ({"VIRTUAL_IP": "fd00::10", "AUTH_PASS": "s3cret"}, "AUTH_PASS=(value hidden)"),
    ({"ADVERT_INT": "0.5", "AUTH_PASS": "s3cret"}, "ADVERT_INT='0.5'"),
    ({"ADVERT_INT": "0.5", "VRRP_VERSION": "2"}, "ADVERT_INT='0.5'"),
    ({"ADVERT_INT": "100"}, "ADVERT_INT='100'"),
    ({"AUTH_PASS": "s3cret", "VRRP_VERSION": "3"}, "AUTH_PASS=(value hidden)"),
    ({"VIRTUAL_MASK": "64"}, "VIRTUAL_MASK='64'"),
    ({"CHECK_SCRIPT": "/bin/true", "CHECK_TIMEOUT": "0.5"}, "CHECK_TIMEOUT='0.5'"),
    ({"CHECK_HTTP_PATH": "/x"}, "CHECK_HTTP_PATH='/x'"),
    ({"UNICAST_SRC_IP": "fd00::1"}, "UNICAST_SRC_IP='fd00::1'"),
]


@pytest.mark.parametrize(("env", "start"), COMBINATIONS, ids=[start for _, start in COMBINATIONS])
def test_combination_problems_name_a_variable_that_was_set(env: dict[str, str], start: str) -> None:
    full = {"VIRTUAL_IP": "10.0.0.208", **env}
    found = problems(full)
    assert len(found) == 1 and found[0].startswith(start + ": "), found
    name = found[0].split("=", 1)[0]
    assert name in full
    if name not in SECRET_VARIABLES:
        assert "(value hidden)" not in found[0] and "(not set)" not in found[0]


def test_an_invalid_check_port_does_not_also_blame_check_ip() -> None:
    found = problems({**BASE, "CHECK_PORT": "99999", "CHECK_IP": "10.0.0.5"})
    assert [line.split("=", 1)[0] for line in found] == ["CHECK_PORT"]


# --- 6. SETTINGS_FILE: a regular file of at most 1 MiB, read without blocking ------------------------------


@contextmanager
def deadline(seconds: float) -> Iterator[None]:
    """Fail (instead of hanging the suite) when the block is still running after `seconds`."""

    def expire(signum: int, frame: FrameType | None) -> None:
        raise TimeoutError(f"still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def settings_file_problem(path: Path) -> str:
    started = time.monotonic()
    with deadline(2.0):
        with pytest.raises(SettingsError) as caught:
            load_settings({**BASE, "SETTINGS_FILE": str(path)})
        with pytest.raises(SettingsError):
            read_settings_file(path)
    assert time.monotonic() - started < 1.0
    assert len(caught.value.problems) == 1
    line = caught.value.problems[0]
    assert line.startswith(f"SETTINGS_FILE={str(path)!r}: "), line
    return line


def test_a_fifo_is_refused_at_once(tmp_path: Path) -> None:
    fifo = tmp_path / "settings.fifo"
    os.mkfifo(fifo)
    assert "regular file" in settings_file_problem(fifo)


def test_a_symlink_to_a_fifo_is_refused_at_once(tmp_path: Path) -> None:
    fifo = tmp_path / "settings.fifo"
    os.mkfifo(fifo)
    link = tmp_path / "settings.env"
    link.symlink_to(fifo)
    assert "FIFO" in settings_file_problem(link)


def test_devices_and_directories_are_refused(tmp_path: Path) -> None:
    assert "device" in settings_file_problem(Path("/dev/zero"))
    assert "directory" in settings_file_problem(tmp_path)
    link = tmp_path / "zero.env"
    link.symlink_to("/dev/zero")
    assert "device" in settings_file_problem(link)


def test_a_huge_file_is_refused_without_reading_it(tmp_path: Path) -> None:
    huge = tmp_path / "huge.env"
    with huge.open("wb") as handle:
        handle.truncate(300 * 1024 * 1024)  # sparse: costs no disk
    assert "1 MiB" in settings_file_problem(huge)


def test_one_mib_is_the_limit(tmp_path: Path) -> None:
    path = tmp_path / "big.env"
    body = b"VRID=77\n"
    path.write_bytes(body + b"#" * (SETTINGS_FILE_MAX_BYTES - len(body) - 1) + b"\n")
    assert load_settings({**BASE, "SETTINGS_FILE": str(path)}).vrid == 77
    path.write_bytes(body + b"#" * (SETTINGS_FILE_MAX_BYTES - len(body)) + b"\n")
    assert "1 MiB" in settings_file_problem(path)


def test_missing_file_is_a_problem_line(tmp_path: Path) -> None:
    assert "cannot be read" in settings_file_problem(tmp_path / "missing.env")
    with pytest.raises(SettingsError):
        read_settings_file(Path("nul\0byte.env"))


def test_non_utf8_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "latin1.env"
    path.write_bytes(b"VRID=5\n# comment\nSCRIPT_USER=j\xf6rg\n")
    line = settings_file_problem(path)
    assert line.endswith("line 3 is not valid UTF-8"), line
    assert "j\xf6rg" not in line and "rg" not in line.split(":", 1)[1]


def test_a_secret_line_that_is_not_key_value_is_not_echoed(tmp_path: Path) -> None:
    path = tmp_path / "s.env"
    path.write_text("VRID=5\nhunter2\n", encoding="utf-8")
    line = settings_file_problem(path)
    assert line.endswith("line 2 is not KEY=VALUE") and "hunter2" not in line


def test_lines_end_at_newline_only_and_a_bom_is_ignored(tmp_path: Path) -> None:
    path = tmp_path / "odd.env"
    path.write_bytes("\ufeffVRID=77\nPRIORITY=7\u2028VRID=9\n".encode())
    found = problems({**BASE, "SETTINGS_FILE": str(path)})
    assert len(found) == 1 and found[0].startswith("PRIORITY="), found
    path.write_bytes("\ufeffVRID=77\n".encode())
    assert load_settings({**BASE, "SETTINGS_FILE": str(path)}).vrid == 77


# --- 7. a VIP is not one of the unicast addresses ----------------------------------------------------------


def test_vip_equal_to_unicast_src_ip_is_a_problem() -> None:
    found = problems({"VIRTUAL_IP": "10.0.0.1/24,10.0.0.208", "UNICAST_SRC_IP": "10.0.0.1"})
    assert len(found) == 1 and found[0].startswith("VIRTUAL_IP='10.0.0.1': ") and "UNICAST_SRC_IP" in found[0]


def test_vip_equal_to_a_peer_is_a_problem() -> None:
    found = problems({"VIRTUAL_IP": "fd00::10", "UNICAST_PEERS": "fd00::2, fd00::10"})
    assert len(found) == 1 and found[0].startswith("VIRTUAL_IP='fd00::10': ") and "UNICAST_PEERS" in found[0]


def test_distinct_unicast_addresses_are_fine() -> None:
    settings = load_settings({"VIRTUAL_IP": "10.0.0.208", "UNICAST_SRC_IP": "10.0.0.1", "UNICAST_PEERS": "10.0.0.2"})
    assert [str(peer) for peer in settings.unicast_peers] == ["10.0.0.2"]


# --- 8. restart backoff never overflows ------------------------------------------------------------------------


@pytest.mark.parametrize("failures", [1026, 1100, 10**6, 10**18])
def test_restart_delay_is_capped_for_any_count(failures: int) -> None:
    assert restart_delay(failures) == 30.0


def test_restart_delay_never_decreases() -> None:
    delays = [restart_delay(n) for n in range(-3, 3000)]
    assert delays == sorted(delays) and delays[0] == 0.0 and delays[-1] == 30.0
    assert restart_delay(3000, base=2.0, cap=1e6) == 1e6
