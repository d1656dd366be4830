"""bench.report: goals judged right, missed goals said plainly, every fault listed, drift caught, gaps tolerated."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from bench import report

EXAMPLE = Path(report.__file__).resolve().parent / "results.example.json"

README_TEXT = """# project

## Measured

<!-- bench:begin -->
old table
<!-- bench:end -->

## Development
"""


@pytest.fixture
def results() -> dict[str, Any]:
    return report.load(EXAMPLE)


def by_name(goals: list[report.Goal], start: str) -> report.Goal:
    [goal] = [goal for goal in goals if goal.name.startswith(start)]
    return goal


def test_goals_from_the_example(results: dict[str, Any]) -> None:
    goals = report.goals(results)
    met = {goal.name: goal.met for goal in goals}
    assert all(value is not None for value in met.values()), met
    missed = {name for name, value in met.items() if value is False}
    assert missed == {
        "host lost (master's network cut), advert 0.2 s",  # 800 ms against a 640 ms bound
        "200 labelled containers started and removed at once",  # 17 reloads
        "supervisor CPU when idle with 50 labelled containers",  # 0.4 %
    }
    assert by_name(goals, "`docker kill`").figure == "p50 24 ms, p95 41 ms (20 runs)"
    ratio = by_name(goals, "the same against the old image's polling")
    assert ratio.met is True and ratio.figure.startswith("110x")  # 2630 / 24
    assert by_name(goals, "host lost (master's network cut), advert 1 s").met is True  # 3150 <= 3020 * 1.1
    assert by_name(goals, "Docker event").figure.startswith("p50 138 ms")  # config_p50, not the overall p50


@pytest.mark.parametrize(
    ("path", "value", "goal_start"),
    [
        (("service_death_ms", "ours", "p95"), 51, "`docker kill`"),
        (("service_death_ms", "polling", "p50"), 24 * 49, "the same against the old image's polling"),
        (("service_death_ms", "advert_0.1", "p50"), 16, "the same with advert 0.1"),
        (("graceful_ms", "p50"), 51, "`docker stop`"),
        (("convergence_ms", "config_p50"), 201, "Docker event"),
        (("storm", "exact"), False, "200 labelled"),
        (("storm", "die_after_burst_ms"), 1001, "front end killed right after"),
        (("reload_quiet", "transitions"), 1, "50 config reloads"),
        (("reload_quiet", "failed_connects"), 2, "50 config reloads"),
        (("footprint", "rss_mb"), 61, "supervisor resident memory"),
    ],
)
def test_each_limit_is_judged(results: dict[str, Any], path: tuple[str, ...], value: Any, goal_start: str) -> None:
    assert by_name(report.goals(results), goal_start).met in (True, False)
    node = results
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    assert by_name(report.goals(results), goal_start).met is False


def test_a_missed_goal_is_said_plainly(results: dict[str, Any]) -> None:
    table = report.readme_table(results)
    cpu_row = next(line for line in table.splitlines() if "CPU when idle" in line)
    assert cpu_row.endswith("| missed |")
    rss_row = next(line for line in table.splitlines() if "resident memory" in line)
    assert rss_row.endswith("| yes |")
    assert "(20 runs)" in table
    assert "`python -m bench.run_all`" in table and "2000-01-01" in table


def test_the_doc_lists_every_fault_case(results: dict[str, Any]) -> None:
    doc = report.reliability_doc(results)
    assert "python -m bench.report" in doc and "bench/results.json" in doc and "by hand" in doc
    for case, fault in results["faults"].items():
        [row] = [line for line in doc.splitlines() if line.startswith(f"| `{case}` |")]
        assert (
            f"| {fault['runs']} | {fault['survived']} | {fault['duplicate_samples']} | {fault['lost_changes']} |" in row
        )
        assert fault["result"] in row
    assert r"braces \| pipes" in doc  # a pipe in a cell does not break the table
    assert report.readme_table(results).split("\n\n")[0].splitlines()[2] in doc  # the performance table too


def test_missing_optional_keys_read_not_measured(results: dict[str, Any]) -> None:
    sparse = {"meta": {}, "service_death_ms": {"ours": {"p50": 20}}, "storm": {"reloads": 3}, "extra": [1, 2]}
    goals = report.goals(sparse)
    assert by_name(goals, "`docker kill`").met is None  # p50 met, p95 unknown: not claimed
    assert by_name(goals, "`docker kill`").figure == "p50 20 ms"
    assert by_name(goals, "labelled containers").met is None  # reloads fine, exactness unknown
    assert by_name(goals, "`docker stop`").figure == "not measured"
    assert {g.name for g in goals if g.name.startswith("host lost")} == {
        "host lost (master's network cut), advert 1 s",
        "host lost (master's network cut), advert 0.2 s",
    }
    for text in (report.readme_table(sparse), report.reliability_doc(sparse), report.reliability_doc({})):
        assert "not measured" in text
    assert "| missed |" not in report.readme_table({})


def test_odd_values_are_tolerated(results: dict[str, Any]) -> None:
    odd = copy.deepcopy(results)
    odd["service_death_ms"]["no_check_failing_ms"] = 9800
    odd["return_ms"] = 1200
    odd["cold_start_ms"] = {"p50": 4900, "n": 3}
    odd["graceful_ms"] = None
    odd["footprint"]["rss_mb"] = "44"  # not a number: not measured, not a crash
    odd["faults"]["new_case"] = {"runs": 1, "survived": True, "surprise": {"x": 1}}
    doc = report.reliability_doc(odd)
    assert "clients failed for 9800 ms" in doc and "| 1200 ms |" in doc and "p50 4900 ms (3 runs)" in doc
    assert "| `new_case` | not measured | 1 | yes | not measured | not measured | not measured |" in doc
    assert by_name(report.goals(odd), "supervisor resident memory").met is None


def test_smoke_runs_are_flagged(results: dict[str, Any]) -> None:
    results["meta"]["smoke"] = True
    assert "Smoke run" in report.readme_table(results)


def test_replace_section_keeps_the_rest() -> None:
    out = report.replace_section(README_TEXT, "| a |\n")
    assert out.startswith("# project\n\n## Measured\n\n<!-- bench:begin -->\n\n| a |\n\n<!-- bench:end -->\n\n## Dev")
    assert "old table" not in out
    assert report.replace_section(out, "| a |\n") == out
    with pytest.raises(report.MarkersMissing, match="bench:begin"):
        report.replace_section("# no markers\n", "x")
    with pytest.raises(report.MarkersMissing):
        report.replace_section("<!-- bench:end -->\n<!-- bench:begin -->\n", "x")  # wrong order


def paths(tmp_path: Path) -> tuple[Path, Path, list[str]]:
    readme, doc = tmp_path / "README.md", tmp_path / "docs" / "RELIABILITY.md"
    readme.write_text(README_TEXT, encoding="utf-8")
    return readme, doc, ["--results", str(EXAMPLE), "--readme", str(readme), "--doc", str(doc)]


def test_write_then_check(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    readme, doc, args = paths(tmp_path)
    assert report.main([*args, "--check"]) == 1  # stale README, no doc yet
    assert readme.read_text(encoding="utf-8") == README_TEXT and not doc.exists()  # --check wrote nothing
    assert report.main(args, out=lambda _line: None) == 0
    assert "| missed |" in readme.read_text(encoding="utf-8")
    assert doc.read_text(encoding="utf-8") == report.reliability_doc(report.load(EXAMPLE))
    capsys.readouterr()
    assert report.main([*args, "--check"]) == 0
    assert capsys.readouterr().err == ""

    doc.write_text(doc.read_text(encoding="utf-8").replace("| missed |", "| yes |"), encoding="utf-8")
    assert report.main([*args, "--check"]) == 1
    assert str(doc) in capsys.readouterr().err
    report.main(args, out=lambda _line: None)
    readme.write_text(readme.read_text(encoding="utf-8").replace("24 ms", "20 ms"), encoding="utf-8")
    assert report.main([*args, "--check"]) == 1
    assert str(readme) in capsys.readouterr().err


def test_missing_markers_are_reported_not_added(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    readme, doc, args = paths(tmp_path)
    readme.write_text("# project\n", encoding="utf-8")
    assert report.main(args, out=lambda _line: None) == 2
    err = capsys.readouterr().err
    assert "<!-- bench:begin -->" in err and "<!-- bench:end -->" in err and "## Measured" in err
    assert readme.read_text(encoding="utf-8") == "# project\n"
    assert doc.is_file()  # the reliability document does not need the README
    assert report.main([*args, "--check"]) == 2


def test_missing_results_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _readme, _doc, args = paths(tmp_path)
    args[1] = str(tmp_path / "nope.json")
    assert report.main(args) == 2
    assert "bench.run_all" in capsys.readouterr().err


def test_the_committed_documents_match_the_results() -> None:
    """docs/RELIABILITY.md (and README's table, once measured) never drift from the results they quote."""
    if report.RESULTS.is_file():
        if report.BEGIN not in report.README.read_text(encoding="utf-8"):
            pytest.skip("README.md has no bench markers yet")
        assert report.main(["--check"]) == 0, "run `python -m bench.report`"
    else:
        example = report.load(EXAMPLE)
        committed = report.RELIABILITY.read_text(encoding="utf-8")
        if example["meta"]["machine"] not in committed:
            pytest.skip("bench/results.json is not here to check docs/RELIABILITY.md against")
        assert committed == report.reliability_doc(example)  # nothing measured yet: it shows the example
