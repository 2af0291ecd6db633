"""The synthetic market: contract-valid events, reproducibility, and an oracle consistent with the core."""

from __future__ import annotations

import itertools
import json
from collections import Counter, defaultdict

import numpy as np
import pytest

from rl_worker.contract import PositionClosed, SignalGenerated, TradeExecuted, decode_event
from rl_worker.core import CoreConfig, ModelReplica, Outcome
from rl_worker.core.actions import META_ACTIONS, SIZING_ACTIONS, meta_action_mask
from rl_worker.core.config import RiskLimits
from rl_worker.core.types import REGIMES, STRATEGIES
from rl_worker.positions import PositionJoiner
from rl_worker.sim.market import (
    SimConfig,
    SyntheticMarket,
    expected_clipped_normal,
    expected_shortfall_normal,
)
from rl_worker.sim.offline import join_events
from rl_worker.sim.presets import PRESETS, preset_config

NATIVE = {
    "TREND": "dual_momentum",
    "BREAKOUT": "breakout",
    "RANGE": "mean_reversion",
    "MEAN_REVERSION": "mean_reversion",
}


def _decode(event: dict, expected_type: str):
    return decode_event(json.dumps(event).encode(), expected_type)


def _walk(market: SyntheticMarket, n: int, rng: np.random.Generator):
    """Open and close n positions with uniformly random allowed actions."""
    for _ in range(n):
        opened = market.open_position()
        meta = int(rng.choice(market.allowed_meta(opened)))
        sizing = int(rng.choice(market.allowed_sizing(opened)))
        yield opened, meta, sizing, market.close_position(opened, meta, sizing)


def test_events_validate_against_the_contract() -> None:
    market = SyntheticMarket(3, SimConfig(run_id="t"))
    event_ids: set[str] = set()
    limited = 0
    for opened, _, _, close in _walk(market, 300, np.random.default_rng(0)):
        signal = _decode(opened.signal, "SIGNAL_GENERATED")
        execution = _decode(opened.execution, "TRADE_EXECUTED")
        closed = _decode(close, "POSITION_CLOSED")
        assert isinstance(signal, SignalGenerated)
        assert isinstance(execution, TradeExecuted)
        assert isinstance(closed, PositionClosed)
        assert signal.position_id == execution.position_id == closed.position_id == f"t-{opened.index:06d}"
        assert len(signal.prices) == 30 and closed.prices is not None and len(closed.prices) == 30
        assert closed.timestamp > execution.timestamp > signal.timestamp
        assert closed.max_drawdown_pct >= max(0.0, -closed.pnl_pct)
        for event_id in (signal.event_id, execution.event_id, closed.event_id):
            assert event_id not in event_ids
            event_ids.add(event_id)
        if execution.max_leverage is not None:
            limited += 1
            # per-event limits tighten the configured ones, and the oracle uses the tighter
            assert opened.hidden.max_leverage == min(execution.max_leverage, 10.0)
    assert 20 < limited < 120


def test_same_seed_same_market_and_the_market_does_not_depend_on_the_actions() -> None:
    first = list(_walk(SyntheticMarket(11), 50, np.random.default_rng(1)))
    again = list(_walk(SyntheticMarket(11), 50, np.random.default_rng(1)))
    other_actions = list(_walk(SyntheticMarket(11), 50, np.random.default_rng(2)))
    other_seed = list(_walk(SyntheticMarket(12), 50, np.random.default_rng(1)))
    assert [(o.signal, o.execution["entry_price"], c) for o, _, _, c in first] == [
        (o.signal, o.execution["entry_price"], c) for o, _, _, c in again
    ]
    # The regimes and the signals are drawn per position index: other actions, same market
    # (only the price level, which continues from the previous exit, and the equity move).
    assert [o.hidden.regime for o, *_ in first] == [o.hidden.regime for o, *_ in other_actions]
    assert [o.signal["confidence"] for o, *_ in first] == [o.signal["confidence"] for o, *_ in other_actions]
    assert [o.signal["prices"] for o, *_ in first] != [o.signal["prices"] for o, *_ in other_seed]


def test_regimes_are_sticky_and_detected_right_most_but_not_all_of_the_time() -> None:
    market = SyntheticMarket(5)
    hidden = []
    right = 0
    for opened, *_ in _walk(market, 3000, np.random.default_rng(0)):
        hidden.append(opened.hidden.regime)
        right += opened.hidden.detected.regime == opened.hidden.regime
    switches = sum(a != b for a, b in itertools.pairwise(hidden))
    assert 50 < switches < 300  # stickiness 0.95: one switch per ~20 positions
    assert set(hidden) == set(REGIMES)
    assert 0.75 < right / 3000 < 0.95


