"""Backfill rate beside the raw ceiling, on ONE embedded broker (tansu) it starts itself.

    .venv/bin/python scripts/bench_backfill.py                 # 3 runs, 10,000 positions
    .venv/bin/python scripts/bench_backfill.py --positions 2000 --runs 1   # a smoke run
    .venv/bin/python scripts/bench_backfill.py --positions 4000 --json docs/bench/bench_backfill.json

Each run, on fresh topics of the same broker (4 partitions per input topic):

- the history: N positions (signal, execution, close) whose events carry the stack's own
  actions, and their published decisions, made offline by the worker's own PositionJoiner on a
  real ModelReplica (as a live worker makes them), are pre-produced;
- ceiling (a): a raw aiokafka consume of the same three input topics (assigned partitions, from
  the first offset to the last record), records/s and the positions/s they make (records / 3);
- ceiling (b): the same consume with a json parse of each record;
- backfill: `run_backfill` (what `rl-worker backfill` runs), in this process: it reads the input
  range and the decisions, joins, learns, writes the target learning log and a checkpoint to
  Redis; positions/s over its whole run (reading both topics, joining, learning, writing).

The figures are medians over the runs; the ratios are backfill positions/s over the ceilings'
positions/s, measured in the same run on the same broker. `--json PATH` writes them in the one
result format of rl_worker.ops.perf_table (the README table and docs/VERIFICATION_REPORT.md).
Redis must answer at RL_REDIS_URL
(default redis://127.0.0.1:6379/0); the keys written are deleted at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shlex
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import redis
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from rich.console import Console

from rl_worker.core.config import CoreConfig
from rl_worker.core.replica import ModelReplica
from rl_worker.ops.backfill import run_backfill
from rl_worker.ops.services import EmbeddedBroker
from rl_worker.positions import PositionJoiner
from rl_worker.settings import Settings, TopicNames
from rl_worker.sim import events as f


def history(n: int, uid: str, seed: int) -> tuple[list[tuple[str, bytes, bytes]], list[tuple[bytes, bytes]]]:
    """(input records by topic field, decision records) for n positions, decisions made as a worker would."""
    rng = np.random.default_rng(seed)
    replica = ModelReplica(CoreConfig())
    joiner = PositionJoiner(replica, "rl", lambda: 0)
    inputs: list[tuple[str, bytes, bytes]] = []
    decisions: list[tuple[bytes, bytes]] = []
    from rl_worker.contract import decode_event

    for i in range(n):
        pid = f"{uid}-{i:06d}"
        events = (
            ("signals", f.signal(pid, rng, strategy="breakout", model="lgbm", weight=0.5)),
            ("executions", f.execution(pid, rng, size_multiplier=0.6, leverage=3.0)),
            ("closes", f.close(pid, rng)),
        )
        row = None
        for offset, (field, event) in enumerate(events):
            value = f.encode(event)
            inputs.append((field, pid.encode(), value))
            result = joiner.handle(row, decode_event(value), (field, 0, i * 3 + offset))
            row = result.row
            for emit in result.emits:
                if emit.kind == "decision":
                    decisions.append((pid.encode(), emit.value))
                else:
                    from rl_worker.core.outcome import Outcome

                    replica.apply(Outcome.model_validate_json(emit.value))
    return inputs, decisions


async def produce(bootstrap: str, topics: TopicNames, inputs: list, decisions: list, partitions: int) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    await admin.create_topics([
        NewTopic(getattr(topics, name), partitions, 1) for name in ("signals", "executions", "closes", "decisions")
    ])
    await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=20, max_batch_size=1024 * 1024)
    await producer.start()
    try:
        futures = []
        for field, key, value in inputs:
            futures.append(await producer.send(getattr(topics, field), value, key=key,
                                               partition=hash(key) % partitions))
        for key, value in decisions:
            futures.append(await producer.send(topics.decisions, value, key=key, partition=hash(key) % partitions))
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def raw_consume(bootstrap: str, topics: list[str], partitions: int, parse: bool) -> tuple[int, float]:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=100,
        max_partition_fetch_bytes=8 * 1024 * 1024, fetch_max_bytes=64 * 1024 * 1024,
    )
    await consumer.start()
    try:
        tps = [TopicPartition(t, p) for t in topics for p in range(partitions)]
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)
        await consumer.seek_to_beginning(*tps)
        started = time.perf_counter()
        count = 0
        todo = set(tps)
        idle = 0
        while todo and idle < 10:
            batch = await consumer.getmany(*todo, timeout_ms=300, max_records=20000)
            idle = 0 if batch else idle + 1
            for tp, records in batch.items():
                if parse:
                    for record in records:
                        json.loads(record.value)
                count += len(records)
                if records and records[-1].offset >= ends[tp] - 1:
                    todo.discard(tp)
        return count, time.perf_counter() - started
    finally:
        await consumer.stop()


async def one_run(bootstrap: str, redis_url: str, n: int, partitions: int, seed: int) -> dict[str, float]:
    uid = uuid.uuid4().hex[:8]
    topics = TopicNames(
        signals=f"bb{uid}.signals", executions=f"bb{uid}.executions", closes=f"bb{uid}.closes",
        decisions=f"bb{uid}.decisions", dead_letter=f"bb{uid}.dead", outcomes=f"bb{uid}.outcomes",
    )
    inputs, decisions = history(n, uid, seed)
    await produce(bootstrap, topics, inputs, decisions, partitions)
    names = [topics.signals, topics.executions, topics.closes]
    await raw_consume(bootstrap, names, partitions, parse=False)  # warm the broker's caches alike
    records, raw_s = await raw_consume(bootstrap, names, partitions, parse=False)
    _, parse_s = await raw_consume(bootstrap, names, partitions, parse=True)
    settings = Settings(kafka_bootstrap=bootstrap, redis_url=redis_url, app_id=f"bench-{uid}", topics=topics)
    target = f"bench-{uid}-bf"
    try:
        result = await run_backfill(settings, "earliest", "latest", target, "both", None, Console(stderr=True),
                                    show_progress=False)
    finally:
        client = redis.Redis.from_url(redis_url)
        for key in client.scan_iter(f"rl_worker:{target}:*"):
            client.delete(key)
        client.close()
    assert result.counts.applied == n, result.summary()
    positions_raw = records / 3 / raw_s
    positions_parse = records / 3 / parse_s
    return {
        "raw records/s": records / raw_s,
        "raw positions/s": positions_raw,
        "raw+parse positions/s": positions_parse,
        "backfill positions/s": result.rate,
        "ratio to raw": result.rate / positions_raw,
        "ratio to raw+parse": result.rate / positions_parse,
        "backfill s": result.seconds,
        **{f"{phase} s": seconds for phase, seconds in result.phases.items()},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--positions", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--json", default=None, metavar="PATH",
                        help="write the figures (docs/bench/bench_backfill.json)")
    args = parser.parse_args(argv)
    redis_url = os.environ.get("RL_REDIS_URL", "redis://127.0.0.1:6379/0")
    with tempfile.TemporaryDirectory() as tmp:
        broker = EmbeddedBroker(Path(tmp) / "broker.log")
        try:
            runs = []
            for i in range(args.runs):
                figures = asyncio.run(one_run(broker.bootstrap, redis_url, args.positions, args.partitions, 100 + i))
                runs.append(figures)
                print(f"run {i + 1}: " + ", ".join(f"{k} {v:,.3f}" if v < 10 else f"{k} {v:,.0f}"
                                                    for k, v in figures.items()), flush=True)
        finally:
            broker.stop()
    print(f"medians of {len(runs)} runs, {args.positions:,} positions ({3 * args.positions:,} input records, "
          f"{2 * args.positions:,} decisions), {args.partitions} partitions, tansu, {os.cpu_count()} cores:")
    for key in runs[0]:
        values = [r[key] for r in runs]
        print(f"  {key}: {statistics.median(values):,.3f} (range {min(values):,.3f} - {max(values):,.3f})")
    if args.json:
        from rl_worker.ops.perf_table import figure, result_document, write_result

        def fig(key: str, label: str, unit: str, **kw: Any) -> dict[str, Any]:
            values = [r[key] for r in runs]
            return figure(label, statistics.median(values), unit, runs=values, **kw)

        n = args.positions
        table = {
            "raw_positions_per_s": fig("raw positions/s", f"raw aiokafka consume of the 3 input topics ({3 * n:,} "
                                       "records), as positions/s (records / 3)", "/s"),
            "raw_parse_positions_per_s": fig("raw+parse positions/s", "the same consume + json.loads of each record, "
                                             "as positions/s", "/s"),
            "backfill_per_s": fig("backfill positions/s", f"backfill, whole run ({n:,} positions: read inputs + "
                                  f"{2 * n:,} decisions, join, learn, write log + checkpoint)", "/s",
                                  ceiling="raw_positions_per_s", aim=">= 0.5 of the raw consume"),
            "backfill_vs_parse": fig("backfill positions/s", "backfill, beside the consume + json.loads", "/s",
                                     ceiling="raw_parse_positions_per_s"),
        }
        command = shlex.join(["python", "scripts/bench_backfill.py", *(argv if argv is not None else sys.argv[1:])])
        write_result(args.json, result_document("bench_backfill", command, table, runs=len(runs),
                                                broker="tansu (embedded)", partitions=args.partitions))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
