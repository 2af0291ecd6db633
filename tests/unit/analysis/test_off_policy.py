"""IPS, SNIPS and DR against hand-computed values, their coverage on known bandits (with and without
cells the logs never tried, which DR's hierarchical model pools), no estimate where even the coarsest
level does not support the candidate, and the candidate's greedy policy as its own decisions read it."""

from __future__ import annotations

import numpy as np
import pytest

from rl_worker.analysis.learning_log import AgentColumns
from rl_worker.analysis.off_policy import (
    LoggedDecisions,
    effective_sample_size,
    estimate_off_policy,
    logged_decisions_for_candidate,
    target_policies,
)
from rl_worker.core import CoreConfig
from rl_worker.core.actions import META_ACTIONS, SIZING_ACTIONS, ActionMask, meta_action_mask, sizing_action_mask
from rl_worker.core.config import AgentHyperparameters
from rl_worker.core.control import Hyperparameters
from rl_worker.core.market import MarketFeatures
from rl_worker.core.replica import ModelReplica
from rl_worker.core.state import MetaState, SizingState
from rl_worker.sim.ab import run_offline_ab


def hand_case() -> LoggedDecisions:
    return LoggedDecisions(
        "meta",
        reward=np.array([1.0, 5.0, 3.0, 2.0, 4.0]),
        logged_propensity=np.array([0.5, 0.5, 0.25, 1.0, 0.5]),
        action=np.array([0, 0, 0, 1, 1]),
        state=["s", "s", "s", "t", "t"],
        target_policy=[{0: 1.0}] * 3 + [{1: 1.0}] * 2,
    )


def test_estimators_by_hand() -> None:
    report = estimate_off_policy(hand_case(), np.random.default_rng(0), n_resamples=200, min_cell_ess=1.0)
    # w = [2, 2, 4, 1, 2]; IPS = (2 + 10 + 12 + 2 + 8) / 5; SNIPS = 34 / 11
    assert report.estimates["IPS"].value == pytest.approx(6.8)
    assert report.estimates["SNIPS"].value == pytest.approx(34 / 11)
    # each action was tried in one state only, so how much states differ is unknown (tau nan) and each
    # cell is its own importance-weighted mean: q(s, 0) = (1/0.5 + 5/0.5 + 3/0.25) / (2 + 2 + 4) = 3,
    # q(t, 1) = (2/1 + 4/0.5) / (1 + 2) = 10/3; DR = (3 q(s, 0) + 2 q(t, 1)) / 5
    assert report.estimates["DR"].value == pytest.approx(47 / 15)
    # (states around the action's chosen cells; chosen cells around all of the action's): each parent has
    # one child here, which is its parent (nothing pooled away)
    assert report.between_state_sd == (0.0, 0.0)
    assert report.effective_sample_size == pytest.approx(121 / 29)
    assert report.logged_value == pytest.approx(3.0)
    assert report.agreement == 1.0
    assert report.min_logged_propensity == 0.25
    assert report.unsupported_share == 0.0
    assert report.pooled_share == 0.0
    assert report.estimated
    assert not report.trustworthy  # the weights warn
    assert any("effective sample size 4.2 of 5" in w for w in report.warnings)
    assert report.as_dict()["estimates"]["IPS"]["value"] == pytest.approx(6.8)


def test_no_estimate_without_support() -> None:
    # each cell's effective sample size is below 4 ((2+2+4)^2/24 = 2.7; 1.8), and so is the root's
    report = estimate_off_policy(hand_case(), np.random.default_rng(0), n_resamples=200, min_cell_ess=4.0)
    assert not report.estimated and not report.trustworthy
    assert report.estimates == {}
    assert report.unsupported_share == pytest.approx(1.0)
    assert report.refusal is not None and "no estimate: 100% of the candidate's choices" in report.refusal
    assert report.as_dict()["refusal"] == report.refusal
    # an action never tried anywhere: the 3 of 5 decisions that would take it are unsupported
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
    tolerated = estimate_off_policy(never, np.random.default_rng(0), min_cell_ess=1.0, max_unsupported_share=0.7)
    assert tolerated.estimated
    assert tolerated.estimates["DR"].value == pytest.approx(1.0)  # over the supported choices only


