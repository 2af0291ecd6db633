"""docs/VERIFICATION_REPORT.md, generated from the test run and the scripts' JSON results in `results/`.

    python -m rl_worker.ops.verification_report                      # render docs/VERIFICATION_REPORT.md
    python -m rl_worker.ops.verification_report --junit out/junit.xml  # first record a test run
    python -m rl_worker.ops.verification_report --check              # exit 1 when the report is stale

Every property the tests prove is listed with the tests that prove it (a test that no longer
exists fails tests/unit/test_verification_report.py) and, when `results/tests.json` holds a
recorded run, its outcome. Every figure comes from a JSON file written by the script named
beside it; a figure with no file says so. The benchmarks (bench_core.py, bench_worker.py) write
the one result format of `rl_worker.ops.perf_table` to `docs/bench/`, the same files the README's
performance table is made from; offline_learning.py and ab_validity.py write their own `--out`
to `results/`.
"""

from __future__ import annotations

import argparse
import ast
import datetime as dt
import json
import os
import platform
import sys
import xml.etree.ElementTree as ET
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rl_worker.ops.perf_table import commit, figure_rows

__all__ = ["PROPERTIES", "SOURCES", "render_report"]

ROOT = Path(__file__).resolve().parents[2]
DOC_PATH = ROOT / "docs" / "VERIFICATION_REPORT.md"
RESULTS = ROOT / "results"
BENCH_DIR = ROOT / "docs" / "bench"


def machine() -> dict[str, Any]:
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    return {"cpus": os.cpu_count(), "python": platform.python_version(), "loadavg_1m": round(load[0], 2)}


# ---- the properties and the tests that prove them --------------------------------------------------


@dataclass(frozen=True)
class Property:
    title: str
    tests: tuple[str, ...]  # pytest node ids: path::function


INT = "tests/integration/"
UNIT = "tests/unit/"

