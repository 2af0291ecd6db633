"""IPS, SNIPS and DR against hand-computed values, and their coverage on a known bandit."""

from __future__ import annotations

import numpy as np
import pytest

from rl_worker.analysis.off_policy import (
    LoggedDecisions,
    effective_sample_size,
    estimate_off_policy,
    logged_decisions_for_candidate,
)
from rl_worker.core.actions import ActionMask
from rl_worker.core.qlearning import QTable


def hand_case() -> LoggedDecisions:
    return LoggedDecisions(
        "meta",
        reward=np.array([1.0, 0.0, 2.0, 1.0]),
        logged_propensity=np.array([0.5, 0.5, 0.25, 1.0]),
        target_propensity=np.array([1.0, 0.0, 1.0, 0.0]),
        model_logged=np.array([0.5, 0.0, 1.0, 1.0]),
        model_target=np.array([0.5, 1.0, 1.0, 0.5]),
    )


def test_estimators_by_hand() -> None:
    report = estimate_off_policy(hand_case(), np.random.default_rng(0), n_resamples=200)
    # w = [2, 0, 4, 0]; IPS = (2 + 8) / 4; SNIPS = 10 / 6
    # DR terms: 0.5 + 2 (1 - 0.5), 1 + 0, 1 + 4 (2 - 1), 0.5 + 0 = 1.5, 1, 5, 0.5
    assert report.estimates["IPS"].value == pytest.approx(2.5)
    assert report.estimates["SNIPS"].value == pytest.approx(10 / 6)
    assert report.estimates["DR"].value == pytest.approx(2.0)
    assert report.effective_sample_size == pytest.approx(36 / 20)
    assert report.logged_value == pytest.approx(1.0)
    assert report.agreement == 0.5
    assert report.min_logged_propensity == 0.25
    assert not report.trustworthy
    assert any("effective sample size 1.8 of 4" in w for w in report.warnings)
    assert report.as_dict()["estimates"]["IPS"]["value"] == pytest.approx(2.5)


def test_effective_sample_size() -> None:
    assert effective_sample_size(np.ones(10)) == 10
    assert effective_sample_size(np.zeros(3)) == 0
    assert effective_sample_size(np.array([1.0, 0, 0, 0])) == 1


def test_bad_columns() -> None:
    base = hand_case()
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        LoggedDecisions("meta", base.reward, np.array([0.5, 0.0, 0.25, 1.0]), base.target_propensity,
                        base.model_logged, base.model_target)
    with pytest.raises(ValueError, match="expected 4"):
        LoggedDecisions("meta", base.reward, base.logged_propensity, np.ones(3), base.model_logged,
                        base.model_target)
    with pytest.raises(ValueError, match="no logged meta"):
        estimate_off_policy(LoggedDecisions("meta", *([np.zeros(0)] * 5)), np.random.default_rng(0))


