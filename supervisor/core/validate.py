"""Small pure parsers shared by settings (env vars) and labels (container labels).

Every value that ends up in keepalived.conf passes through one of these first. Each parser returns the typed
value or raises ``InvalidValue`` with a sentence saying what form was expected; the caller adds which variable
or label it was. Nothing here echoes a secret: callers decide whether the raw value may be shown.

keepalived's config parser has three traps these parsers keep values out of:

- it expands ``$NAME``, ``${NAME}`` and built-ins like ``$_RANDOM`` anywhere in a line, quoted or not, so no value
  that reaches the config may hold a ``$``;
- it splits a line longer than its buffer (about 1000 bytes), so every free-form value is bounded in bytes, well
  below that once the keyword and indentation are added (``MAX_WORD_BYTES``, ``MAX_PATH_BYTES``,
  ``MAX_COMMAND_BYTES``);
- it expands glob patterns in the path given to ``-f``, so paths hold no ``*?[]``.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

MAX_WORD_BYTES = 255
"""A single config word (user name, program name, password before its own 8-byte limit)."""
MAX_PATH_BYTES = 255
"""An absolute path (RUN_DIR, KEEPALIVED_BIN); rendered inside `vrrp_notify_fifo "..."` and `file "..."` lines."""
MAX_COMMAND_BYTES = 512
"""A CHECK_SCRIPT command line, rendered as `script "..."`."""
MAX_HTTP_PATH_BYTES = 255
"""An HTTP path probed by the supervisor."""
MAX_SELECTOR_BYTES = 1024
"""A LABEL_SELECTOR (never rendered, but bounded all the same)."""
MAX_NUMBER_CHARS = 32
"""Digits (and sign, point) of a number: far more than any range here needs, far below Python's int limit."""


class InvalidValue(ValueError):
    """A value does not have the expected form; the message says which form was expected."""


# Linux accepts almost any byte in an interface name; keepalived.conf does not. We accept what real systems
# use (eth0, ens3, bond0.100, br-lan, veth1a2b, wlp2s0, eno1np0) and nothing that could break the config.
_INTERFACE_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,14}")
# Characters that would end a keepalived token, open/close a block, start a comment or a quoted string, or start
# a parameter expansion ($).
_CONFIG_METACHARS = frozenset("\n\r\t \"'{}#!\\;$")
# What a CHECK_SCRIPT may not hold: it is one quoted string, so spaces and ';' are fine there.
_COMMAND_METACHARS = frozenset("\n\r\"'{}#!\\$")
_GLOB_CHARS = frozenset("*?[]")
# ASCII only: str.isdigit() and \d also accept other scripts' digits, which int() and float() then take.
_INT_RE = re.compile(r"[+-]?[0-9]+")
_SECONDS_RE = re.compile(r"[0-9]+(?:\.[0-9]+)?|\.[0-9]+")
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off", ""})


def byte_length(text: str) -> int:
    """Length in bytes as keepalived will read it (UTF-8; a lone surrogate, never valid anyway, counts 3)."""
    return len(text.encode("utf-8", "surrogatepass"))


def parse_bool(raw: str) -> bool:
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise InvalidValue("expected true or false (also accepted: 1/0, yes/no, on/off)")


def parse_int(raw: str, low: int, high: int) -> int:
    """A whole number in [low, high], written with ASCII digits (at most MAX_NUMBER_CHARS characters)."""
    text = raw.strip()
    if len(text) > MAX_NUMBER_CHARS or not _INT_RE.fullmatch(text):
        raise InvalidValue(f"expected a whole number from {low} to {high}")
    value = int(text)
    if not low <= value <= high:
        raise InvalidValue(f"expected a whole number from {low} to {high}")
    return value


def parse_seconds(raw: str, low: float, high: float) -> float:
    """A non-negative decimal number of seconds in [low, high], ASCII digits only (at most MAX_NUMBER_CHARS)."""
    text = raw.strip()
    expected = f"expected a number of seconds from {low:g} to {high:g}, like 1 or 0.5"
    if len(text) > MAX_NUMBER_CHARS or not _SECONDS_RE.fullmatch(text):
        raise InvalidValue(expected)
    value = float(text)
    if not low <= value <= high:
        raise InvalidValue(expected)
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


def _found(text: str, forbidden: frozenset[str]) -> str:
    """The forbidden or unprintable characters of a (non-secret) value, for the message."""
    return ", ".join(sorted({repr(ch) for ch in text if ch in forbidden or not ch.isprintable()}))


def _check_bytes(text: str, what: str, max_bytes: int) -> None:
    if byte_length(text) > max_bytes:
        raise InvalidValue(
            f"expected a {what} of at most {max_bytes} bytes (keepalived splits config lines of 1000 bytes or more)"
        )


