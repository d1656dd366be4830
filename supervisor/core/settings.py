"""Environment variables -> typed, validated settings.

The old image's variables keep their meaning (VIRTUAL_IP, VIRTUAL_MASK, VRID, INTERFACE, CHECK_PORT, CHECK_IP,
CHECK_SCRIPT); the rest are the ones users asked for. Each variable is described once, in ``SETTING_SPECS``: its
name, its default as the README shows it, what it means, its parser and its default value (README.md's
configuration table is checked against it by tests/unit/test_readme_settings.py). ``load_settings`` collects every
problem at once, one line each naming a variable the user set, its value and the expected form, so
`keepalived-supervisor check` can list them all. Secrets (AUTH_PASS) are never echoed, not even in errors, and no
message depends on a secret's value.

Optionally SETTINGS_FILE names a file of KEY=VALUE lines that override the environment; the supervisor reads it
again on SIGHUP, which lets a running node change its configuration without a restart.

Before anything is checked, two things are read into the variables they stand for:

- every secret variable NAME may instead be given as NAME_FILE, a file holding the value (Docker secrets live at
  /run/secrets/NAME); problems with such a value name NAME_FILE, and never show the file's content;
- osixia/keepalived's variables (KEEPALIVED_INTERFACE, KEEPALIVED_VIRTUAL_IPS, ...; ``OSIXIA_VARIABLES``) are read
  as ours, ours winning when both are set (a note, returned in ``Settings.notes``, says which was ignored); problems
  with such a value name the osixia variable. Any other KEEPALIVED_* variable is a problem: it is a typo or
  something this supervisor does not do.
"""

from __future__ import annotations

import codecs
import os
import stat
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

from supervisor.core.validate import (
    MAX_WORD_BYTES,
    InvalidValue,
    IPAddress,
    VirtualAddress,
    byte_length,
    parse_bool,
    parse_command,
    parse_config_word,
    parse_http_path,
    parse_http_url,
    parse_int,
    parse_interface,
    parse_ip,
    parse_label_prefix,
    parse_listen_address,
    parse_log_format,
    parse_osixia_list,
    parse_osixia_peer,
    parse_osixia_vip,
    parse_path,
    parse_port,
    parse_seconds,
    parse_selector,
    parse_vip,
    split_list,
)

T = TypeVar("T")

SETTINGS_FILE_MAX_BYTES = 1024 * 1024
"""SETTINGS_FILE is read only when it is a regular file of at most this many bytes (1 MiB)."""
SECRET_FILE_MAX_BYTES = 4096
"""A NAME_FILE (a secret's file) is read only when it is a regular file of at most this many bytes (4 KiB)."""
FILE_SUFFIX = "_FILE"
AUTH_PASS_MAX_BYTES = 8
_AUTH_PASS_FORBIDDEN = frozenset(" \"'{}#!\\;$")
# One fixed sentence whatever is wrong with the password, so a message never tells anything about the secret.
AUTH_FORM_EXPECTED = (
    "expected 1 to 8 bytes of printable ASCII without spaces, quotes, braces, '#', '!', '\\', ';' or '$'"
)
_SHOWN_CHARS = 100  # longer values are cut in problem lines


class Secret:
    """A string that never shows itself in repr, str or logs."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


class SettingsError(ValueError):
    """One or more variables are invalid; ``problems`` holds one line per problem."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


# --- parsers of single variables -----------------------------------------------------------------------------


def _whole(low: int, high: int) -> Callable[[str], int]:
    return lambda raw: parse_int(raw, low, high)


def _seconds(low: float, high: float) -> Callable[[str], float]:
    return lambda raw: parse_seconds(raw, low, high)


def _parse_vips(raw: str) -> tuple[VirtualAddress, ...]:
    return tuple(parse_vip(item, None) for item in split_list(raw))


def _parse_state(raw: str) -> str:
    value = raw.strip().upper()
    if value not in {"MASTER", "BACKUP"}:
        raise InvalidValue("expected MASTER or BACKUP")
    return value


def _parse_auth_pass(raw: str) -> Secret:
    text = raw.strip()
    if (
        not 1 <= byte_length(text) <= AUTH_PASS_MAX_BYTES
        or not text.isascii()
        or any(not ch.isprintable() or ch in _AUTH_PASS_FORBIDDEN for ch in text)
    ):
        raise InvalidValue(AUTH_FORM_EXPECTED)
    return Secret(text)


def _parse_check_ip(raw: str) -> IPAddress | None:
    if raw.strip().lower() == "any":
        return None
    return parse_ip(raw)


def _parse_policy(raw: str) -> str:
    value = raw.strip().lower()
    if value not in {"any", "all"}:
        raise InvalidValue("expected any (healthy while one container answers) or all")
    return value


def _parse_log_level(raw: str) -> str:
    value = raw.strip().upper()
    if value not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
        raise InvalidValue("expected DEBUG, INFO, WARNING or ERROR")
    return value


def _parse_addresses(raw: str) -> tuple[IPAddress, ...]:
    items = split_list(raw)
    if not items:
        raise InvalidValue("expected one or more addresses separated by commas or spaces")
    return tuple(parse_ip(item) for item in items)


def _parse_run_dir(raw: str) -> Path:
    return Path(parse_path(raw, "path"))


def _parse_program(raw: str) -> str:
    """KEEPALIVED_BIN: a program name looked up on PATH, or an absolute path."""
    text = parse_config_word(raw, "program", MAX_WORD_BYTES)
    return parse_path(text, "program path") if "/" in text else text


def _parse_script_user(raw: str) -> str:
    return parse_config_word(raw, "user name", MAX_WORD_BYTES)


