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
import gc
import json
import os
import shlex
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from rl_worker.core.actions import N_META_ACTIONS, meta_action_mask
from rl_worker.core.config import CoreConfig
from rl_worker.core.control import decode_log_record
from rl_worker.core.market import MarketFeatures, compute_market_features
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


def snapshot_timers(
    replica: ModelReplica, snapshot: bytes, config: CoreConfig
) -> tuple[Callable[[], float], Callable[[], float]]:
    """Two measures, in ms: encoding `replica` and decoding `snapshot` (its encoding)."""

    def encode_ms() -> float:
        start = clock()
        encode_replica(replica)
        return (clock() - start) * 1e3

    def decode_ms() -> float:
        start = clock()
        decode_replica(snapshot, config)
        return (clock() - start) * 1e3

    return encode_ms, decode_ms


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

    # The live path: in the worker an outcome is applied between most decisions, and an apply
    # changes the rows some cached greedy sets were read from. Timed as (apply + decide) - (apply
    # alone) on two replicas that see the same records, in alternating blocks of 50 records (the
    # median over blocks: a loaded machine slows both halves of a block alike), so only the
    # decisions' cost remains. "Own state": the decision is in the state whose rows the apply just
    # wrote (fine key and backoff levels), what a worker trading one regime mostly sees. "Another
    # replica": the decision reads a replica the apply did not touch, so nothing it caches is stale and
    # what remains is what the apply costs it in cold CPU caches (the floor of the live figures).
    half = len(records) // 2
    live_calls = min(calls, len(records) - half)
    block = 50

    def live_decide_us(decide: Callable[[ModelReplica, int], object], another: bool = False) -> float:
        with_decisions, alone = ModelReplica(config), ModelReplica(config)
        for record in records[:half]:
            with_decisions.apply(record)
            alone.apply(record)
        decided = trained if another else with_decisions
        per_block = []
        for first in range(0, live_calls, block):
            chunk = range(first, min(first + block, live_calls))
            start = clock()
            for i in chunk:
                with_decisions.apply(records[half + i])
                decide(decided, i)
            both = clock() - start
            start = clock()
            for i in chunk:
                alone.apply(records[half + i])
            per_block.append((both - (clock() - start)) / len(chunk))
        return statistics.median(per_block) * 1e6

    def live_meta(replica: ModelReplica, i: int) -> object:
        return replica.decide_meta(markets[i & 63], 0.7, decision_ids[i])

    def live_sizing(replica: ModelReplica, i: int) -> object:
        return replica.decide_sizing(0.7, 0.3, 0.4, decision_ids[i], max_leverage=8.0)

    own_markets = [
        MarketFeatures(r.meta.state.regime, r.meta.state.volatility, 0.5, r.meta.state.market_pressure)
        for r in records[half:]
    ]

    def live_meta_own(replica: ModelReplica, i: int) -> object:
        return replica.decide_meta(own_markets[i], records[half + i].meta.state.confidence, decision_ids[i])

    def live_sizing_own(replica: ModelReplica, i: int) -> object:
        state = records[half + i].sizing.state
        return replica.decide_sizing(state.signal_confidence, state.portfolio_exposure, state.volatility,
                                     decision_ids[i], max_leverage=8.0)

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
    encode_ms, decode_ms = snapshot_timers(trained, snapshot, config)

    return {
        "select_action_us": median_of(runs, lambda: time_per_call_us(select_only, calls)),
        "decide_meta_us": median_of(runs, lambda: time_per_call_us(decide_meta, calls)),
        "decide_sizing_us": median_of(runs, lambda: time_per_call_us(decide_sizing, calls)),
        "decide_meta_live_us": median_of(runs, lambda: live_decide_us(live_meta)),
        "decide_sizing_live_us": median_of(runs, lambda: live_decide_us(live_sizing)),
        "decide_meta_own_us": median_of(runs, lambda: live_decide_us(live_meta_own)),
        "decide_sizing_own_us": median_of(runs, lambda: live_decide_us(live_sizing_own)),
        "decide_meta_cold_us": median_of(runs, lambda: live_decide_us(live_meta, another=True)),
        "decide_sizing_cold_us": median_of(runs, lambda: live_decide_us(live_sizing, another=True)),
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


def rss_mib() -> float:
    """This process's resident set size (Linux /proc; NaN elsewhere)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return float("nan")
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def run_scale(runs: int, open_positions: int, states: int) -> dict[str, float]:
    """Memory and snapshots at scale (issue 12, part 4), each measured here on its own:

    - the rows of `open_positions` open positions as the worker's positions table holds them
      (the join's row after the signal, as changelog bytes, plus its expiry entry): RSS growth;
    - a replica holding `states` Q-table states (half meta, half sizing, each row updated once):
      RSS growth, snapshot size, encode and decode time.
    """
    from rl_worker.contract import decode_event
    from rl_worker.core.actions import meta_action_mask, sizing_action_mask
    from rl_worker.positions import PositionJoiner, encode_row
    from rl_worker.sim import events as factories

    config = CoreConfig.model_validate({"seed": 3})
    gc.collect()
    # nothing is freed between the two measurements: freed heap would be reused and hide growth
    before = rss_mib()
    replica = ModelReplica(config)
    meta_mask = meta_action_mask(next(iter(config.regime_strategies)), config)
    sizing_mask = sizing_action_mask(config.risk.max_size_multiplier, config.risk.max_leverage)
    half = states // 2
    for i in range(half):
        key = f"BREAKOUT|v{i}p0c0w0h0"
        replica.meta_table.td_update(key, meta_mask.members[i % len(meta_mask)], 0.1, key, meta_mask, 0.1, 0.9, True)
        key = f"c{i}e0w0v0s0"
        replica.sizing_table.td_update(key, sizing_mask.members[i % len(sizing_mask)], 0.1, key, sizing_mask, 0.1,
                                       0.9, True)
    gc.collect()
    replica_mib = rss_mib() - before
    joiner = PositionJoiner(ModelReplica(config), "rl", lambda: 0)
    rng = np.random.default_rng(5)
    signals = [factories.encode(factories.signal(f"pos-{i % 500}", rng)) for i in range(500)]
    before = rss_mib()
    rows: dict[str, bytes] = {}
    expiry: dict[str, tuple[int, bool, int]] = {}
    for i in range(open_positions):
        event = decode_event(signals[i % 500]).model_copy(update={"position_id": f"pos-{i:07d}"})
        row = joiner.handle(None, event, ("signals", i % 8, i), 1_795_000_000_000 + i).row
        rows[event.position_id] = encode_row(row)
        expiry[event.position_id] = (row.updated_ms, False, row.partition)
    gc.collect()
    rows_mib = rss_mib() - before
    row_bytes = statistics.mean(len(v) for v in list(rows.values())[:1000])
    del rows, expiry, joiner
    gc.collect()

    snapshot = encode_replica(replica)
    encode_ms, decode_ms = snapshot_timers(replica, snapshot, config)

    return {
        "open_positions": float(open_positions),
        "rows_rss_mib": rows_mib,
        "row_bytes": row_bytes,
        "states": float(len(replica.meta_table) + len(replica.sizing_table)),
        "replica_rss_mib": replica_mib,
        "big_snapshot_kib": len(snapshot) / 1024,
        "big_snapshot_encode_ms": median_of(min(runs, 3), encode_ms),
        "big_snapshot_decode_ms": median_of(min(runs, 3), decode_ms),
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
        ("decide_meta, same replica repeatedly (cache warm)", f"{results['decide_meta_us']:.2f} us", "< 10 us"),
        ("decide_sizing, same replica repeatedly (cache warm)", f"{results['decide_sizing_us']:.2f} us", "< 10 us"),
        ("decide_meta after an apply (the live path)", f"{results['decide_meta_live_us']:.2f} us", "< 10 us"),
        ("decide_sizing after an apply (the live path)", f"{results['decide_sizing_live_us']:.2f} us", "< 10 us"),
        ("decide_meta after an apply to its own state", f"{results['decide_meta_own_us']:.2f} us", ""),
        ("decide_sizing after an apply to its own state", f"{results['decide_sizing_own_us']:.2f} us", ""),
        ("decide_meta after an apply to another replica (cold caches)", f"{results['decide_meta_cold_us']:.2f} us", ""),
        (
            "decide_sizing after an apply to another replica (cold caches)",
            f"{results['decide_sizing_cold_us']:.2f} us",
            "",
        ),
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
    if "open_positions" in results:
        rows += [
            (f"RSS growth: {int(results['open_positions']):,} open positions' rows as the worker holds them "
             f"(~{results['row_bytes']:.0f} B each)", f"{results['rows_rss_mib']:,.0f} MiB", ""),
            (f"RSS growth: a replica with {int(results['states']):,} Q-table states",
             f"{results['replica_rss_mib']:,.0f} MiB", ""),
            (f"snapshot at {int(results['states']):,} states: size / encode / decode",
             f"{results['big_snapshot_kib']:,.0f} KiB / {results['big_snapshot_encode_ms']:.0f} ms / "
             f"{results['big_snapshot_decode_ms']:.0f} ms", ""),
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
        "decide_meta_us": figure("core: one meta decision (state, generator, selection; "
                                 "no apply in between: cache warm)", results["decide_meta_us"],
                                 "us", aim=f"< {TARGET_SELECT_US:g} µs"),
        "decide_sizing_us": figure("core: one sizing decision (cache warm)", results["decide_sizing_us"], "us",
                                   aim=f"< {TARGET_SELECT_US:g} µs"),
        "decide_meta_live_us": figure("core: one meta decision right after an apply (the worker's usual case: "
                                      "the apply may change rows the decision reads)", results["decide_meta_live_us"],
                                      "us", aim=f"< {TARGET_SELECT_US:g} µs"),
        "decide_sizing_live_us": figure("core: one sizing decision right after an apply",
                                        results["decide_sizing_live_us"], "us", aim=f"< {TARGET_SELECT_US:g} µs"),
        "decide_meta_own_us": figure("core: one meta decision right after an apply to its own state (every row "
                                     "it reads changed)", results["decide_meta_own_us"], "us"),
        "decide_sizing_own_us": figure("core: one sizing decision right after an apply to its own state",
                                       results["decide_sizing_own_us"], "us"),
        "decide_meta_cold_us": figure("core: one meta decision right after an apply to another replica (nothing it "
                                      "caches changed: the cold CPU caches alone)", results["decide_meta_cold_us"],
                                      "us"),
        "decide_sizing_cold_us": figure("core: one sizing decision right after an apply to another replica",
                                        results["decide_sizing_cold_us"], "us"),
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
    if "open_positions" in results:
        positions, states = int(results["open_positions"]), int(results["states"])
        figures |= {
            "rows_rss_mib": figure(f"scale: RSS growth holding {positions:,} open positions' rows as the worker does "
                                   f"(changelog bytes, ~{results['row_bytes']:.0f} B each, + expiry index)",
                                   results["rows_rss_mib"], "MiB"),
            "replica_rss_mib": figure(f"scale: RSS growth of a replica with {states:,} Q-table states",
                                      results["replica_rss_mib"], "MiB"),
            "big_snapshot_kib": figure(f"scale: snapshot size at {states:,} states", results["big_snapshot_kib"],
                                       "KiB"),
            "big_snapshot_encode_ms": figure(f"scale: snapshot encode at {states:,} states",
                                             results["big_snapshot_encode_ms"], "ms"),
            "big_snapshot_decode_ms": figure(f"scale: snapshot decode at {states:,} states",
                                             results["big_snapshot_decode_ms"], "ms"),
        }
    return result_document("bench_core", command, figures, runs=int(results["runs"]), profile=profile,
                           clock=clock_name, records=n)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer records and calls (a smoke run)")
    parser.add_argument("--runs", type=int, default=None, help="repeats per figure (at least 5)")
    parser.add_argument("--json", default=None, metavar="PATH",
                        help="write the figures with their same-run ceilings (docs/bench/bench_core.json: the README "
                             "table and docs/VERIFICATION_REPORT.md are made from it)")
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="cpu", help="what to time (default cpu)")
    parser.add_argument("--no-scale", action="store_true",
                        help="skip the memory/snapshot figures at 100,000 open positions and 50,000 states")
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
    if not args.no_scale:
        results |= run_scale(runs, 100_000, 50_000)
    print_report(results)
    if args.json:
        from rl_worker.ops.perf_table import write_result

        command = shlex.join(["python", "scripts/bench_core.py", *(argv if argv is not None else sys.argv[1:])])
        write_result(args.json, result_document(results, command, args.profile, args.clock))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
