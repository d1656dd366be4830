"""Environment variables -> typed, validated settings.

The old image's variables keep their meaning (VIRTUAL_IP, VIRTUAL_MASK, VRID, INTERFACE, CHECK_PORT, CHECK_IP,
CHECK_SCRIPT); the rest are the ones users asked for. ``load_settings`` collects every problem at once, one line
each naming the variable, the value and the expected form, so `keepalived-supervisor check` can list them all.
Secrets (AUTH_PASS) are never echoed, not even in errors.

Optionally SETTINGS_FILE names a file of KEY=VALUE lines that override the environment; the supervisor reads it
again on SIGHUP, which lets a running node change its configuration without a restart.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from supervisor.core.validate import (
    InvalidValue,
    IPAddress,
    VirtualAddress,
    parse_bool,
    parse_command,
    parse_config_word,
    parse_http_path,
    parse_int,
    parse_interface,
    parse_ip,
    parse_label_prefix,
    parse_port,
    parse_seconds,
    parse_selector,
    parse_vip,
    split_list,
)

T = TypeVar("T")

SECRET_VARIABLES = frozenset({"AUTH_PASS"})


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


@dataclass(frozen=True)
class CheckSettings:
    """How the supervisor decides that this host's service is healthy (the env-defined instance)."""

    port: int | None = None
    """CHECK_PORT: the service port to probe. Alone: the port on any local address."""
    ip: IPAddress | None = None
    """CHECK_IP: the address to probe on CHECK_PORT; None means `any` (the port on any address)."""
    http_path: str | None = None
    """CHECK_HTTP_PATH: when set, probe with HTTP GET of this path instead of a TCP connect."""
    http_status: int = 200
    """CHECK_HTTP_STATUS: the status the HTTP probe expects."""
    script: str | None = None
    """CHECK_SCRIPT: a command keepalived runs as a vrrp_script (exit 0 = healthy)."""
    interval: float = 1.0
    """CHECK_INTERVAL: seconds between probes."""
    timeout: float = 1.0
    """CHECK_TIMEOUT: seconds before a probe that has not answered counts as failed."""
    rise: int = 2
    """CHECK_RISE: successes in a row before a failed service counts as healthy again."""
    fall: int = 2
    """CHECK_FALL: failures in a row before a healthy service counts as failed."""


@dataclass(frozen=True)
class Settings:
    """Everything the supervisor is told by its environment."""

    virtual_ips: tuple[VirtualAddress, ...] = ()
    """VIRTUAL_IP: one or more VIPs (comma or space separated, each ADDR or ADDR/PREFIX). Empty: no env instance."""
    vrid: int = 51
    """VRID: the VRRP virtual router id (1-255), the same on every node of one instance."""
    interface: str = "eth0"
    """INTERFACE: the interface that carries the VIP and the VRRP adverts."""
    priority: int = 100
    """PRIORITY: 1-254; the highest healthy node holds the VIP."""
    state: str = "BACKUP"
    """STATE: MASTER or BACKUP, the state keepalived starts in."""
    advert_int: float = 1.0
    """ADVERT_INT: seconds between adverts; sub-second needs VRRP v3."""
    vrrp_version: int = 3
    """VRRP_VERSION: 2 or 3; default 3, or 2 when AUTH_PASS is set (v3 has no authentication)."""
    auth_pass: Secret | None = None
    """AUTH_PASS: VRRP v2 PASS authentication, 1-8 characters. Never logged."""
    unicast_src_ip: IPAddress | None = None
    """UNICAST_SRC_IP: the source address of unicast adverts (defaults to the interface's address)."""
    unicast_peers: tuple[IPAddress, ...] = ()
    """UNICAST_PEERS: the other nodes' addresses; the node's own address is dropped from the list."""
    nopreempt: bool = False
    """NOPREEMPT: a recovered higher-priority node does not take the VIP back."""
    preempt_delay: float | None = None
    """PREEMPT_DELAY: seconds a higher-priority node waits before taking the VIP back."""
    check: CheckSettings = field(default_factory=CheckSettings)
    health_policy: str = "any"
    """HEALTH_POLICY: any (healthy while one fronted container answers) or all."""
    label_prefix: str = "keepalived."
    """LABEL_PREFIX: the prefix of container labels this supervisor reads."""
    label_selector: tuple[tuple[str, str], ...] = ()
    """LABEL_SELECTOR: key=value[,key=value]; only containers with all these labels are considered."""
    script_user: str = "keepalived_script"
    """SCRIPT_USER: the user keepalived runs CHECK_SCRIPT as (script security is always on)."""
    run_dir: Path = Path("/run/keepalived-supervisor")
    """RUN_DIR: where the rendered config, track files, FIFO, pid files and status live."""
    keepalived_bin: str = "keepalived"
    """KEEPALIVED_BIN: the keepalived executable."""
    reconcile_min_wait: float = 0.1
    """RECONCILE_MIN_WAIT: quiet time after a change before reconciling (debounce)."""
    reconcile_max_wait: float = 1.0
    """RECONCILE_MAX_WAIT: longest a burst of changes can delay a reconcile."""
    log_level: str = "INFO"
    """LOG_LEVEL: DEBUG, INFO, WARNING or ERROR."""
    settings_file: Path | None = None
    """SETTINGS_FILE: optional KEY=VALUE file overriding the environment, re-read on SIGHUP."""