def _parse_settings_file(raw: str) -> Path:
    return Path(raw.strip())


def _parse_secret_path(raw: str) -> Path:
    text = raw.strip()
    if not text.startswith("/") or "\0" in text or byte_length(text) > 4096:
        raise InvalidValue("expected the absolute path of a file, like /run/secrets/auth_pass")
    return Path(text)


def _parse_auth_type(raw: str) -> str:
    value = raw.strip().upper()
    if value not in {"PASS", "AH"}:
        raise InvalidValue("expected PASS or AH")
    return value


def _parse_metadata_url(raw: str) -> str | None:
    if raw.strip().lower() in {"off", "none"}:
        return None
    return parse_http_url(raw)


# --- the table of settings ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SettingSpec(Generic[T]):
    """One environment variable: described here once (README.md's table mirrors `default_text` and `doc`)."""

    name: str
    default_text: str
    """The default as README.md shows it."""
    doc: str
    """What it means, as README.md says it (Markdown)."""
    parse: Callable[[str], T] = field(repr=False, compare=False)
    """Raw value -> typed value, or InvalidValue."""
    default: T
    """The value when the variable is unset or empty."""
    secret: bool = False
    """Never shown, not even in problem lines."""


VIRTUAL_IP: SettingSpec[tuple[VirtualAddress, ...]] = SettingSpec(
    "VIRTUAL_IP",
    "none",
    "one or more VIPs, comma or space separated, each `ADDR` or `ADDR/PREFIX`; IPv4 or IPv6 (not mixed). "
    "Unset: only label-defined instances",
    _parse_vips,
    (),
)
VIRTUAL_MASK: SettingSpec[int | None] = SettingSpec(
    "VIRTUAL_MASK", "32 (IPv4), 128 (IPv6)", "prefix length for VIPs given without one", _whole(1, 128), None
)
VRID = SettingSpec(
    "VRID", "51", "VRRP virtual router id, 1-255, the same on every host of one instance", _whole(1, 255), 51
)
INTERFACE = SettingSpec(
    "INTERFACE", "eth0", "interface for the VIP and the adverts; must exist when `run` starts", parse_interface, "eth0"
)
PRIORITY = SettingSpec("PRIORITY", "100", "1-254; the highest healthy host holds the VIP", _whole(1, 254), 100)
STATE = SettingSpec("STATE", "BACKUP", "MASTER or BACKUP, the state keepalived starts in", _parse_state, "BACKUP")
ADVERT_INT = SettingSpec(
    "ADVERT_INT", "1", "seconds between adverts; sub-second needs VRRP v3", _seconds(0.01, 255), 1.0
)
VRRP_VERSION = SettingSpec("VRRP_VERSION", "3 (2 with `AUTH_PASS`)", "2 or 3; IPv6 needs 3", _whole(2, 3), 3)
AUTH_PASS: SettingSpec[Secret | None] = SettingSpec(
    "AUTH_PASS",
    "none",
    "VRRP v2 authentication password (the AH key with `AUTH_TYPE=AH`), 1-8 bytes of printable ASCII (no spaces, "
    "quotes, braces, `#`, `!`, `\\`, `;` or `$`); never logged",
    _parse_auth_pass,
    None,
    secret=True,
)


def _file_spec(secret: SettingSpec[Any]) -> SettingSpec[Path | None]:
    """NAME_FILE: the file holding the secret NAME (every secret spec has one; a unit test checks)."""
    return SettingSpec(
        secret.name + FILE_SUFFIX,
        "none",
        f"a file holding `{secret.name}` (one trailing newline dropped), such as a Docker secret "
        f"`/run/secrets/NAME`: a regular file of at most 4 KiB; not together with `{secret.name}`",
        _parse_secret_path,
        None,
    )


