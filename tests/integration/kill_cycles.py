"""Kill/restart cycles against a running stack: produce positions, SIGKILL a worker mid-stream,
restart it, and judge what reached rl.decisions and rl.outcomes (used by
tests/integration/test_kill_cycles.py and scripts/soak.py)."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections import defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from rl_worker.ops.services import WorkerProcess
from rl_worker.sim import events as f
from tests.integration.harness import Stack

__all__ = ["HEADER", "CycleResult", "kill_cycles"]


@dataclass
class Seen:
    """Everything read back from rl.decisions and rl.outcomes, as it arrives."""

    decisions: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: defaultdict(list))
    outcomes: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: defaultdict(list))


@dataclass
class CycleResult:
    cycle: int
    killed: int
    positions: int
    repeated: int
    divergent: int
    missing: int
    outcome_problems: int
    recover_s: float | None
    complete_s: float
    examples: list[str] = field(default_factory=list)

    def line(self) -> str:
        recover = "   -  " if self.recover_s is None else f"{self.recover_s:6.1f}"
        return (
            f"{self.cycle:5d} {self.killed:6d} {self.positions:9d} {self.repeated:8d} {self.divergent:9d} "
            f"{self.missing:7d} {self.outcome_problems:8d} {recover} {self.complete_s:10.1f}"
        )


HEADER = "cycle killed positions repeated divergent missing outcomes recover_s complete_s"


async def follow(bootstrap: str, topic: str, partitions: int, sink: Any, stop: asyncio.Event) -> None:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=50)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        while not stop.is_set():
            batch = await consumer.getmany(timeout_ms=200)
            now = time.time()
            for records in batch.values():
                for r in records:
                    sink(r, now)
    finally:
        await consumer.stop()


def build_cycle(stack: Stack, cycle: int, n: int, seed: int) -> tuple[list[tuple[str, bytes, bytes]], set[str]]:
    """n whole positions, their three events in a random order (so a close can come before its execution)."""
    rng = np.random.default_rng(seed)
    records, ids = [], set()
    for i in range(n):
        pid = f"c{cycle:03d}-{i:05d}"
        ids.add(pid)
        for topic, event in (
            (stack.signals, f.signal(pid, rng)),
            (stack.executions, f.execution(pid, rng)),
            (stack.closes, f.close(pid, rng)),
        ):
            records.append((topic, pid.encode(), f.encode(event)))
    order = rng.permutation(len(records))
    return [records[i] for i in order], ids


async def produce_paced(producer: AIOKafkaProducer, records: list[tuple[str, bytes, bytes]], rate: float,
                        on_progress: Any) -> None:
    started = time.monotonic()
    for i, (topic, key, value) in enumerate(records):
        await producer.send(topic, key=key, value=value)
        on_progress(i + 1)
        ahead = (i + 1) / rate - (time.monotonic() - started)
        if ahead > 0:
            await asyncio.sleep(ahead)
    await producer.flush()


async def end_offsets(
    consumer: AIOKafkaConsumer, topics: list[str], partitions: int
) -> dict[tuple[str, int], int]:
    tps = [TopicPartition(t, p) for t in topics for p in range(partitions)]
    ends = await consumer.end_offsets(tps)
    return {(tp.topic, tp.partition): o for tp, o in ends.items()}


def judge(seen: Seen, ids: set[str], kill_at: float, after_kill: dict[tuple[str, int], int],
          partitions: int) -> tuple[int, int, int, int, float | None, list[str]]:
    repeated = divergent = missing = outcome_problems = 0
    examples: list[str] = []
    for pid in ids:
        for agent in ("meta", "sizing"):
            records = seen.decisions.get(f"{pid}:{agent}", [])
            if not records:
                missing += 1
                if len(examples) < 5:
                    examples.append(f"missing {pid}:{agent}")
                continue
            if len(records) > 1:
                repeated += 1
                if len(examples) < 5:
                    examples.append(f"repeated {pid}:{agent} at " + ", ".join(r["_at"] for r in records))
                if len({r["action_index"] for r in records}) > 1:
                    divergent += 1
        outcomes = seen.outcomes.get(pid, [])
        if not outcomes:
            outcome_problems += 1
            continue
        first = min(outcomes, key=lambda o: o["_offset"])
        for agent in ("meta", "sizing"):
            published = seen.decisions.get(f"{pid}:{agent}", [])
            if not published or first[agent]["action_index"] != published[0]["action_index"]:
                outcome_problems += 1
                break
    # recovery: per partition, the first decision triggered by a record produced after the kill
    recovered_at: dict[int, float] = {}
    for records in seen.decisions.values():
        for r in records:
            src = r["source"]
            if src["offset"] >= after_kill.get((src["topic"], src["partition"]), 1 << 62):
                p = src["partition"]
                recovered_at[p] = min(recovered_at.get(p, r["_received"]), r["_received"])
    recover_s = None
    if len(recovered_at) == partitions:
        recover_s = max(recovered_at.values()) - kill_at
    return repeated, divergent, missing, outcome_problems, recover_s, examples



async def kill_cycles(
    stack: Stack,
    workers: list[WorkerProcess],
    cycles: int,
    partitions: int,
    positions: int = 400,
    rate: float = 1000.0,
    kill_at: float = 0.4,
    restart_after: float = 2.0,
    timeout: float = 90.0,
    settle: float = 1.0,
    seed: int = 1,
) -> AsyncIterator[CycleResult]:
    """Run `cycles` kill/restart cycles on two running workers, yielding each cycle's result.
    `workers` is updated in place (killed and exited workers are replaced)."""
    seen = Seen()
    stop = asyncio.Event()
    producer = AIOKafkaProducer(bootstrap_servers=stack.bootstrap, linger_ms=2)
    await producer.start()
    ends_reader = AIOKafkaConsumer(bootstrap_servers=stack.bootstrap, enable_auto_commit=False)
    await ends_reader.start()

    def on_decision(r: Any, now: float) -> None:
        d = json.loads(r.value)
        d["_received"] = now
        d["_at"] = f"{r.partition}@{r.offset} recover_from={dict(r.headers).get('rl.recover_from')}"
        seen.decisions[d["decision_id"]].append(d)

    def on_outcome(r: Any, now: float) -> None:
        o = json.loads(r.value)
        o["_offset"] = r.offset
        seen.outcomes[o["position_id"]].append(o)

    followers = [
        asyncio.create_task(follow(stack.bootstrap, stack.decisions, partitions, on_decision, stop)),
        asyncio.create_task(follow(stack.bootstrap, stack.outcomes, 1, on_outcome, stop)),
    ]
    try:
        for cycle in range(cycles):
            records, ids = build_cycle(stack, cycle, positions, seed=seed + cycle)
            victim = cycle % 2
            kill_after = int(len(records) * kill_at)
            killed = asyncio.Event()

            def on_progress(i: int, killed: asyncio.Event = killed, kill_after: int = kill_after) -> None:
                if i == kill_after:
                    killed.set()

            started = time.time()
            producing = asyncio.create_task(produce_paced(producer, records, rate, on_progress))
            await killed.wait()
            # what was produced by the kill (input ends, read with a client started beforehand)
            after_kill = await end_offsets(ends_reader, [stack.signals, stack.executions], partitions)
            kill_time = time.time()
            workers[victim].stop(signal.SIGKILL)
            await asyncio.sleep(restart_after)
            workers[victim] = stack.start_worker()
            await producing
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                done = sum(1 for pid in ids for a in ("meta", "sizing") if seen.decisions.get(f"{pid}:{a}"))
                outcomes = sum(1 for pid in ids if seen.outcomes.get(pid))
                if done == 2 * len(ids) and outcomes == len(ids):
                    break
                for i, w in enumerate(workers):
                    if w.process.poll() is not None:  # an exited worker is replaced, as a supervisor would
                        print(f"  worker {i} exited with {w.process.returncode}; replaced", flush=True)
                        workers[i] = stack.start_worker()
                await asyncio.sleep(0.2)
            await asyncio.sleep(settle)  # late repeats
            complete_s = time.time() - started
            repeated, divergent, missing, problems, recover_s, examples = judge(
                seen, ids, kill_time, after_kill, partitions
            )
            yield CycleResult(
                cycle, victim, len(ids), repeated, divergent, missing, problems, recover_s, complete_s, examples
            )
            await asyncio.to_thread(workers[victim].wait_ready, 90.0)
    finally:
        stop.set()
        for task in followers:
            await asyncio.gather(task, return_exceptions=True)
        await producer.stop()
        await ends_reader.stop()