PROPERTIES: tuple[Property, ...] = (
    Property(
        "1. Every valid signal gets exactly one meta decision, every valid execution one sizing decision "
        "(no repeated decision id, never two actions for one), also across a kill -9, a restart and rebalances",
        (
            f"{INT}test_decisions.py::test_every_valid_event_gets_exactly_one_decision",
            f"{INT}test_failover.py::test_sigkill_and_rebalance_lose_no_decision_and_replicas_match_a_full_replay",
            f"{UNIT}test_positions.py",
        ),
    ),
    Property(
        "2. Every completed position updates the Q-tables exactly once, with the actions that were traded, "
        "whatever is redelivered",
        (
            f"{UNIT}core/test_dedupe_window.py::test_window_forgets_the_oldest_and_survives_a_snapshot",
            f"{INT}test_backfill.py::test_backfill_of_the_live_history_equals_the_live_replica",
            f"{INT}test_follower.py::test_follower_restores_catches_up_and_follows_like_a_replay",
        ),
    ),
    Property(
        "3. A replay of the learning log from offset 0 is bit-identical to the live replicas; so are restore "
        "from a checkpoint plus the tail, live tuning and restore",
        (
            f"{UNIT}core/test_replica.py::test_same_records_same_order_bit_identical",
            f"{INT}test_failover.py::test_restart_from_checkpoint_plus_tail_equals_full_replay",
            f"{INT}test_lifecycle.py::test_tune_and_restore_in_a_two_worker_group_match_a_full_replay",
            f"{UNIT}core/test_learning.py::test_a_restored_default_replica_decides_and_learns_as_the_live_one",
        ),
    ),
    Property(
        "4. Bad input never crashes, stalls or silently drops: it lands in the dead-letter topic with a reason; "
        "an operator command given bad input writes nothing",
        (
            f"{INT}test_dead_letters.py::test_bad_records_land_in_the_dead_letter_and_valid_ones_still_get_decisions",
            f"{INT}test_lifecycle.py::test_bad_input_is_refused_and_writes_nothing",
            f"{UNIT}test_schemas.py",
        ),
    ),
    Property(
        "5. No sizing decision ever exceeds the risk limits (configured, tightened per event, never loosened)",
        (
            f"{UNIT}core/test_replica.py::test_no_sizing_decision_exceeds_the_limits",
            f"{UNIT}core/test_replica.py::test_event_limits_cannot_loosen",
            f"{UNIT}test_positions.py::test_sizing_respects_the_tighter_of_event_and_config_limits",
            f"{UNIT}core/test_control_arm.py::test_control_sizing_never_exceeds_the_limits",
        ),
    ),
    Property(
        "6. Secured connections: SASL (PLAIN, SCRAM) over TLS to Kafka, password, ACL user and TLS to Redis; "
        "wrong credentials fail fast and clearly; no secret in the logs",
        (
            f"{INT}test_security.py::test_each_sasl_mechanism_authenticates",
            f"{INT}test_security.py::test_a_refused_connection_stops_the_worker_naming_the_cause",
            f"{INT}test_security.py::test_preflight_passes_secured_and_names_the_cause_of_a_refusal",
        ),
    ),
    Property(
        "Brokers: a restart of Apache Kafka under load loses nothing; the session timeout is one the broker "
        "accepts, and a refused one stops the worker with the reason",
        (
            f"{INT}test_broker_restart.py::test_broker_restart_under_load_loses_nothing",
            f"{INT}test_group_settings.py::test_default_session_timeout_is_accepted_and_the_worker_joins",
            f"{INT}test_group_settings.py::test_a_session_timeout_the_broker_refuses_stops_the_worker_with_the_reason",
        ),
    ),
    Property(
        "Checkpoints: Redis down delays checkpoints, never decisions; the latest pointer only moves forward; "
        "export, import, promote and pins",
        (
            f"{INT}test_failover.py::test_redis_outage_delays_checkpoints_but_not_decisions",
            f"{INT}test_checkpoint_store.py::test_pointer_only_moves_forward_and_retention_trims_the_oldest",
            f"{INT}test_checkpoint_store.py::test_an_unreachable_redis_is_a_store_error_not_a_crash",
            f"{INT}test_lifecycle.py::test_export_import_promote_and_pins",
        ),
    ),
    Property(
        "Incomplete positions expire on stream time and are counted",
        (f"{INT}test_decisions.py::test_incomplete_positions_expire_and_are_counted",),
    ),
    Property(
        "The core: the seed profile is the seed's specification exactly; exploration draws match the recorded "
        "propensities; the core imports no Kafka, Redis or asyncio",
        (
            f"{UNIT}core/test_config.py::test_the_seed_profile_is_the_seed_specification_exactly",
            f"{UNIT}core/test_learning.py::test_the_seed_profile_reproduces_the_seeds_numbers_exactly",
            f"{UNIT}core/test_qlearning.py::test_selection_frequencies_match_propensities",
            f"{UNIT}core/test_import_boundary.py",
        ),
    ),
    Property(
        "Learning: the demo's configuration learns most of the achievable reward; a random policy scores about 0",
        (
            f"{UNIT}sim/test_offline.py::test_demo_config_learns_most_of_the_achievable_reward",
            f"{UNIT}sim/test_offline.py::test_a_uniformly_random_policy_scores_about_zero_on_the_same_market",
            f"{INT}test_demo.py::test_short_demo_runs_end_to_end",
        ),
    ),
    Property(
        "Operator tools: pre-flight, status, monitor and deploy.sh --monitor-only against a real broker, "
        "Redis and worker",
        (
            f"{INT}test_preflight.py::test_preflight_names_what_is_missing_and_what_does_not_fit",
            f"{INT}test_preflight.py::test_preflight_unreachable_services_fail_without_leaking_the_password",
            f"{INT}test_preflight.py::test_a_running_worker_passes_preflight_status_and_monitor_only",
            f"{INT}test_monitor.py::test_monitor_reports_growth_and_plots",
            f"{INT}test_checkpoint_command.py::test_list_and_show",
        ),
    ),
    Property(
        "The shelf: manifests, compose, image and dashboard agree with the code; docs name only what exists; "
        "TOOLS.md and this report are in step",
        (
            f"{UNIT}test_deploy_manifests.py",
            f"{UNIT}test_compose.py",
            f"{UNIT}test_dashboard.py",
            f"{UNIT}test_docs.py",
            f"{UNIT}test_tools_doc.py",
            f"{UNIT}test_verification_report.py",
        ),
    ),
)


