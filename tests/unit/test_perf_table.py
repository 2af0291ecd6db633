"""The README's performance table is generated from the committed benchmark results (docs/bench/*.json)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rl_worker.ops import perf_table

ROOT = Path(__file__).resolve().parents[2]


def test_readme_table_matches_committed_results() -> None:
    readme = (ROOT / "README.md").read_text()
    expected = perf_table.replace_table(readme, perf_table.render_table(perf_table.load_documents()))
    assert readme == expected, "README performance table drifted: run `python -m rl_worker.ops.perf_table`"


def test_check_mode_fails_when_a_figure_changes(tmp_path: Path) -> None:
    bench = tmp_path / "bench"
    bench.mkdir()
    for name in perf_table.BENCH_FILES:
        (bench / name).write_text((perf_table.BENCH_DIR / name).read_text())
    readme = tmp_path / "README.md"
    readme.write_text((ROOT / "README.md").read_text())
    args = ["--readme", str(readme), "--bench-dir", str(bench)]
    assert perf_table.main([*args, "--check"]) == 0

    doc = json.loads((bench / "bench_core.json").read_text())
    name = next(iter(doc["figures"]))
    doc["figures"][name]["value"] = doc["figures"][name]["value"] * 2 + 1
    (bench / "bench_core.json").write_text(json.dumps(doc))
    assert perf_table.main([*args, "--check"]) == 1
    assert perf_table.main(args) == 0  # regenerates
    assert perf_table.main([*args, "--check"]) == 0


@pytest.mark.parametrize("name", perf_table.BENCH_FILES)
def test_committed_results_carry_same_run_ceilings(name: str) -> None:
    doc = json.loads((perf_table.BENCH_DIR / name).read_text())
    assert doc["schema"] == perf_table.SCHEMA_VERSION
    assert doc["machine"]["cpus"] and doc["command"].startswith("python scripts/")
    with_ceiling = [f for f in doc["figures"].values() if f["ceiling"]]
    assert with_ceiling, "every result file compares something with a ceiling measured in the same run"
    for fig in with_ceiling:
        base = doc["figures"][fig["ceiling"]]
        assert fig["ratio"] == pytest.approx(fig["value"] / base["value"])


def test_ratio_needs_a_ceiling_of_the_same_run() -> None:
    with pytest.raises(ValueError, match="ceiling"):
        perf_table.result_document("x", "python scripts/x.py", {"a": perf_table.figure("a", 1.0, "/s", ceiling="b")})


def test_missing_markers_is_an_error() -> None:
    with pytest.raises(ValueError, match="markers"):
        perf_table.replace_table("no markers here", "| table |")