def test_candidate_columns_from_a_q_table() -> None:
    mask = ActionMask.of(np.array([0, 1, 2, 3], dtype=np.intp))
    table = QTable(4)
    table.set_value("s", 2, 1.5)
    table.set_value("s", 0, -1.0)
    table.set_value("t", 1, 0.7)
    table.set_value("t", 3, 0.7)  # a tie: the greedy policy splits between 1 and 3
    columns = (["s", "s", "t", "never"], [mask] * 4, [2, 0, 3, 1], [0.5, 0.1, 0.25, 0.25], [1, 2, 3, 4])
    raw = logged_decisions_for_candidate("meta", table, *columns, calibrate=False)
    assert raw.target_propensity.tolist() == [1.0, 0.0, 0.5, 0.25]
    assert raw.model_logged.tolist() == [1.5, -1.0, 0.7, 0.0]
    assert raw.model_target.tolist() == [1.5, 1.5, 0.7, 0.0]
    # calibrated: gaps r - Q(logged) = -0.5, 3.0, 2.3 where the table has a row; state s (2 decisions)
    # shifts by their mean 1.25, t (1 decision, below 2) by the overall mean 4.8 / 3 = 1.6; the state
    # never updated takes the overall mean reward 10 / 4 = 2.5
    logged = logged_decisions_for_candidate("meta", table, *columns, min_state_decisions=2)
    assert logged.model_logged.tolist() == pytest.approx([2.75, 0.25, 2.3, 2.5])
    assert logged.model_target.tolist() == pytest.approx([2.75, 2.75, 2.3, 2.5])
    # no cell has min_visits updates (set_value does not count): every value is its state's mean reward
    unlearned = logged_decisions_for_candidate("meta", table, *columns, min_visits=1, min_state_decisions=2)
    assert unlearned.model_logged.tolist() == pytest.approx([1.5, 1.5, 2.5, 2.5])
    assert unlearned.model_target.tolist() == pytest.approx([1.5, 1.5, 2.5, 2.5])
    soft = logged_decisions_for_candidate("meta", table, ["s"], [mask], [0], [0.1], [1], epsilon=0.2, calibrate=False)
    assert soft.target_propensity[0] == pytest.approx(0.05)
    assert soft.model_target[0] == pytest.approx(0.8 * 1.5 + 0.2 * (1.5 - 1.0) / 4)
    with pytest.raises(ValueError, match="outside its mask"):
        logged_decisions_for_candidate("meta", table, ["s"], [ActionMask.of(np.array([0, 1]))], [2], [1], [1])


def known_bandit(seed: int, n: int = 4000) -> tuple[LoggedDecisions, float, np.ndarray, np.ndarray]:
    """A 5-armed bandit in 10 contexts: logging is epsilon-greedy (0.3) on a fixed ranking, the target
    always takes action (context mod 5), the reward model is the true means plus noise; the true
    value of the target on these contexts is known exactly."""
    rng = np.random.default_rng(seed)
    n_actions, epsilon = 5, 0.3
    means = rng.normal(0.0, 1.0, (10, n_actions))
    context = rng.integers(0, 10, n)
    greedy = (context * 3) % n_actions
    explore = rng.random(n) < epsilon
    action = np.where(explore, rng.integers(0, n_actions, n), greedy)
    logged_p = np.where(action == greedy, 1 - epsilon + epsilon / n_actions, epsilon / n_actions)
    reward = means[context, action] + rng.normal(0.0, 1.0, n)
    target_action = context % n_actions
    target_p = (action == target_action).astype(float)
    model = means + rng.normal(0.0, 0.3, means.shape)
    truth = float(np.mean(means[context, target_action]))
    logged = LoggedDecisions("meta", reward, logged_p, target_p, model[context, action], model[context, target_action])
    return logged, truth, action, greedy


def test_intervals_cover_a_known_value() -> None:
    covered = dict.fromkeys(("IPS", "SNIPS", "DR"), 0)
    narrower = 0
    for seed in range(20):
        logged, truth, _, _ = known_bandit(seed)
        report = estimate_off_policy(logged, np.random.default_rng(seed), n_resamples=400)
        for name in covered:
            covered[name] += report.estimates[name].covers(truth)
        dr, ips = report.estimates["DR"], report.estimates["IPS"]
        narrower += dr.ci_high - dr.ci_low < ips.ci_high - ips.ci_low  # the reward model helps
    # 95 % intervals: 17 of 20 or more covers has probability 0.98 when calibrated
    assert min(covered.values()) >= 17, covered
    assert narrower == 20


def test_tiny_and_deterministic_propensities_are_reported() -> None:
    logged, _, action, greedy = known_bandit(0)
    tiny = LoggedDecisions("meta", logged.reward, np.where(action == greedy, 0.999, 0.001),
                           logged.target_propensity, logged.model_logged, logged.model_target)
    warned = estimate_off_policy(tiny, np.random.default_rng(0), n_resamples=200)
    assert any("propensity below 0.01" in w for w in warned.warnings)
    assert any("effective sample size" in w for w in warned.warnings)
    deterministic = LoggedDecisions("meta", logged.reward, np.ones(len(logged)), logged.target_propensity,
                                    logged.model_logged, logged.model_target)
    found = estimate_off_policy(deterministic, np.random.default_rng(0), n_resamples=200).warnings
    assert any("deterministic" in w for w in found)
