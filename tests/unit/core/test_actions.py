"""The two action spaces (values and index order) and their masks."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from rl_worker.core.actions import (
    META_ACTIONS,
    N_META_ACTIONS,
    N_SIZING_ACTIONS,
    SIZING_ACTIONS,
    ActionMask,
    MetaAction,
    SizingAction,
    effective_limits,
    meta_action_mask,
    sizing_action_mask,
)
from rl_worker.core.config import CoreConfig, RiskLimits
from rl_worker.core.exceptions import NoAllowedActionError
from rl_worker.core.types import REGIMES
from tests.unit.core.reference import meta_mask, sizing_mask


def test_meta_space_is_the_designs_60_in_index_order() -> None:
    strategies = ("dual_momentum", "mean_reversion", "breakout")
    models = ("xgb", "lgbm", "nhits", "lstm")
    weights = (0.3, 0.4, 0.5, 0.6, 0.7)
    assert N_META_ACTIONS == len(META_ACTIONS) == 60
    for (s, strategy), (m, model), (w, weight) in itertools.product(
        enumerate(strategies), enumerate(models), enumerate(weights)
    ):
        assert META_ACTIONS[(s * 4 + m) * 5 + w] == MetaAction(strategy, model, weight)
    assert META_ACTIONS[0] == MetaAction("dual_momentum", "xgb", 0.3)
    assert META_ACTIONS[7] == MetaAction("dual_momentum", "lgbm", 0.5)
    assert META_ACTIONS[59] == MetaAction("breakout", "lstm", 0.7)
    assert len(set(META_ACTIONS)) == 60


def test_sizing_space_is_the_designs_40_in_index_order() -> None:
    multipliers = (0.2, 0.4, 0.6, 0.8, 1.0)
    leverages = (1, 3, 5, 8, 10, 15, 20, 25)
    assert N_SIZING_ACTIONS == len(SIZING_ACTIONS) == 40
    for (m, multiplier), (lev, leverage) in itertools.product(enumerate(multipliers), enumerate(leverages)):
        assert SIZING_ACTIONS[m * 8 + lev] == SizingAction(multiplier, leverage)
    assert SIZING_ACTIONS[0] == SizingAction(0.2, 1)
    assert SIZING_ACTIONS[9] == SizingAction(0.4, 3)
    assert SIZING_ACTIONS[39] == SizingAction(1.0, 25)
    assert SIZING_ACTIONS[9].as_dict() == {"size_multiplier": 0.4, "leverage": 3}


class TestMetaMask:
    def test_default_regime_table(self) -> None:
        config = CoreConfig()
        dual, mean_rev, breakout = list(range(20)), list(range(20, 40)), list(range(40, 60))
        assert meta_action_mask("TREND", config).indices.tolist() == dual + breakout
        assert meta_action_mask("BREAKOUT", config).indices.tolist() == dual + breakout
        assert meta_action_mask("RANGE", config).indices.tolist() == mean_rev + breakout
        assert meta_action_mask("MEAN_REVERSION", config).indices.tolist() == dual + mean_rev

    def test_custom_table_and_read_only(self) -> None:
        table = {regime: ("mean_reversion",) for regime in REGIMES}
        mask = meta_action_mask("TREND", CoreConfig(regime_strategies=table)).indices
        assert mask.tolist() == list(range(20, 40))
        with pytest.raises(ValueError, match="read-only"):
            mask[0] = 0

    def test_a_regime_without_strategies_is_rejected(self) -> None:
        table = {regime: ("breakout",) for regime in REGIMES} | {"RANGE": ()}
        with pytest.raises(ValueError, match="no strategy for RANGE"):
            CoreConfig(regime_strategies=table)


class TestSizingMask:
    def test_default_limits(self) -> None:
        limits = RiskLimits()
        mask = sizing_action_mask(limits.max_size_multiplier, limits.max_leverage).indices.tolist()
        assert mask == [m * 8 + lev for m in range(5) for lev in range(5)]  # leverage <= 10

    def test_limits_between_levels(self) -> None:
        mask = sizing_action_mask(0.5, 4.0).indices.tolist()
        assert [SIZING_ACTIONS[i].as_dict() for i in mask] == [
            {"size_multiplier": 0.2, "leverage": 1},
            {"size_multiplier": 0.2, "leverage": 3},
            {"size_multiplier": 0.4, "leverage": 1},
            {"size_multiplier": 0.4, "leverage": 3},
        ]

    @pytest.mark.parametrize(("size", "leverage"), [(0.1, 10.0), (1.0, 0.5), (0.0, 0.0), (-1.0, 25.0)])
    def test_nothing_fits(self, size: float, leverage: float) -> None:
        with pytest.raises(NoAllowedActionError):
            sizing_action_mask(size, leverage)

    def test_event_limits_only_tighten(self) -> None:
        configured = RiskLimits(max_size_multiplier=0.8, max_leverage=10.0)
        assert effective_limits(configured) == (0.8, 10.0)
        assert effective_limits(configured, 0.5, 5.0) == (0.5, 5.0)
        assert effective_limits(configured, 1.0, 25.0) == (0.8, 10.0)
        assert effective_limits(configured, 2.0, None) == (0.8, 10.0)
        assert effective_limits(configured, None, 3.0) == (0.8, 3.0)
        assert effective_limits(configured, float("inf"), float("nan")) == (0.8, 10.0)

    def test_configured_limits_must_admit_the_smallest_action(self) -> None:
        with pytest.raises(ValueError, match="smallest size"):
            RiskLimits(max_size_multiplier=0.1)
        with pytest.raises(ValueError, match="smallest size"):
            RiskLimits(max_leverage=0.5)


@given(
    size=st.floats(-1.0, 2.0) | st.sampled_from([0.2, 0.4, 0.6, 0.8, 1.0, float("inf"), float("nan")]),
    leverage=st.floats(-1.0, 30.0) | st.sampled_from([1.0, 3.0, 10.0, 25.0, float("inf"), float("nan")]),
)
def test_sizing_action_mask_matches_sizing_mask(size: float, leverage: float) -> None:
    try:
        expected = sizing_mask(size, leverage).tolist()
    except NoAllowedActionError:
        with pytest.raises(NoAllowedActionError):
            sizing_action_mask(size, leverage)
        return
    mask = sizing_action_mask(size, leverage)
    assert mask.indices.tolist() == list(mask.members) == expected
    assert mask.allowed == frozenset(expected)
    assert all(
        SIZING_ACTIONS[a].size_multiplier <= size and SIZING_ACTIONS[a].leverage <= leverage for a in mask.members
    )


def test_action_masks_are_shared() -> None:
    config = CoreConfig()
    assert meta_action_mask("TREND", config) is meta_action_mask("BREAKOUT", config)  # same strategies
    assert meta_action_mask("TREND", config).indices.tolist() == meta_mask("TREND", config).tolist()
    assert sizing_action_mask(0.7, 9.0) is sizing_action_mask(0.6, 8.0)
    single = ActionMask.of(np.array([7]))
    assert single.values_of([float(i) for i in range(10)]) == (7.0,)
