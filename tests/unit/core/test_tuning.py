"""Tuning advice: the statistics it reads and the seed's cases (wait, high Q spread, always random)."""

from __future__ import annotations

import numpy as np

from rl_worker.core.config import CoreConfig, MetaBins, SizingBins
from rl_worker.core.control import Hyperparameters
from rl_worker.core.replica import ModelReplica
from rl_worker.core.tuning import (
    AgentStats,
    WindowObserver,
    agent_stats,
    apply_recommendations,
    recommend,
)

from .conftest import make_outcomes


def replayed(config: CoreConfig, n: int, seed: int = 4) -> tuple[ModelReplica, WindowObserver]:
    replica = ModelReplica(config)
    window = WindowObserver()
    for record in make_outcomes(np.random.default_rng(seed), config, n):
        window.observe_apply(replica, record)
    return replica, window


def stats(**overrides: float) -> AgentStats:
    values: dict[str, float] = {
        "n_updates": 5000, "epsilon": 0.02, "states": 100, "cells_visited": 900, "cells_visited_under_3": 50,
        "q_std": 1.0, "window": 500, "reward_mean": 0.1, "reward_std": 1.0, "reward_trend": 0.0,
        "td_abs_first_half": 1.0, "td_abs_second_half": 1.0, "unseen_share": 0.01,
    }
    values |= overrides
    return AgentStats(agent="meta", **values)  # type: ignore[arg-type]


def advice_for(meta: AgentStats) -> list:
    hp = Hyperparameters.from_config(CoreConfig())
    sizing = AgentStats(**{**meta.__dict__, "agent": "sizing"})
    return [r for r in recommend({"meta": meta, "sizing": sizing}, hp) if r.agent == "meta"]


def test_statistics_come_from_the_replica_and_the_window() -> None:
    replica, window = replayed(CoreConfig(seed=2), 300)
    s = agent_stats(replica, window)
    assert s["meta"].n_updates == 300 and s["meta"].window == 300
    assert s["meta"].states == len(replica.meta_table)
    assert s["meta"].cells_visited == int((replica.meta_table.used()[1] > 0).sum())
    assert 0 < s["meta"].unseen_share <= 1 and s["meta"].epsilon == replica.meta_epsilon
    assert s["sizing"].reward_std > 0 and s["sizing"].q_std > 0


def test_too_few_updates_means_wait() -> None:
    advice = advice_for(stats(n_updates=50, window=50))
    assert [r.parameter for r in advice] == ["wait"] and "50 outcomes" in advice[0].reason


def test_high_q_spread_lowers_gamma_and_alpha() -> None:
    advice = advice_for(stats(q_std=10.0, reward_std=1.0))
    by = {r.parameter: r for r in advice}
    assert by["gamma"].suggested is not None and by["gamma"].suggested < 0.99
    assert by["alpha"].suggested == 0.005 and "10.0x" in by["alpha"].reason


def test_growing_td_error_lowers_alpha() -> None:
    advice = advice_for(stats(td_abs_first_half=1.0, td_abs_second_half=2.0))
    assert [(r.parameter, r.suggested) for r in advice] == [("alpha", 0.005)]


def test_always_random_from_exploration_lowers_epsilon() -> None:
    advice = advice_for(stats(epsilon=0.8, unseen_share=0.1))
    assert [(r.parameter, r.suggested) for r in advice] == [("epsilon", 0.4)]


def test_always_random_from_unseen_states_blames_the_bins() -> None:
    advice = advice_for(stats(epsilon=0.02, unseen_share=0.9))
    assert [r.parameter for r in advice] == ["bins"] and "too fine" in advice[0].reason


def test_healthy_model_keeps() -> None:
    assert [r.parameter for r in advice_for(stats())] == ["keep"]


def test_fine_bins_on_real_replay_blame_the_bins() -> None:
    fine = CoreConfig(
        seed=2,
        meta={"epsilon_start": 0.01, "epsilon_min": 0.01},
        sizing={"epsilon_start": 0.01, "epsilon_min": 0.01},
        meta_bins=MetaBins(volatility=tuple(np.linspace(0.05, 0.95, 19).round(2)),
                           confidence=tuple(np.linspace(0.05, 0.95, 19).round(2))),
        sizing_bins=SizingBins(volatility=tuple(np.linspace(0.05, 0.95, 19).round(2)),
                               signal_confidence=tuple(np.linspace(0.05, 0.95, 19).round(2))),
    )
    replica, window = replayed(fine, 400)
    advice = recommend(agent_stats(replica, window), replica.hyperparameters)
    assert {r.parameter for r in advice} >= {"bins"}


def test_apply_recommendations_builds_valid_hyperparameters() -> None:
    hp = Hyperparameters.from_config(CoreConfig())
    advice = advice_for(stats(q_std=10.0, epsilon=0.8, unseen_share=0.0))
    tuned = apply_recommendations(hp, advice)
    assert tuned.meta.alpha == 0.005 and tuned.meta.epsilon_start == 0.4 and tuned.sizing == hp.sizing
