"""Turn bench/results.json into the README's "Measured" table and docs/RELIABILITY.md.

`python -m bench.run_all` measures; this module only reads its results and writes prose, so the figures quoted in
the documentation are the ones measured, never typed by hand. Usage:

    python -m bench.report [--results bench/results.json] [--check]

Without --check it rewrites the part of README.md between the lines `<!-- bench:begin -->` and
`<!-- bench:end -->` and writes docs/RELIABILITY.md. With --check it writes nothing and exits 1 when either file
differs from what would be written (a test runs it so the documents cannot drift from the results).

Tolerant by design: any key may be missing (the figure then reads "not measured") and extra keys are ignored.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results.json"
README = ROOT / "README.md"
RELIABILITY = ROOT / "docs" / "RELIABILITY.md"

BEGIN = "<!-- bench:begin -->"
END = "<!-- bench:end -->"

NOT_MEASURED = "not measured"
MET = "yes"
MISSED = "missed"

#: Host loss may take at most this much longer than the bound VRRP itself sets (3 adverts + skew time).
HOST_LOSS_SLACK = 0.10


class Goal(NamedTuple):
    """One goal of the issue: what it is about, the measured figure, the goal, and whether it was met.

    `met` is None when the figure was not measured.
    """

    name: str
    figure: str
    goal: str
    met: bool | None


class MarkersMissing(Exception):
    """README.md lacks the bench:begin / bench:end markers."""


# --- reading --------------------------------------------------------------------------------------------------


def load(path: Path | str) -> dict[str, Any]:
    """The results written by `python -m bench.run_all`; raises ValueError when it is not a JSON object."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object at the top level")
    return data


def _section(results: Mapping[str, Any], *keys: str) -> dict[str, Any]:
    """results[k1][k2]... as a dict, {} when any level is missing or not an object."""
    node: Any = results
    for key in keys:
        if not isinstance(node, Mapping):
            return {}
        node = node.get(key)
    return dict(node) if isinstance(node, Mapping) else {}


