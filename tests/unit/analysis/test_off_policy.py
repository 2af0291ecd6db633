"""IPS, SNIPS and DR against hand-computed values, their coverage on a known bandit, and no
estimate where the logs do not support the candidate."""

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
        reward=np.array([1.0, 5.0, 3.0, 2.0, 4.0]),
        logged_propensity=np.array([0.5, 0.5, 0.25, 1.0, 0.5]),
        action=np.array([0, 1, 0, 1, 1]),
        state=["s", "s", "s", "t", "t"],
        target_policy=[{0: 1.0}] * 3 + [{1: 1.0}] * 2,
    )


def test_estimators_by_hand() -> None:
    report = estimate_off_policy(hand_case(), np.random.default_rng(0), n_resamples=200, min_cell_ess=1.0)
    # w = [2, 0, 4, 1, 2]; IPS = (2 + 12 + 2 + 8) / 5; SNIPS = 24 / 9
    assert report.estimates["IPS"].value == pytest.approx(4.8)
    assert report.estimates["SNIPS"].value == pytest.approx(24 / 9)
    # q(s, 0) = (1 / 0.5 + 3 / 0.25) / (2 + 4) = 14 / 6; q(t, 1) = (2 / 1 + 4 / 0.5) / (1 + 2) = 10 / 3;
    # DR = (3 q(s, 0) + 2 q(t, 1)) / 5
    assert report.estimates["DR"].value == pytest.approx(41 / 15)
    assert report.effective_sample_size == pytest.approx(81 / 25)
    assert report.logged_value == pytest.approx(3.0)
    assert report.agreement == 0.8
    assert report.min_logged_propensity == 0.25
    assert report.unsupported_share == 0.0
    assert report.estimated
    assert not report.trustworthy  # the weights warn
    assert any("effective sample size 3.2 of 5" in w for w in report.warnings)
    assert report.as_dict()["estimates"]["IPS"]["value"] == pytest.approx(4.8)


def test_no_estimate_without_support() -> None:
    # each cell's effective sample size is 1.8 (weights 2 and 4; 1 and 2): below 2, nothing is estimated
    report = estimate_off_policy(hand_case(), np.random.default_rng(0), n_resamples=200, min_cell_ess=2.0)
    assert not report.estimated and not report.trustworthy
    assert report.estimates == {}
    assert report.unsupported_share == pytest.approx(1.0)
    assert report.refusal is not None and "no estimate: 100% of the candidate's choices" in report.refusal
    assert report.as_dict()["refusal"] == report.refusal
    # an action never tried in a state the candidate needs: 3 of 5 decisions unsupported
    never = LoggedDecisions(
        "meta",
        np.ones(5),
        np.full(5, 0.5),
        np.array([1, 1, 1, 1, 1]),
        ["s", "s", "s", "t", "t"],
        [{0: 1.0}] * 3 + [{1: 1.0}] * 2,
    )
    refused = estimate_off_policy(never, np.random.default_rng(0), min_cell_ess=1.0)
    assert refused.unsupported_share == pytest.approx(0.6)
    assert refused.refusal is not None and "1 never tried" in refused.refusal
    tolerated = estimate_off_policy(never, np.random.default_rng(0), min_cell_ess=1.0, max_unsupported_share=0.7)
    assert tolerated.estimated


def test_effective_sample_size() -> None:
    assert effective_sample_size(np.ones(10)) == 10
    assert effective_sample_size(np.zeros(3)) == 0
    assert effective_sample_size(np.array([1.0, 0, 0, 0])) == 1


def test_bad_columns() -> None:
    base = hand_case()
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        LoggedDecisions("meta", base.reward, np.array([0.5, 0.0, 0.25, 1.0, 1.0]), base.action, base.state,
                        base.target_policy)
    with pytest.raises(ValueError, match="expected 5"):
        LoggedDecisions("meta", base.reward, base.logged_propensity, np.ones(3), base.state, base.target_policy)
    with pytest.raises(ValueError, match="expected 5"):
        LoggedDecisions("meta", base.reward, base.logged_propensity, base.action, base.state[:4], base.target_policy)
    with pytest.raises(ValueError, match="sum to 1"):
        LoggedDecisions("meta", base.reward, base.logged_propensity, base.action, base.state,
                        [{0: 0.5}] * 5)
    with pytest.raises(ValueError, match="no logged meta"):
        estimate_off_policy(LoggedDecisions("meta", np.zeros(0), np.zeros(0), np.zeros(0), [], []),
                            np.random.default_rng(0))


