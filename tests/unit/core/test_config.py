"""Core configuration and the outcome record's validation."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from rl_worker.core.config import CoreConfig, QLearningConfig, RewardConfig
from rl_worker.core.outcome import Outcome
from rl_worker.sim.events import make_outcome


def test_defaults_are_the_designs() -> None:
    q = CoreConfig().qlearning
    assert (q.alpha, q.gamma, q.epsilon_start, q.epsilon_min) == (0.01, 0.99, 0.1, 0.01)
    reward = RewardConfig()
    assert (reward.meta_drawdown_weight, reward.meta_sharpe_weight, reward.meta_alignment_weight) == (
        0.5,
        0.2,
        0.15,
    )
    assert (reward.size_risk_weight, reward.size_volatility_weight) == (0.4, 0.1)


def test_fingerprint_follows_the_configuration() -> None:
    assert CoreConfig().fingerprint() == CoreConfig().fingerprint()
    assert CoreConfig(seed=1).fingerprint() != CoreConfig().fingerprint()
    assert len(CoreConfig().fingerprint()) == 16


@pytest.mark.parametrize(
    "kwargs",
    [
        {"epsilon_start": 0.01, "epsilon_min": 0.1},
        {"alpha": 0.0},
        {"gamma": 1.5},
        {"episode_length": 0},
    ],
)
def test_invalid_qlearning(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValidationError):
        QLearningConfig(**kwargs)


def test_unknown_names_are_rejected() -> None:
    with pytest.raises(ValidationError):
        CoreConfig(regime_strategies={"TREND": ("momentum",)})
    with pytest.raises(ValidationError):
        RewardConfig(aligned_strategies={"SIDEWAYS": ("breakout",)})
    with pytest.raises(ValidationError):
        CoreConfig(unknown=1)  # type: ignore[call-arg]


def test_config_is_frozen() -> None:
    with pytest.raises(ValidationError):
        CoreConfig().seed = 3  # type: ignore[misc]


class TestOutcome:
    def test_factory_makes_valid_records(self) -> None:
        rng = np.random.default_rng(0)
        record = make_outcome(rng, CoreConfig(), 5, pnl_pct=1.0)
        assert record.position_id == "pos-5"
        assert record.pnl_pct == 1.0
        assert Outcome.model_validate_json(record.model_dump_json()) == record

    @pytest.mark.parametrize(
        "update",
        [
            {"pnl_pct": float("nan")},
            {"equity": 0.0},
            {"max_drawdown_pct": -0.1},
            {"next_volatility": 1.5},
            {"next_regime": "SIDEWAYS"},
            {"position_id": ""},
        ],
    )
    def test_invalid_fields(self, update: dict[str, object]) -> None:
        data = make_outcome(np.random.default_rng(1), CoreConfig(), 0).model_dump() | update
        with pytest.raises(ValidationError):
            Outcome.model_validate(data)

    def test_action_index_range(self) -> None:
        data = make_outcome(np.random.default_rng(2), CoreConfig(), 0).model_dump()
        data["meta"]["action_index"] = 60
        with pytest.raises(ValidationError):
            Outcome.model_validate(data)
        data["meta"]["action_index"] = 59
        data["sizing"]["action_index"] = 40
        with pytest.raises(ValidationError):
            Outcome.model_validate(data)