def test_a_level_with_one_child_per_parent_pools_nothing_away() -> None:
    # one arm: its level under the root has one child per parent, so it is its parent (tau 0), and a
    # state whose chosen action was tried only elsewhere still gets the action's value over all states
    logged, _ = pooled_bandit(0)
    one_arm = LoggedDecisions(
        "meta", logged.reward, logged.logged_propensity, logged.action, [f"rl|{s}" for s in logged.state],
        logged.target_policy, [(f"rl|{g}", "rl|*") for (g,) in logged.state_levels],
    )
    plain = estimate_off_policy(logged, np.random.default_rng(0), n_resamples=200)
    armed = estimate_off_policy(one_arm, np.random.default_rng(0), n_resamples=200)
    assert armed.between_state_sd[2] == 0.0  # the arm's level (states, groups, arm, chosen)
    # (the same but for the reward variances, pooled per arm's action there and per group's action here)
    assert armed.estimated and armed.estimates["DR"].value == pytest.approx(plain.estimates["DR"].value, abs=0.01)


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


def test_target_policies() -> None:
    mask = ActionMask.of(np.array([0, 1, 2, 3], dtype=np.intp))
    greedy = [(2,), (1, 3)]
    assert target_policies(greedy, [mask] * 2) == [{2: 1.0}, {1: 0.5, 3: 0.5}]
    soft = target_policies(greedy[:1], [mask], epsilon=0.2)
    assert soft[0] == pytest.approx({2: 0.85, 0: 0.05, 1: 0.05, 3: 0.05})


def _greedy_replica(positions: int) -> tuple[ModelReplica, CoreConfig]:
    """A replica of the default config after some offline positions, then exploring no more."""
    config = CoreConfig(seed=3)
    replica = run_offline_ab(positions, 3, config, 0.0, keep_log=False, score=False).replica
    still = AgentHyperparameters(alpha=0.01, gamma=0.0, epsilon_start=0.0, epsilon_min=0.0, epsilon_decay=1.0)
    replica.apply_hyperparameters(Hyperparameters(meta=still, sizing=still))
    return replica, config


def test_candidate_greedy_policy_is_what_its_decisions_do() -> None:
    # with epsilon 0 a decision draws uniformly among its greedy set: propensity 1/|greedy set|
    replica, _ = _greedy_replica(400)
    rng = np.random.default_rng(0)
    meta_seen, sizing_seen = set(), set()
    for i in range(300):
        market = MarketFeatures(
            str(rng.choice(["TREND", "BREAKOUT", "RANGE", "MEAN_REVERSION"])), rng.random(), rng.random(),
            rng.uniform(-1, 1),
        )
        decision = replica.decide_meta(market, rng.random(), f"m{i}")
        assert isinstance(decision.state, MetaState)
        greedy = replica.greedy_meta_actions(decision.state)
        assert decision.selection.action in greedy
        assert decision.selection.propensity == pytest.approx(1.0 / len(greedy))
        keys = replica.state_levels(decision.state)
        assert keys[0] == decision.state_key and len(keys) == 3  # fine, L1, L0 (the default backoff)
        meta_seen.add(len(greedy))
        limits = (float(rng.choice([0.5, 1.0])), float(rng.choice([2.0, 5.0])))
        sizing = replica.decide_sizing(rng.random(), rng.random(), rng.random(), f"s{i}", *limits)
        assert isinstance(sizing.state, SizingState)
        sizing_greedy = replica.greedy_sizing_actions(sizing.state, sizing_action_mask(*limits))
        assert sizing.selection.action in sizing_greedy
        assert sizing.selection.propensity == pytest.approx(1.0 / len(sizing_greedy))
        assert replica.state_levels(sizing.state)[0] == sizing.state_key
        # as the join decides (the default's sizing_edge): the meta agent's edge in the key
        edge = replica.sizing_edge_of(market, decision.state.confidence, decision.selection.action)
        with_edge = replica.decide_sizing(*sizing.state[:2], sizing.state.volatility, f"e{i}", *limits, edge=edge)
        assert with_edge.state_key == f"E{edge}|{sizing.state_key}"
        edge_greedy = replica.greedy_sizing_actions(sizing.state, sizing_action_mask(*limits), edge=edge)
        assert with_edge.selection.action in edge_greedy
        assert with_edge.selection.propensity == pytest.approx(1.0 / len(edge_greedy))
        sizing_seen.add(len(sizing_greedy))
    assert 1 in meta_seen and 1 in sizing_seen  # it did learn something: single greedy actions


