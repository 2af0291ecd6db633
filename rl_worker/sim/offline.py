"""The offline learning loop: the synthetic market against a pure `ModelReplica`, in-process, no Kafka.

Each position goes the way it goes through the worker: the events are encoded to JSON, decoded
with the contract and fed to the worker's own `PositionJoiner`, whose decisions read the replica
and whose outcome record the replica applies. The market scores
every choice against its expected-reward oracle; a `LearningReport` keeps the figures.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from rl_worker.contract import decode_event
from rl_worker.core import CoreConfig, ModelReplica, Outcome
from rl_worker.positions import PositionJoiner, PositionRow
from rl_worker.sim.market import OpenedPosition, SimConfig, SyntheticMarket
from rl_worker.sim.report import LearningReport, LearningSnapshot

__all__ = ["OfflineRun", "join_events", "run_offline_learning"]

Policy = Literal["rl", "random"]


@dataclass
class OfflineRun:
    """What an offline run leaves: the final report, its snapshots every `every` positions, the replica."""

    report: LearningReport
    curve: list[LearningSnapshot] = field(default_factory=list)
    replica: ModelReplica | None = None
    seconds: float = 0.0


def _decode(event: dict[str, Any]) -> Any:
    return decode_event(json.dumps(event).encode())


def join_events(
    joiner: PositionJoiner, row: PositionRow | None, events: list[tuple[str, dict[str, Any]]], index: int
) -> tuple[PositionRow, dict[str, Any]]:
    """Feed events through the worker's own position join; returns the row and what it emitted
    (`meta` / `sizing` decision records and the `outcome` record, parsed)."""
    emitted: dict[str, Any] = {}
    for topic, event in events:
        result = joiner.handle(row, _decode(event), (topic, 0, index))
        row = result.row
        for emit in result.emits:
            record = json.loads(emit.value)
            emitted["outcome" if emit.kind == "outcome" else record["agent"]] = record
    assert row is not None
    return row, emitted


def run_offline_learning(
    n_positions: int,
    seed: int,
    core_config: CoreConfig,
    sim_config: SimConfig | None = None,
    policy: Policy = "rl",
    window: int = 500,
    every: int = 500,
    on_snapshot: Callable[[LearningSnapshot], None] | None = None,
) -> OfflineRun:
    """Run `n_positions` through the market; `policy="random"` picks uniformly among the allowed
    actions instead of asking a replica (the control whose fraction is ~0).

    The market scores with `core_config` (its masks, reward weights and risk limits).
    """
    sim_config = (sim_config or SimConfig()).model_copy(update={"core": core_config})
    market = SyntheticMarket(seed, sim_config)
    report = LearningReport(window)
    run = OfflineRun(report)
    replica = ModelReplica(core_config) if policy == "rl" else None
    run.replica = replica
    control = np.random.default_rng([seed, 0xC0DE])
    started = time.perf_counter()
    joiner = None if replica is None else PositionJoiner(replica, policy, lambda: 0)
    for i in range(n_positions):
        opened: OpenedPosition = market.open_position()
        row: PositionRow | None = None
        if joiner is None:
            meta_index = int(control.choice(market.allowed_meta(opened)))
            sizing_index = int(control.choice(market.allowed_sizing(opened)))
        else:
            row, decisions = join_events(
                joiner, None, [("signals", opened.signal), ("executions", opened.execution)], i
            )
            meta_index, sizing_index = decisions["meta"]["action_index"], decisions["sizing"]["action_index"]
        scored = market.score(opened, meta_index, sizing_index)
        close = market.close_position(opened, meta_index, sizing_index)
        reward = None
        if joiner is not None and replica is not None:
            _, emitted = join_events(joiner, row, [("closes", close)], i)
            applied = replica.apply(Outcome.model_validate(emitted["outcome"]))
            if applied is not None:
                reward = applied.meta_reward + applied.size_reward
        report.record(scored, reward)
        if report.positions % every == 0:
            snapshot = report.snapshot()
            run.curve.append(snapshot)
            if on_snapshot is not None:
                on_snapshot(snapshot)
    run.seconds = time.perf_counter() - started
    return run
