"""The CLI's exit codes and messages, without an engine (DOCKER_HOST points nowhere)."""

from __future__ import annotations

from pathlib import Path

import pytest

from supervisor.cli import main


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("VIRTUAL_IP", "VRID", "INTERFACE", "CHECK_SCRIPT", "AUTH_PASS", "SETTINGS_FILE", "LABEL_SELECTOR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-engine.sock")
    monkeypatch.setenv("RUN_DIR", str(tmp_path / "run"))


def test_check_lists_every_problem_and_exits_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("VRID", "300")
    monkeypatch.setenv("INTERFACE", "eth0 {")
    monkeypatch.setenv("AUTH_PASS", "toolongpassword")
    assert main(["check"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 3 and {line.split("=")[0] for line in err} == {"VRID", "INTERFACE", "AUTH_PASS"}
    assert "toolongpassword" not in "\n".join(err)


def test_check_ok(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("VIRTUAL_IP", "10.0.0.208")
    assert main(["check"]) == 0
    assert "configuration ok" in capsys.readouterr().out


def test_check_reports_a_missing_check_script(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CHECK_SCRIPT", "/nonexistent/check.sh")
    monkeypatch.setenv("SCRIPT_USER", "root")
    assert main(["check"]) == 2
    assert "CHECK_SCRIPT='/nonexistent/check.sh': /nonexistent/check.sh does not exist" in capsys.readouterr().err


def test_render_from_environment_alone(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("VIRTUAL_IP", "10.0.0.208")
    assert main(["render"]) == 0
    captured = capsys.readouterr()
    assert "10.0.0.208/32 dev eth0" in captured.out
    assert "rendering from the environment alone" in captured.err


def test_status_without_a_running_supervisor(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["status"]) == 3
    assert "supervisor not running" in capsys.readouterr().err