def test_logged_decisions_for_candidate() -> None:
    replica, _ = _greedy_replica(100)
    mask = sizing_action_mask(1.0, 5.0)
    states = [SizingState(0.6, 0.2, 0.5, v, 0.0) for v in (0.1, 0.5, 0.9)]
    greedy = [replica.greedy_sizing_actions(s, mask) for s in states]
    columns = AgentColumns(
        state_keys=[replica.state_levels(s)[0] for s in states],
        masks=[mask] * 3,
        actions=[g[0] for g in greedy],
        propensities=[0.5, 0.5, 0.5],
        rewards=[1.0, 2.0, 3.0],
        states=states,
        contexts=[None] * 3,
        arms=["rl", "rl", "control"],
    )
    logged = logged_decisions_for_candidate("sizing", replica, columns)
    assert logged.target_propensity.tolist() == pytest.approx([1.0 / len(g) for g in greedy])
    # the reward model's keys: the arm, then the state's backoff levels, the arm's root
    assert logged.state[2] == "control|" + columns.state_keys[2]
    assert logged.state_levels[0] == (f"rl|{replica.state_levels(states[0])[1]}", "rl|*")
    columns.actions[0] = 99
    with pytest.raises(ValueError, match="outside its mask"):
        logged_decisions_for_candidate("sizing", replica, columns)


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
    # the logger takes action 0 but for epsilon = 0.002; the target takes 4 in contexts 0-4 and 0 elsewhere:
    # action 4 is tried ~1.6 times in all (below 5 even over all states), so half the choices have no support
    rng = np.random.default_rng(0)
    n = 4000
    context = rng.integers(0, 10, n)
    explore = rng.random(n) < 0.002
    action = np.where(explore, rng.integers(0, 5, n), 0)
    propensity = np.where(action == 0, 0.998 + 0.002 / 5, 0.002 / 5)
    target = [{4: 1.0} if c < 5 else {0: 1.0} for c in context]
    logged = LoggedDecisions("meta", rng.normal(0, 1, n), propensity, action, [str(c) for c in context], target)
    report = estimate_off_policy(logged, np.random.default_rng(0), n_resamples=200)
    assert not report.estimated
    assert report.unsupported_share == pytest.approx(0.5, abs=0.05)
    assert report.refusal is not None and "neither the logged decisions nor their coarser states" in report.refusal
    # and what to do about it: exploring traffic (a uniform control share, or apprentice mode with it)
    assert "RL_AB__BASELINE__KIND=uniform" in report.refusal and "RL_AB__CONTROL_SHARE=1" in report.refusal


def pooled_bandit(seed: int, n: int = 3000, epsilon: float = 0.1) -> tuple[LoggedDecisions, float]:
    """30 states in 3 groups, 5 actions; true mean reward base[a] + group[g, a] + N(0, 0.5^2) per (state,
    action), noise N(0, 1). The logger is epsilon-greedy on a fixed action per state, the target takes
    action (state mod 5): in most states its action was tried a handful of times or never, and the
    group (a coarser key) and the action over all states are what the reward model pools towards."""
    rng = np.random.default_rng(seed)
    n_states, n_actions = 30, 5
    group = np.arange(n_states) % 3
    means = rng.normal(0, 1, n_actions)[None, :] + rng.normal(0, 1, (3, n_actions))[group] + rng.normal(
        0, 0.5, (n_states, n_actions)
    )
    state = rng.integers(0, n_states, n)
    greedy = (state * 2 + 1) % n_actions
    explore = rng.random(n) < epsilon
    action = np.where(explore, rng.integers(0, n_actions, n), greedy)
    propensity = np.where(action == greedy, 1 - epsilon + epsilon / n_actions, epsilon / n_actions)
    reward = means[state, action] + rng.normal(0, 1, n)
    target = state % n_actions
    logged = LoggedDecisions(
        "meta", reward, propensity, action, [f"s{s}" for s in state], [{int(a): 1.0} for a in target],
        [(f"g{group[s]}",) for s in state],
    )
    return logged, float(np.mean(means[state, target]))