def test_functions(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    return {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)
            and n.name.startswith("test_")}


def missing_tests(properties: Sequence[Property] = PROPERTIES, root: Path = ROOT) -> list[str]:
    """Node ids named by the properties that do not exist (a file, or a test function in it)."""
    missing = []
    for prop in properties:
        for node in prop.tests:
            file, _, function = node.partition("::")
            path = root / file
            if not path.exists() or (function and function not in test_functions(path)):
                missing.append(node)
    return missing


# ---- the figures -----------------------------------------------------------------------------------


def _fmt(value: Any, spec: str) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return "n/a"
    return format(value, spec)


def render_bench(result: dict[str, Any]) -> list[str]:
    """A benchmark's result file (rl_worker.ops.perf_table's format): every figure beside its same-run ceiling."""
    rows = figure_rows(result)
    extra = [f"{k} `{result[k]}`" for k in ("profile", "clock", "broker") if k in result]
    head = [f"Medians of {result.get('runs', '?')} run(s)" + (f"; {', '.join(extra)}" if extra else "") + ".", ""]
    return head + _table(("measure", "figure", "same-run ceiling", "ratio", "aim"), rows)


def render_offline_learning(result: dict[str, Any]) -> list[str]:
    """scripts/offline_learning.py's own JSON: its summary table, preset x learner x agent."""
    rows = []
    for preset in result["presets"]:
        for learner, agents in result["table"][preset].items():
            meta, sizing = agents["meta"], agents["sizing"]
            rows.append((preset, learner, _fmt(meta["mean"], ".3f"), _fmt(meta["worst"], ".3f"),
                         _fmt(sizing["mean"], ".3f"), _fmt(sizing["worst"], ".3f")))
    seeds = result["seeds"]
    lines = [
        f"Share of the best achievable expected reward above a uniformly random policy (0 = random, 1 = the "
        f"market's oracle), over the last {result['window']:,} of {result['positions']:,} positions, "
        f"{result['in_flight']} in flight; mean and worst of {len(seeds)} seeds ({', '.join(map(str, seeds))}). "
        "`seed` is the seed's numbers exactly (RL_CORE__PROFILE=seed), `default` the default profile, `rule` the "
        "stack's own choices, `linucb` a contextual bandit on the same features; a uniformly random policy "
        "scores 0 in expectation.",
        "",
    ]
    return lines + _table(("preset", "learner", "meta mean", "meta worst", "sizing mean", "sizing worst"), rows)


def render_ab_validity(result: dict[str, Any]) -> list[str]:
    """scripts/ab_validity.py's own JSON: its summary lines and targets."""
    summary = result["summary"]
    targets = summary.get("targets", {})
    lines = [f"{summary['seeds']} seeds of {summary['positions']:,} positions each; aims: A/A ≥ "
             f"{targets.get('aa', 0):.0%} without a false difference, A/B ≥ {targets.get('ab', 0):.0%} detected, "
             f"evaluate ≥ {targets.get('evaluate', 0):.0%} interval coverage.", ""]
    return lines + [f"* {line}" for line in summary["lines"]]


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return lines


@dataclass(frozen=True)
class Source:
    file: str  # in results/, or in docs/bench/ for a benchmark (`bench=True`)
    title: str
    command: str
    render: Callable[[dict[str, Any]], list[str]]
    note: str = ""  # where the file came from, when the script does not record it itself
    bench: bool = False  # a benchmark result in docs/bench/ (perf_table's format)