def read_settings_file(path: Path) -> dict[str, str]:
    """Parse a KEY=VALUE file (blank lines and # comments ignored, optional quotes around values)."""
    values: dict[str, str] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        key, sep, value = stripped.partition("=")
        key = key.strip()
        if key.startswith("export "):
            key = key[len("export ") :].strip()
        if not sep or not key:
            raise SettingsError([f"SETTINGS_FILE {path}: line {number} is not KEY=VALUE"])
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        values[key] = value
    return values


class _Reader:
    """Reads variables one by one, collecting problems instead of stopping at the first."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env
        self.problems: list[str] = []

    def raw(self, name: str) -> str | None:
        value = self.env.get(name)
        if value is None or value.strip() == "":
            return None
        return value

    def get(self, name: str, parse: Callable[[str], T], default: T) -> T:
        raw = self.raw(name)
        if raw is None:
            return default
        try:
            return parse(raw)
        except InvalidValue as problem:
            self.fail(name, raw, str(problem))
            return default

    def fail(self, name: str, raw: str | None, expected: str) -> None:
        shown = "(value hidden)" if name in SECRET_VARIABLES or raw is None else repr(raw)
        self.problems.append(f"{name}={shown}: {expected}")


def _parse_state(raw: str) -> str:
    value = raw.strip().upper()
    if value not in {"MASTER", "BACKUP"}:
        raise InvalidValue("expected MASTER or BACKUP")
    return value


def _parse_auth_pass(raw: str) -> Secret:
    if len(raw) > 8:
        raise InvalidValue("expected 1 to 8 characters (keepalived uses only the first 8)")
    return Secret(parse_config_word(raw, "password"))


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


def _parse_path(raw: str) -> Path:
    text = parse_config_word(raw, "path")
    if not text.startswith("/"):
        raise InvalidValue("expected an absolute path")
    return Path(text)


def load_settings(environ: Mapping[str, str]) -> Settings:
    """Build validated settings from the environment (plus SETTINGS_FILE), or raise SettingsError."""
    env = dict(environ)
    settings_file: Path | None = None
    if env.get("SETTINGS_FILE", "").strip():
        settings_file = Path(env["SETTINGS_FILE"].strip())
        try:
            env.update(read_settings_file(settings_file))
        except OSError as error:
            raise SettingsError([f"SETTINGS_FILE={str(settings_file)!r}: cannot be read ({error.strerror})"]) from None

    read = _Reader(env)
    mask_raw = read.raw("VIRTUAL_MASK")
    default_prefix: int | None = read.get("VIRTUAL_MASK", lambda raw: parse_int(raw, 1, 128), None)
    vips: list[VirtualAddress] = []
    vip_raw = read.raw("VIRTUAL_IP")
    if vip_raw is not None:
        for item in split_list(vip_raw):
            try:
                vips.append(parse_vip(item, default_prefix))
            except InvalidValue as problem:
                read.fail("VIRTUAL_IP", item, str(problem))
    families = {vip.version for vip in vips}
    if len(families) > 1:
        read.fail("VIRTUAL_IP", vip_raw, "expected addresses of one family: one VRRP instance carries IPv4 or IPv6")
    if default_prefix is not None and mask_raw is not None and vips and 4 in families and default_prefix > 32:
        read.fail("VIRTUAL_MASK", mask_raw, "expected a prefix length from 1 to 32 for IPv4 virtual IPs")

    auth_pass = read.get("AUTH_PASS", _parse_auth_pass, None)
    version_default = 2 if auth_pass is not None else 3
    vrrp_version = read.get("VRRP_VERSION", lambda raw: parse_int(raw, 2, 3), version_default)
    advert_int = read.get("ADVERT_INT", lambda raw: parse_seconds(raw, 0.01, 255), 1.0)
    state = read.get("STATE", _parse_state, "BACKUP")
    nopreempt = read.get("NOPREEMPT", parse_bool, False)
    preempt_delay = read.get("PREEMPT_DELAY", lambda raw: parse_seconds(raw, 0, 1000), None)
    unicast_src_ip = read.get("UNICAST_SRC_IP", parse_ip, None)
    listed: tuple[IPAddress, ...] = read.get("UNICAST_PEERS", _parse_addresses, ())
    peers = tuple(dict.fromkeys(peer for peer in listed if peer != unicast_src_ip))

    _check_combinations(read, vips, vrrp_version, advert_int, auth_pass, state, nopreempt, preempt_delay)
    _check_families(read, vips, unicast_src_ip, peers)

    check = CheckSettings(
        port=read.get("CHECK_PORT", parse_port, None),
        ip=read.get("CHECK_IP", _parse_check_ip, None),
        http_path=read.get("CHECK_HTTP_PATH", parse_http_path, None),
        http_status=read.get("CHECK_HTTP_STATUS", lambda raw: parse_int(raw, 100, 599), 200),
        script=read.get("CHECK_SCRIPT", parse_command, None),
        interval=read.get("CHECK_INTERVAL", lambda raw: parse_seconds(raw, 0.05, 3600), 1.0),
        timeout=read.get("CHECK_TIMEOUT", lambda raw: parse_seconds(raw, 0.05, 600), 1.0),
        rise=read.get("CHECK_RISE", lambda raw: parse_int(raw, 1, 100), 2),
        fall=read.get("CHECK_FALL", lambda raw: parse_int(raw, 1, 100), 2),
    )
    if check.script is not None:
        for name, value in (("CHECK_INTERVAL", check.interval), ("CHECK_TIMEOUT", check.timeout)):
            if value != int(value) or value < 1:
                read.fail(
                    name,
                    read.raw(name),
                    "expected whole seconds (1 or more) with CHECK_SCRIPT: keepalived runs "
                    "scripts with one-second resolution",
                )
    if check.port is None:
        for dependent in ("CHECK_IP", "CHECK_HTTP_PATH"):
            if read.raw(dependent) is not None:
                read.fail(dependent, read.raw(dependent), "needs CHECK_PORT to be set too")

    reconcile_min_wait = read.get("RECONCILE_MIN_WAIT", lambda raw: parse_seconds(raw, 0, 60), 0.1)
    reconcile_max_wait = read.get("RECONCILE_MAX_WAIT", lambda raw: parse_seconds(raw, 0, 600), 1.0)
    if reconcile_max_wait < reconcile_min_wait:
        read.fail("RECONCILE_MAX_WAIT", read.raw("RECONCILE_MAX_WAIT"), "expected at least RECONCILE_MIN_WAIT")

    settings = Settings(
        virtual_ips=tuple(vips),
        vrid=read.get("VRID", lambda raw: parse_int(raw, 1, 255), 51),
        interface=read.get("INTERFACE", parse_interface, "eth0"),
        priority=read.get("PRIORITY", lambda raw: parse_int(raw, 1, 254), 100),
        state=state,
        advert_int=advert_int,
        vrrp_version=vrrp_version,
        auth_pass=auth_pass,
        unicast_src_ip=unicast_src_ip,
        unicast_peers=peers,
        nopreempt=nopreempt,
        preempt_delay=preempt_delay,
        check=check,
        health_policy=read.get("HEALTH_POLICY", _parse_policy, "any"),
        label_prefix=read.get("LABEL_PREFIX", parse_label_prefix, "keepalived."),
        label_selector=read.get("LABEL_SELECTOR", parse_selector, ()),
        script_user=read.get("SCRIPT_USER", lambda raw: parse_config_word(raw, "user name"), "keepalived_script"),
        run_dir=read.get("RUN_DIR", _parse_path, Path("/run/keepalived-supervisor")),
        keepalived_bin=read.get("KEEPALIVED_BIN", lambda raw: parse_config_word(raw, "program"), "keepalived"),
        reconcile_min_wait=reconcile_min_wait,
        reconcile_max_wait=reconcile_max_wait,
        log_level=read.get("LOG_LEVEL", _parse_log_level, "INFO"),
        settings_file=settings_file,
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
    if vrrp_version == 2:
        if any(vip.version == 6 for vip in vips):
            read.fail("VRRP_VERSION", read.raw("VRRP_VERSION"), "expected 3: IPv6 virtual IPs need VRRP version 3")
        if advert_int != int(advert_int):
            read.fail(
                "ADVERT_INT",
                read.raw("ADVERT_INT"),
                "expected whole seconds with VRRP v2 (sub-second needs VRRP_VERSION=3)",
            )
    else:
        if auth_pass is not None:
            read.fail("AUTH_PASS", None, "is only supported with VRRP_VERSION=2 (VRRP v3 has no authentication)")
        if advert_int > 40.95:
            read.fail("ADVERT_INT", read.raw("ADVERT_INT"), "expected at most 40.95 seconds with VRRP v3")
    if (nopreempt or preempt_delay is not None) and state == "MASTER":
        read.fail(
            "STATE",
            read.raw("STATE"),
            "expected BACKUP when NOPREEMPT or PREEMPT_DELAY is set (keepalived needs it)",
        )
    if nopreempt and preempt_delay is not None:
        read.fail("PREEMPT_DELAY", read.raw("PREEMPT_DELAY"), "cannot be combined with NOPREEMPT=true")


def _check_families(
    read: _Reader, vips: list[VirtualAddress], src: IPAddress | None, peers: tuple[IPAddress, ...]
) -> None:
    if not vips:
        return
    family = vips[0].version
    if src is not None and src.version != family:
        read.fail("UNICAST_SRC_IP", str(src), f"expected an IPv{family} address like the virtual IPs")
    wrong = [str(peer) for peer in peers if peer.version != family]
    if wrong:
        read.fail("UNICAST_PEERS", ",".join(wrong), f"expected IPv{family} addresses like the virtual IPs")