def _num(value: Any) -> float | None:
    """A JSON number as float; None for null, missing, booleans and anything else."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _get_num(results: Mapping[str, Any], *keys: str) -> float | None:
    *parents, last = keys
    return _num(_section(results, *parents).get(last)) if parents else _num(results.get(last))


# --- formatting -----------------------------------------------------------------------------------------------


def _fmt(value: float, unit: str = "") -> str:
    text = f"{value:.0f}" if value == int(value) or abs(value) >= 100 else f"{value:.3g}"
    return f"{text} {unit}" if unit else text


def _ms(value: float | None) -> str:
    return NOT_MEASURED if value is None else _fmt(value, "ms")


def _runs(summary: Mapping[str, Any]) -> str:
    n = _num(summary.get("n"))
    if n is None:
        return ""
    return f" ({n:.0f} run{'' if n == 1 else 's'})"


def _timing(summary: Mapping[str, Any]) -> str:
    """'p50 12 ms, p95 20 ms (20 runs)' from a timing summary; 'not measured' without a p50."""
    p50 = _num(summary.get("p50"))
    if p50 is None:
        return NOT_MEASURED
    text = f"p50 {_ms(p50)}"
    p95 = _num(summary.get("p95"))
    if p95 is not None:
        text += f", p95 {_ms(p95)}"
    return text + _runs(summary)


def _timing_or_number(value: Any) -> str:
    """A figure that may be a bare number of ms or a timing summary (return_ms, cold_start_ms)."""
    if isinstance(value, Mapping):
        return _timing(value)
    return _ms(_num(value))


def _cell(text: Any) -> str:
    """Text safe inside a Markdown table cell."""
    return " ".join(str(text).split()).replace("|", "\\|")


def _met(met: bool | None) -> str:
    return NOT_MEASURED if met is None else (MET if met else MISSED)


def _all_known(*checks: bool | None) -> bool | None:
    """True when every check holds, False when any fails, None when some were not measured and none failed."""
    if any(check is False for check in checks):
        return False
    if any(check is None for check in checks):
        return None
    return True


def _at_most(value: float | None, limit: float) -> bool | None:
    return None if value is None else value <= limit


# --- goals ----------------------------------------------------------------------------------------------------


def _service_death(results: Mapping[str, Any]) -> list[Goal]:
    ours = _section(results, "service_death_ms", "ours")
    polling = _section(results, "service_death_ms", "polling")
    p50, p95 = _num(ours.get("p50")), _num(ours.get("p95"))
    goals = [
        Goal(
            "`docker kill` of the master's front end -> client answered by the backup via the VIP",
            _timing(ours),
            "p50 ≤ 30 ms, p95 ≤ 50 ms",
            _all_known(_at_most(p50, 30), _at_most(p95, 50)),
        )
    ]
    poll50 = _num(polling.get("p50"))
    if p50 is None or poll50 is None or p50 <= 0:
        figure, ratio_met = (
            NOT_MEASURED if poll50 is None else f"polling {_timing(polling)}; ours {NOT_MEASURED}",
            None,
        )
    else:
        ratio = poll50 / p50
        figure, ratio_met = f"{ratio:.0f}x (polling p50 {_ms(poll50)}, ours p50 {_ms(p50)})", ratio >= 50
    goals.append(Goal("the same against the old image's polling check (p50 ratio)", figure, "≥ 50x faster", ratio_met))
    fast = _section(results, "service_death_ms", "advert_0.1")
    goals.append(
        Goal(
            "the same with advert 0.1 s",
            _timing(fast),
            "p50 ≤ 15 ms",
            _at_most(_num(fast.get("p50")), 15),
        )
    )
    return goals


def _advert_label(suffix: str) -> str:
    return f"{suffix} s"


def _host_loss(results: Mapping[str, Any]) -> list[Goal]:
    section = _section(results, "host_loss_ms")
    suffixes = [key.removeprefix("advert_") for key in section if key.startswith("advert_")]
    suffixes += [
        key.removeprefix("bound_advert_")
        for key in section
        if key.startswith("bound_advert_") and key.removeprefix("bound_advert_") not in suffixes
    ]
    if not suffixes:
        suffixes = ["1", "0.2"]
    goals = []
    for suffix in suffixes:
        summary = _section(section, f"advert_{suffix}")
        bound = _num(section.get(f"bound_advert_{suffix}"))
        p50 = _num(summary.get("p50"))
        goal = f"within {HOST_LOSS_SLACK:.0%} of the bound" + ("" if bound is None else f" ({_ms(bound)})")
        met = None if p50 is None or bound is None else p50 <= bound * (1 + HOST_LOSS_SLACK)
        goals.append(
            Goal(f"host lost (master's network cut), advert {_advert_label(suffix)}", _timing(summary), goal, met)
        )
    return goals


def _graceful(results: Mapping[str, Any]) -> Goal:
    summary = _section(results, "graceful_ms")
    return Goal(
        "`docker stop` of the master's supervisor -> VIP on the backup only",
        _timing(summary),
        "p50 ≤ 50 ms",
        _at_most(_num(summary.get("p50")), 50),
    )


def _convergence(results: Mapping[str, Any]) -> Goal:
    section = _section(results, "convergence_ms")
    config = _num(section.get("config_p50"))
    figure = NOT_MEASURED if config is None else f"p50 {_ms(config)}"
    if config is not None:
        debounce = _num(section.get("debounce_ms"))
        if debounce is not None:
            figure += f", of which {_ms(debounce)} is the debounce window"
        figure += _runs(section)
    return Goal(
        "Docker event -> new config installed (keepalived reloaded)", figure, "p50 ≤ 200 ms", _at_most(config, 200)
    )


def _storm(results: Mapping[str, Any]) -> list[Goal]:
    storm = _section(results, "storm")
    containers, reloads = _num(storm.get("containers")), _num(storm.get("reloads"))
    exact = storm.get("exact")
    exact_ok = exact if isinstance(exact, bool) else None
    what = "labelled containers started and removed at once"
    if containers is not None:
        what = f"{containers:.0f} {what}"
    if reloads is None:
        figure = NOT_MEASURED
    else:
        figure = f"{reloads:.0f} reloads"
        if exact_ok is not None:
            figure += ", final config exact" if exact_ok else ", final config NOT exact"
    die = _num(storm.get("die_after_burst_ms"))
    return [
        Goal(what, figure, "≤ 10 reloads, final config exact", _all_known(_at_most(reloads, 10), exact_ok)),
        Goal(
            "front end killed right after the burst -> backup answers",
            _ms(die),
            "≤ 1000 ms",
            _at_most(die, 1000),
        ),
    ]


def _reload_quiet(results: Mapping[str, Any]) -> Goal:
    quiet = _section(results, "reload_quiet")
    changes, transitions = _num(quiet.get("changes")), _num(quiet.get("transitions"))
    failed, requests = _num(quiet.get("failed_connects")), _num(quiet.get("requests"))
    what = "config reloads while clients connect through the VIP"
    if changes is not None:
        what = f"{changes:.0f} {what}"
    parts = []
    if transitions is not None:
        parts.append(f"{transitions:.0f} VRRP transitions")
    if failed is not None:
        parts.append(f"{failed:.0f} failed connects" + ("" if requests is None else f" of {requests:.0f}"))
    figure = ", ".join(parts) if parts else NOT_MEASURED
    met = _all_known(
        None if transitions is None else transitions == 0,
        None if failed is None else failed == 0,
    )
    return Goal(what, figure, "0 transitions, 0 failed connects", met)


def _footprint(results: Mapping[str, Any]) -> list[Goal]:
    foot = _section(results, "footprint")
    rss, cpu = _num(foot.get("rss_mb")), _num(foot.get("idle_cpu_pct"))
    containers = _num(foot.get("containers"))
    with_n = "" if containers is None else f" with {containers:.0f} labelled containers"
    return [
        Goal(
            f"supervisor resident memory (RSS){with_n}",
            NOT_MEASURED if rss is None else _fmt(rss, "MB"),
            "≤ 60 MB",
            _at_most(rss, 60),
        ),
        Goal(
            f"supervisor CPU when idle{with_n}",
            NOT_MEASURED if cpu is None else f"{_fmt(cpu)} %",
            "≤ 0.3 %",
            _at_most(cpu, 0.3),
        ),
        *_one_probe(foot),
    ]


def _one_probe(foot: Mapping[str, Any]) -> list[Goal]:
    probe = foot.get("one_probe")
    if not isinstance(probe, Mapping):
        return []
    rss, cpu = _num(probe.get("rss_mb")), _num(probe.get("idle_cpu_pct"))
    what = "one instance, its CHECK_PORT probed every 1 s"
    return [
        Goal(f"supervisor RSS, {what}", NOT_MEASURED if rss is None else _fmt(rss, "MB"), "≤ 60 MB", _at_most(rss, 60)),
        Goal(
            f"supervisor CPU when idle, {what}",
            NOT_MEASURED if cpu is None else f"{_fmt(cpu)} %",
            "≤ 0.3 %",
            _at_most(cpu, 0.3),
        ),
    ]


def goals(results: Mapping[str, Any]) -> list[Goal]:
    """Every goal of the issue, in README order, with its figure and whether it was met."""
    return [
        *_service_death(results),
        *_host_loss(results),
        _graceful(results),
        _convergence(results),
        *_storm(results),
        _reload_quiet(results),
        *_footprint(results),
    ]


def other_figures(results: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Measured figures with no goal of their own, for context: (what, figure)."""
    death = _section(results, "service_death_ms")
    rows = [
        ("service death detected by the `selector` check", _timing(_section(death, "selector"))),
        ("service death detected by the `check_port` check", _timing(_section(death, "check_port"))),
        ("service death with the old image's polling check", _timing(_section(death, "polling"))),
    ]
    no_check = _section(death, "no_check")
    failing = _num(death.get("no_check_failing_ms"))
    if failing is not None:
        figure = f"clients failed for {_ms(failing)}"
    else:
        window = _num(no_check.get("window_ms"))
        figure = NOT_MEASURED if window is None else f"no failover; clients failed for the whole {_ms(window)} window"
    figure += _runs(no_check)
    note = no_check.get("note")
    if isinstance(note, str) and note.strip():
        figure += f": {note.strip()}"
    rows.append(("service death with no check at all (why checks matter)", figure))
    conv = _section(results, "convergence_ms")
    rows.append(("Docker event -> config installed, all events", _timing(conv)))
    rows.append(("master lost -> its containers' config on the backup", _ms(_num(conv.get("master_down_ms")))))
    rows.append(("cold start (two supervisors) -> VIP held", _timing_or_number(results.get("cold_start_ms"))))
    rows.append(("master's front end back -> VIP returns (preemption)", _timing_or_number(results.get("return_ms"))))
    storm = _section(results, "storm")
    converge = _num(storm.get("converge_ms"))
    rows.append(("event storm -> config converged", _ms(converge)))
    start = _num(storm.get("start_s"))
    rows.append(("event storm: time to start the containers", NOT_MEASURED if start is None else _fmt(start, "s")))
    peak = _num(storm.get("peak_rss_mb"))
    rows.append(("event storm: peak supervisor RSS", NOT_MEASURED if peak is None else _fmt(peak, "MB")))
    image = _num(_section(results, "footprint").get("image_mb"))
    rows.append(("image size", NOT_MEASURED if image is None else _fmt(image, "MB")))
    return rows