SOURCES: tuple[Source, ...] = (
    Source("bench_core.json", "The RL core (CPU time)",
           ".venv/bin/python scripts/bench_core.py --json docs/bench/bench_core.json", render_bench, bench=True),
    Source("bench_worker.json", "The worker, the learning log and the brokers",
           ".venv/bin/python scripts/bench_worker.py --json docs/bench/bench_worker.json", render_bench, bench=True),
    Source("bench_backfill.json", "`rl-worker backfill` beside a raw consume of the same topics",
           ".venv/bin/python scripts/bench_backfill.py --positions 4000 --json docs/bench/bench_backfill.json",
           render_bench, bench=True),
    Source("offline_learning.json", "Learning offline: every simulator preset x learner x agent",
           ".venv/bin/python scripts/offline_learning.py --seeds 1,2 --out results/offline_learning.json",
           render_offline_learning,
           "The run behind the README's offline table (issue 9), 2 seeds instead of the 12 the issue asks for: "
           "one 5,000-position run took 50-170 s on this shared machine."),
    Source("ab_validity.json", "Statistical validity of `ab-test report` and `evaluate` (offline, the simulator)",
           ".venv/bin/python scripts/ab_validity.py --out results/ab_validity.json", render_ab_validity,
           "The run of issue 11's author at 02:20 UTC, on that branch before it landed; control share 0.5, "
           "the demo's core configuration."),
    Source("ab_validity_uniform.json", "`evaluate` on logs whose control arm draws uniformly",
           ".venv/bin/python scripts/ab_validity.py --uniform-logs --out results/ab_validity_uniform.json",
           render_ab_validity,
           "The run of issue 11's author at 02:48 UTC: the control arm's uniformly random decisions are the "
           "logs that make a candidate evaluable (propensity 1/|A|)."),
)


def _provenance(result: dict[str, Any]) -> str:
    m = result.get("machine", {})
    load = m.get("loadavg_1m", (m.get("loadavg_1_5_15") or ["?"])[0])
    return (f"Measured {result.get('taken_at') or result.get('measured_at', '?')} at commit "
            f"`{result.get('commit', '?')}` on {m.get('cpus', '?')} CPUs (1-minute load average {load} at the end: "
            "other work shared the machine).")


# ---- the document ----------------------------------------------------------------------------------


def load_results(results_dir: Path) -> dict[str, dict[str, Any]]:
    return {p.name: json.loads(p.read_text()) for p in sorted(results_dir.glob("*.json"))}