AUTH_PASS_FILE = _file_spec(AUTH_PASS)
AUTH_TYPE: SettingSpec[str | None] = SettingSpec(
    "AUTH_TYPE",
    "none (PASS with `AUTH_PASS`)",
    "`PASS` or `AH` (IPsec AH, keyed with `AUTH_PASS`, as the old shell image used); VRRP v2 only, needs `AUTH_PASS`",
    _parse_auth_type,
    None,
)
UNICAST_SRC_IP: SettingSpec[IPAddress | None] = SettingSpec(
    "UNICAST_SRC_IP", "interface address", "source of unicast adverts", parse_ip, None
)
UNICAST_PEERS: SettingSpec[tuple[IPAddress, ...]] = SettingSpec(
    "UNICAST_PEERS",
    "none (multicast)",
    "the hosts' addresses, comma or space separated; each host drops its own address, so one list fits all",
    _parse_addresses,
    (),
)
NOPREEMPT = SettingSpec(
    "NOPREEMPT",
    "false",
    "a recovered higher-priority host does not take the VIP back (needs `STATE=BACKUP`)",
    parse_bool,
    False,
)
PREEMPT_DELAY: SettingSpec[float | None] = SettingSpec(
    "PREEMPT_DELAY",
    "none",
    "seconds a higher-priority host waits before taking the VIP back",
    _seconds(0, 1000),
    None,
)
VIP_LEASE = SettingSpec(
    "VIP_LEASE",
    "2",
    "seconds a held VIP lives in the kernel unless renewed (renewed while keepalived runs), so a VIP a hard kill "
    "left behind goes by itself; 1-3600, `0` turns the lease off",
    _whole(0, 3600),
    2,
)
CHECK_PORT: SettingSpec[int | None] = SettingSpec(
    "CHECK_PORT",
    "none",
    "probe this port: alone, on any address (a listener, or a connect to the host's address)",
    parse_port,
    None,
)
CHECK_IP: SettingSpec[IPAddress | None] = SettingSpec(
    "CHECK_IP", "any", "with `CHECK_PORT`: connect to this address instead", _parse_check_ip, None
)
CHECK_HTTP_PATH: SettingSpec[str | None] = SettingSpec(
    "CHECK_HTTP_PATH", "none", "with `CHECK_PORT`: HTTP GET this path instead of a TCP connect", parse_http_path, None
)
CHECK_HTTP_STATUS = SettingSpec("CHECK_HTTP_STATUS", "200", "the status the HTTP probe expects", _whole(100, 599), 200)
CHECK_SCRIPT: SettingSpec[str | None] = SettingSpec(
    "CHECK_SCRIPT",
    "none",
    "a command keepalived runs as a `vrrp_script` (exit 0 = healthy), with script security on",
    parse_command,
    None,
)
CHECK_INTERVAL = SettingSpec("CHECK_INTERVAL", "1", "seconds between probes", _seconds(0.05, 3600), 1.0)
CHECK_TIMEOUT = SettingSpec("CHECK_TIMEOUT", "1", "seconds before a probe counts as failed", _seconds(0.05, 600), 1.0)
CHECK_RISE = SettingSpec("CHECK_RISE", "2", "successes to become healthy again", _whole(1, 100), 2)
CHECK_FALL = SettingSpec("CHECK_FALL", "2", "failures to become failed", _whole(1, 100), 2)
HEALTH_POLICY = SettingSpec(
    "HEALTH_POLICY",
    "any",
    "with several front ends per instance: healthy while `any` answers, or only when `all` do",
    _parse_policy,
    "any",
)
NOTIFY: SettingSpec[str | None] = SettingSpec(
    "NOTIFY",
    "none",
    "a command run at every state change of an instance, called as keepalived calls `notify`: with `INSTANCE`, the "
    "instance's name, its new state and its priority appended; an absolute path and plain arguments, like "
    "`CHECK_SCRIPT`",
    parse_command,
    None,
)
NOTIFY_MASTER: SettingSpec[str | None] = SettingSpec(
    "NOTIFY_MASTER", "none", "like `NOTIFY`, but only when an instance becomes MASTER", parse_command, None
)
NOTIFY_BACKUP: SettingSpec[str | None] = SettingSpec(
    "NOTIFY_BACKUP", "none", "like `NOTIFY`, but only when an instance becomes BACKUP", parse_command, None
)
NOTIFY_FAULT: SettingSpec[str | None] = SettingSpec(
    "NOTIFY_FAULT", "none", "like `NOTIFY`, but only when an instance becomes FAULT", parse_command, None
)
NOTIFY_TIMEOUT = SettingSpec(
    "NOTIFY_TIMEOUT", "10", "seconds a notify command may run before it is killed, 0.1-300", _seconds(0.1, 300), 10.0
)
LABEL_PREFIX = SettingSpec(
    "LABEL_PREFIX", "`keepalived.`", "the prefix of the container labels below", parse_label_prefix, "keepalived."
)
LABEL_SELECTOR: SettingSpec[tuple[tuple[str, str], ...]] = SettingSpec(
    "LABEL_SELECTOR",
    "none",
    "`key=value[,key=value]`: only containers with all these labels are considered; such a container joins the "
    "environment's instance even without a label of ours (`keepalived.enable=false` still excludes it)",
    parse_selector,
    (),
)
DISCOVER_CHECK_PORT = SettingSpec(
    "DISCOVER_CHECK_PORT",
    "true",
    "a running container that publishes `CHECK_PORT` (a TCP binding with that host port) joins the environment's "
    "instance by itself, so its Docker events fail it at once; `false` turns this off",
    parse_bool,
    True,
)
RANCHER_METADATA_URL: SettingSpec[str | None] = SettingSpec(
    "RANCHER_METADATA_URL",
    "`http://rancher-metadata/2015-12-19`",
    "Rancher 1.x's metadata service, an `http://` URL; `off` or `none` turns it off",
    _parse_metadata_url,
    "http://rancher-metadata/2015-12-19",
)
SCRIPT_USER = SettingSpec(
    "SCRIPT_USER",
    "keepalived_script",
    "the user `CHECK_SCRIPT` runs as (the image creates it)",
    _parse_script_user,
    "keepalived_script",
)
RUN_DIR = SettingSpec(
    "RUN_DIR",
    "/run/keepalived-supervisor",
    "rendered config, track files, FIFO, pid files and `status.json`; nothing is written elsewhere",
    _parse_run_dir,
    Path("/run/keepalived-supervisor"),
)
KEEPALIVED_BIN = SettingSpec(
    "KEEPALIVED_BIN",
    "keepalived",
    "the keepalived executable: a name looked up on `PATH`, or an absolute path",
    _parse_program,
    "keepalived",
)
RECONCILE_MIN_WAIT = SettingSpec(
    "RECONCILE_MIN_WAIT",
    "0.1",
    "quiet time after a Docker change before reconciling (debounce)",
    _seconds(0, 60),
    0.1,
)
RECONCILE_MAX_WAIT = SettingSpec(
    "RECONCILE_MAX_WAIT",
    "1",
    "longest a burst of Docker changes can delay a reconcile",
    _seconds(0, 600),
    1.0,
)
LOG_LEVEL = SettingSpec("LOG_LEVEL", "INFO", "DEBUG, INFO, WARNING or ERROR", _parse_log_level, "INFO")
LOG_FORMAT = SettingSpec(
    "LOG_FORMAT", "text", "`text`, or `json` for one JSON object per line", parse_log_format, "text"
)
METRICS_ADDR: SettingSpec[str | None] = SettingSpec(
    "METRICS_ADDR",
    "0.0.0.0:9655",
    "`HOST:PORT` where `/metrics` (Prometheus) and `/healthz` are served: an IPv4 address, an `[IPv6]` address or "
    "no host (`:9655`, every address); 9655 is a port no common exporter uses; set it empty to turn this off",
    parse_listen_address,
    "0.0.0.0:9655",
)
SETTINGS_FILE: SettingSpec[Path | None] = SettingSpec(
    "SETTINGS_FILE",
    "none",
    "a regular file (at most 1 MiB, UTF-8) of `KEY=VALUE` lines overriding the environment, re-read on `SIGHUP`",
    _parse_settings_file,
    None,
)