# --- documents ------------------------------------------------------------------------------------------------


def _provenance(results: Mapping[str, Any]) -> str:
    meta = _section(results, "meta")
    command = meta.get("command") or "python -m bench.run_all"
    date = meta.get("date") or "an unknown date"
    machine = meta.get("machine")
    line = f"Measured by `{command}` on {date}"
    if machine:
        line += f" ({machine})"
    runs = _num(meta.get("runs_default"))
    if runs is not None:
        line += f"; {runs:.0f} runs per timing unless the figure says otherwise"
    line += "."
    reruns = meta.get("reruns")
    if isinstance(reruns, Mapping) and reruns:
        cases = ", ".join(f"{case} on {when}" for case, when in sorted(reruns.items()))
        line += f" Rerun alone afterwards (`--only CASE`), same machine: {cases}."
    if meta.get("smoke"):
        line += " **Smoke run: too few runs for these figures to mean much.**"
    return line


def readme_table(results: Mapping[str, Any]) -> str:
    """The Markdown table of goals for the README (what | figure | goal | met?), then where the figures come from."""
    lines = ["| what | figure | goal | met? |", "|---|---|---|---|"]
    for goal in goals(results):
        lines.append(f"| {_cell(goal.name)} | {_cell(goal.figure)} | {_cell(goal.goal)} | {_met(goal.met)} |")
    lines += ["", _provenance(results)]
    return "\n".join(lines) + "\n"


