"""The synthetic trading stack over Kafka: publishes signals and executions, reads the decisions,
closes each position with an outcome that depends on them, and scores the choices.

The market itself (regimes, prices, the expected reward of every action) is pure and lives in
`rl_worker.sim`; this module is its Kafka I/O.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from rl_worker.settings import Settings
from rl_worker.sim.market import OpenedPosition, SimConfig, SyntheticMarket
from rl_worker.sim.report import LearningReport
from rl_worker.stream.connections import kafka_options
from rl_worker.stream.internals import refresh_metadata
from rl_worker.stream.topics import ensure_topics

__all__ = ["SimulationProgress", "run_simulation"]

log = logging.getLogger(__name__)


@dataclass
class SimulationProgress:
    """What the simulator knows after each closed position (read by the live display and the plot)."""

    target: int
    report: LearningReport
    started_s: float = field(default_factory=time.monotonic)
    opened: int = 0
    closed: int = 0
    decisions: int = 0
    duplicates: int = 0
    curve: list[dict[str, Any]] = field(default_factory=list)

    @property
    def elapsed_s(self) -> float:
        return time.monotonic() - self.started_s


def _dumps(event: dict[str, Any]) -> bytes:
    return json.dumps(event, separators=(",", ":")).encode()


async def run_simulation(
    settings: Settings,
    positions: int,
    seed: int = 7,
    in_flight: int = 32,
    window: int = 500,
    curve_every: int = 100,
    sim_config: SimConfig | None = None,
    on_progress: Callable[[SimulationProgress], None] | None = None,
    decision_timeout_s: float = 60.0,
) -> SimulationProgress:
    """Trade `positions` positions through the workers; at most `in_flight` open at a time."""
    await ensure_topics(settings)
    config = sim_config or SimConfig(core=settings.core)
    market = SyntheticMarket(seed, config)
    progress = SimulationProgress(positions, LearningReport(window))
    t = settings.topics
    producer = AIOKafkaProducer(**kafka_options(settings), linger_ms=2)
    consumer = AIOKafkaConsumer(**kafka_options(settings), enable_auto_commit=False, fetch_max_wait_ms=20)
    await producer.start()
    await consumer.start()
    waiting: dict[str, dict[str, Any]] = {}
    ready: asyncio.Queue[str] = asyncio.Queue()
    try:
        partitions = consumer.partitions_for_topic(t.decisions)
        while partitions is None:
            await refresh_metadata(consumer)
            partitions = consumer.partitions_for_topic(t.decisions)
        tps = [TopicPartition(t.decisions, p) for p in sorted(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_end(*tps)
        for tp in tps:  # resolve the end offsets now, before anything is published
            await consumer.position(tp)

        async def read_decisions() -> None:
            while True:
                batch = await consumer.getmany(*tps, timeout_ms=100)
                for records in batch.values():
                    for record in records:
                        decision = json.loads(record.value)
                        entry = waiting.get(decision["position_id"])
                        if entry is None or decision["agent"] in entry:
                            progress.duplicates += entry is not None
                            continue
                        entry[decision["agent"]] = decision
                        progress.decisions += 1
                        if "meta" in entry and "sizing" in entry:
                            ready.put_nowait(decision["position_id"])

        reader = asyncio.create_task(read_decisions())
        opened: dict[str, OpenedPosition] = {}

        async def open_one() -> None:
            position = market.open_position()
            opened[position.position_id] = position
            waiting[position.position_id] = {}
            key = position.position_id.encode()
            await producer.send(t.signals, key=key, value=_dumps(position.signal))
            await producer.send(t.executions, key=key, value=_dumps(position.execution))
            progress.opened += 1

        while progress.opened < min(in_flight, positions):
            await open_one()
        while progress.closed < positions:
            try:
                position_id = await asyncio.wait_for(ready.get(), decision_timeout_s)
            except TimeoutError:
                raise TimeoutError(
                    f"no decision for {decision_timeout_s}s; {len(opened)} positions wait for one"
                ) from None
            position = opened.pop(position_id)
            entry = waiting.pop(position_id)
            meta, sizing = entry["meta"]["action_index"], entry["sizing"]["action_index"]
            scored = market.score(position, meta, sizing)
            close = market.close_position(position, meta, sizing)
            await producer.send(t.closes, key=position_id.encode(), value=_dumps(close))
            progress.closed += 1
            progress.report.record(scored)
            if progress.closed % curve_every == 0 or progress.closed == positions:
                snapshot = progress.report.snapshot().as_dict()
                progress.curve.append(snapshot | {"elapsed_s": progress.elapsed_s})
            if on_progress is not None:
                on_progress(progress)
            if progress.opened < positions:
                await open_one()
        await producer.flush()
        reader.cancel()
    finally:
        await consumer.stop()
        await producer.stop()
    return progress