SETTING_SPECS: tuple[SettingSpec[Any], ...] = (
    VIRTUAL_IP,
    VIRTUAL_MASK,
    VRID,
    INTERFACE,
    PRIORITY,
    STATE,
    ADVERT_INT,
    VRRP_VERSION,
    AUTH_PASS,
    AUTH_PASS_FILE,
    AUTH_TYPE,
    UNICAST_SRC_IP,
    UNICAST_PEERS,
    NOPREEMPT,
    PREEMPT_DELAY,
    VIP_LEASE,
    CHECK_PORT,
    CHECK_IP,
    CHECK_HTTP_PATH,
    CHECK_HTTP_STATUS,
    CHECK_SCRIPT,
    CHECK_INTERVAL,
    CHECK_TIMEOUT,
    CHECK_RISE,
    CHECK_FALL,
    HEALTH_POLICY,
    NOTIFY,
    NOTIFY_MASTER,
    NOTIFY_BACKUP,
    NOTIFY_FAULT,
    NOTIFY_TIMEOUT,
    LABEL_PREFIX,
    LABEL_SELECTOR,
    DISCOVER_CHECK_PORT,
    RANCHER_METADATA_URL,
    SCRIPT_USER,
    RUN_DIR,
    KEEPALIVED_BIN,
    RECONCILE_MIN_WAIT,
    RECONCILE_MAX_WAIT,
    LOG_LEVEL,
    LOG_FORMAT,
    METRICS_ADDR,
    SETTINGS_FILE,
)
"""Every environment variable the supervisor reads, in README order (DOCKER_HOST is docker-py's, not ours)."""

SECRET_VARIABLES = frozenset(spec.name for spec in SETTING_SPECS if spec.secret)


@dataclass(frozen=True)
class OsixiaVariable:
    """A variable of osixia/keepalived, read as one of ours."""

    name: str
    ours: SettingSpec[Any]
    """The variable it is read as."""
    also_ours: tuple[SettingSpec[Any], ...] = ()
    """Other variables of ours that set the same thing (AUTH_PASS_FILE for AUTH_PASS): any of them set wins too."""
    kind: str = "value"
    """How its value becomes ours: `value` (as it is), `vips` or `peers` (osixia's list forms)."""


OSIXIA_VARIABLES: tuple[OsixiaVariable, ...] = (
    OsixiaVariable("KEEPALIVED_INTERFACE", INTERFACE),
    OsixiaVariable("KEEPALIVED_VIRTUAL_IPS", VIRTUAL_IP, kind="vips"),
    OsixiaVariable("KEEPALIVED_UNICAST_PEERS", UNICAST_PEERS, kind="peers"),
    OsixiaVariable("KEEPALIVED_PRIORITY", PRIORITY),
    OsixiaVariable("KEEPALIVED_PASSWORD", AUTH_PASS, also_ours=(AUTH_PASS_FILE,)),
    OsixiaVariable("KEEPALIVED_PASSWORD_FILE", AUTH_PASS_FILE, also_ours=(AUTH_PASS,)),
    OsixiaVariable("KEEPALIVED_ROUTER_ID", VRID),
    OsixiaVariable("KEEPALIVED_STATE", STATE),
    OsixiaVariable("KEEPALIVED_NOTIFY", NOTIFY),
)
"""osixia/keepalived's variables and ours they are read as (README: "Coming from osixia/keepalived")."""
OSIXIA_PREFIX = "KEEPALIVED_"
OSIXIA_UNSUPPORTED = {
    "KEEPALIVED_COMMAND_LINE_ARGUMENTS": "not supported: the supervisor starts keepalived with its own arguments",
}
"""osixia/keepalived's variables that have no equivalent here, with why (setting one is a problem)."""


# --- the typed result (each field's variable is named in a comment; SETTING_SPECS describes it) -----------------


@dataclass(frozen=True)
class CheckSettings:
    """How the supervisor decides that this host's service is healthy (the env-defined instance)."""

    port: int | None = CHECK_PORT.default  # CHECK_PORT
    ip: IPAddress | None = CHECK_IP.default  # CHECK_IP; None means `any`
    http_path: str | None = CHECK_HTTP_PATH.default  # CHECK_HTTP_PATH
    http_status: int = CHECK_HTTP_STATUS.default  # CHECK_HTTP_STATUS
    script: str | None = CHECK_SCRIPT.default  # CHECK_SCRIPT
    interval: float = CHECK_INTERVAL.default  # CHECK_INTERVAL
    timeout: float = CHECK_TIMEOUT.default  # CHECK_TIMEOUT
    rise: int = CHECK_RISE.default  # CHECK_RISE
    fall: int = CHECK_FALL.default  # CHECK_FALL


