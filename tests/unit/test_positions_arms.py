"""A/B arms and override crediting in the position join."""

from __future__ import annotations

import json

import numpy as np
import pytest

from rl_worker.contract import decode_event
from rl_worker.core import CoreConfig, ModelReplica, Outcome
from rl_worker.core.actions import META_ACTIONS, SIZING_ACTIONS, sizing_action_mask
from rl_worker.core.arms import BaselinePolicy, assign_arm
from rl_worker.positions import PositionJoiner
from rl_worker.sim import events as f


def join(joiner: PositionJoiner, pid: str, signal: dict | None = None, execution: dict | None = None,
         close: dict | None = None) -> tuple[dict, dict, Outcome]:
    rng = np.random.default_rng(abs(hash(pid)) % 1000)
    raw = [
        ("signals", f.signal(pid, rng, **(signal or {}))),
        ("executions", f.execution(pid, rng, **(execution or {}))),
        ("closes", f.close(pid, rng, **(close or {}))),
    ]
    row = None
    emits = []
    for offset, (topic, event) in enumerate(raw):
        result = joiner.handle(row, decode_event(f.encode(event)), (topic, 0, offset))
        row = result.row
        emits.extend(result.emits)
    decisions = {json.loads(e.value)["agent"]: json.loads(e.value) for e in emits if e.kind == "decision"}
    outcome = Outcome.model_validate_json(next(e.value for e in emits if e.kind == "outcome"))
    return decisions["meta"], decisions["sizing"], outcome


def test_control_arm_trades_the_stack_choice_inside_the_limits() -> None:
    joiner = PositionJoiner(ModelReplica(CoreConfig()), "rl", lambda: 0, control_share=0.5)
    seen = {"rl": 0, "control": 0}
    for i in range(60):
        pid = f"pos-{i}"
        meta, sizing, outcome = join(
            joiner, pid,
            signal={"strategy": "breakout", "model": "lstm", "weight": 0.62},
            execution={"size_multiplier": 1.0, "leverage": 25.0, "max_leverage": 5.0, "max_size_multiplier": 1.0},
        )
        arm = assign_arm(pid, 0.5)
        seen[arm] += 1
        assert meta["policy"] == sizing["policy"] == outcome.policy == arm
        assert SIZING_ACTIONS[sizing["action_index"]].leverage <= 5  # the event's limit binds both arms
        if arm == "control":
            assert meta["action"] == {"strategy": "breakout", "model": "lstm", "weight": 0.6}
            assert sizing["action"] == {"size_multiplier": 1.0, "leverage": 5}
            assert meta["propensity"] == sizing["propensity"] == 1.0
            assert meta["control_source"] == "stack" and not meta["explored"]
        else:
            assert "control_source" not in meta
        assert not outcome.overridden
        assert outcome.meta.propensity == meta["propensity"]
        assert outcome.sizing.max_leverage == 5.0
    assert seen["rl"] > 10 and seen["control"] > 10


def test_uniform_baseline_when_the_event_has_no_choice() -> None:
    joiner = PositionJoiner(ModelReplica(CoreConfig()), "rl", lambda: 0, control_share=1.0,
                            baseline=BaselinePolicy(kind="uniform"))
    meta, sizing, _ = join(joiner, "p-uniform")
    assert meta["policy"] == "control" and meta["control_source"] == "baseline"
    regime_strategies = CoreConfig().regime_strategies[meta["state"]["regime"]]
    assert meta["propensity"] == pytest.approx(1 / (len(regime_strategies) * 20))
    assert META_ACTIONS[meta["action_index"]].strategy in regime_strategies
    limits = sizing["limits"]
    allowed = sizing_action_mask(limits["max_size_multiplier"], limits["max_leverage"])
    assert sizing["propensity"] == pytest.approx(1 / len(allowed)) and sizing["action_index"] in allowed.allowed
    # the same position decides the same on another worker
    again = PositionJoiner(ModelReplica(CoreConfig()), "rl", lambda: 0, control_share=1.0,
                           baseline=BaselinePolicy(kind="uniform"))
    assert join(again, "p-uniform")[0]["action_index"] == meta["action_index"]


def test_outcome_credits_what_was_traded() -> None:
    joiner = PositionJoiner(ModelReplica(CoreConfig()), "rl", lambda: 0)
    meta, sizing, plain = join(joiner, "p-plain")
    assert not plain.overridden and plain.meta.decided_action_index is None
    # the stack traded another strategy (reported on the execution) and another leverage (on the close)
    other_strategy = "mean_reversion" if meta["action"]["strategy"] != "mean_reversion" else "breakout"
    meta, sizing, outcome = join(
        joiner, "p-over",
        execution={"strategy": other_strategy, "model": "xgb", "weight": 0.3, "meta_fallback": True},
        close={"size_multiplier": 0.2, "leverage": 3.0, "sizing_fallback": True},
    )
    assert outcome.overridden
    assert META_ACTIONS[outcome.meta.action_index].as_dict() == {"strategy": other_strategy, "model": "xgb",
                                                                 "weight": 0.3}
    assert outcome.meta.decided_action_index == meta["action_index"]
    traded = SIZING_ACTIONS[outcome.sizing.action_index]
    assert (traded.size_multiplier, traded.leverage) == (0.2, 3)
    if sizing["action"] != {"size_multiplier": 0.2, "leverage": 3}:
        assert outcome.sizing.decided_action_index == sizing["action_index"]
    # the replica learns the traded actions
    replica = ModelReplica(CoreConfig())
    replica.apply(outcome)
    row = replica.meta_table.row_index(outcome.meta.state_key)
    assert row is not None and replica.meta_table.visits[row, outcome.meta.action_index] == 1
    assert replica.meta_table.visits[row].sum() == 1
