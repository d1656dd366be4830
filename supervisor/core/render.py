"""Desired state -> keepalived.conf text, through the Jinja2 template in templates/.

Pure and deterministic: the same state gives the same bytes, so the apply step can compare bytes to decide whether
keepalived needs a reload. Every value was validated when it entered the model; as a last line of defence the
rendered text is checked for what keepalived would reinterpret: a line of 1000 bytes or more (keepalived splits it),
a `$` (keepalived expands it) or a control character.
"""

from __future__ import annotations

from functools import cache

import jinja2

from supervisor.core.model import DesiredState


def format_seconds(value: float) -> str:
    """Seconds as keepalived reads them: `1`, `0.5`, `2.25` (no trailing zeros, no exponent)."""
    text = f"{value:.6f}".rstrip("0").rstrip(".")
    return text or "0"


@cache
def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("supervisor.core", "templates"),
        undefined=jinja2.StrictUndefined,
        autoescape=False,  # noqa: S701 - the output is keepalived.conf, not HTML; values are validated
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["seconds"] = format_seconds
    return env


class UnsafeConfig(ValueError):
    """The rendered text holds something keepalived would reinterpret; a validation upstream let it through."""


MAX_LINE_BYTES = 999


def check_text(text: str) -> None:
    """Raise UnsafeConfig when a line is too long for keepalived, or holds a `$` or a control character."""
    for number, line in enumerate(text.split("\n"), start=1):
        if len(line.encode()) > MAX_LINE_BYTES:
            raise UnsafeConfig(f"rendered line {number} has {len(line.encode())} bytes; keepalived splits at 1000")
        if "$" in line or any(ord(ch) < 32 and ch != "\t" for ch in line):
            raise UnsafeConfig(f"rendered line {number} holds a '$' or a control character")


def render(state: DesiredState) -> str:
    """Render keepalived.conf for the desired state (checked by `check_text`)."""
    text = _environment().get_template("keepalived.conf.j2").render(state=state)
    check_text(text)
    return text