def _fault_rows(results: Mapping[str, Any]) -> list[str]:
    faults = _section(results, "faults")
    lines = [
        "| case | what was done | runs | survived | duplicate samples | lost changes | what happened |",
        "|---|---|---|---|---|---|---|",
    ]
    for case in faults:  # in the order bench.run_all ran them
        fault = faults[case] if isinstance(faults[case], Mapping) else {}
        cells = [f"`{case}`", _cell(fault.get("what") or NOT_MEASURED)]
        for key in ("runs", "survived", "duplicate_samples", "lost_changes"):
            value = fault.get(key)
            if isinstance(value, bool):
                cells.append("yes" if value else "no")
            elif (number := _num(value)) is not None:
                cells.append(_fmt(number))
            else:
                cells.append(NOT_MEASURED)
        cells.append(_cell(fault.get("result") or NOT_MEASURED))
        lines.append("| " + " | ".join(cells) + " |")
    if not faults:
        lines.append("| no fault case in the results | | | | | | |")
    return lines


def reliability_doc(results: Mapping[str, Any]) -> str:
    """The whole of docs/RELIABILITY.md."""
    faults = _section(results, "faults")
    lines = [
        "# Reliability",
        "",
        "<!-- Generated from bench/results.json by `python -m bench.report`. Do not edit by hand. -->",
        "",
        "This file is generated from `bench/results.json` by `python -m bench.report`; do not edit it by hand.",
        "To refresh it, run `python -m bench.run_all` and then `python -m bench.report`;",
        "`python -m bench.report --check` fails when it no longer matches the results.",
        "",
        _provenance(results),
        "",
        "## Faults and hostile inputs",
        "",
        f"Every fault and hostile input tried ({len(faults)} cases), how many times, what happened and what was lost.",
        "",
        *_fault_rows(results),
        "",
        "## Performance against the goals",
        "",
        "| what | figure | goal | met? |",
        "|---|---|---|---|",
    ]
    for goal in goals(results):
        lines.append(f"| {_cell(goal.name)} | {_cell(goal.figure)} | {_cell(goal.goal)} | {_met(goal.met)} |")
    lines += ["", "## Other measurements", "", "| what | figure |", "|---|---|"]
    for what, figure in other_figures(results):
        lines.append(f"| {_cell(what)} | {_cell(figure)} |")
    return "\n".join(lines) + "\n"


