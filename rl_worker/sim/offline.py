"""The offline learning loop: the synthetic market against a pure `ModelReplica`, in-process, no Kafka.

Each position goes the way it goes through the worker: the signal and execution events are
encoded to JSON and decoded with the contract, the meta and sizing decisions read the replica,
the close is joined into an `Outcome` record, and the replica applies it. The market scores
every choice against its expected-reward oracle; a `LearningReport` keeps the figures.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from rl_worker.contract import PositionClosed, SignalGenerated, TradeExecuted, decode_event
from rl_worker.core import CoreConfig, ModelReplica, Outcome
from rl_worker.core.config import MarketConfig
from rl_worker.core.market import MarketFeatures, compute_market_features
from rl_worker.core.replica import Decision
from rl_worker.sim.market import OpenedPosition, SimConfig, SyntheticMarket
from rl_worker.sim.report import LearningReport, LearningSnapshot

__all__ = ["OfflineRun", "build_outcome", "run_offline_learning", "signal_features"]

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


def signal_features(signal: SignalGenerated, config: MarketConfig) -> MarketFeatures:
    """The market features the worker reads from a signal (its prices and volumes)."""
    return compute_market_features(signal.prices, config, signal.buy_volume, signal.sell_volume)


def build_outcome(
    signal: SignalGenerated,
    close: PositionClosed,
    meta: Decision,
    meta_decision_id: str,
    sizing: Decision,
    sizing_decision_id: str,
    config: MarketConfig,
) -> Outcome:
    """Join a position's decisions and close into the record the replica applies."""
    prices = close.prices if close.prices is not None else signal.prices
    after = compute_market_features(prices, config)
    return Outcome(
        position_id=close.position_id,
        symbol=close.symbol,
        closed_at_ms=close.timestamp,
        pnl_pct=close.pnl_pct,
        max_drawdown_pct=close.max_drawdown_pct,
        equity=close.equity,
        meta={
            "decision_id": meta_decision_id,
            "state": meta.state.as_dict(),
            "state_key": meta.state_key,
            "action_index": meta.selection.action,
        },
        sizing={
            "decision_id": sizing_decision_id,
            "state": sizing.state.as_dict(),
            "state_key": sizing.state_key,
            "action_index": sizing.selection.action,
        },
        next_regime=after.regime,
        next_volatility=after.volatility,
        next_market_pressure=after.market_pressure,
    )


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
    for _ in range(n_positions):
        opened: OpenedPosition = market.open_position()
        signal = _decode(opened.signal)
        execution = _decode(opened.execution)
        assert isinstance(signal, SignalGenerated) and isinstance(execution, TradeExecuted)
        if replica is None:
            meta_index = int(control.choice(market.allowed_meta(opened)))
            sizing_index = int(control.choice(market.allowed_sizing(opened)))
        else:
            features = signal_features(signal, core_config.market)
            meta_id, sizing_id = f"{signal.event_id}:meta", f"{execution.event_id}:sizing"
            meta = replica.decide_meta(features, signal.confidence, meta_id)
            sizing = replica.decide_sizing(
                signal.confidence,
                execution.portfolio_exposure,
                features.volatility,
                sizing_id,
                execution.max_size_multiplier,
                execution.max_leverage,
            )
            meta_index, sizing_index = meta.selection.action, sizing.selection.action
        scored = market.score(opened, meta_index, sizing_index)
        close = _decode(market.close_position(opened, meta_index, sizing_index))
        assert isinstance(close, PositionClosed)
        reward = None
        if replica is not None:
            outcome = build_outcome(signal, close, meta, meta_id, sizing, sizing_id, core_config.market)
            applied = replica.apply(outcome)
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