@dataclass(frozen=True)
class Settings:
    """Everything the supervisor is told by its environment."""

    virtual_ips: tuple[VirtualAddress, ...] = VIRTUAL_IP.default  # VIRTUAL_IP (with VIRTUAL_MASK)
    vrid: int = VRID.default  # VRID
    interface: str = INTERFACE.default  # INTERFACE
    priority: int = PRIORITY.default  # PRIORITY
    state: str = STATE.default  # STATE
    advert_int: float = ADVERT_INT.default  # ADVERT_INT
    vrrp_version: int = VRRP_VERSION.default  # VRRP_VERSION (2 when AUTH_PASS is set and it is not)
    auth_pass: Secret | None = AUTH_PASS.default  # AUTH_PASS
    unicast_src_ip: IPAddress | None = UNICAST_SRC_IP.default  # UNICAST_SRC_IP
    unicast_peers: tuple[IPAddress, ...] = UNICAST_PEERS.default  # UNICAST_PEERS, without UNICAST_SRC_IP
    nopreempt: bool = NOPREEMPT.default  # NOPREEMPT
    preempt_delay: float | None = PREEMPT_DELAY.default  # PREEMPT_DELAY
    check: CheckSettings = field(default_factory=CheckSettings)  # CHECK_*
    health_policy: str = HEALTH_POLICY.default  # HEALTH_POLICY
    label_prefix: str = LABEL_PREFIX.default  # LABEL_PREFIX
    label_selector: tuple[tuple[str, str], ...] = LABEL_SELECTOR.default  # LABEL_SELECTOR
    discover_check_port: bool = DISCOVER_CHECK_PORT.default  # DISCOVER_CHECK_PORT
    script_user: str = SCRIPT_USER.default  # SCRIPT_USER
    run_dir: Path = RUN_DIR.default  # RUN_DIR
    keepalived_bin: str = KEEPALIVED_BIN.default  # KEEPALIVED_BIN
    reconcile_min_wait: float = RECONCILE_MIN_WAIT.default  # RECONCILE_MIN_WAIT
    reconcile_max_wait: float = RECONCILE_MAX_WAIT.default  # RECONCILE_MAX_WAIT
    log_level: str = LOG_LEVEL.default  # LOG_LEVEL
    settings_file: Path | None = SETTINGS_FILE.default  # SETTINGS_FILE
    auth_type: str | None = AUTH_TYPE.default  # AUTH_TYPE (PASS when AUTH_PASS is set and it is not)
    vip_lease: int = VIP_LEASE.default  # VIP_LEASE; 0 = off
    notify: str | None = NOTIFY.default  # NOTIFY
    notify_master: str | None = NOTIFY_MASTER.default  # NOTIFY_MASTER
    notify_backup: str | None = NOTIFY_BACKUP.default  # NOTIFY_BACKUP
    notify_fault: str | None = NOTIFY_FAULT.default  # NOTIFY_FAULT
    notify_timeout: float = NOTIFY_TIMEOUT.default  # NOTIFY_TIMEOUT
    rancher_metadata_url: str | None = RANCHER_METADATA_URL.default  # RANCHER_METADATA_URL; None = off
    log_format: str = LOG_FORMAT.default  # LOG_FORMAT
    metrics_addr: str | None = METRICS_ADDR.default  # METRICS_ADDR; None (set empty) = off
    notes: tuple[str, ...] = field(default=(), compare=False)
    """Not problems, but worth a log line: osixia variables ignored because ours are set."""


# --- SETTINGS_FILE and secrets' files -----------------------------------------------------------------------------


class _FileProblem(Exception):
    """Why a file cannot be used; says nothing of its content."""


def _file_problem(path: Path, what: str) -> SettingsError:
    return SettingsError([f"{SETTINGS_FILE.name}={str(path)!r}: {what}"])


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "not a regular file"


def _read_bounded(path: Path, max_bytes: int, size_text: str) -> bytes:
    """The bytes of a regular file of at most `max_bytes` (`size_text` says it for people), read without ever
    blocking on it; _FileProblem otherwise."""
    too_big = f"expected a file of at most {max_bytes} bytes ({size_text})"
    if "\0" in str(path):
        raise _FileProblem("cannot be read (a path holds no NUL byte)")
    try:
        # Look before opening: opening some devices has effects of its own. The opened fd is checked again below.
        mode = os.stat(path).st_mode
        if not stat.S_ISREG(mode):
            raise _FileProblem(f"expected a regular file, found {_kind(mode)}")
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise _FileProblem(f"expected a regular file, found {_kind(info.st_mode)}")
            if info.st_size > max_bytes:
                raise _FileProblem(too_big)
            chunks: list[bytes] = []
            remaining = max_bytes + 1  # the size may lie (procfs) or grow: never read more
            while remaining > 0:
                chunk = os.read(fd, remaining)
                if not chunk:
                    break
                chunks.append(chunk)
                remaining -= len(chunk)
        finally:
            os.close(fd)
    except OSError as error:
        raise _FileProblem(f"cannot be read ({error.strerror or error})") from None
    data = b"".join(chunks)
    if len(data) > max_bytes:
        raise _FileProblem(too_big)
    return data


