"""docs/VERIFICATION_REPORT.md is what results/ gives, and every test it cites exists."""

from __future__ import annotations

import json
from pathlib import Path

from rl_worker.ops.perf_table import figure, result_document, write_result
from rl_worker.ops.verification_report import (
    DOC_PATH,
    PROPERTIES,
    Property,
    junit_to_results,
    missing_tests,
    render_report,
)


def test_report_is_in_step_with_results() -> None:
    assert DOC_PATH.read_text() == render_report(), (
        "docs/VERIFICATION_REPORT.md is out of date: run `python -m rl_worker.ops.verification_report`"
    )


def test_every_cited_test_exists() -> None:
    assert missing_tests() == []
    assert missing_tests([Property("gone", ("tests/unit/test_docs.py::test_that_never_was",))]) == [
        "tests/unit/test_docs.py::test_that_never_was"
    ]
    assert len(PROPERTIES) >= 8


def test_figures_and_outcomes_come_from_the_files(tmp_path: Path) -> None:
    # a benchmark writes the one result format (the README table's) to the bench directory
    figures = {"json_parse_per_s": figure("json.loads of the same records", 250_000.0, "/s"),
               "apply_per_s": figure("records applied per second", 83_333.0, "/s", ceiling="json_parse_per_s"),
               "decide_meta_us": figure("one meta decision", 4.25, "us", aim="< 10 µs")}
    bench = tmp_path / "bench"
    write_result(bench / "bench_core.json", result_document("bench_core", "python scripts/bench_core.py", figures,
                                                             runs=7))
    junit = tmp_path / "junit.xml"
    junit.write_text(
        '<testsuites><testsuite time="7.4"><testcase classname="tests.integration.test_decisions" '
        'name="test_every_valid_event_gets_exactly_one_decision" time="12.5"/>'
        '<testcase classname="tests.integration.test_decisions" name="test_incomplete_positions_expire_and_are_counted"'
        ' time="3"><failure message="boom"/></testcase></testsuite></testsuites>'
    )
    (tmp_path / "tests.json").write_text(json.dumps(junit_to_results(junit, "scripts/test.sh -q")))
    text = render_report(tmp_path, bench)
    row = next(line for line in text.splitlines() if line.startswith("| records applied per second"))
    assert row == "| records applied per second | 83,333/s | 250,000/s | 0.33 |  |"  # the ratio to its ceiling
    assert "4.25 µs" in text
    assert "1 passed, 1 failed, 0 skipped in 7 s (wall; the tests' own times add up to 16 s)" in text
    row = next(line for line in text.splitlines() if line.startswith("| Incomplete positions expire"))
    assert "0/1 passed" in row
    assert "Not measured yet: `docs/bench/bench_worker.json`" in text
