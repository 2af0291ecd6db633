"""Random valid contract events and outcome records from a seeded generator: for the benchmarks and the tests."""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from rl_worker.core.actions import N_SIZING_ACTIONS, meta_action_mask
from rl_worker.core.config import CoreConfig
from rl_worker.core.outcome import MetaStateModel, MetaStep, Outcome, SizingStateModel, SizingStep
from rl_worker.core.state import MetaKeyBuilder, MetaState, SizingKeyBuilder, SizingState
from rl_worker.core.types import REGIMES


def prices(rng: np.random.Generator, n: int = 30, drift: float = 0.0, vol: float = 0.01) -> list[float]:
    steps = rng.normal(drift, vol, n - 1)
    return [round(float(p), 6) for p in 100.0 * np.exp(np.concatenate([[0.0], np.cumsum(steps)]))]


def signal(position_id: str, rng: np.random.Generator, **extra: Any) -> dict[str, Any]:
    return {
        "event_id": f"{position_id}-sig",
        "event_type": "SIGNAL_GENERATED",
        "position_id": position_id,
        "symbol": "BTCUSDT",
        "timestamp": "2026-11-27T12:00:00Z",
        "side": "LONG" if rng.random() < 0.5 else "SHORT",
        "confidence": round(float(rng.uniform(0.3, 0.95)), 4),
        "prices": prices(rng, vol=float(rng.uniform(0.002, 0.03)), drift=float(rng.normal(0, 0.004))),
        "buy_volume": round(float(rng.uniform(0, 100)), 3),
        "sell_volume": round(float(rng.uniform(0, 100)), 3),
    } | extra


def execution(position_id: str, rng: np.random.Generator, **extra: Any) -> dict[str, Any]:
    event = {
        "event_id": f"{position_id}-exe",
        "event_type": "TRADE_EXECUTED",
        "position_id": position_id,
        "symbol": "BTCUSDT",
        "timestamp": 1_795_000_000_000,
        "side": "LONG",
        "entry_price": 100.0,
        "portfolio_exposure": round(float(rng.uniform(0, 1)), 4),
        "equity": 10_000.0,
    }
    if rng.random() < 0.5:
        event["max_leverage"] = float(rng.choice([1, 2, 3, 5, 8, 12, 30]))
    if rng.random() < 0.5:
        event["max_size_multiplier"] = float(rng.choice([0.2, 0.5, 0.8, 1.0, 2.0]))
    return event | extra


def close(position_id: str, rng: np.random.Generator, **extra: Any) -> dict[str, Any]:
    return {
        "event_id": f"{position_id}-cls",
        "event_type": "POSITION_CLOSED",
        "position_id": position_id,
        "symbol": "BTCUSDT",
        "timestamp": 1_795_000_600_000,
        "exit_price": 101.0,
        "pnl_pct": round(float(rng.normal(0.2, 2.0)), 4),
        "max_drawdown_pct": round(float(abs(rng.normal(0, 1.0))), 4),
        "equity": round(float(10_000 + rng.normal(0, 100)), 2),
        "prices": prices(rng),
    } | extra


def encode(event: dict[str, Any]) -> bytes:
    return json.dumps(event).encode()


def make_outcome(
    rng: np.random.Generator,
    config: CoreConfig,
    index: int,
    **overrides: Any,
) -> Outcome:
    """A valid random outcome drawn from `rng`; state keys are built with `config`'s bins.

    The meta action is drawn inside the regime mask, as a real decision would be. Any
    top-level field can be overridden (e.g. `pnl_pct=1.0`, `position_id="p"`).
    """
    meta_state = MetaState(
        regime=REGIMES[int(rng.integers(len(REGIMES)))],
        volatility=float(rng.random()),
        market_pressure=float(rng.uniform(-1.0, 1.0)),
        confidence=float(rng.random()),
        previous_winrate=float(rng.random()),
        account_health=float(rng.random()),
    )
    sizing_state = SizingState(
        signal_confidence=float(rng.random()),
        portfolio_exposure=float(rng.random()),
        recent_winrate=float(rng.random()),
        volatility=float(rng.random()),
        equity_curve_slope=float(rng.uniform(-1.0, 1.0)),
    )
    allowed = meta_action_mask(meta_state.regime, config).members
    fields: dict[str, Any] = {
        "position_id": f"pos-{index}",
        "symbol": str(rng.choice(["BTCUSDT", "ETHUSDT", "SOLUSDT"])),
        "closed_at_ms": 1_700_000_000_000 + 60_000 * index,
        "pnl_pct": float(rng.normal(0.05, 2.0)),
        "max_drawdown_pct": float(abs(rng.normal(0.0, 1.5))),
        "equity": float(10_000.0 * rng.uniform(0.7, 1.3)),
        "meta": MetaStep(
            decision_id=f"meta-{index}",
            state=MetaStateModel(**meta_state.as_dict()),
            state_key=MetaKeyBuilder(config.meta_bins).key(*meta_state),
            action_index=int(allowed[int(rng.integers(len(allowed)))]),
        ),
        "sizing": SizingStep(
            decision_id=f"sizing-{index}",
            state=SizingStateModel(**sizing_state.as_dict()),
            state_key=SizingKeyBuilder(config.sizing_bins).key(*sizing_state),
            action_index=int(rng.integers(N_SIZING_ACTIONS)),
        ),
        "next_regime": REGIMES[int(rng.integers(len(REGIMES)))],
        "next_volatility": float(rng.random()),
        "next_market_pressure": float(rng.uniform(-1.0, 1.0)),
    }
    fields.update(overrides)
    return Outcome(**fields)


def make_outcomes(rng: np.random.Generator, config: CoreConfig, n: int, start: int = 0) -> list[Outcome]:
    """`n` outcomes with distinct position ids `pos-<start>` ... in log order."""
    return [make_outcome(rng, config, start + i) for i in range(n)]