def replace_section(readme: str, table: str) -> str:
    """The README text with everything between the markers replaced by `table`; raises MarkersMissing."""
    begin = readme.find(BEGIN)
    end = readme.find(END, begin + len(BEGIN)) if begin >= 0 else -1
    if begin < 0 or end < 0:
        raise MarkersMissing(
            f"README.md has no {BEGIN} ... {END} pair: add a line {BEGIN} and, below it, a line {END} "
            'in the "## Measured" section where the benchmark table belongs; bench.report fills the lines between them'
        )
    head = readme[: begin + len(BEGIN)]
    return f"{head}\n\n{table.rstrip()}\n\n{readme[end:]}"


def render(results: Mapping[str, Any], readme: Path, doc: Path) -> dict[Path, str]:
    """What README.md and docs/RELIABILITY.md should contain; raises MarkersMissing."""
    current = readme.read_text(encoding="utf-8")
    return {readme: replace_section(current, readme_table(results)), doc: reliability_doc(results)}


def drifted(expected: Mapping[Path, str]) -> list[Path]:
    """The files whose content differs from `expected` (a missing file differs)."""
    return [path for path, text in expected.items() if not path.is_file() or path.read_text(encoding="utf-8") != text]


def write(expected: Mapping[Path, str]) -> list[Path]:
    """Write the files that differ; returns them."""
    changed = drifted(expected)
    for path in changed:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(expected[path], encoding="utf-8")
    return changed


def main(argv: Sequence[str] | None = None, *, out: Callable[[str], None] = print) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.report",
        description="Write the README table and docs/RELIABILITY.md from bench/results.json.",
    )
    parser.add_argument("--results", type=Path, default=RESULTS, help="results of bench.run_all (%(default)s)")
    parser.add_argument("--readme", type=Path, default=README, help="README to update (%(default)s)")
    parser.add_argument("--doc", type=Path, default=RELIABILITY, help="reliability document to write (%(default)s)")
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 when a file would change")
    args = parser.parse_args(argv)

    try:
        results = load(args.results)
    except FileNotFoundError:
        print(f"bench.report: {args.results} not found: run `python -m bench.run_all` first", file=sys.stderr)
        return 2
    except ValueError as exc:  # json.JSONDecodeError is a ValueError
        print(f"bench.report: {args.results}: {exc}", file=sys.stderr)
        return 2
    try:
        expected = render(results, args.readme, args.doc)
        markers_error: str | None = None
    except (MarkersMissing, FileNotFoundError) as exc:
        # The reliability document does not depend on the README: still check or write it.
        expected = {args.doc: reliability_doc(results)}
        markers_error = str(exc) if isinstance(exc, MarkersMissing) else "not found"

    if args.check:
        stale = drifted(expected)
        for path in stale:
            print(
                f"bench.report: {path} is out of date with {args.results}: run `python -m bench.report`",
                file=sys.stderr,
            )
    else:
        stale = []
        for path in write(expected):
            out(f"wrote {path}")
    if markers_error is not None:
        print(f"bench.report: {args.readme}: {markers_error}", file=sys.stderr)
        return 2
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
