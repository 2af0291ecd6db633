"""Simulator presets differ in structure: what detection reads, what pays, how size is punished."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from rl_worker.core import CoreConfig
from rl_worker.core.actions import META_ACTIONS, SIZING_ACTIONS
from rl_worker.core.config import RiskLimits
from rl_worker.sim.market import SyntheticMarket
from rl_worker.sim.presets import PRESETS, preset_config


def _positions(preset: str, n: int, **overrides: object):
    market = SyntheticMarket(11, preset_config(preset, **overrides))
    for _ in range(n):
        opened = market.open_position()
        yield market, opened
        market.close_position(opened, 0, 0)


def _detected_right(preset: str) -> float:
    hits = [o.hidden.regime == o.hidden.detected.regime for _, o in _positions(preset, 600)]
    return sum(hits) / len(hits)


def test_unknown_preset_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown simulator preset"):
        preset_config("nope")


def test_every_preset_emits_the_stacks_own_choices() -> None:
    for preset in PRESETS:
        _, opened = next(_positions(preset, 1))
        assert {"strategy", "model", "weight"} <= set(opened.signal)
        assert {"size_multiplier", "leverage"} <= set(opened.execution)


def test_murky_regimes_are_hard_to_read_from_prices_but_pressure_tells() -> None:
    assert _detected_right("regimes") > 0.75
    assert _detected_right("murky") < 0.6
    pressure: dict[bool, list[float]] = {True: [], False: []}
    for _, opened in _positions("murky", 600):
        trending = opened.hidden.regime in ("TREND", "BREAKOUT")
        pressure[trending].append(abs(opened.hidden.detected.market_pressure))
    assert np.mean(pressure[True]) > 0.35 > np.mean(pressure[False])


def test_flow_makes_the_best_strategy_depend_on_pressure_within_a_detected_regime() -> None:
    best: dict[tuple[str, bool], Counter[str]] = {}
    for market, opened in _positions("flow", 1500):
        values = market.expected_meta_rewards(opened, 0)
        allowed = market.allowed_meta(opened)
        strategy = META_ACTIONS[int(allowed[int(np.argmax(values[allowed]))])].strategy
        strong = abs(opened.hidden.detected.market_pressure) > 0.5
        best.setdefault((opened.hidden.detected.regime, strong), Counter())[strategy] += 1
    top = {key: counter.most_common(1)[0][0] for key, counter in best.items()}
    assert top[("RANGE", False)] == "mean_reversion"
    assert top[("RANGE", True)] == "breakout"


def test_leverage_preset_prefers_a_larger_multiplier_to_more_leverage_at_the_same_exposure() -> None:
    core = CoreConfig(risk=RiskLimits(max_leverage=25))
    # 1.0 x 5 and 0.2 x 25 are both exposure 5: the leverage preset punishes the second one more.
    high_size = next(i for i, a in enumerate(SIZING_ACTIONS) if (a.size_multiplier, a.leverage) == (1.0, 5))
    high_leverage = next(i for i, a in enumerate(SIZING_ACTIONS) if (a.size_multiplier, a.leverage) == (0.2, 25))
    for preset, punished in (("regimes", False), ("leverage", True)):
        gaps = []
        for market, opened in _positions(preset, 200, core=core):
            values = market.expected_size_rewards(opened, 0)
            gaps.append(values[high_size] - values[high_leverage])
        assert bool(np.mean(gaps) > 0.5) is punished, (preset, np.mean(gaps))
