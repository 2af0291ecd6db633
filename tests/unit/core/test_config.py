"""Core configuration and the outcome record's validation."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from rl_worker.core.config import AgentHyperparameters, CoreConfig, LearningRules, RewardConfig
from rl_worker.core.outcome import Outcome
from rl_worker.sim.events import make_outcome


def test_the_seed_profile_is_the_seed_specification_exactly() -> None:
    config = CoreConfig(profile="seed")
    for agent in (config.meta, config.sizing):
        assert (agent.alpha, agent.gamma, agent.epsilon_start, agent.epsilon_min) == (0.01, 0.99, 0.1, 0.01)
        assert agent.epsilon_decay == 0.9997
    rules = config.learning
    assert (rules.episode_length, rules.step_size, rules.backoff_visits) == (50, "constant", 0.0)
    assert rules.meta_backoff == rules.sizing_backoff == ()
    assert not rules.counterfactual_sizing and not rules.meta_strategy_first


def test_explicit_fields_win_over_the_profile_field_by_field() -> None:
    config = CoreConfig.model_validate({"profile": "seed", "meta": {"alpha": 0.05}})
    assert config.meta.alpha == 0.05
    assert config.meta.gamma == 0.99  # the rest of the agent still comes from the profile
    assert config.sizing.alpha == 0.01
    default = CoreConfig.model_validate({"sizing": {"epsilon_start": 0.2}, "learning": {"backoff_visits": 5}})
    assert default.sizing.epsilon_start == 0.2
    assert default.sizing.gamma == CoreConfig().sizing.gamma
    assert default.learning.backoff_visits == 5
    assert default.learning.step_size == CoreConfig().learning.step_size
    with pytest.raises(ValidationError):
        CoreConfig(profile="fast")  # type: ignore[arg-type]


def test_defaults_keep_the_seeds_numbers_where_they_can() -> None:
    default, seed = CoreConfig(), CoreConfig(profile="seed")
    for agent, seed_agent in ((default.meta, seed.meta), (default.sizing, seed.sizing)):
        assert agent.alpha == seed_agent.alpha  # the floor of the step size
        assert (agent.epsilon_start, agent.epsilon_min) == (seed_agent.epsilon_start, seed_agent.epsilon_min)


def test_reward_weights_are_the_designs() -> None:
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
        {"alpha": float("nan")},
        {"lambda": 0.9},
    ],
)
def test_invalid_hyperparameters(kwargs: dict[str, float]) -> None:
    seed = {"alpha": 0.01, "gamma": 0.99, "epsilon_start": 0.1, "epsilon_min": 0.01, "epsilon_decay": 0.9997}
    AgentHyperparameters(**seed)
    with pytest.raises(ValidationError):
        AgentHyperparameters(**(seed | kwargs))


@pytest.mark.parametrize(
    "kwargs",
    [{"episode_length": 0}, {"step_size": "adam"}, {"backoff_visits": -1}, {"meta_backoff": (("regime_name",),)}],
)
def test_invalid_learning_rules(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        LearningRules.model_validate(kwargs)


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
