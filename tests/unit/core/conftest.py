"""Shared fixtures of the core's unit tests: configurations and a seeded factory of valid outcomes."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

from rl_worker.core.actions import N_SIZING_ACTIONS, meta_mask
from rl_worker.core.config import CoreConfig, QLearningConfig
from rl_worker.core.outcome import MetaStateModel, MetaStep, Outcome, SizingStateModel, SizingStep
from rl_worker.core.state import MetaState, SizingState, meta_state_key, sizing_state_key
from rl_worker.core.types import REGIMES

# The core is fast but some properties build replicas; no example should depend on wall time.
settings.register_profile("core", deadline=None, max_examples=60, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("core")

OutcomeFactory = Callable[..., Outcome]


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
    allowed = meta_mask(meta_state.regime, config)
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
            state_key=meta_state_key(meta_state, config.meta_bins),
            action_index=int(allowed[int(rng.integers(len(allowed)))]),
        ),
        "sizing": SizingStep(
            decision_id=f"sizing-{index}",
            state=SizingStateModel(**sizing_state.as_dict()),
            state_key=sizing_state_key(sizing_state, config.sizing_bins),
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


@pytest.fixture(scope="session")
def outcome_factory() -> OutcomeFactory:
    """`outcome_factory(rng, config, index, **overrides)`: see `make_outcome`."""
    return make_outcome


@pytest.fixture(scope="session")
def outcomes_factory() -> Callable[..., list[Outcome]]:
    """`outcomes_factory(rng, config, n, start=0)`: see `make_outcomes`."""
    return make_outcomes


@pytest.fixture(scope="session")
def config() -> CoreConfig:
    return CoreConfig(seed=7)


@pytest.fixture(scope="session")
def short_episode_config() -> CoreConfig:
    """Episodes of 5 positions and a fast epsilon decay, so terminals and decay show up quickly."""
    return CoreConfig(seed=11, qlearning=QLearningConfig(episode_length=5, epsilon_decay=0.9))
