"""LOG_FORMAT=json: one object per line with fixed keys; text stays readable."""

from __future__ import annotations

import json
import logging

import pytest

from supervisor.adapters.logs import JsonFormatter, configure_logging


def test_json_lines_parse_with_the_fixed_keys(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("INFO", "json")
    logging.getLogger("supervisor.app").info(
        "web1 died -> VI_51 FAULT", extra={"instance": "VI_51", "container": "web1"}
    )
    logging.getLogger("keepalived").warning('(VI_51) Entering "FAULT" STATE')
    try:
        raise ValueError("boom")
    except ValueError:
        logging.getLogger("supervisor.app").exception("a step failed")
    lines = capsys.readouterr().err.strip().splitlines()
    entries = [json.loads(line) for line in lines]
    assert [e["source"] for e in entries] == ["app", "keepalived", "app"]
    assert entries[0]["event"] == "web1 died -> VI_51 FAULT"
    assert entries[0]["instance"] == "VI_51" and entries[0]["container"] == "web1"
    assert set(entries[1]) == {"time", "level", "source", "event"}
    assert "ValueError: boom" in entries[2]["exception"]
    configure_logging("INFO", "text")


def test_formatter_handles_arguments() -> None:
    record = logging.LogRecord("supervisor.x", logging.INFO, __file__, 1, "%s is %d", ("a", 3), None)
    assert json.loads(JsonFormatter().format(record))["event"] == "a is 3"