def test_pooled_cells_get_an_honest_interval() -> None:
    # the truth is the mean of the target's true cell values on the logged states; a 95 % interval that
    # carries the pooled cells' spread covers it in 17 or more of 20 seeds (probability 0.98 if calibrated)
    covered, pooled, widths = 0, [], []
    for seed in range(20):
        logged, truth = pooled_bandit(seed)
        report = estimate_off_policy(logged, np.random.default_rng(seed), n_resamples=400)
        assert report.estimated
        dr = report.estimates["DR"]
        covered += dr.covers(truth)
        pooled.append(report.pooled_share)
        ips = report.estimates["IPS"]
        widths.append((dr.ci_high - dr.ci_low, ips.ci_high - ips.ci_low))
        state_sd = report.between_state_sd[0]
        assert 0.1 < state_sd < 1.0  # the states' spread around their group: 0.5
    assert covered >= 17, covered
    assert np.median(pooled) > 0.5  # most of the target's choices rest on pooled cells
    dr_width, ips_width = np.median(widths, axis=0)
    print(f"median widths: DR {dr_width:.2f}, IPS {ips_width:.2f}")
    # and the interval still says something: the target's value varies by ~1.5 between seeds (IPS, with
    # epsilon 0.1 over 5 actions, is narrower here: 0.75 against 1.04; the model pays for pooling each
    # chosen cell only with the other chosen cells of its action)
    assert dr_width < 1.5 and ips_width < 1.5


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


def scaled_bandit(seed: int, n: int = 3000, scaled: bool = True) -> tuple[LoggedDecisions, float]:
    """The meta agent's problem: a reward that grows with the exposure the *other* agent traded, which each
    arm draws differently. 10 states, 5 actions, a rate per (state, action); half the decisions are a uniform
    control arm (exposure uniform in 0.5-4), half an epsilon-greedy arm that trades 4 on its greedy action and
    0.5 otherwise. The reward is x * (rate + noise); the truth holds each decision's x fixed and takes the
    target's action. The arms share their cells (`scaled`: the model knows x)."""
    rng = np.random.default_rng(seed)
    n_states, n_actions = 10, 5
    rate = rng.normal(0.0, 1.0, (n_states, n_actions))
    state = rng.integers(0, n_states, n)
    control = rng.random(n) < 0.5
    greedy = (state * 2 + 1) % n_actions
    action = np.where(control | (rng.random(n) < 0.2), rng.integers(0, n_actions, n), greedy)
    propensity = np.where(control, 1 / n_actions, np.where(action == greedy, 0.8 + 0.2 / n_actions, 0.2 / n_actions))
    x = np.where(control, np.array([0.5, 1.0, 2.0, 4.0])[rng.integers(0, 4, n)], np.where(action == greedy, 4.0, 0.5))
    reward = x * (rate[state, action] + rng.normal(0.0, 1.0, n))
    target = state % n_actions
    logged = LoggedDecisions(
        "meta",
        reward,
        propensity,
        action,
        [f"s{s}" for s in state],
        [{int(a): 1.0} for a in target],
        [("*",)] * n,
        x if scaled else np.zeros(0),
    )
    return logged, float(np.mean(x * rate[state, target]))