def test_oracle_ranks_the_native_strategy_highest_in_each_hidden_regime() -> None:
    market = SyntheticMarket(21)
    sums: dict[str, np.ndarray] = defaultdict(lambda: np.zeros(len(STRATEGIES)))
    counts: Counter[str] = Counter()
    strategy_of = np.array([STRATEGIES.index(a.strategy) for a in META_ACTIONS])
    for opened, _, sizing, _ in _walk(market, 2000, np.random.default_rng(0)):
        values = market.expected_meta_rewards(opened, sizing)
        sums[opened.hidden.regime] += np.bincount(strategy_of, weights=values) / 20
        counts[opened.hidden.regime] += 1
    for regime in REGIMES:
        assert counts[regime] > 100
        assert STRATEGIES[int(np.argmax(sums[regime]))] == NATIVE[regime], (regime, sums[regime])


def test_best_sizing_shrinks_with_volatility() -> None:
    # Score with a configured leverage cap above every level, so the best is not clipped.
    config = SimConfig(core=CoreConfig(risk=RiskLimits(max_leverage=25)), tight_limits_probability=0.0)
    market = SyntheticMarket(8, config)
    best_exposure: dict[int, list[float]] = defaultdict(list)
    for _ in range(3000):
        opened = market.open_position()
        native = [
            i
            for i in meta_action_mask(opened.hidden.regime, config.core).members
            if META_ACTIONS[i].strategy == NATIVE[opened.hidden.regime]
        ]
        scored = market.score(opened, native[0], 0)
        quartile = min(3, int(opened.hidden.detected.volatility * 4))
        best_exposure[quartile].append(scored.exposure_best)
        market.close_position(opened, native[0], scored.best_sizing_action)
    means = [float(np.mean(best_exposure[q])) for q in range(4)]
    assert all(len(best_exposure[q]) > 100 for q in range(4))
    assert means == sorted(means, reverse=True), means
    assert means[0] > 3 * means[3], means


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_expected_rewards_match_what_the_replica_computes(preset: str) -> None:
    """Realised meta and size rewards of the core average to the oracle's expectations, on every preset."""
    core = CoreConfig()
    market = SyntheticMarket(4, preset_config(preset, core))
    replica = ModelReplica(core)
    rng = np.random.default_rng(9)
    expected, realised = [], []
    joiner = PositionJoiner(replica, "rl", lambda: 0)
    for i in range(4000):
        opened = market.open_position()
        # Decide through the worker's join (for the states), then replace the actions by random ones.
        row, _ = join_events(joiner, None, [("signals", opened.signal), ("executions", opened.execution)], i)
        meta_index = int(rng.choice(market.allowed_meta(opened)))
        sizing_index = int(rng.choice(market.allowed_sizing(opened)))
        scored = market.score(opened, meta_index, sizing_index)
        _, emitted = join_events(joiner, row, [("closes", market.close_position(opened, meta_index, sizing_index))], i)
        outcome = Outcome.model_validate(emitted["outcome"])
        outcome = outcome.model_copy(
            update={
                "meta": outcome.meta.model_copy(update={"action_index": meta_index}),
                "sizing": outcome.sizing.model_copy(update={"action_index": sizing_index}),
            }
        )
        applied = replica.apply(outcome)
        assert applied is not None
        expected.append((scored.meta_chosen, scored.size_chosen))
        realised.append((applied.meta_reward, applied.size_reward))
    e, r = np.array(expected), np.array(realised)
    standard_error = r.std(axis=0) / np.sqrt(len(r))
    assert np.all(np.abs(e.mean(axis=0) - r.mean(axis=0)) < 4 * standard_error), (e.mean(0), r.mean(0))


@pytest.mark.parametrize(("mean", "std"), [(0.5, 1.0), (-0.3, 0.4), (2.0, 0.5)])
def test_closed_forms_match_sampling(mean: float, std: float) -> None:
    x = np.random.default_rng(0).normal(mean, std, 400_000)
    assert expected_shortfall_normal(mean, std) == pytest.approx(np.maximum(0.0, -x).mean(), abs=3e-3)
    assert expected_clipped_normal(mean, std, 1.0) == pytest.approx(np.clip(x, -1.0, 1.0).mean(), abs=3e-3)


def test_score_compares_with_the_allowed_actions_only() -> None:
    market = SyntheticMarket(2)
    opened = market.open_position()
    scored = market.score(opened, int(market.allowed_meta(opened)[0]), 0)
    assert scored.best_meta_action in set(market.allowed_meta(opened).tolist())
    assert scored.best_sizing_action in set(market.allowed_sizing(opened).tolist())
    assert scored.meta_best >= scored.meta_uniform and scored.size_best >= scored.size_uniform
    assert SIZING_ACTIONS[scored.best_sizing_action].leverage <= opened.hidden.max_leverage