def parse_config_word(raw: str, what: str, max_bytes: int = MAX_WORD_BYTES) -> str:
    """A free-form value written into keepalived.conf as one word: no quotes, braces, comments, '$' or newlines.

    At most `max_bytes` bytes of UTF-8 (MAX_WORD_BYTES unless told).
    """
    text = raw.strip()
    if not text:
        raise InvalidValue(f"expected a non-empty {what}")
    bad = _found(text, _CONFIG_METACHARS)
    if bad:
        raise InvalidValue(f"expected a {what} without these characters: {bad}")
    _check_bytes(text, what, max_bytes)
    return text


def parse_path(raw: str, what: str = "path", max_bytes: int = MAX_PATH_BYTES) -> str:
    """An absolute path written into keepalived.conf or given to keepalived: a config word without glob characters."""
    text = parse_config_word(raw, what, max_bytes)
    if not text.startswith("/"):
        raise InvalidValue(f"expected an absolute {what}")
    bad = _found(text, _GLOB_CHARS)
    if bad:
        raise InvalidValue(f"expected a {what} without glob characters (keepalived expands them): found {bad}")
    return text


def parse_command(raw: str) -> str:
    """A CHECK_SCRIPT command line: an absolute program path and plain arguments, one line, no quotes or '$'.

    At most MAX_COMMAND_BYTES bytes of UTF-8.
    """
    text = raw.strip()
    if not text:
        raise InvalidValue("expected a command like /usr/local/bin/check-haproxy.sh --port 80")
    bad = _found(text, _COMMAND_METACHARS)
    if bad:
        raise InvalidValue(
            f"expected a one-line command without quotes, braces, comments, backslashes or '$'; found {bad}"
        )
    if not text.startswith("/"):
        raise InvalidValue("expected the command to start with an absolute path, like /usr/local/bin/check.sh")
    _check_bytes(text, "command", MAX_COMMAND_BYTES)
    return text


def parse_http_path(raw: str) -> str:
    """An HTTP path: printable ASCII starting with '/', no spaces, quotes, braces, '#', '!', '\\', ';' or '$'."""
    text = raw.strip()
    if (
        not text.startswith("/")
        or not text.isascii()
        or any(ch in _CONFIG_METACHARS or not ch.isprintable() for ch in text)
    ):
        raise InvalidValue(
            "expected an HTTP path starting with '/' of printable ASCII without spaces, quotes, braces, '#', '!', "
            "'\\', ';' or '$', like /healthz"
        )
    _check_bytes(text, "HTTP path", MAX_HTTP_PATH_BYTES)
    return text


def parse_selector(raw: str) -> tuple[tuple[str, str], ...]:
    """Parse `key=value[,key=value]` into sorted pairs (at most MAX_SELECTOR_BYTES bytes in all)."""
    if byte_length(raw.strip()) > MAX_SELECTOR_BYTES:
        raise InvalidValue(f"expected key=value pairs of at most {MAX_SELECTOR_BYTES} bytes in all")
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
    if len(text) > MAX_WORD_BYTES or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._/-]*", text):
        raise InvalidValue(
            f"expected a label prefix of at most {MAX_WORD_BYTES} letters, digits, '.', '_', '-' or '/', "
            "like keepalived."
        )
    return text


LOG_FORMATS = ("text", "json")


def parse_log_format(raw: str) -> str:
    value = raw.strip().lower()
    if value not in LOG_FORMATS:
        raise InvalidValue("expected text or json")
    return value


_LISTEN_EXPECTED = (
    "expected HOST:PORT with an IPv4 address, an [IPv6] address or no host (every address) and a port from 1 to "
    "65535, like 0.0.0.0:9655, [::]:9655 or :9655"
)


def parse_listen_address(raw: str) -> str:
    """`HOST:PORT` to listen on: IPv4, `[IPv6]` or an empty host (every address); returned normalised.

    ``split_listen_address`` takes the result apart again.
    """
    text = raw.strip()
    host, sep, port_text = text.rpartition(":")
    if not sep or "%" in host:
        raise InvalidValue(_LISTEN_EXPECTED)
    try:
        port = parse_port(port_text)
        if host.startswith("[") and host.endswith("]"):
            shown = f"[{ipaddress.IPv6Address(host[1:-1])}]"
        elif host:
            shown = str(ipaddress.IPv4Address(host))
        else:
            shown = ""
    except (InvalidValue, ValueError):
        raise InvalidValue(_LISTEN_EXPECTED) from None
    return f"{shown}:{port}"


def split_listen_address(text: str) -> tuple[str, int]:
    """A value of ``parse_listen_address`` -> (host for bind(): "" for every address, IPv6 without brackets; port)."""
    host, _, port = text.rpartition(":")
    return host.strip("[]"), int(port)


MAX_URL_BYTES = 1024
"""An HTTP URL the supervisor fetches (RANCHER_METADATA_URL); never rendered."""
_HTTP_URL_RE = re.compile(
    r"http://(?P<host>[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?|\[[0-9A-Fa-f:.]+\])(?::(?P<port>[0-9]{1,5}))?"
    r"(?P<path>(?:/(?:[A-Za-z0-9._~!&()*+,;=:@-]|%[0-9A-Fa-f]{2})*)*)"
)


