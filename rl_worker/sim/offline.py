"""The offline learning loop: the synthetic market against a pure `ModelReplica`, in-process, no Kafka.

Each position goes the way it goes through the worker: the events are encoded to JSON, decoded
with the contract and fed to the worker's own `PositionJoiner`, whose decisions read the replica
and whose outcome record the replica applies. The market scores
every choice against its expected-reward oracle; a `LearningReport` keeps the figures.
"""

from __future__ import annotations

import json
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import numpy as np

from rl_worker.contract import decode_event
from rl_worker.core import CoreConfig, ModelReplica, Outcome
from rl_worker.core.actions import META_INDEX, SIZING_INDEX, MetaAction, SizingAction
from rl_worker.core.replica import AppliedOutcome
from rl_worker.positions import PositionJoiner, PositionRow
from rl_worker.sim.market import OpenedPosition, ScoredChoice, SimConfig, SyntheticMarket
from rl_worker.sim.report import LearningReport, LearningSnapshot

__all__ = ["Baseline", "OfflineRun", "RandomBaseline", "RuleBaseline", "join_events", "run_offline_learning"]

Policy = Literal["rl", "random", "rule"]


@dataclass
class OfflineRun:
    """What an offline run leaves: the final report, its snapshots every `every` positions, the replica."""

    report: LearningReport
    curve: list[LearningSnapshot] = field(default_factory=list)
    scored: list[ScoredChoice] = field(default_factory=list)  # every position, in the order they closed
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


class Baseline(Protocol):
    """A policy outside the worker, played through the worker's join: it picks the actions the
    outcome records (the replica's own choice is discarded) and learns from the rewards the replica
    computes for them."""

    def choose(
        self, opened: OpenedPosition, meta: dict[str, Any], sizing: dict[str, Any], market: SyntheticMarket
    ) -> tuple[int, int]: ...

    def learn(
        self, meta: dict[str, Any], sizing: dict[str, Any], meta_index: int, sizing_index: int, applied: AppliedOutcome
    ) -> None: ...


class RandomBaseline:
    """Uniformly random among the allowed actions: the control whose share is ~0."""

    def __init__(self, seed: int) -> None:
        self._rng = np.random.default_rng([seed, 0xC0DE])

    def choose(
        self, opened: OpenedPosition, meta: dict[str, Any], sizing: dict[str, Any], market: SyntheticMarket
    ) -> tuple[int, int]:
        return int(self._rng.choice(market.allowed_meta(opened))), int(self._rng.choice(market.allowed_sizing(opened)))

    def learn(self, *_: Any) -> None:
        return None


class RuleBaseline:
    """The stack's own rule-based choices, as its events carry them: the detected regime's native
    strategy with a fixed model and weight, and a fixed size (the A/B control arm)."""

    def choose(
        self, opened: OpenedPosition, meta: dict[str, Any], sizing: dict[str, Any], market: SyntheticMarket
    ) -> tuple[int, int]:
        signal, execution = opened.signal, opened.execution
        meta_index = META_INDEX[MetaAction(signal["strategy"], signal["model"], float(signal["weight"]))]
        sizing_index = SIZING_INDEX[SizingAction(float(execution["size_multiplier"]), int(execution["leverage"]))]
        return meta_index, sizing_index

    def learn(self, *_: Any) -> None:
        return None


@dataclass
class _InFlight:
    opened: OpenedPosition
    row: PositionRow
    meta_index: int
    sizing_index: int
    meta: dict[str, Any]
    sizing: dict[str, Any]


def run_offline_learning(
    n_positions: int,
    seed: int,
    core_config: CoreConfig,
    sim_config: SimConfig | None = None,
    policy: Policy | Baseline = "rl",
    window: int = 500,
    every: int = 500,
    on_snapshot: Callable[[LearningSnapshot], None] | None = None,
    in_flight: int = 1,
) -> OfflineRun:
    """Run `n_positions` through the market with at most `in_flight` positions open (the worker's
    demo keeps 32): each position is decided when it opens and closed, scored and applied when
    `in_flight` newer ones have opened, oldest first, so decisions read a replica that lags by
    the positions in flight.

    `policy="rl"` plays the replica's decisions; `"random"` and `"rule"` (the stack's own
    choices) or any `Baseline` pick the actions instead, still through the worker's join, so
    the replica computes the rewards and keeps the trackers the states read. The market scores
    with `core_config` (its masks, reward weights and risk limits).
    """
    if in_flight < 1:
        raise ValueError("in_flight must be at least 1")
    sim_config = (sim_config or SimConfig()).model_copy(update={"core": core_config})
    market = SyntheticMarket(seed, sim_config)
    report = LearningReport(window)
    run = OfflineRun(report)
    replica = ModelReplica(core_config)
    run.replica = replica
    baseline: Baseline | None
    if policy == "rl":
        baseline = None
    elif policy == "random":
        baseline = RandomBaseline(seed)
    elif policy == "rule":
        baseline = RuleBaseline()
    else:
        baseline = policy  # type: ignore[assignment]
    started = time.perf_counter()
    joiner = PositionJoiner(replica, "rl" if baseline is None else "baseline", lambda: 0)
    waiting: deque[_InFlight] = deque()

    def settle(entry: _InFlight) -> None:
        scored = market.score(entry.opened, entry.meta_index, entry.sizing_index)
        close = market.close_position(entry.opened, entry.meta_index, entry.sizing_index)
        _, emitted = join_events(joiner, entry.row, [("closes", close)], entry.opened.index)
        record = emitted["outcome"]
        if baseline is not None:
            record["meta"]["action_index"] = entry.meta_index
            record["sizing"]["action_index"] = entry.sizing_index
        applied = replica.apply(Outcome.model_validate(record))
        reward = None
        if applied is not None:
            reward = applied.meta_reward + applied.size_reward
            if baseline is not None:
                baseline.learn(entry.meta, entry.sizing, entry.meta_index, entry.sizing_index, applied)
        report.record(scored, reward)
        run.scored.append(scored)
        if report.positions % every == 0:
            snapshot = report.snapshot()
            run.curve.append(snapshot)
            if on_snapshot is not None:
                on_snapshot(snapshot)

    for i in range(n_positions):
        opened: OpenedPosition = market.open_position()
        row, decisions = join_events(joiner, None, [("signals", opened.signal), ("executions", opened.execution)], i)
        meta, sizing = decisions["meta"], decisions["sizing"]
        if baseline is None:
            meta_index, sizing_index = meta["action_index"], sizing["action_index"]
        else:
            meta_index, sizing_index = baseline.choose(opened, meta, sizing, market)
        waiting.append(_InFlight(opened, row, meta_index, sizing_index, meta, sizing))
        if len(waiting) >= in_flight:
            settle(waiting.popleft())
    while waiting:
        settle(waiting.popleft())
    run.seconds = time.perf_counter() - started
    return run
