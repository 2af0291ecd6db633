"""The synthetic trading stack over Kafka: trades each position through `rl_worker.client`
(publish the signal, await the meta decision with a deadline; publish the execution, await the
sizing decision), falls back to the stack's own choice when a decision misses its deadline,
closes the position with an outcome that depends on what was traded, and scores the choices.

The market itself (regimes, prices, the expected reward of every action) is pure and lives in
`rl_worker.sim`; this module is its Kafka I/O.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from rl_worker.client import Answer, DecisionClient
from rl_worker.core.arms import meta_action_of, sizing_action_within
from rl_worker.ops.exceptions import CommandError
from rl_worker.settings import Settings
from rl_worker.sim.market import OpenedPosition, SimConfig, SyntheticMarket
from rl_worker.sim.report import LearningReport
from rl_worker.stream.connections import kafka_options
from rl_worker.stream.topics import ensure_topics

__all__ = ["SimulationError", "SimulationProgress", "run_simulation"]

log = logging.getLogger(__name__)


class SimulationError(CommandError):
    """The workers stopped answering: every decision of many positions in a row missed its deadline."""

    def __init__(self, message: str) -> None:
        super().__init__(message, exit_code=1)


@dataclass
class SimulationProgress:
    """What the simulator knows after each closed position (read by the live display and the plot)."""

    target: int
    report: LearningReport
    started_s: float = field(default_factory=time.monotonic)
    opened: int = 0
    closed: int = 0
    decisions: int = 0  # decisions that came in time
    fallbacks: dict[str, int] = field(default_factory=lambda: {"meta": 0, "sizing": 0})  # deadline missed
    late: int = 0  # decisions that came after their deadline (dropped by the client)
    duplicates: int = 0  # decisions that came twice for one position and agent
    curve: list[dict[str, Any]] = field(default_factory=list)

    @property
    def elapsed_s(self) -> float:
        return time.monotonic() - self.started_s


def _meta_index(answer: Answer) -> int:
    if answer.decision is not None:
        return int(answer.decision["action_index"])
    action = answer.action  # the stack's own choice: the signal's strategy / model / weight
    return meta_action_of(str(action["strategy"]), str(action["model"]), float(action["weight"]))


def _sizing_index(answer: Answer, position: OpenedPosition) -> int:
    if answer.decision is not None:
        return int(answer.decision["action_index"])
    action, hidden = answer.action, position.hidden  # the execution's own size, inside its limits
    return sizing_action_within(
        float(action["size_multiplier"]), float(action["leverage"]), hidden.max_size_multiplier, hidden.max_leverage
    )


async def run_simulation(
    settings: Settings,
    positions: int,
    seed: int = 7,
    in_flight: int = 32,
    window: int = 500,
    curve_every: int = 100,
    sim_config: SimConfig | None = None,
    on_progress: Callable[[SimulationProgress], None] | None = None,
    deadline_s: float = 5.0,
    max_fallbacks_in_a_row: int | None = None,
) -> SimulationProgress:
    """Trade `positions` positions through the workers; at most `in_flight` open at a time.

    Each decision is awaited at most `deadline_s`; after that the position trades the stack's own
    choice and the client reports the fallback (on the execution, or on the close). When
    `max_fallbacks_in_a_row` positions (default 4 x `in_flight`) in a row fell back on both
    decisions the workers are taken for gone: SimulationError. Bad arguments: CommandError (exit 2)
    before anything is created or sent.
    """
    for name, value in (("--positions", positions), ("--in-flight", in_flight), ("--deadline", deadline_s)):
        if not value > 0:
            raise CommandError(f"{name} must be above 0, not {value}")
    await ensure_topics(settings)
    config = sim_config or SimConfig(core=settings.core)
    market = SyntheticMarket(seed, config)
    progress = SimulationProgress(positions, LearningReport(window))
    give_up = max_fallbacks_in_a_row or 4 * in_flight
    options = kafka_options(settings)
    client = DecisionClient(options.pop("bootstrap_servers"), settings.topics, **options)
    await client.start()
    unanswered = 0
    slots = asyncio.Semaphore(in_flight)

    async def trade(position: OpenedPosition) -> None:
        nonlocal unanswered
        try:
            meta = await client.decide_meta(position.signal, deadline_s)
            sizing = await client.decide_sizing(position.execution, deadline_s)
            meta_index, sizing_index = _meta_index(meta), _sizing_index(sizing, position)
            scored = market.score(position, meta_index, sizing_index)
            close = market.close_position(position, meta_index, sizing_index)
            await client.report_close(close)
        finally:
            slots.release()
        for agent, answer in (("meta", meta), ("sizing", sizing)):
            progress.fallbacks[agent] += answer.fallback
            progress.decisions += not answer.fallback
        unanswered = unanswered + 1 if meta.fallback and sizing.fallback else 0
        if unanswered >= give_up:
            raise SimulationError(
                f"no decision within {deadline_s} s for {unanswered} positions in a row: are the workers running?"
            )
        progress.closed += 1
        progress.late, progress.duplicates = client.late_decisions, client.duplicate_decisions
        progress.report.record(scored)
        if progress.closed % curve_every == 0 or progress.closed == positions:
            snapshot = progress.report.snapshot().as_dict()
            progress.curve.append(snapshot | {"elapsed_s": progress.elapsed_s})
        if on_progress is not None:
            on_progress(progress)

    try:
        async with asyncio.TaskGroup() as group:
            for _ in range(positions):
                await slots.acquire()
                group.create_task(trade(market.open_position()))
                progress.opened += 1
    except ExceptionGroup as failed:  # the first task's error, as the caller would see it without tasks
        raise failed.exceptions[0] from None
    finally:
        await client.stop()
    return progress