def read_settings_file(path: Path) -> dict[str, str]:
    """Parse a KEY=VALUE file (blank lines and # comments ignored, optional quotes around values).

    Raises SettingsError, never OSError or UnicodeDecodeError: when the file cannot be read, is not a regular file
    of at most 1 MiB, is not UTF-8 or has a line that is not KEY=VALUE. Messages name lines by number, never by
    content (a line may hold AUTH_PASS).
    """
    try:
        data = _read_bounded(path, SETTINGS_FILE_MAX_BYTES, "1 MiB")
    except _FileProblem as problem:
        raise _file_problem(path, str(problem)) from None
    if data.startswith(codecs.BOM_UTF8):
        data = data[len(codecs.BOM_UTF8) :]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        number = data.count(b"\n", 0, error.start) + 1
        raise _file_problem(path, f"line {number} is not valid UTF-8") from None
    values: dict[str, str] = {}
    # Lines end at "\n" only: str.splitlines() would also split at \x0b, \x1c, \x85, U+2028 and others.
    for number, line in enumerate(text.split("\n"), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        key, sep, value = stripped.partition("=")
        key = key.strip()
        if key.startswith("export "):
            key = key[len("export ") :].strip()
        if not sep or not key:
            raise _file_problem(path, f"line {number} is not KEY=VALUE")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        values[key] = value
    return values


# --- reading and checking -------------------------------------------------------------------------------------


def _shown(raw: str) -> str:
    """A (non-secret) value as problem lines show it: quoted, long ones cut."""
    if len(raw) > _SHOWN_CHARS:
        return f"{raw[:_SHOWN_CHARS]!r}... ({byte_length(raw)} bytes)"
    return repr(raw)


@dataclass(frozen=True)
class _Origin:
    """Where the value of one of our variables came from, when the user did not set it by its own name."""

    name: str
    """The variable the user set (KEEPALIVED_PRIORITY, AUTH_PASS_FILE, ...): problem lines name it."""
    shown: str | None = None
    """What problem lines show for the whole value (the osixia value as it was, a file's path), if not the value."""


class _Reader:
    """Reads variables one by one, collecting problems instead of stopping at the first."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = dict(env)
        self.problems: list[str] = []
        self.origins: dict[str, _Origin] = {}

    def raw(self, spec: SettingSpec[Any]) -> str | None:
        value = self.env.get(spec.name)
        if value is None or value.strip() == "":
            return None
        return value

    def get(self, spec: SettingSpec[T]) -> T:
        return self.get_or(spec, spec.default)

    def get_or(self, spec: SettingSpec[T], default: T) -> T:
        """The parsed value, or `default` when unset or invalid (then a problem is recorded)."""
        raw = self.raw(spec)
        if raw is None:
            return default
        try:
            return spec.parse(raw)
        except InvalidValue as problem:
            self.fail(spec, str(problem), raw)
            return default

    def label(self, spec: SettingSpec[Any]) -> str:
        """The variable the user set for `spec`: its own name, or the osixia variable or NAME_FILE it came from."""
        origin = self.origins.get(spec.name)
        return spec.name if origin is None else origin.name

    def fail(self, spec: SettingSpec[Any], expected: str, raw: str | None = None) -> None:
        """Record a problem with `spec`, showing `raw` (by default its value) unless it is a secret."""
        origin = self.origins.get(spec.name)
        if spec.secret:
            shown = origin.shown if origin is not None and origin.shown is not None else "(value hidden)"
        elif raw is None and origin is not None and origin.shown is not None:
            shown = origin.shown
        else:
            raw = self.raw(spec) if raw is None else raw
            shown = "(not set)" if raw is None else _shown(raw)
        self.problems.append(f"{self.label(spec)}={shown}: {expected}")

    def fail_set(self, specs: Sequence[SettingSpec[Any]], expected: str) -> None:
        """Record a problem with the first of `specs` the user set (the combination came from somewhere)."""
        chosen = next((spec for spec in specs if self.raw(spec) is not None), specs[0])
        self.fail(chosen, expected)

    def is_set(self, spec: SettingSpec[Any]) -> bool:
        return self.raw(spec) is not None


def _read_osixia(read: _Reader) -> list[str]:
    """Read osixia/keepalived's variables as ours (ours win when set); the notes on what was ignored.

    Runs before anything else is read: afterwards an osixia value is in `read.env` under our name, and
    `read.origins` makes every problem with it name the osixia variable.
    """
    env = read.env
    known = {var.name for var in OSIXIA_VARIABLES} | {spec.name for spec in SETTING_SPECS}
    for key in sorted(env):
        if key.startswith(OSIXIA_PREFIX) and key not in known and env[key].strip():
            why = OSIXIA_UNSUPPORTED.get(key)
            if why is None:
                ours = sorted(spec.name for spec in SETTING_SPECS if spec.name.startswith(OSIXIA_PREFIX))
                why = (
                    f"unknown variable (its value is not shown): expected {' or '.join(ours)}, or one of "
                    f"osixia/keepalived's {', '.join(var.name for var in OSIXIA_VARIABLES)}"
                )
            read.problems.append(f"{key}: {why}; unset it")
    users = {spec.name for spec in SETTING_SPECS if read.is_set(spec)}  # set by the user, before any mapping
    notes: list[str] = []
    # In table order: KEEPALIVED_INTERFACE is read before KEEPALIVED_VIRTUAL_IPS, whose `dev` must name it.
    for var in OSIXIA_VARIABLES:
        raw = env.get(var.name)
        if raw is None or not raw.strip():
            continue
        winner = next((spec.name for spec in (var.ours, *var.also_ours) if spec.name in users), None)
        if winner is not None:
            notes.append(f"{var.name} ignored: {winner} is set")
            continue
        value = raw
        try:
            if var.kind == "vips":
                interface = env.get(INTERFACE.name, "").strip() or INTERFACE.default
                value = ",".join(parse_osixia_vip(item, interface) for item in parse_osixia_list(raw))
            elif var.kind == "peers":
                value = ",".join(parse_osixia_peer(item) for item in parse_osixia_list(raw))
        except InvalidValue as problem:
            read.problems.append(f"{var.name}={_shown(raw)}: {problem}")
            continue
        env[var.ours.name] = value
        read.origins[var.ours.name] = _Origin(var.name, None if var.ours.secret else _shown(raw))
    return notes


def _read_secret_file(read: _Reader, secret: SettingSpec[Any], file_spec: SettingSpec[Any], path: Path | None) -> None:
    """Put the content of `file_spec`'s file (at `path`, when set) into `read.env` as the value of `secret`.

    Problems name the file's variable (AUTH_PASS_FILE, or the osixia one it came from) and its path, never the
    content.
    """
    if path is None:
        return
    if read.is_set(secret):
        read.problems.append(
            f"{read.label(secret)} and {read.label(file_spec)} are both set: expected only one of them"
        )
        return
    try:
        data = _read_bounded(path, SECRET_FILE_MAX_BYTES, "4 KiB")
        text = data.decode("utf-8")
    except _FileProblem as problem:
        read.fail(file_spec, str(problem))
        return
    except UnicodeDecodeError:
        read.fail(file_spec, "expected UTF-8 text (the content is not shown)")
        return
    text = text.removesuffix("\n").removesuffix("\r") if text.endswith("\n") else text
    if not text.strip():
        read.fail(file_spec, f"expected a file holding {secret.name}: it is empty")
        return
    read.env[secret.name] = text
    read.origins[secret.name] = _Origin(read.label(file_spec), f"{_shown(str(path))} (content not shown)")


def load_settings(environ: Mapping[str, str]) -> Settings:
    """Build validated settings from the environment (plus SETTINGS_FILE), or raise SettingsError."""
    env = dict(environ)
    settings_file = _Reader(environ).get(SETTINGS_FILE)
    if settings_file is not None:
        env.update(read_settings_file(settings_file))

    read = _Reader(env)
    notes = _read_osixia(read)
    # Every secret spec NAME has a NAME_FILE (tests/unit/test_settings_extensions.py checks each one is read here).
    _read_secret_file(read, AUTH_PASS, AUTH_PASS_FILE, read.get(AUTH_PASS_FILE))

    default_prefix = read.get(VIRTUAL_MASK)
    vips: list[VirtualAddress] = []
    vip_raw = read.raw(VIRTUAL_IP)
    if vip_raw is not None:
        for item in split_list(vip_raw):
            try:
                vips.append(parse_vip(item, default_prefix))
            except InvalidValue as problem:
                read.fail(VIRTUAL_IP, str(problem), item)
    families = {vip.version for vip in vips}
    if len(families) > 1:
        read.fail(VIRTUAL_IP, "expected addresses of one family: one VRRP instance carries IPv4 or IPv6")
    if default_prefix is not None and vips and 4 in families and default_prefix > 32:
        read.fail(VIRTUAL_MASK, "expected a prefix length from 1 to 32 for IPv4 virtual IPs")

    auth_pass = read.get(AUTH_PASS)
    auth_type = read.get(AUTH_TYPE)
    if auth_type is not None and not (read.is_set(AUTH_PASS) or read.is_set(AUTH_PASS_FILE)):
        key = ": keepalived uses it as the AH key" if auth_type == "AH" else ""
        read.fail(AUTH_TYPE, f"needs AUTH_PASS (or AUTH_PASS_FILE) too{key}")
    auth_type = (auth_type or "PASS") if auth_pass is not None else None
    vrrp_version = read.get_or(VRRP_VERSION, 2 if auth_pass is not None else VRRP_VERSION.default)
    advert_int = read.get(ADVERT_INT)
    state = read.get(STATE)
    nopreempt = read.get(NOPREEMPT)
    preempt_delay = read.get(PREEMPT_DELAY)
    unicast_src_ip = read.get(UNICAST_SRC_IP)
    listed = read.get(UNICAST_PEERS)
    peers = tuple(dict.fromkeys(peer for peer in listed if peer != unicast_src_ip))

    _check_combinations(read, vips, vrrp_version, advert_int, auth_pass, state, nopreempt, preempt_delay)
    _check_unicast(read, vips, unicast_src_ip, peers)

    check = CheckSettings(
        port=read.get(CHECK_PORT),
        ip=read.get(CHECK_IP),
        http_path=read.get(CHECK_HTTP_PATH),
        http_status=read.get(CHECK_HTTP_STATUS),
        script=read.get(CHECK_SCRIPT),
        interval=read.get(CHECK_INTERVAL),
        timeout=read.get(CHECK_TIMEOUT),
        rise=read.get(CHECK_RISE),
        fall=read.get(CHECK_FALL),
    )
    if check.script is not None:
        for spec, value in ((CHECK_INTERVAL, check.interval), (CHECK_TIMEOUT, check.timeout)):
            if value != int(value) or value < 1:
                read.fail_set(
                    [spec],
                    "expected whole seconds (1 or more) with CHECK_SCRIPT: keepalived runs "
                    "scripts with one-second resolution",
                )
    if not read.is_set(CHECK_PORT):  # an invalid CHECK_PORT has its own problem line
        for dependent in (CHECK_IP, CHECK_HTTP_PATH):
            if read.is_set(dependent):
                read.fail(dependent, "needs CHECK_PORT to be set too")

    reconcile_min_wait = read.get(RECONCILE_MIN_WAIT)
    reconcile_max_wait = read.get(RECONCILE_MAX_WAIT)
    if reconcile_max_wait < reconcile_min_wait:
        if read.is_set(RECONCILE_MAX_WAIT):
            read.fail(RECONCILE_MAX_WAIT, f"expected at least RECONCILE_MIN_WAIT ({reconcile_min_wait:g})")
        else:
            read.fail(
                RECONCILE_MIN_WAIT,
                f"expected at most RECONCILE_MAX_WAIT ({reconcile_max_wait:g} unless set)",
            )
    metrics_raw = read.env.get(METRICS_ADDR.name)
    metrics_off = metrics_raw is not None and not metrics_raw.strip()  # set, but empty: turned off

    settings = Settings(
        virtual_ips=tuple(vips),
        vrid=read.get(VRID),
        interface=read.get(INTERFACE),
        priority=read.get(PRIORITY),
        state=state,
        advert_int=advert_int,
        vrrp_version=vrrp_version,
        auth_pass=auth_pass,
        unicast_src_ip=unicast_src_ip,
        unicast_peers=peers,
        nopreempt=nopreempt,
        preempt_delay=preempt_delay,
        check=check,
        health_policy=read.get(HEALTH_POLICY),
        label_prefix=read.get(LABEL_PREFIX),
        label_selector=read.get(LABEL_SELECTOR),
        discover_check_port=read.get(DISCOVER_CHECK_PORT),
        script_user=read.get(SCRIPT_USER),
        run_dir=read.get(RUN_DIR),
        keepalived_bin=read.get(KEEPALIVED_BIN),
        reconcile_min_wait=reconcile_min_wait,
        reconcile_max_wait=reconcile_max_wait,
        log_level=read.get(LOG_LEVEL),
        settings_file=settings_file,
        auth_type=auth_type,
        vip_lease=read.get(VIP_LEASE),
        notify=read.get(NOTIFY),
        notify_master=read.get(NOTIFY_MASTER),
        notify_backup=read.get(NOTIFY_BACKUP),
        notify_fault=read.get(NOTIFY_FAULT),
        notify_timeout=read.get(NOTIFY_TIMEOUT),
        rancher_metadata_url=read.get(RANCHER_METADATA_URL),
        log_format=read.get(LOG_FORMAT),
        metrics_addr=None if metrics_off else read.get(METRICS_ADDR),
        notes=tuple(notes),
    )
    if read.problems:
        raise SettingsError(read.problems)
    return settings


def _check_combinations(
    read: _Reader,
    vips: list[VirtualAddress],
    vrrp_version: int,
    advert_int: float,
    auth_pass: Secret | None,
    state: str,
    nopreempt: bool,
    preempt_delay: float | None,
) -> None:
    """Each problem names a variable the user set: a default alone never makes a bad combination."""
    if vrrp_version == 2:
        if any(vip.version == 6 for vip in vips):
            if read.is_set(VRRP_VERSION):
                read.fail(VRRP_VERSION, "expected 3: IPv6 virtual IPs need VRRP version 3")
            else:  # version 2 came from AUTH_PASS
                read.fail(
                    AUTH_PASS,
                    "cannot be used with IPv6 virtual IPs: authentication needs VRRP version 2, IPv6 needs 3",
                )
        if advert_int != int(advert_int):
            read.fail_set(
                [ADVERT_INT, VRRP_VERSION, AUTH_PASS],
                "expected whole seconds with VRRP v2 (sub-second needs VRRP_VERSION=3)",
            )
    else:
        if auth_pass is not None:
            read.fail(AUTH_PASS, "is only supported with VRRP_VERSION=2 (VRRP v3 has no authentication)")
        if advert_int > 40.95:
            read.fail_set([ADVERT_INT], "expected at most 40.95 seconds with VRRP v3")
        elif abs(advert_int * 100 - round(advert_int * 100)) > 1e-6:
            read.fail_set([ADVERT_INT], "expected whole hundredths of a second (VRRP v3 counts in 10 ms units)")
    if (nopreempt or preempt_delay is not None) and state == "MASTER":
        read.fail_set(
            [STATE, NOPREEMPT, PREEMPT_DELAY],
            "expected BACKUP when NOPREEMPT or PREEMPT_DELAY is set (keepalived needs it)",
        )
    if nopreempt and preempt_delay is not None:
        read.fail_set([PREEMPT_DELAY, NOPREEMPT], "cannot be combined with NOPREEMPT=true")


def _check_unicast(
    read: _Reader, vips: list[VirtualAddress], src: IPAddress | None, peers: tuple[IPAddress, ...]
) -> None:
    checked: list[tuple[IPAddress | None, SettingSpec[Any]]] = [
        (src, UNICAST_SRC_IP),
        *((p, UNICAST_PEERS) for p in peers),
    ]
    for address, spec in checked:
        if address is not None and (address.is_unspecified or address.is_multicast or address.is_loopback):
            read.fail(spec, "expected a unicast address of a host (not unspecified, multicast or loopback)")
            break
    if not vips:
        return
    family = vips[0].version
    if src is not None and src.version != family:
        read.fail(UNICAST_SRC_IP, f"expected an IPv{family} address like the virtual IPs")
    wrong = [str(peer) for peer in peers if peer.version != family]
    if wrong:
        read.fail(UNICAST_PEERS, f"expected IPv{family} addresses like the virtual IPs", ",".join(wrong))
    for vip in vips:
        if src is not None and vip.address == src:
            read.fail(
                VIRTUAL_IP,
                f"expected an address other than {read.label(UNICAST_SRC_IP)}: a VIP moves between hosts",
                str(vip.address),
            )
        elif vip.address in peers:
            read.fail(
                VIRTUAL_IP,
                f"expected an address other than the {read.label(UNICAST_PEERS)}: a VIP moves between hosts",
                str(vip.address),
            )
