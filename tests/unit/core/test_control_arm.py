"""The control arm's decisions: the stack's choice on the grid, inside the limits, or the baseline."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from rl_worker.core.actions import META_ACTIONS, SIZING_ACTIONS, meta_action_mask, sizing_action_mask
from rl_worker.core.arms import (
    BaselinePolicy,
    control_meta,
    control_sizing,
    meta_action_of,
    sizing_action_within,
)
from rl_worker.core.config import CoreConfig
from rl_worker.core.qlearning import DecisionRandom

CONFIG = CoreConfig()


def test_meta_is_the_stack_choice_with_the_nearest_grid_weight() -> None:
    index = meta_action_of("breakout", "lstm", 0.54)
    assert META_ACTIONS[index].as_dict() == {"strategy": "breakout", "model": "lstm", "weight": 0.5}
    assert META_ACTIONS[meta_action_of("breakout", "lstm", 0.95)].weight == 0.7
    assert META_ACTIONS[meta_action_of("breakout", "lstm", 0.0)].weight == 0.3
    with pytest.raises(ValueError, match="unknown"):
        meta_action_of("momentum", "xgb", 0.5)


def test_sizing_snaps_down_inside_the_limits() -> None:
    assert SIZING_ACTIONS[sizing_action_within(0.7, 9.0, 1.0, 10.0)].as_dict() == {
        "size_multiplier": 0.6,
        "leverage": 8,
    }
    # the limit, not the stack, binds
    assert SIZING_ACTIONS[sizing_action_within(1.0, 25.0, 0.8, 5.0)].as_dict() == {
        "size_multiplier": 0.8,
        "leverage": 5,
    }
    # below the smallest level: the smallest level
    assert SIZING_ACTIONS[sizing_action_within(0.1, 0.5, 1.0, 10.0)].as_dict() == {
        "size_multiplier": 0.2,
        "leverage": 1,
    }


@given(
    size=st.floats(0.01, 5.0),
    leverage=st.floats(0.1, 100.0),
    max_size=st.floats(0.2, 1.0),
    max_leverage=st.floats(1.0, 25.0),
)
def test_control_sizing_never_exceeds_the_limits(
    size: float, leverage: float, max_size: float, max_leverage: float
) -> None:
    mask = sizing_action_mask(max_size, max_leverage)
    for choice, baseline in (
        ((size, leverage), BaselinePolicy()),
        ((None, None), BaselinePolicy()),
        ((None, leverage), BaselinePolicy(kind="uniform")),
    ):
        decision = control_sizing(
            choice, baseline, (max_size, max_leverage), mask, DecisionRandom(0).stream(f"{size}:{leverage}")
        )
        action = SIZING_ACTIONS[decision.action]
        assert action.size_multiplier <= max_size and action.leverage <= max_leverage
        assert decision.action in mask.allowed


def test_sources_and_propensities() -> None:
    mask = meta_action_mask("RANGE", CONFIG)
    rng = DecisionRandom(0)
    stack = control_meta(("mean_reversion", "xgb", 0.5), BaselinePolicy(), mask, rng.stream("p:meta"))
    assert (stack.source, stack.propensity) == ("stack", 1.0)
    fixed = control_meta((None, "xgb", 0.5), BaselinePolicy(), mask, rng.stream("p:meta"))
    assert (fixed.source, fixed.propensity) == ("baseline", 1.0)
    assert META_ACTIONS[fixed.action].strategy == "dual_momentum"  # the fixed baseline ignores the mask
    draws = [
        control_meta((None, None, None), BaselinePolicy(kind="uniform"), mask, rng.stream(f"p{i}:meta"))
        for i in range(4000)
    ]
    assert {d.propensity for d in draws} == {1 / len(mask)}
    assert {d.action for d in draws} == set(mask.members)  # every allowed action, nothing else
    counts = np.bincount([d.action for d in draws], minlength=len(META_ACTIONS))[list(mask.members)]
    assert counts.min() > 4000 / len(mask) * 0.5
    again = control_meta((None, None, None), BaselinePolicy(kind="uniform"), mask, DecisionRandom(0).stream("p7:meta"))
    assert again == draws[7]  # the same decision id draws the same action on any worker
    sizing = control_sizing(
        (None, None), BaselinePolicy(kind="uniform"), (1.0, 10.0), sizing_action_mask(1.0, 10.0), rng.stream("p:sizing")
    )
    assert sizing.propensity == 1 / len(sizing_action_mask(1.0, 10.0))