def render_report(results_dir: Path = RESULTS, bench_dir: Path = BENCH_DIR) -> str:
    results = load_results(results_dir)
    benches = load_results(bench_dir) if bench_dir.exists() else {}
    tests = results.get("tests.json")
    lines = [
        "# Verification report",
        "",
        "<!-- Generated by `python -m rl_worker.ops.verification_report` from results/*.json;",
        "     tests/unit/test_verification_report.py fails when this file and results/ drift apart. -->",
        "",
        "What the tests prove and what the benchmarks measured, each with the command that reproduces",
        "it. Every figure below is read from a JSON file (`docs/bench/` for the benchmarks, the files the",
        "README's performance table is made from; `results/` for the rest) that the named command wrote on",
        "this project's machine (2 cores); none is typed in by hand.",
        "",
        "## Properties the tests prove",
        "",
    ]
    if tests:
        t = tests["totals"]
        lines += [
            f"Recorded run: `{tests['command']}` at commit `{tests['commit']}`, {tests['taken_at']}: "
            f"{t['passed']} passed, {t['failed']} failed, {t['skipped']} skipped"
            + (f" in {t['wall_seconds']:.0f} s (wall; the tests' own times add up to {t['seconds']:.0f} s)."
               if "wall_seconds" in t else f" in {t['seconds']:.0f} s."),
            "",
        ]
    else:
        lines += ["No test run is recorded in `results/tests.json` yet.", ""]
    lines += ["| property | proven by | recorded outcome |", "|---|---|---|"]
    outcomes = (tests or {}).get("tests", {})
    for prop in PROPERTIES:
        proofs = "<br>".join(f"`{node}`" for node in prop.tests)
        seen = []
        for node in prop.tests:
            matching = [o for k, o in outcomes.items() if k == node or k.startswith(node + "::")
                        or k.startswith(node + "[")]
            if matching:
                passed = sum(o["outcome"] == "passed" for o in matching)
                seen.append(f"{passed}/{len(matching)} passed")
            else:
                seen.append("not in the recorded run")
        lines.append(f"| {prop.title} | {proofs} | {'<br>'.join(seen)} |")
    lines += ["", "Run one: `scripts/test.sh NODE_ID`, e.g. `scripts/test.sh tests/integration/test_decisions.py`.", ""]
    lines += ["## Figures", ""]
    for source in SOURCES:
        lines += [f"### {source.title}", "", f"`{source.command}`", ""]
        result = (benches if source.bench else results).get(source.file)
        where = "docs/bench" if source.bench else "results"
        if result is None:
            lines += [f"Not measured yet: `{where}/{source.file}` does not exist." + (f" {source.note}" if source.note
                                                                                       else ""), ""]
            continue
        provenance = _provenance(result) if ("taken_at" in result or "measured_at" in result) else ""
        if "seconds" in result and not provenance:
            provenance = f"The script ran {result['seconds'] / 60:.0f} minutes."
        lines += [*source.render(result), "", " ".join(x for x in (provenance, source.note) if x), ""]
    return "\n".join(lines).rstrip() + "\n"


def junit_to_results(junit: Path, command: str) -> dict[str, Any]:
    """A pytest JUnit XML file as {node id: outcome, seconds} plus totals and provenance."""
    tree = ET.parse(junit)  # noqa: S314 - our own pytest output
    tests: dict[str, dict[str, Any]] = {}
    totals = {"passed": 0, "failed": 0, "skipped": 0, "seconds": 0.0}
    for case in tree.iter("testcase"):
        module = case.get("classname", "")
        parts = module.split(".")
        # classname is the dotted module path (plus a class when tests are methods)
        path_parts = parts if (ROOT / Path(*parts).with_suffix(".py")).exists() else parts[:-1]
        node = f"{Path(*path_parts).with_suffix('.py').as_posix()}::{case.get('name')}"
        if case.find("failure") is not None or case.find("error") is not None:
            outcome = "failed"
        elif case.find("skipped") is not None:
            outcome = "skipped"
        else:
            outcome = "passed"
        seconds = float(case.get("time", 0.0))
        tests[node] = {"outcome": outcome, "seconds": round(seconds, 2)}
        totals[outcome] += 1
        totals["seconds"] += seconds
    suites = [float(time) for suite in tree.iter("testsuite") if (time := suite.get("time")) is not None]
    if suites:  # pytest's wall time of the session (with pytest-xdist, less than the tests' sum)
        totals["wall_seconds"] = sum(suites)
    return {
        "command": command,
        "taken_at": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": commit(),
        "machine": machine(),
        "totals": totals,
        "tests": tests,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 when the report is not what results/ gives")
    parser.add_argument("--junit", type=Path, default=None, help="record this pytest JUnit file as results/tests.json")
    parser.add_argument("--command", default="scripts/test.sh -q", help="with --junit: the command that ran it")
    parser.add_argument("--out", type=Path, default=DOC_PATH)
    args = parser.parse_args(argv)
    if args.junit:
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / "tests.json").write_text(json.dumps(junit_to_results(args.junit, args.command), indent=2) + "\n")
    text = render_report()
    if args.check:
        if not args.out.exists() or args.out.read_text() != text:
            print(f"{args.out} is out of date: run python -m rl_worker.ops.verification_report", file=sys.stderr)
            return 1
        return 0
    args.out.write_text(text)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
