"""Each setting is described once, in SETTING_SPECS; README.md's configuration table must say the same."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from supervisor.core import settings as settings_module
from supervisor.core.settings import SETTING_SPECS, SettingSpec
from supervisor.core.validate import InvalidValue

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
SETTINGS_SOURCE = Path(settings_module.__file__)
# Variables the README lists that the supervisor itself never reads.
NOT_OURS = {"DOCKER_HOST": "read by docker-py (docker.from_env), not by the supervisor"}
# Defaults that README.md describes in words because they depend on other settings.
DERIVED_DEFAULTS = {"VIRTUAL_MASK": "the address family's host prefix"}

_NAME = r"`[A-Z][A-Z0-9_]*`"
_ROW = re.compile(rf"\|\s*({_NAME}(?:\s*,\s*{_NAME})*)\s*\|([^|]*)\|([^|]*)\|")


def readme_rows() -> list[tuple[list[str], str, str]]:
    """(names, default, meaning) of each `| `NAME` | default | meaning |` row of the configuration table."""
    text = README.read_text(encoding="utf-8")
    section = text.split("## Configuration (environment)", 1)[1].split("\n## ", 1)[0]
    rows: list[tuple[list[str], str, str]] = []
    for line in section.splitlines():
        match = _ROW.fullmatch(line.strip())
        if match:
            names = re.findall(r"`([A-Z][A-Z0-9_]*)`", match.group(1))
            rows.append((names, match.group(2).strip(), match.group(3).strip()))
    return rows


def by_name() -> dict[str, SettingSpec[object]]:
    return {spec.name: spec for spec in SETTING_SPECS}


def test_the_readme_table_is_found() -> None:
    rows = readme_rows()
    assert len(rows) >= 20, rows
    assert any(len(names) == 2 for names, _, _ in rows), "merged rows like CHECK_INTERVAL, CHECK_TIMEOUT are parsed"


def test_readme_lists_exactly_the_settings_in_the_same_order() -> None:
    listed = [name for names, _, _ in readme_rows() for name in names if name not in NOT_OURS]
    assert len(listed) == len(set(listed)), "a variable appears twice in the README table"
    assert listed == [spec.name for spec in SETTING_SPECS]
    assert set(NOT_OURS) <= {name for names, _, _ in readme_rows() for name in names}


def test_readme_defaults_and_meanings_are_the_specs() -> None:
    specs = by_name()
    for names, default, meaning in readme_rows():
        if set(names) & set(NOT_OURS):
            continue
        assert default == ", ".join(specs[name].default_text for name in names), names
        assert meaning == "; ".join(specs[name].doc for name in names), names


def test_spec_names_are_unique_and_match_their_constants() -> None:
    names = [spec.name for spec in SETTING_SPECS]
    assert len(names) == len(set(names))
    constants = {attr: value for attr, value in vars(settings_module).items() if isinstance(value, SettingSpec)}
    assert {attr for attr in constants} == set(names)
    assert all(value.name == attr for attr, value in constants.items())
    assert set(NOT_OURS).isdisjoint(names)


@pytest.mark.parametrize("spec", SETTING_SPECS, ids=[spec.name for spec in SETTING_SPECS])
def test_default_text_agrees_with_default_value(spec: SettingSpec[object]) -> None:
    text = spec.default_text.replace("`", "")
    if spec.name in DERIVED_DEFAULTS:
        return
    if text.startswith("none") or text == "interface address":
        assert spec.default in (None, ()), spec
        return
    try:
        parsed = spec.parse(text.split(" (")[0])
    except InvalidValue:  # pragma: no cover - reported by the assertion
        pytest.fail(f"{spec.name}: default text {spec.default_text!r} does not parse")
    assert parsed == spec.default, spec


def names_read_by_the_source() -> set[str]:
    """Every variable settings.py reads: read.get/raw/... of a spec constant or a quoted name, env[...] lookups."""
    source = SETTINGS_SOURCE.read_text(encoding="utf-8")
    found: set[str] = set()
    pattern = r"(?:\bread|\b_Reader\(\w+\))\.(?:get|get_or|raw|is_set|fail|fail_set)\(\s*\[?\s*\"?([A-Z][A-Z0-9_]*)\b"
    for token in re.findall(pattern, source):
        value = getattr(settings_module, token, None)
        found.add(value.name if isinstance(value, SettingSpec) else token)
    found.update(re.findall(r"\b(?:env|environ)(?:\.get\(|\[)\s*\"([A-Z][A-Z0-9_]*)\"", source))
    return found


def test_every_variable_load_settings_reads_is_in_setting_specs() -> None:
    found = names_read_by_the_source()
    assert {"VRID", "VIRTUAL_IP", "SETTINGS_FILE", "CHECK_SCRIPT"} <= found, found
    assert found <= set(by_name()), found - set(by_name())
    assert set(by_name()) <= found, set(by_name()) - found
