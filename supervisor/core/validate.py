"""Small pure parsers shared by settings (env vars) and labels (container labels).

Every value that ends up in keepalived.conf passes through one of these first. Each parser returns the typed
value or raises ``InvalidValue`` with a sentence saying what form was expected; the caller adds which variable
or label it was. Nothing here echoes a secret: callers decide whether the raw value may be shown.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class InvalidValue(ValueError):
    """A value does not have the expected form; the message says which form was expected."""


# Linux accepts almost any byte in an interface name; keepalived.conf does not. We accept what real systems
# use (eth0, ens3, bond0.100, br-lan, veth1a2b, wlp2s0, eno1np0) and nothing that could break the config.
_INTERFACE_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,14}$")
# Characters that would end a keepalived token, open/close a block, start a comment or a quoted string.
_CONFIG_METACHARS = frozenset("\n\r\t \"'{}#!\\;")
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off", ""})


def parse_bool(raw: str) -> bool:
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise InvalidValue("expected true or false (also accepted: 1/0, yes/no, on/off)")


def parse_int(raw: str, low: int, high: int) -> int:
    text = raw.strip()
    if not re.fullmatch(r"[+-]?\d+", text):
        raise InvalidValue(f"expected a whole number from {low} to {high}")
    value = int(text)
    if not low <= value <= high:
        raise InvalidValue(f"expected a whole number from {low} to {high}")
    return value


def parse_seconds(raw: str, low: float, high: float) -> float:
    text = raw.strip()
    if not re.fullmatch(r"\d+(\.\d+)?|\.\d+", text):
        raise InvalidValue(f"expected a number of seconds from {low:g} to {high:g}, like 1 or 0.5")
    value = float(text)
    if not low <= value <= high:
        raise InvalidValue(f"expected a number of seconds from {low:g} to {high:g}, like 1 or 0.5")
    return value


def parse_ip(raw: str) -> IPAddress:
    text = raw.strip()
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        raise InvalidValue("expected an IPv4 address like 10.0.0.208 or an IPv6 address like fd00::10") from None
    if "%" in text:
        raise InvalidValue("expected an address without a %zone suffix")
    return address


@dataclass(frozen=True, order=True)
class VirtualAddress:
    """A VIP: an address with its prefix length (what `ip addr add` would be given)."""

    address: IPAddress
    prefix: int

    @property
    def version(self) -> int:
        return self.address.version

    def __str__(self) -> str:
        return f"{self.address}/{self.prefix}"


def parse_vip(raw: str, default_prefix: int | None) -> VirtualAddress:
    """Parse `ADDR` or `ADDR/PREFIX`; without a prefix use `default_prefix` (or the host prefix)."""
    text = raw.strip()
    address_text, sep, prefix_text = text.partition("/")
    address = parse_ip(address_text)
    if address.is_loopback or address.is_multicast or address.is_unspecified or address.is_link_local:
        raise InvalidValue(
            "expected a unicast address usable as a virtual IP (not loopback, multicast, link-local or unspecified)"
        )
    max_prefix = 32 if address.version == 4 else 128
    if sep:
        prefix = parse_prefix(prefix_text, address.version)
    elif default_prefix is not None and default_prefix <= max_prefix:
        prefix = default_prefix
    else:
        prefix = max_prefix
    return VirtualAddress(address, prefix)


def parse_prefix(raw: str, version: int) -> int:
    max_prefix = 32 if version == 4 else 128
    try:
        return parse_int(raw, 1, max_prefix)
    except InvalidValue:
        raise InvalidValue(f"expected a prefix length from 1 to {max_prefix} for IPv{version}") from None


def parse_interface(raw: str) -> str:
    text = raw.strip()
    if not _INTERFACE_RE.fullmatch(text) or text in {".", ".."}:
        raise InvalidValue(
            "expected a Linux interface name of 1 to 15 letters, digits, '_', '-' or '.', like eth0, ens3, "
            "bond0.100 or br-lan"
        )
    return text


def parse_port(raw: str) -> int:
    try:
        return parse_int(raw, 1, 65535)
    except InvalidValue:
        raise InvalidValue("expected a TCP port number from 1 to 65535") from None


def split_list(raw: str) -> list[str]:
    """Split a comma- or whitespace-separated list, dropping empty items."""
    return [item for item in re.split(r"[,\s]+", raw.strip()) if item]


def parse_config_word(raw: str, what: str) -> str:
    """A free-form value that will be written into keepalived.conf: no quotes, braces, comments or newlines."""
    text = raw.strip()
    if not text:
        raise InvalidValue(f"expected a non-empty {what}")
    bad = sorted({repr(ch) for ch in text if ch in _CONFIG_METACHARS or not ch.isprintable()})
    if bad:
        raise InvalidValue(f"expected a {what} without these characters: {', '.join(bad)}")
    return text


def parse_command(raw: str) -> str:
    """A CHECK_SCRIPT command line: an absolute program path and plain arguments, one line, no quotes."""
    text = raw.strip()
    if not text:
        raise InvalidValue("expected a command like /usr/local/bin/check-haproxy.sh --port 80")
    bad = sorted({repr(ch) for ch in text if ch in "\n\r\"'{}#!\\" or not ch.isprintable()})
    if bad:
        raise InvalidValue(
            f"expected a one-line command without quotes, braces, comments or backslashes; found {', '.join(bad)}"
        )
    if not text.startswith("/"):
        raise InvalidValue("expected the command to start with an absolute path, like /usr/local/bin/check.sh")
    return text


def parse_http_path(raw: str) -> str:
    text = raw.strip()
    if not text.startswith("/") or any(ch.isspace() or not ch.isprintable() for ch in text):
        raise InvalidValue("expected an HTTP path starting with '/', without spaces, like /healthz")
    return text


def parse_selector(raw: str) -> tuple[tuple[str, str], ...]:
    """Parse `key=value[,key=value]` into sorted pairs."""
    pairs: list[tuple[str, str]] = []
    for item in filter(None, (part.strip() for part in raw.split(","))):
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key or not re.fullmatch(r"[A-Za-z0-9._/-]+", key):
            raise InvalidValue("expected key=value pairs separated by commas, like host=node-a,tier=edge")
        pairs.append((key, value.strip()))
    return tuple(sorted(pairs))


def parse_label_prefix(raw: str) -> str:
    text = raw.strip()
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._/-]*", text):
        raise InvalidValue("expected a label prefix of letters, digits, '.', '_', '-' or '/', like keepalived.")
    return text