def test_the_reward_model_holds_the_traded_exposure_fixed() -> None:
    # a cell's decisions were traded at the exposures their arm drew; the candidate is judged at each decision's
    # own exposure. Pooling rates (reward / exposure) covers the truth; pooling rewards (the exposures of the
    # decisions that happened to take the action) does not
    covered = {True: 0, False: 0}
    errors: dict[bool, list[float]] = {True: [], False: []}
    for seed in range(20):
        for scaled in (True, False):
            logged, truth = scaled_bandit(seed, scaled=scaled)
            dr = estimate_off_policy(logged, np.random.default_rng(seed), n_resamples=300).estimates["DR"]
            covered[scaled] += dr.covers(truth)
            errors[scaled].append(abs(dr.value - truth))
    assert covered[True] >= 17, covered
    assert np.mean(errors[True]) < 0.5 * np.mean(errors[False]), errors
    assert covered[False] < 17, covered  # the bias the scale removes (10 of 20 when measured)


def test_scales_and_known_parts_cancel_where_cells_stand_alone() -> None:
    # every cell its own (each action tried in one state: tau unknown): a cell's value is its importance-weighted
    # mean reward whatever the scales, so DR is the hand-computed 47/15 of test_estimators_by_hand
    base = hand_case()
    for scale, action_scale, offset in (
        (np.array([2.0, 2.0, 2.0, 0.5, 0.5]), np.zeros(0), ()),
        (np.zeros(0), np.array([3.0, 0.25]), ()),
        (np.zeros(0), np.zeros(0), [{0: 0.7, 1: -0.2}] * 5),
    ):
        logged = LoggedDecisions(
            "meta",
            base.reward,
            base.logged_propensity,
            base.action,
            base.state,
            base.target_policy,
            (),
            scale,
            offset,
            action_scale,
        )
        report = estimate_off_policy(logged, np.random.default_rng(0), n_resamples=200, min_cell_ess=1.0)
        assert report.estimates["DR"].value == pytest.approx(47 / 15)
    with pytest.raises(ValueError, match="reward_scale"):
        LoggedDecisions(
            "meta",
            base.reward,
            base.logged_propensity,
            base.action,
            base.state,
            base.target_policy,
            (),
            np.array([1.0, 0.0, 1.0, 1.0, 1.0]),
        )
    with pytest.raises(ValueError, match="action_scale"):
        LoggedDecisions(
            "meta",
            base.reward,
            base.logged_propensity,
            base.action,
            base.state,
            base.target_policy,
            (),
            np.zeros(0),
            (),
            np.array([1.0]),
        )


def test_meta_columns_carry_the_traded_exposure_and_the_alignment() -> None:
    replica, config = _greedy_replica(100)
    states = [MetaState("TREND", 0.2, 0.5, 0.7, 0.5, 1.0), MetaState("RANGE", 0.8, -0.5, 0.4, 0.5, 1.0)]
    mask = meta_action_mask("TREND", config)
    other_mask = meta_action_mask("RANGE", config)
    columns = AgentColumns(
        state_keys=[replica.state_levels(s)[0] for s in states],
        masks=[mask, other_mask],
        actions=[mask.members[0], other_mask.members[0]],
        propensities=[0.5, 0.5],
        rewards=[1.0, 2.0],
        states=states,
        contexts=[None, None],
        arms=["rl", "control"],
        other_actions=[0, len(SIZING_ACTIONS) - 1],
    )
    logged = logged_decisions_for_candidate("meta", replica, columns)
    exposures = [SIZING_ACTIONS[a].size_multiplier * SIZING_ACTIONS[a].leverage for a in columns.other_actions]
    assert logged.reward_scale.tolist() == pytest.approx(exposures)
    weight = config.reward.meta_alignment_weight
    for state, offset in zip(states, logged.reward_offset, strict=True):
        native = config.reward.aligned_strategies[state.regime]
        assert {a: v for a, v in offset.items() if v} == {
            a: weight for a, action in enumerate(META_ACTIONS) if action.strategy in native
        }
    # the sizing the arm drew is in the model: the arms share their cells
    assert logged.state[1] == "|" + columns.state_keys[1] and logged.state_levels[0][-1] == "|*"
    # without the other agent's actions (an old log): the arms keep their own cells, no scale
    columns.other_actions = []
    old = logged_decisions_for_candidate("meta", replica, columns)
    assert old.state[1] == "control|" + columns.state_keys[1] and old.reward_scale.tolist() == [1.0, 1.0]