def parse_http_url(raw: str) -> str:
    """An `http://HOST[:PORT][/PATH]` URL: a name, IPv4 or [IPv6] host, no user, query or fragment, no spaces,
    quotes, backslashes or '$'. A trailing '/' is dropped, so paths can be appended."""
    text = raw.strip()
    expected = (
        "expected an http:// URL like http://rancher-metadata/2015-12-19: a host name or address, an optional port "
        "and path, without spaces, quotes, backslashes, '$', a query or a fragment"
    )
    match = _HTTP_URL_RE.fullmatch(text) if byte_length(text) <= MAX_URL_BYTES else None
    if match is None:
        raise InvalidValue(expected)
    host, port = match.group("host"), match.group("port")
    try:
        if host.startswith("["):
            ipaddress.IPv6Address(host[1:-1])
        if port is not None:
            parse_port(port)
    except (InvalidValue, ValueError):
        raise InvalidValue(expected) from None
    return text.rstrip("/")


# --- osixia/keepalived's variables ---------------------------------------------------------------------------------
# osixia/keepalived (built on osixia/light-baseimage) took lists as `#PYTHON2BASH:['a', 'b']` (a Python list of
# strings), `#JSON2BASH:["a", "b"]` (a JSON array of strings) or a plain list; each item of KEEPALIVED_VIRTUAL_IPS
# went verbatim into keepalived's virtual_ipaddress block, so it may carry ` dev IFACE`.

MAX_LIST_BYTES = 4096
"""An osixia list (KEEPALIVED_VIRTUAL_IPS, KEEPALIVED_UNICAST_PEERS)."""
OSIXIA_LIST_EXPECTED = (
    "expected a list like #PYTHON2BASH:['192.168.1.231', '192.168.1.232'], #JSON2BASH:[\"192.168.1.231\"] or "
    "192.168.1.231,192.168.1.232"
)
_PYTHON_ITEM = r"'[^'\\\n\r]*'|\"[^\"\\\n\r]*\""
_JSON_ITEM = r"\"[^\"\\\n\r]*\""


def _list_re(item: str, trailing_comma: str) -> re.Pattern[str]:
    return re.compile(rf"\s*\[\s*(?:(?:{item})\s*(?:,\s*(?:{item})\s*)*{trailing_comma}\s*)?\]\s*")


_LIST_FORMS = {  # tag -> (the whole list, one item); Python allows a trailing comma, JSON does not
    "#PYTHON2BASH:": (_list_re(_PYTHON_ITEM, ",?"), re.compile(_PYTHON_ITEM)),
    "#JSON2BASH:": (_list_re(_JSON_ITEM, ""), re.compile(_JSON_ITEM)),
}


def parse_osixia_list(raw: str) -> list[str]:
    """osixia's list forms -> items (one address each, possibly followed by `dev IFACE`).

    In a plain list, items are separated by commas or whitespace, and `dev IFACE` belongs to the address before it.
    """
    text = raw.strip()
    if byte_length(text) > MAX_LIST_BYTES:
        raise InvalidValue(f"expected a list of at most {MAX_LIST_BYTES} bytes")
    for tag, (whole, item) in _LIST_FORMS.items():
        if text.startswith(tag):
            body = text[len(tag) :]
            if not whole.fullmatch(body):
                raise InvalidValue(OSIXIA_LIST_EXPECTED)
            return [found[1:-1].strip() for found in item.findall(body)]
    if text.startswith("#") or any(ch in text for ch in "[]'\""):
        raise InvalidValue(OSIXIA_LIST_EXPECTED)
    items: list[str] = []
    for chunk in text.split(","):
        words = chunk.split()
        while words:
            if words[0] == "dev":
                raise InvalidValue(f"{OSIXIA_LIST_EXPECTED}; `dev IFACE` follows an address")
            take = 3 if len(words) >= 2 and words[1] == "dev" else 1
            if len(words) < take:
                raise InvalidValue(f"{OSIXIA_LIST_EXPECTED}; `dev` needs an interface name")
            items.append(" ".join(words[:take]))
            words = words[take:]
    return items


def parse_osixia_vip(item: str, interface: str) -> str:
    """`ADDR[/PREFIX][ dev IFACE]` -> `ADDR[/PREFIX]` (checked later as a VIRTUAL_IP item); IFACE must be `interface`,
    the instance's interface, where every VIP goes."""
    words = item.split()
    if len(words) == 3 and words[1] == "dev":
        if words[2] != interface:
            raise InvalidValue(
                f"expected every address on the instance's interface {interface} (INTERFACE): found dev {words[2]}"
            )
        words = words[:1]
    if len(words) != 1 or "," in words[0]:
        raise InvalidValue("expected items of the form ADDR, ADDR/PREFIX or ADDR dev IFACE")
    return words[0]


def parse_osixia_peer(item: str) -> str:
    """One unicast peer: a single address (checked later as a UNICAST_PEERS item)."""
    words = item.split()
    if len(words) != 1 or "," in words[0]:
        raise InvalidValue("expected items that are one address each")
    return words[0]
