"""docs/VERIFICATION_REPORT.md is what results/ gives, and every test it cites exists."""

from __future__ import annotations

import json
from pathlib import Path

from rl_worker.ops.verification_report import (
    DOC_PATH,
    PROPERTIES,
    Property,
    junit_to_results,
    missing_tests,
    render_report,
    write_result,
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
    figures = {"select_action_us": 1.0, "decide_meta_us": 4.25, "decide_sizing_us": 4.5, "td_update_us": 0.75,
               "apply_us": 12.0, "apply_per_s": 83_333.0, "snapshot_encode_ms": 3.0, "snapshot_decode_ms": 4.0,
               "records": 20_000, "meta_states": 10, "sizing_states": 10, "snapshot_kib": 50.0, "runs": 7}
    write_result(tmp_path / "bench_core.json", "bench_core", figures, ["--json", "x"])
    junit = tmp_path / "junit.xml"
    junit.write_text(
        '<testsuites><testsuite><testcase classname="tests.integration.test_decisions" '
        'name="test_every_valid_event_gets_exactly_one_decision" time="12.5"/>'
        '<testcase classname="tests.integration.test_decisions" name="test_incomplete_positions_expire_and_are_counted"'
        ' time="3"><failure message="boom"/></testcase></testsuite></testsuites>'
    )
    (tmp_path / "tests.json").write_text(json.dumps(junit_to_results(junit, "scripts/test.sh -q")))
    text = render_report(tmp_path)
    assert "83,333/s" in text and "4.2 µs" in text  # 4.25 rounds half to even
    assert "1 passed, 1 failed, 0 skipped" in text
    row = next(line for line in text.splitlines() if line.startswith("| Incomplete positions expire"))
    assert "0/1 passed" in row
    assert "Not measured yet: `results/bench_worker.json`" in text
