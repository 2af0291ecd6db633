"""Micro-benchmarks of the pure RL core: action selection, TD update, applying records, snapshots.

    .venv/bin/python scripts/bench_core.py            # full run (7 repeats, 20,000 records)
    .venv/bin/python scripts/bench_core.py --quick    # smoke run (5 repeats, 4,000 records)
    .venv/bin/python scripts/bench_core.py --json docs/bench/bench_core.json   # + the result file

The same-run ceiling of applying records is the raw JSON parse of the same records (stdlib
`json.loads` of the bytes the worker writes to the learning log): a replica cannot apply a
record faster than it can read it. `decode + apply` is what a replica does per log record
(`decode_log_record` then `ModelReplica.apply`).

Every figure is the median over the repeats, timed by default with the process CPU clock
(`--clock wall` for wall time): on a shared machine the CPU clock leaves out the time the
benchmark spends descheduled. Targets: >= 100,000 applied records/s for one replica and
< 10 us per action selection.
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys
import time
from collections.abc import Callable

import numpy as np

from rl_worker.core.actions import N_META_ACTIONS, meta_action_mask
from rl_worker.core.config import CoreConfig
from rl_worker.core.control import decode_log_record
from rl_worker.core.market import compute_market_features
from rl_worker.core.outcome import Outcome
from rl_worker.core.qlearning import DecisionRandom, QTable, select_greedy
from rl_worker.core.replica import ModelReplica
from rl_worker.core.snapshot import decode_replica, encode_replica
from rl_worker.sim.events import make_outcome

TARGET_APPLY_PER_S = 100_000
TARGET_SELECT_US = 10.0
CLOCKS = {"cpu": time.process_time, "wall": time.perf_counter}
clock = time.process_time


def build_outcomes(n: int, config: CoreConfig, seed: int = 7) -> list[Outcome]:
    """`n` valid records over many states, built before any timing; equity follows the pnl (a walk)."""
    rng = np.random.default_rng(seed)
    records, equity = [], 10_000.0
    for i in range(n):
        pnl = float(rng.normal(0.1, 2.0))
        equity *= 1.0 + pnl / 1000.0
        records.append(make_outcome(rng, config, i, pnl_pct=pnl, equity=equity))
    return records


def time_per_call_us(fn: Callable[[int], object], calls: int) -> float:
    """Wall time of `fn(0) ... fn(calls - 1)` divided by `calls`, in microseconds."""
    start = clock()
    for i in range(calls):
        fn(i)
    return (clock() - start) / calls * 1e6


def median_of(runs: int, measure: Callable[[], float]) -> float:
    return statistics.median(measure() for _ in range(runs))


def run(runs: int, n_records: int, calls: int, profile: str = "default") -> dict[str, float]:
    config = CoreConfig.model_validate({"seed": 3, "profile": profile})
    records = build_outcomes(n_records, config)

    # A replica trained on every record: decisions read populated Q-rows.
    trained = ModelReplica(config)
    for record in records:
        trained.apply(record)
    markets = [
        compute_market_features([100.0 * (1.0 + 0.002 * np.sin(k * 0.7 + j)) for k in range(30)], config.market)
        for j in range(64)
    ]
    decision_ids = [f"bench-{i}" for i in range(calls)]
    meta_keys = [k for k in trained.meta_table.keys if k.startswith(markets[0].regime)] or ["?"]
    randoms = DecisionRandom(config.seed)
    stream = randoms.stream("bench")
    mask = meta_action_mask(markets[0].regime, config)
    table = trained.meta_table

    def select_only(i: int) -> object:
        return select_greedy(table.greedy_actions(meta_keys[i % len(meta_keys)], mask), mask, 0.1, stream)

    def decide_meta(i: int) -> object:
        return trained.decide_meta(markets[i & 63], 0.7, decision_ids[i])

    def decide_sizing(i: int) -> object:
        return trained.decide_sizing(0.7, 0.3, 0.4, decision_ids[i], max_leverage=8.0)

    update_table = QTable(N_META_ACTIONS)
    update_keys = [r.meta.state_key for r in records[:512]]
    update_actions = [r.meta.action_index for r in records[:512]]

    def update(i: int) -> object:
        j = i & 511
        return update_table.td_update(update_keys[j], update_actions[j], 0.5, update_keys[j - 1], mask, 0.01, 0.99)

    def apply_all() -> float:
        replica = ModelReplica(config)
        apply = replica.apply
        start = clock()
        for record in records:
            apply(record)
        return clock() - start

    apply_seconds = median_of(runs, apply_all)
    encoded = [record.model_dump_json().encode() for record in records]

    def parse_all() -> float:
        loads = json.loads
        start = clock()
        for value in encoded:
            loads(value)
        return clock() - start

    def decode_apply_all() -> float:
        replica = ModelReplica(config)
        apply = replica.apply
        start = clock()
        for offset, value in enumerate(encoded):
            apply(decode_log_record(value), offset)  # type: ignore[arg-type]
        return clock() - start

    parse_seconds = median_of(runs, parse_all)
    decode_apply_seconds = median_of(runs, decode_apply_all)
    snapshot = encode_replica(trained)

    def encode_ms() -> float:
        start = clock()
        encode_replica(trained)
        return (clock() - start) * 1e3

    def decode_ms() -> float:
        start = clock()
        decode_replica(snapshot, config)
        return (clock() - start) * 1e3

    return {
        "select_action_us": median_of(runs, lambda: time_per_call_us(select_only, calls)),
        "decide_meta_us": median_of(runs, lambda: time_per_call_us(decide_meta, calls)),
        "decide_sizing_us": median_of(runs, lambda: time_per_call_us(decide_sizing, calls)),
        "td_update_us": median_of(runs, lambda: time_per_call_us(update, calls)),
        "apply_us": apply_seconds / len(records) * 1e6,
        "apply_per_s": len(records) / apply_seconds,
        "json_parse_per_s": len(records) / parse_seconds,
        "decode_apply_per_s": len(records) / decode_apply_seconds,
        "record_bytes": statistics.mean(len(v) for v in encoded),
        "snapshot_encode_ms": median_of(runs, encode_ms),
        "snapshot_decode_ms": median_of(runs, decode_ms),
        "snapshot_kib": len(snapshot) / 1024,
        "meta_states": float(len(trained.meta_table)),
        "sizing_states": float(len(trained.sizing_table)),
        "records": float(len(records)),
        "runs": float(runs),
    }


def print_report(results: dict[str, float]) -> None:
    from rich.console import Console
    from rich.table import Table

    clock_name = "CPU" if clock is time.process_time else "wall"
    table = Table(title=f"rl_worker.core, medians of {int(results['runs'])} runs ({clock_name} time)")
    table.add_column("measure")
    table.add_column("median", justify="right")
    table.add_column("target", justify="right")
    rows = [
        ("select_greedy (the selection alone)", f"{results['select_action_us']:.2f} us", ""),
        ("decide_meta (state + rng + select)", f"{results['decide_meta_us']:.2f} us", "< 10 us"),
        ("decide_sizing (state + rng + select)", f"{results['decide_sizing_us']:.2f} us", "< 10 us"),
        ("td_update", f"{results['td_update_us']:.2f} us", ""),
        ("ModelReplica.apply, one record", f"{results['apply_us']:.2f} us", ""),
        (
            f"records applied per second ({int(results['records']):,} records)",
            f"{results['apply_per_s']:,.0f}/s",
            f">= {TARGET_APPLY_PER_S:,}/s",
        ),
        (
            f"decode_log_record + apply, one log record (~{results['record_bytes']:.0f} B)",
            f"{results['decode_apply_per_s']:,.0f}/s",
            f"{results['decode_apply_per_s'] / results['json_parse_per_s']:.2f} of the ceiling",
        ),
        ("ceiling: json.loads of the same records", f"{results['json_parse_per_s']:,.0f}/s", "ceiling"),
        (
            f"snapshot encode ({int(results['meta_states'])} + {int(results['sizing_states'])} states, "
            f"{results['snapshot_kib']:.0f} KiB)",
            f"{results['snapshot_encode_ms']:.2f} ms",
            "",
        ),
        ("snapshot decode", f"{results['snapshot_decode_ms']:.2f} ms", ""),
    ]
    for row in rows:
        table.add_row(*row)
    Console().print(table)
    selection_ok = max(results["decide_meta_us"], results["decide_sizing_us"]) < TARGET_SELECT_US
    apply_ok = results["apply_per_s"] >= TARGET_APPLY_PER_S
    print(
        f"summary: apply {results['apply_per_s']:,.0f} records/s "
        f"({'ok' if apply_ok else 'BELOW TARGET'}), decide_meta {results['decide_meta_us']:.2f} us, "
        f"decide_sizing {results['decide_sizing_us']:.2f} us "
        f"({'ok' if selection_ok else 'ABOVE TARGET'}), td_update {results['td_update_us']:.2f} us, "
        f"snapshot {results['snapshot_encode_ms']:.1f}/{results['snapshot_decode_ms']:.1f} ms enc/dec"
    )


def result_document(results: dict[str, float], command: str, profile: str, clock_name: str) -> dict[str, object]:
    """The JSON result file (rl_worker.ops.perf_table renders the README table from it)."""
    from rl_worker.ops.perf_table import figure, result_document

    n = int(results["records"])
    figures = {
        "decide_meta_us": figure("core: one meta decision (state, generator, selection)", results["decide_meta_us"],
                                 "us", aim=f"< {TARGET_SELECT_US:g} µs"),
        "decide_sizing_us": figure("core: one sizing decision", results["decide_sizing_us"], "us",
                                   aim=f"< {TARGET_SELECT_US:g} µs"),
        "td_update_us": figure("core: one TD update", results["td_update_us"], "us"),
        "json_parse_per_s": figure(f"core: json.loads of the same {n:,} learning-log records (ceiling)",
                                   results["json_parse_per_s"], "/s"),
        "apply_per_s": figure("core: records applied per second by one replica (pre-built records)",
                              results["apply_per_s"], "/s", ceiling="json_parse_per_s",
                              aim=f">= {TARGET_APPLY_PER_S:,}/s"),
        "decode_apply_per_s": figure("core: log records decoded + applied per second (no Kafka)",
                                     results["decode_apply_per_s"], "/s", ceiling="json_parse_per_s"),
        "snapshot_encode_ms": figure(
            f"core: snapshot encode ({int(results['meta_states']):,} + {int(results['sizing_states']):,} states, "
            f"{results['snapshot_kib']:,.0f} KiB)", results["snapshot_encode_ms"], "ms"),
        "snapshot_decode_ms": figure("core: snapshot decode", results["snapshot_decode_ms"], "ms"),
    }
    for name in ("rss_positions_mib", "rss_replica_mib", "big_snapshot_kib", "big_snapshot_encode_ms",
                 "big_snapshot_decode_ms"):
        if name in results:
            figures[name] = figure(SCALE_LABELS[name], results[name], SCALE_UNITS[name])
    return result_document("bench_core", command, figures, runs=int(results["runs"]), profile=profile,
                           clock=clock_name, records=n)


SCALE_LABELS: dict[str, str] = {}
SCALE_UNITS: dict[str, str] = {}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer records and calls (a smoke run)")
    parser.add_argument("--runs", type=int, default=None, help="repeats per figure (at least 5)")
    parser.add_argument("--json", default=None, metavar="PATH",
                        help="write the figures with their same-run ceilings (docs/bench/bench_core.json: the README "
                             "table and docs/VERIFICATION_REPORT.md are made from it)")
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="cpu", help="what to time (default cpu)")
    parser.add_argument(
        "--profile", choices=("default", "seed"), default="default", help="learning profile (RL_CORE__PROFILE)"
    )
    args = parser.parse_args(argv)
    global clock
    clock = CLOCKS[args.clock]
    runs = max(5, args.runs or (5 if args.quick else 7))
    n_records, calls = (4_000, 2_000) if args.quick else (20_000, 20_000)
    print(f"profile {args.profile}")
    results = run(runs, n_records, calls, args.profile)
    print_report(results)
    if args.json:
        from rl_worker.ops.perf_table import write_result

        command = shlex.join(["python", "scripts/bench_core.py", *(argv if argv is not None else sys.argv[1:])])
        write_result(args.json, result_document(results, command, args.profile, args.clock))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