def test_candidate_columns_from_a_q_table() -> None:
    mask = ActionMask.of(np.array([0, 1, 2, 3], dtype=np.intp))
    table = QTable(4)
    table.set_value("s", 2, 1.5)
    table.set_value("s", 0, -1.0)
    table.set_value("t", 1, 0.7)
    table.set_value("t", 3, 0.7)  # a tie: the greedy policy splits between 1 and 3
    columns = (["s", "s", "t", "never"], [mask] * 4, [2, 0, 3, 1], [0.5, 0.1, 0.25, 0.25], [1, 2, 3, 4])
    logged = logged_decisions_for_candidate("meta", table, *columns)
    assert logged.target_propensity.tolist() == [1.0, 0.0, 0.5, 0.25]
    assert [dict(p) for p in logged.target_policy] == [
        {2: 1.0}, {2: 1.0}, {1: 0.5, 3: 0.5}, {0: 0.25, 1: 0.25, 2: 0.25, 3: 0.25}
    ]
    assert logged.weights.tolist() == pytest.approx([2.0, 0.0, 2.0, 1.0])
    soft = logged_decisions_for_candidate("meta", table, ["s"], [mask], [0], [0.1], [1], epsilon=0.2)
    assert soft.target_propensity[0] == pytest.approx(0.05)
    assert dict(soft.target_policy[0]) == pytest.approx({2: 0.85, 0: 0.05, 1: 0.05, 3: 0.05})
    with pytest.raises(ValueError, match="outside its mask"):
        logged_decisions_for_candidate("meta", table, ["s"], [ActionMask.of(np.array([0, 1]))], [2], [1], [1])


def known_bandit(
    seed: int, n: int = 4000, epsilon: float = 0.3
) -> tuple[LoggedDecisions, float, np.ndarray, np.ndarray]:
    """A 5-armed bandit in 10 contexts: logging is epsilon-greedy on a fixed ranking, the target
    always takes action (context mod 5); the true value of the target on these contexts is known."""
    rng = np.random.default_rng(seed)
    n_actions = 5
    means = rng.normal(0.0, 1.0, (10, n_actions))
    context = rng.integers(0, 10, n)
    greedy = (context * 3) % n_actions
    explore = rng.random(n) < epsilon
    action = np.where(explore, rng.integers(0, n_actions, n), greedy)
    logged_p = np.where(action == greedy, 1 - epsilon + epsilon / n_actions, epsilon / n_actions)
    reward = means[context, action] + rng.normal(0.0, 1.0, n)
    target_action = context % n_actions
    truth = float(np.mean(means[context, target_action]))
    logged = LoggedDecisions(
        "meta", reward, logged_p, action, [str(c) for c in context], [{int(a): 1.0} for a in target_action]
    )
    return logged, truth, action, greedy


def test_intervals_cover_a_known_value() -> None:
    covered = dict.fromkeys(("IPS", "SNIPS", "DR"), 0)
    narrower = 0
    for seed in range(20):
        logged, truth, _, _ = known_bandit(seed)
        report = estimate_off_policy(logged, np.random.default_rng(seed), n_resamples=400)
        assert report.estimated
        for name in covered:
            covered[name] += report.estimates[name].covers(truth)
        dr, ips = report.estimates["DR"], report.estimates["IPS"]
        narrower += dr.ci_high - dr.ci_low < ips.ci_high - ips.ci_low  # the per-state model helps
    # 95 % intervals: 17 of 20 or more covers has probability 0.98 when calibrated
    assert min(covered.values()) >= 17, covered
    assert narrower == 20


def test_rare_exploration_gives_no_estimate() -> None:
    # epsilon 0.002: the target's action is tried ~0.16 times per context where it is not the greedy one
    logged, _, _, _ = known_bandit(0, epsilon=0.002)
    report = estimate_off_policy(logged, np.random.default_rng(0), n_resamples=200)
    assert not report.estimated
    # contexts 0 and 5 (a fifth of the decisions) are where the target agrees with the logger
    assert report.unsupported_share == pytest.approx(0.8, abs=0.05)


def test_tiny_and_deterministic_propensities_are_reported() -> None:
    logged, _, action, greedy = known_bandit(0)
    tiny = LoggedDecisions("meta", logged.reward, np.where(action == greedy, 0.999, 0.001), logged.action,
                           logged.state, logged.target_policy)
    warned = estimate_off_policy(tiny, np.random.default_rng(0), n_resamples=200)
    assert any("propensity below 0.01" in w for w in warned.warnings)
    assert any("effective sample size" in w for w in warned.warnings)
    deterministic = LoggedDecisions("meta", logged.reward, np.ones(len(logged)), logged.action, logged.state,
                                    logged.target_policy)
    found = estimate_off_policy(deterministic, np.random.default_rng(0), n_resamples=200).warnings
    assert any("deterministic" in w for w in found)
