"""The learning rules around the seed's TD rule: step size, counterfactual sizing, backoff, strategy first;
and the seed profile, which must reproduce the seed's numbers exactly."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from rl_worker.core.actions import META_ACTIONS, SIZING_ACTIONS, ActionMask, sizing_action_mask
from rl_worker.core.config import CoreConfig, RewardConfig
from rl_worker.core.market import MarketFeatures
from rl_worker.core.outcome import MetaStateModel, Outcome
from rl_worker.core.qlearning import QTable
from rl_worker.core.replica import ModelReplica, _shrunk_greedy
from rl_worker.core.rewards import risk_penalty, size_reward, volatility_adjustment
from rl_worker.core.snapshot import decode_replica, encode_replica
from rl_worker.core.state import MetaKeyBuilder, MetaState
from rl_worker.core.types import MODELS, STRATEGIES, WEIGHTS
from rl_worker.sim.events import make_outcome, make_outcomes

TREND = MarketFeatures(regime="TREND", volatility=0.3, trend_strength=0.7, market_pressure=0.4)
ALL = ActionMask.of(np.arange(4, dtype=np.intp))


def greedy_config(**learning: object) -> CoreConfig:
    """The default profile without exploration, with some learning rules overridden."""
    no_exploration = {"epsilon_start": 0.0, "epsilon_min": 0.0}
    return CoreConfig.model_validate({"meta": no_exploration, "sizing": no_exploration, "learning": learning})


class TestVisitStepSize:
    def test_by_hand(self) -> None:
        """max(alpha, 1/n): 1, 1/2, 1/3, then alpha = 1/4 from the fourth update on."""
        table = QTable(4)
        values = []
        for reward in (4.0, 2.0, 6.0, 8.0, 10.0):
            table.td_update("s", 1, reward, None, ALL, 0.25, 0.9, visit_step=True)
            values.append(float(table.row("s")[1]))  # type: ignore[index]
        assert values == [4.0, 3.0, 4.0, 5.0, 6.25]
        assert table.visits[0, 1] == 5 and table.row_visits("s") == 5

    def test_constant_is_the_seed_rule(self) -> None:
        table = QTable(4)
        table.td_update("s", 0, 4.0, None, ALL, 0.25, 0.9)
        table.td_update("s", 0, 2.0, None, ALL, 0.25, 0.9)
        assert float(table.row("s")[0]) == 0.25 * 4.0 + 0.25 * (2.0 - 0.25 * 4.0)  # type: ignore[index]

    @given(st.lists(st.floats(-100, 100), min_size=1, max_size=40))
    def test_a_sample_mean_until_one_over_n_reaches_alpha(self, rewards: list[float]) -> None:
        table = QTable(2)
        for reward in rewards:
            table.td_update("s", 0, reward, None, ALL, 0.01, 0.0, visit_step=True)
        assert float(table.row("s")[0]) == pytest.approx(float(np.mean(rewards)), rel=1e-9, abs=1e-9)  # type: ignore[index]

    def test_bootstrap_with_visit_steps(self) -> None:
        table = QTable(4)
        table.set_value("next", 2, 10.0)
        table.td_update("s", 0, 1.0, "next", ALL, 0.01, 0.5, visit_step=True)
        assert float(table.row("s")[0]) == 1.0 + 0.5 * 10.0  # type: ignore[index]

    def test_several_cells_share_one_bootstrap(self) -> None:
        table = QTable(4)
        table.td_update_cells("s", (0, 2, 3), [1.0, 2.0, 3.0], 0.5, 0.01, visit_step=True)
        table.td_update_cells("s", (0, 2, 3), [3.0, 2.0, 1.0], 0.5, 0.01, visit_step=True)
        assert table.row("s").tolist() == [2.5, 0.0, 2.5, 2.5]  # type: ignore[union-attr]
        assert table.visits[0].tolist() == [2, 0, 2, 2] and table.row_visits("s") == 6
        assert table.greedy_actions("s", ALL) == (0, 2, 3)


class TestCounterfactualSizing:
    def test_every_allowed_cell_learns_its_own_reward_from_one_close(self) -> None:
        config = greedy_config(counterfactual_sizing=True)
        replica = ModelReplica(config)
        record = make_outcome(np.random.default_rng(3), config, 0)
        chosen = record.sizing.action_index
        applied = replica.apply(record)
        assert applied is not None
        row = replica.sizing_table.row(record.sizing.state_key)
        assert row is not None
        taken = SIZING_ACTIONS[chosen]
        exposure = taken.size_multiplier * taken.leverage
        unit_pnl, unit_drawdown = record.pnl_pct / exposure, record.max_drawdown_pct / exposure
        allowed = set(sizing_action_mask(config.risk.max_size_multiplier, config.risk.max_leverage).members)
        reward_config = RewardConfig()
        for action, cell in enumerate(SIZING_ACTIONS):
            if action == chosen:
                continue
            if action not in allowed:  # beyond the configured limits: never learns
                assert row[action] == 0.0 and replica.sizing_table.visits[0, action] == 0
                continue
            x = cell.size_multiplier * cell.leverage
            pnl, drawdown = unit_pnl * x, unit_drawdown * x
            if drawdown >= 100.0:
                pnl, drawdown = -100.0, 100.0
            expected = size_reward(
                pnl,
                risk_penalty(drawdown, cell.size_multiplier, cell.leverage, reward_config),
                volatility_adjustment(record.sizing.state.volatility, cell.size_multiplier, cell.leverage),
                reward_config,
            )
            # gamma 0 and a first visit (step 1): the cell holds its reward
            assert row[action] == pytest.approx(expected, rel=1e-12, abs=1e-12)
        assert row[chosen] == applied.size_reward  # the chosen one learns from its realised reward

    def test_a_chosen_size_beyond_the_configured_limits_still_learns(self) -> None:
        config = greedy_config(counterfactual_sizing=True)
        replica = ModelReplica(config)
        record = make_outcome(np.random.default_rng(3), config, 0)
        beyond = next(i for i, a in enumerate(SIZING_ACTIONS) if a.leverage > config.risk.max_leverage)
        record = record.model_copy(update={"sizing": record.sizing.model_copy(update={"action_index": beyond})})
        applied = replica.apply(record)
        assert applied is not None
        assert replica.sizing_table.row(record.sizing.state_key)[beyond] == applied.size_reward  # type: ignore[index]

    def test_a_position_wiped_out_caps_the_larger_sizes_at_liquidation(self) -> None:
        config = greedy_config(counterfactual_sizing=True)
        replica = ModelReplica(config)
        rng = np.random.default_rng(4)
        smallest = 0  # 0.2 x 1: exposure 0.2
        record = make_outcome(rng, config, 0)
        record = record.model_copy(
            update={
                "pnl_pct": -5.0,
                "max_drawdown_pct": 6.0,  # 30 % per unit of exposure: 10x would lose 300 % of the margin
                "sizing": record.sizing.model_copy(update={"action_index": smallest}),
            }
        )
        replica.apply(record)
        row = replica.sizing_table.row(record.sizing.state_key)
        assert row is not None
        ten = next(i for i, a in enumerate(SIZING_ACTIONS) if (a.size_multiplier, a.leverage) == (1.0, 10))
        reward_config = RewardConfig()
        liquidated = size_reward(
            -100.0,
            risk_penalty(100.0, 1.0, 10, reward_config),
            volatility_adjustment(record.sizing.state.volatility, 1.0, 10),
            reward_config,
        )
        assert row[ten] == pytest.approx(liquidated)

    def test_off_by_default_in_the_seed_profile(self) -> None:
        replica = ModelReplica(CoreConfig(profile="seed"))
        record = make_outcome(np.random.default_rng(3), replica.config, 0)
        replica.apply(record)
        assert int(replica.sizing_table.visits.sum()) == 1


class TestBackoff:
    def test_a_rare_fine_state_is_decided_by_its_coarse_key_until_it_has_enough_updates(self) -> None:
        config = greedy_config(counterfactual_sizing=False, backoff_visits=3.0, sizing_shrink=False)
        replica = ModelReplica(config)
        table = replica.sizing_table
        fine = replica.decide_sizing(0.6, 0.3, 0.3, "probe").state_key
        coarse = "L0:" + "c0e0w0v0s0"  # the default sizing backoff keeps the volatility only (0.3 -> bin 0)
        table.set_value(coarse, 3, 5.0)  # 0.2 x 8
        assert replica.decide_sizing(0.6, 0.3, 0.3, "a").selection.action == 3
        mask = sizing_action_mask(1.0, 10.0)
        needed = int(3 * len(mask))
        for _ in range(needed - 1):
            table.td_update(fine, 12, 10.0, None, mask, 0.01, 0.0, visit_step=True)
        assert replica.decide_sizing(0.6, 0.3, 0.3, "b").selection.action == 3  # one update short
        table.td_update(fine, 12, 10.0, None, mask, 0.01, 0.0, visit_step=True)
        assert replica.decide_sizing(0.6, 0.3, 0.3, "c").selection.action == 12

    def test_every_outcome_updates_each_level(self) -> None:
        config = greedy_config(counterfactual_sizing=False, meta_strategy_first=False)
        replica = ModelReplica(config)
        record = make_outcome(np.random.default_rng(6), config, 0)
        replica.apply(record)
        keys = replica.meta_table.keys
        assert keys[0] == record.meta.state_key
        assert [k.split(":")[0] for k in keys[1:]] == ["L0", "L1"]
        assert keys[1] == f"L0:{record.meta.state.regime}|v0p0c0w0h0"
        q_values = replica.meta_table.q_values[:, record.meta.action_index]
        assert q_values[0] == q_values[1] == q_values[2] != 0.0  # one reward, first visits: equal cells


class TestStrategyFirst:
    def test_decides_among_the_actions_of_the_best_strategy(self) -> None:
        config = greedy_config(backoff_visits=0.0)
        replica = ModelReplica(config)
        key = replica.decide_meta(TREND, 0.6, "probe").state_key
        table = replica.meta_table
        momentum = [i for i, a in enumerate(META_ACTIONS) if a.strategy == "dual_momentum"]
        breakout = [i for i, a in enumerate(META_ACTIONS) if a.strategy == "breakout"]
        table.set_value(key, momentum[3], 9.0)  # the best single action trades momentum...
        table.set_value(key, breakout[5], 2.0)
        table.set_value("S:" + key, 2, 1.0)  # ...but breakout (strategy 2) is the better strategy
        table.set_value("S:" + key, 0, 0.5)
        decision = replica.decide_meta(TREND, 0.6, "d")
        assert decision.selection.action == breakout[5]
        assert decision.selection.propensity == 1.0

    def test_propensity_keeps_uniform_exploration_over_all_allowed_actions(self) -> None:
        config = CoreConfig.model_validate(
            {"meta": {"epsilon_start": 0.2, "epsilon_min": 0.2}, "learning": {"backoff_visits": 0.0}}
        )
        replica = ModelReplica(config)
        key = replica.decide_meta(TREND, 0.6, "probe").state_key
        replica.meta_table.set_value("S:" + key, 2, 1.0)
        breakout = [i for i, a in enumerate(META_ACTIONS) if a.strategy == "breakout"]
        counts = np.zeros(len(META_ACTIONS))
        n = 6000
        for i in range(n):
            selection = replica.decide_meta(TREND, 0.6, f"d{i}").selection
            counts[selection.action] += 1
            expected = 0.2 / 40 + (0.8 / 20 if selection.action in breakout else 0.0)
            assert selection.propensity == pytest.approx(expected)
        share_breakout = counts[breakout].sum() / n
        assert share_breakout == pytest.approx(0.8 + 0.2 / 2, abs=0.02)

    def test_the_strategy_row_learns_from_every_position_of_the_strategy(self) -> None:
        config = greedy_config(backoff_visits=0.0, counterfactual_sizing=False)
        replica = ModelReplica(config)
        records = make_outcomes(np.random.default_rng(8), config, 30)
        for record in records:
            replica.apply(record)
        for key in {r.meta.state_key for r in records}:
            trades = [r for r in records if r.meta.state_key == key]
            strategy_visits = replica.meta_table.visits[replica.meta_table.row_index("S:" + key)]
            assert int(strategy_visits.sum()) == len(trades)


class TestFactoredMeta:
    def test_the_action_is_the_best_strategy_with_its_best_model_and_weight(self) -> None:
        config = greedy_config(backoff_visits=0.0, meta_factored=True)
        replica = ModelReplica(config)
        key = replica.decide_meta(TREND, 0.6, "probe").state_key
        table = replica.meta_table
        breakout = STRATEGIES.index("breakout")
        table.set_value("S:" + key, breakout, 1.0)  # breakout beats dual_momentum (0)
        table.set_value(f"M{breakout}:{key}", 2, 0.5)  # its third model
        table.set_value(f"W{breakout}:{key}", 4, 0.3)  # its largest weight
        table.set_value(f"M0:{key}", 0, 9.0)  # another strategy's model values do not matter
        table.set_value(key, 0, 99.0)  # nor the actions' own values
        decision = replica.decide_meta(TREND, 0.6, "d")
        action = META_ACTIONS[decision.selection.action]
        assert (action.strategy, action.model, action.weight) == ("breakout", MODELS[2], WEIGHTS[4])
        assert decision.selection.propensity == 1.0

    def test_each_outcome_teaches_its_model_and_weight_under_its_strategy(self) -> None:
        config = greedy_config(counterfactual_sizing=False, meta_factored=True)
        replica = ModelReplica(config)
        record = make_outcome(np.random.default_rng(6), config, 0)
        applied = replica.apply(record)
        assert applied is not None
        action = META_ACTIONS[record.meta.action_index]
        s, m, w = STRATEGIES.index(action.strategy), MODELS.index(action.model), WEIGHTS.index(action.weight)
        table = replica.meta_table
        for key in (record.meta.state_key, f"L0:{record.meta.state.regime}|v0p0c0w0h0"):
            for row, cell in ((f"M{s}:{key}", m), (f"W{s}:{key}", w)):
                i = table.row_index(row)
                assert i is not None and table.visits[i].sum() == table.visits[i, cell] == 1
                assert table.q_values[i, cell] == applied.meta_reward  # first visit: step 1


class TestSizingContext:
    def test_every_sizing_row_is_also_learnt_under_the_regime_and_the_strategy_traded(self) -> None:
        config = greedy_config(sizing_context=("regime", "strategy"))
        replica = ModelReplica(config)
        record = make_outcome(np.random.default_rng(6), config, 0)
        replica.apply(record)
        table = replica.sizing_table
        strategy = META_ACTIONS[record.meta.action_index].strategy
        prefix = f"X:{record.meta.state.regime}|{strategy}|"
        plain = [k for k in table.keys if not k.startswith("X:")]
        assert sorted(table.keys) == sorted(plain + [prefix + k for k in plain])
        for key in plain:  # the same counterfactual rewards under the context
            assert table.row(prefix + key).tolist() == table.row(key).tolist()  # type: ignore[union-attr]

    def test_a_decision_with_its_context_reads_the_context_rows_first(self) -> None:
        config = greedy_config(sizing_context=("regime", "strategy"), backoff_visits=0.0)
        replica = ModelReplica(config)
        key = replica.decide_sizing(0.6, 0.3, 0.3, "probe").state_key
        momentum = next(i for i, a in enumerate(META_ACTIONS) if a.strategy == "dual_momentum")
        table = replica.sizing_table
        plain_best, context_best = sizing_action_mask(1.0, 10.0).members[2:4]
        table.set_value(key, plain_best, 1.0)
        table.set_value(f"X:TREND|dual_momentum|{key}", context_best, 1.0)
        assert replica.decide_sizing(0.6, 0.3, 0.3, "a").selection.action == plain_best  # no context given
        with_context = replica.decide_sizing(0.6, 0.3, 0.3, "b", None, None, "TREND", momentum)
        assert with_context.selection.action == context_best and with_context.state_key == key
        # (the decision record keeps the spec's five-feature key)


# sha256 of the rewards and TD errors of 400 applied outcomes, the Q-tables, visit counts and keys, and 50
# meta and sizing decisions with their propensities and epsilons, computed with the code before the learning
# rules existed (main at a95cc63, `CoreConfig(seed=3)`, whose numbers were the seed's).
SEED_GOLDEN = "9ed22949706fcc6f85ad8dcbea34dc4567779a2593cef38e4e9662f484bdc600"


def test_the_seed_profile_reproduces_the_seeds_numbers_exactly() -> None:
    config = CoreConfig(seed=3, profile="seed")
    replica = ModelReplica(config)
    digest = hashlib.sha256()
    for offset, record in enumerate(make_outcomes(np.random.default_rng(5), config, 400)):
        applied = replica.apply(record, offset)
        digest.update(repr(tuple(applied)).encode())  # type: ignore[arg-type]
    for table in (replica.meta_table, replica.sizing_table):
        q_values, visits = table.used()
        digest.update(q_values.tobytes())
        digest.update(visits.tobytes())
        digest.update("|".join(table.keys).encode())
    for i in range(50):
        meta = replica.decide_meta(TREND, 0.6, f"d{i}")
        sizing = replica.decide_sizing(0.6, 0.3, 0.3, f"d{i}", max_leverage=5.0)
        sizing_part = (sizing.state_key, tuple(sizing.selection), sizing.epsilon)
        digest.update(repr((meta.state_key, tuple(meta.selection), meta.epsilon, *sizing_part)).encode())
    assert digest.hexdigest() == SEED_GOLDEN


def test_the_default_profile_learns_differently_and_stays_deterministic() -> None:
    config = CoreConfig(seed=3)
    records = make_outcomes(np.random.default_rng(5), config, 200)
    first, second = ModelReplica(config), ModelReplica(config)
    for record in records:
        first.apply(record)
        second.apply(record)
    assert first.meta_table.used()[0].tobytes() == second.meta_table.used()[0].tobytes()
    assert first.sizing_table.used()[0].tobytes() == second.sizing_table.used()[0].tobytes()
    assert first.meta_table.keys == second.meta_table.keys


def test_a_restored_default_replica_decides_and_learns_as_the_live_one() -> None:
    """Backoff reads row update counts and strategy rows: a snapshot must carry them (as Q-table rows)."""
    config = CoreConfig(seed=3)
    records = make_outcomes(np.random.default_rng(9), config, 300)
    live = ModelReplica(config)
    for record in records[:200]:
        live.apply(record)
    restored = decode_replica(encode_replica(live), config)
    for record in records[200:]:
        live.apply(record)
        restored.apply(record)
    for i in range(40):
        assert restored.decide_meta(TREND, 0.6, f"d{i}") == live.decide_meta(TREND, 0.6, f"d{i}")
        assert restored.decide_sizing(0.6, 0.3, 0.3, f"d{i}") == live.decide_sizing(0.6, 0.3, 0.3, f"d{i}")
    assert restored.meta_table.used()[0].tobytes() == live.meta_table.used()[0].tobytes()
    assert restored.sizing_table.used()[1].tobytes() == live.sizing_table.used()[1].tobytes()


def _decision_stream_digest(profile: str) -> str:
    """A recorded stream: 600 outcomes applied, and after every 3rd one a burst of decisions over several
    regimes, features and risk limits (repeats included, so cached decisions are read); the hash of every
    decision (state key, action, explored, propensity, epsilon, model version)."""
    config = CoreConfig(seed=11, profile=profile)
    replica = ModelReplica(config)
    rng = np.random.default_rng(21)
    records = make_outcomes(np.random.default_rng(8), config, 600)
    regimes = ("TREND", "BREAKOUT", "RANGE", "MEAN_REVERSION")
    digest = hashlib.sha256()
    for offset, record in enumerate(records):
        replica.apply(record, offset)
        if offset % 3:
            continue
        for j in range(6):
            regime = regimes[int(rng.integers(4))]
            market = MarketFeatures(
                regime=regime,  # type: ignore[arg-type]
                volatility=float(rng.random()),
                trend_strength=0.5,
                market_pressure=float(rng.uniform(-1, 1)),
            )
            confidence, exposure = float(rng.random()), float(rng.random())
            leverage = (None, 5.0, 3.0)[j % 3]
            for repeat in range(2):
                decision_id = f"{offset}:{j}:{repeat}"
                meta = replica.decide_meta(market, confidence, decision_id)
                edge = replica.sizing_edge_of(market, confidence, meta.selection.action)  # as the join asks
                sizing = replica.decide_sizing(
                    confidence, exposure, market.volatility, decision_id, None, leverage, edge=edge
                )
                for d in (meta, sizing):
                    digest.update(repr((d.state_key, tuple(d.selection), d.epsilon, d.model_version)).encode())
    return digest.hexdigest()


# 'seed': recorded with the decision path before its per-state greedy cache (main at 5ebf968). 'default':
# re-recorded when sizing_shrink and sizing_edge became default (and the stream began to pass the edge), the
# same hash with every decision cache cleared before each decision.
DECISIONS_GOLDEN = {
    "default": "8ab3fd8ec5ea8de87c644eb7bc65884b6ed4310c43c85d9ad9b3dab30d85179e",
    "seed": "7d916bc12d79bd8a28a4aa29189bff54ab2f317f568271060af58487068c81b4",
}


@pytest.mark.parametrize("profile", ["default", "seed"])
def test_decisions_on_a_recorded_stream_are_unchanged(profile: str) -> None:
    assert _decision_stream_digest(profile) == DECISIONS_GOLDEN[profile]


def test_a_cached_decision_equals_one_read_from_the_table() -> None:
    """After every apply, and after a direct write to the table, the cached greedy set is the table's."""
    config = CoreConfig(seed=3)
    live = ModelReplica(config)
    records = make_outcomes(np.random.default_rng(4), config, 120)
    for offset, record in enumerate(records):
        live.apply(record, offset)
        first = live.decide_meta(TREND, 0.6, f"a{offset}")
        again = live.decide_meta(TREND, 0.6, f"a{offset}")  # read from the cache
        fresh = ModelReplica(config)
        fresh.import_state(live.export_state())  # an empty cache
        assert first == again == fresh.decide_meta(TREND, 0.6, f"a{offset}")
        assert live.decide_sizing(0.6, 0.3, 0.3, f"s{offset}") == fresh.decide_sizing(0.6, 0.3, 0.3, f"s{offset}")
    # a write outside apply (a tool) is seen too: make one allowed action greedy at every level of the state
    keys = live._meta_keys.keys("TREND", 0.3, 0.4, 0.6, live.winrate.winrate, live.equity.health)
    target = [a for a in live._meta_masks["TREND"].members if META_ACTIONS[a].strategy == "breakout"][-1]
    strategy = STRATEGIES.index("breakout")
    for key in keys:  # every row exists before the decision is cached, so the writes below create none
        live.meta_table.ensure_row(key)
        live.meta_table.ensure_row("S:" + key)
    live.decide_meta(TREND, 0.6, "cached")
    for key in keys:
        live.meta_table.set_value(key, target, 1e6)
        live.meta_table.set_value("S:" + key, strategy, 1e6)
    chosen = [live.decide_meta(TREND, 0.6, f"w{i}").selection.action for i in range(50)]
    assert chosen.count(target) >= 40  # epsilon <= 0.1: the rest are exploration draws


def _outcome_keeping_the_state(replica: ModelReplica, index: int, pnl: float, **meta: object) -> Outcome:
    """An outcome after which the replica's win rate and account health stay where they are (its pnl has the
    sign of the trade leaving the full win-rate window, its equity is the curve's last point), so a probe
    decision keeps its state keys; `meta` overrides fields of the outcome's meta step."""
    record = make_outcome(np.random.default_rng(index), replica.config, index)
    sign = 1.0 if replica.winrate.to_list()[0] else -1.0
    state = meta.get("state")
    if isinstance(state, MetaStateModel) and "state_key" not in meta:
        meta["state_key"] = MetaKeyBuilder(replica.config.meta_bins).key(*state.model_dump().values())
    return record.model_copy(
        update={
            "pnl_pct": sign * abs(pnl),
            "equity": replica.equity.to_list()[-1],
            "meta": record.meta.model_copy(update=meta),
        }
    )


def test_an_apply_recomputes_the_cached_decisions_that_read_its_rows_and_only_those(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A cached meta decision is read again after an apply that wrote a row it reads (here the regime's coarse
    strategy row, its backoff level and its fine key), and equals a fresh replica's; after an apply in another
    regime it is served from the cache."""
    config = greedy_config()
    replica = ModelReplica(config)
    for offset, record in enumerate(make_outcomes(np.random.default_rng(5), config, 200)):
        replica.apply(record, offset)
    recomputed: list[str] = []
    read_again = ModelReplica._meta_greedy_at

    def counting(self: ModelReplica, cached: object, regime: str) -> object:
        if self is replica:
            recomputed.append(regime)
        return read_again(self, cached, regime)  # type: ignore[arg-type]

    monkeypatch.setattr(ModelReplica, "_meta_greedy_at", counting)

    def fresh_decision(decision_id: str) -> object:
        fresh = ModelReplica(config)
        fresh.import_state(replica.export_state())  # an empty cache
        return fresh.decide_meta(TREND, 0.6, decision_id)

    probe = replica.decide_meta(TREND, 0.6, "probe")
    first = _outcome_keeping_the_state(replica, 999, 1.0, state=MetaStateModel(**probe.state._asdict()))
    replica.apply(first, 999)  # every row the probe reads exists now (a key's first row rebuilds the entry)
    before = replica.decide_meta(TREND, 0.6, "before")
    recomputed.clear()
    # another regime: none of the probe's rows changes
    state = {"regime": "RANGE", "volatility": 0.9, "market_pressure": -0.9, "confidence": 0.1}
    replica.apply(
        _outcome_keeping_the_state(replica, 1000, 5.0, state=MetaStateModel(**{**before.state._asdict(), **state})),
        1000,
    )
    unrelated = replica.decide_meta(TREND, 0.6, "unrelated")
    assert unrelated.state_key == before.state_key
    assert recomputed == []  # served from the cache...
    assert unrelated == fresh_decision("unrelated")  # ...and still the table's
    # the probe's own state: a large pnl on the best strategy (a loss) or on another one (a win) changes
    # which strategy is best, so a stale greedy set would pick the old strategy
    strategies = sorted({META_ACTIONS[a].strategy for a in replica._meta_masks["TREND"].members})
    best = META_ACTIONS[before.selection.action].strategy
    won = replica.winrate.to_list()[0]
    traded = next(s for s in strategies if (s != best) == won)
    action = next(a for a in replica._meta_masks["TREND"].members if META_ACTIONS[a].strategy == traded)
    replica.apply(
        _outcome_keeping_the_state(
            replica,
            1001,
            90.0,
            state=MetaStateModel(**before.state._asdict()),
            state_key=before.state_key,
            action_index=action,
        ),
        1001,
    )
    after = replica.decide_meta(TREND, 0.6, "after")
    assert after.state_key == before.state_key
    assert after == fresh_decision("after")  # a stale greedy set fails here...
    assert META_ACTIONS[after.selection.action].strategy != best  # ...as the best strategy changed
    assert recomputed == ["TREND"]


class TestSizingShrink:
    def test_each_size_is_read_shrunk_from_the_fine_key_towards_the_coarse_one(self) -> None:
        config = greedy_config(sizing_shrink=True, counterfactual_sizing=False)
        replica = ModelReplica(config)
        table = replica.sizing_table
        fine = replica.decide_sizing(0.6, 0.3, 0.3, "probe").state_key
        coarse = "L0:c0e0w0v0s0"  # the default sizing backoff keeps the volatility only (0.3 -> bin 0)
        mask = sizing_action_mask(1.0, 10.0)
        steady, promising = mask.members[3], mask.members[12]
        table.set_value(coarse, steady, 1.0)  # one pseudo-visit's worth of data is enough: n = 0 cells read v
        cells = mask.members

        def fine_updates(n: int) -> None:
            for _ in range(n):  # every size learns: `steady` 0, `promising` 2
                rewards = [2.0 if a == promising else 0.0 for a in cells]
                table.td_update_cells(fine, cells, rewards, 0.0, 0.01, visit_step=True)

        # 5 fine updates: steady (5*0 + 20*1)/25 = 0.8 beats promising (5*2 + 20*0)/25 = 0.4
        fine_updates(5)
        assert replica.decide_sizing(0.6, 0.3, 0.3, "a").selection.action == steady
        # 40: steady 20/60 = 0.33, promising 80/60 = 1.33
        fine_updates(35)
        assert replica.decide_sizing(0.6, 0.3, 0.3, "b").selection.action == promising

    def test_whole_rows_give_the_same_greedy_sizes_as_the_table_cell_by_cell(self) -> None:
        config = CoreConfig.model_validate({"learning": {"sizing_shrink": True}})
        replica = ModelReplica(config)
        masks = [sizing_action_mask(1.0, 10.0), sizing_action_mask(0.6, 3.0), sizing_action_mask(0.8, 5.0)]
        checked = 0
        for offset, record in enumerate(make_outcomes(np.random.default_rng(12), config, 300)):
            replica.apply(record, offset)
            if offset % 25:
                continue
            table = replica.sizing_table
            coarse = [i for i, k in enumerate(table.keys) if k.startswith("L0:")]
            for fine in [i for i, k in enumerate(table.keys) if not k.startswith("L0:")]:
                for rows in ([coarse[0], fine], [fine], coarse):
                    for mask in masks:
                        by_cell = table.shrunk_greedy(rows, mask.members, 20.0)
                        assert _shrunk_greedy(table, rows, mask, 20.0) == by_cell
                        checked += 1
        assert checked > 100

    def test_without_the_rule_the_finest_key_with_enough_updates_decides_alone(self) -> None:
        config = greedy_config(counterfactual_sizing=False, sizing_shrink=False)
        replica = ModelReplica(config)
        table = replica.sizing_table
        fine = replica.decide_sizing(0.6, 0.3, 0.3, "probe").state_key
        mask = sizing_action_mask(1.0, 10.0)
        steady, promising = mask.members[3], mask.members[12]
        table.set_value("L0:c0e0w0v0s0", steady, 1.0)
        for _ in range(5):
            rewards = [2.0 if a == promising else 0.0 for a in mask.members]
            table.td_update_cells(fine, mask.members, rewards, 0.0, 0.01, visit_step=True)
        assert replica.decide_sizing(0.6, 0.3, 0.3, "a").selection.action == promising


class TestSizingEdge:
    def test_the_edge_is_whether_the_meta_agent_expects_the_traded_strategy_to_pay(self) -> None:
        replica = ModelReplica(greedy_config(sizing_edge=True))
        momentum = next(i for i, a in enumerate(META_ACTIONS) if a.strategy == "dual_momentum")
        breakout = next(i for i, a in enumerate(META_ACTIONS) if a.strategy == "breakout")
        assert replica.sizing_edge_of(TREND, 0.6, momentum) == 1  # nothing learnt yet
        keys = replica._meta_keys.keys("TREND", 0.3, 0.4, 0.6, replica.winrate.winrate, replica.equity.health)
        table = replica.meta_table
        table.set_value("S:" + keys[-1], STRATEGIES.index("dual_momentum"), 0.5)
        table.set_value("S:" + keys[-1], STRATEGIES.index("breakout"), -0.5)
        assert replica.sizing_edge_of(TREND, 0.6, momentum) == 1
        assert replica.sizing_edge_of(TREND, 0.6, breakout) == 0

    def test_the_edge_is_in_the_recorded_key_and_the_coarse_rows_learn_with_and_without_it(self) -> None:
        config = greedy_config(sizing_edge=True, counterfactual_sizing=False)
        replica = ModelReplica(config)
        plain = replica.decide_sizing(0.6, 0.3, 0.3, "probe").state_key
        decision = replica.decide_sizing(0.6, 0.3, 0.3, "d", edge=0)
        assert decision.state_key == "E0|" + plain
        record = make_outcome(np.random.default_rng(6), config, 0)
        record = record.model_copy(
            update={"sizing": record.sizing.model_copy(update={"state_key": "E0|" + record.sizing.state_key})}
        )
        replica.apply(record)
        coarse = replica._sizing_levels[0].key(**record.sizing.state.model_dump())  # "L0:..." (volatility only)
        assert sorted(replica.sizing_table.keys) == sorted([record.sizing.state_key, coarse, "E0|" + coarse])

    def test_a_decision_with_an_edge_reads_its_rows_first(self) -> None:
        config = greedy_config(sizing_edge=True, counterfactual_sizing=False, backoff_visits=0.0)
        replica = ModelReplica(config)
        key = replica.decide_sizing(0.6, 0.3, 0.3, "probe").state_key
        table = replica.sizing_table
        plain_best, edge_best = sizing_action_mask(1.0, 10.0).members[2:4]
        table.set_value(key, plain_best, 1.0)
        table.set_value("E1|" + key, edge_best, 1.0)
        assert replica.decide_sizing(0.6, 0.3, 0.3, "a").selection.action == plain_best  # no edge given
        assert replica.decide_sizing(0.6, 0.3, 0.3, "b", edge=1).selection.action == edge_best

    def test_the_join_records_the_edge_and_the_replica_learns_under_it(self) -> None:
        from rl_worker.sim.offline import run_offline_learning

        config = CoreConfig.model_validate({"learning": {"sizing_edge": True}})
        run = run_offline_learning(120, 3, config, in_flight=4)
        assert run.replica is not None
        keys = run.replica.sizing_table.keys
        assert any(k.startswith("E1|c") for k in keys) and not any(k.startswith("c") for k in keys)
        assert any(k.startswith("E0|L0:") or k.startswith("E1|L0:") for k in keys)


class TestStackMargin:
    """Rule `meta_stack_margin`: the stack's own meta action (carried by the signal) is the greedy default."""

    MOMENTUM = [i for i, a in enumerate(META_ACTIONS) if a.strategy == "dual_momentum"]
    BREAKOUT = [i for i, a in enumerate(META_ACTIONS) if a.strategy == "breakout"]

    def _replica_with(self, gap: float, visits: int, margin: float = 1.0) -> tuple[ModelReplica, int]:
        """A replica (no backoff) whose breakout value beats momentum by `gap`, each from `visits` rewards of
        variance 1; returns it with the stack's action (momentum, xgb, 0.5)."""
        replica = ModelReplica(greedy_config(backoff_visits=0.0, meta_stack_margin=margin))
        key = replica.decide_meta(TREND, 0.6, "probe").state_key
        table = replica.meta_table
        for _ in range(visits):  # each cell the mean of `visits` rewards: set_value does not count visits
            table.td_update("S:" + key, 0, 0.0, None, ALL, 0.01, 0.0, visit_step=True)
            table.td_update("S:" + key, 2, gap, None, ALL, 0.01, 0.0, visit_step=True)
        for cell, value in ((0, 0.0), (1, 1.0), (4, gap), (5, gap * gap + 1.0)):  # mean, mean square: variance 1
            table.td_update("V:" + key, cell, value, None, ALL, 0.01, 0.0, visit_step=True)
        table.set_value(key, self.BREAKOUT[5], 1.0)
        stack = next(i for i in self.MOMENTUM if META_ACTIONS[i].model == "xgb" and META_ACTIONS[i].weight == 0.5)
        return replica, stack

    def test_keeps_the_stack_strategy_unless_another_beats_it_by_the_margin(self) -> None:
        # standard error of the difference with 4 rewards each and variance 1: sqrt(1/4 + 1/4) = 0.71
        replica, stack = self._replica_with(gap=0.5, visits=4)
        assert replica.decide_meta(TREND, 0.6, "a").selection.action == self.BREAKOUT[5]  # no stack choice
        assert META_ACTIONS[replica.decide_meta(TREND, 0.6, "b", stack).selection.action].strategy == "dual_momentum"
        replica, stack = self._replica_with(gap=0.5, visits=16)  # 0.35: the gap is evidence now
        assert replica.decide_meta(TREND, 0.6, "c", stack).selection.action == self.BREAKOUT[5]
        replica, stack = self._replica_with(gap=0.5, visits=16, margin=2.0)  # 2 x 0.35 > 0.5
        assert META_ACTIONS[replica.decide_meta(TREND, 0.6, "d", stack).selection.action].strategy == "dual_momentum"

    def test_without_the_rule_the_stack_choice_is_not_read(self) -> None:
        replica, stack = self._replica_with(gap=0.5, visits=4)
        plain = ModelReplica(greedy_config(backoff_visits=0.0))
        plain.meta_table = replica.meta_table
        assert plain.decide_meta(TREND, 0.6, "a", stack).selection.action == self.BREAKOUT[5]

    def test_within_the_stack_strategy_the_stack_action_with_meta_stack_action(self) -> None:
        replica = ModelReplica(greedy_config(backoff_visits=0.0, meta_stack_margin=1.0, meta_stack_action=True))
        key = replica.decide_meta(TREND, 0.6, "probe").state_key
        table = replica.meta_table
        table.td_update("S:" + key, 0, 1.0, None, ALL, 0.01, 0.0, visit_step=True)
        for cell, value in ((0, 0.0), (1, 1.0), (0, 2.0), (1, 5.0)):
            table.td_update("V:" + key, cell, value, None, ALL, 0.01, 0.0, visit_step=True)
        stack, other = self.MOMENTUM[0], self.MOMENTUM[7]
        table.td_update(key, other, 0.3, None, ALL, 0.01, 0.0, visit_step=True)  # one reward: not evidence
        assert replica.decide_meta(TREND, 0.6, "a").selection.action == other
        assert replica.decide_meta(TREND, 0.6, "b", stack).selection.action == stack

    def test_the_replica_learns_the_reward_moments_at_the_coarsest_key_only_with_the_rule(self) -> None:
        records = make_outcomes(np.random.default_rng(8), greedy_config(), 40)
        for margin in (0.0, 1.0):
            replica = ModelReplica(greedy_config(meta_stack_margin=margin, counterfactual_sizing=False))
            rewards = [replica.apply(record) for record in records]
            spread_rows = [k for k in replica.meta_table.keys if k.startswith("V:")]
            if not margin:
                assert spread_rows == []
                continue
            assert sorted(spread_rows) == sorted({"V:L0:" + r.meta.state.regime + "|v0p0c0w0h0" for r in records})
            record, applied = records[0], rewards[0]
            assert applied is not None
            row = replica.meta_table.row("V:L0:" + record.meta.state.regime + "|v0p0c0w0h0")
            assert row is not None
            same = [
                a.meta_reward
                for r, a in zip(records, rewards, strict=True)
                if a is not None
                and r.meta.state.regime == record.meta.state.regime
                and META_ACTIONS[r.meta.action_index].strategy == META_ACTIONS[record.meta.action_index].strategy
            ]
            cell = 2 * STRATEGIES.index(META_ACTIONS[record.meta.action_index].strategy)
            assert row[cell] == pytest.approx(np.mean(same))
            assert row[cell + 1] == pytest.approx(np.mean(np.square(same)))

    def test_the_join_passes_the_signals_stack_choice(self) -> None:
        from rl_worker.sim.market import _NATIVE_STRATEGY
        from rl_worker.sim.offline import run_offline_learning

        def strategies_off_the_stack(margin: float) -> int:
            run = run_offline_learning(300, 3, greedy_config(meta_stack_margin=margin), in_flight=4)
            return sum(s.strategy != _NATIVE_STRATEGY[s.detected_regime] for s in run.scored)

        assert strategies_off_the_stack(1e9) == 0  # no evidence beats a margin of 1e9 standard errors
        assert strategies_off_the_stack(0.0) > 0


def test_the_shrunk_value_spread_is_the_shrunk_value_and_its_variance() -> None:
    table = QTable(2)
    for reward in (1.0, 3.0):
        table.td_update("coarse", 0, reward, None, ALL, 0.01, 0.0, visit_step=True)
    for reward in (0.0, 0.0, 0.0):
        table.td_update("fine", 0, reward, None, ALL, 0.01, 0.0, visit_step=True)
    rows = [table.row_index("coarse"), table.row_index("fine")]
    value, spread = table.shrunk_value_spread(rows, 0, 2.0)  # type: ignore[arg-type]
    assert value == table.shrunk_value(rows, 0, 2.0) == pytest.approx(2.0 * 2.0 / 5.0)  # type: ignore[arg-type]
    assert spread == pytest.approx((3 + 4 * 0.5) / 25)
    assert table.shrunk_value_spread(rows, 1, 2.0)[1] == pytest.approx(4.0 / 4.0)  # type: ignore[arg-type]


class TestSizingEdgeLevels:
    """`sizing_edge_levels`: the meta agent's value of the traded strategy in units of the recent pnl spread."""

    def _momentum_at(self, replica: ModelReplica, value: float) -> int:
        keys = replica._meta_keys.keys("TREND", 0.3, 0.4, 0.6, replica.winrate.winrate, replica.equity.health)
        replica.meta_table.set_value("S:" + keys[-1], STRATEGIES.index("dual_momentum"), value)
        return next(i for i, a in enumerate(META_ACTIONS) if a.strategy == "dual_momentum")

    def test_the_edge_counts_the_thresholds_the_value_exceeds(self) -> None:
        replica = ModelReplica(greedy_config(sizing_edge=True, sizing_edge_levels=(-0.2, 0.3)))
        momentum = next(i for i, a in enumerate(META_ACTIONS) if a.strategy == "dual_momentum")
        assert replica.sizing_edge_of(TREND, 0.6, momentum) == 2  # nothing learnt: as a value just above 0
        # no pnl history: the spread is sharpe_floor (0.5), so the thresholds are -0.1, 0 and 0.15
        expected = {-0.2: 0, -0.1: 0, -0.05: 1, 0.0: 1, 0.1: 2, 0.15: 2, 0.2: 3}
        for value, edge in expected.items():
            assert replica.sizing_edge_of(TREND, 0.6, self._momentum_at(replica, value)) == edge, value

    def test_the_scale_is_the_spread_of_recent_pnl_and_follows_it(self) -> None:
        config = greedy_config(sizing_edge=True, sizing_edge_levels=(0.3,))
        replica = ModelReplica(config)
        momentum = self._momentum_at(replica, 1.0)
        assert replica.sizing_edge_of(TREND, 0.6, momentum) == 2  # 1.0 > 0.3 * 0.5
        for n, record in enumerate(make_outcomes(np.random.default_rng(3), config, 30)):
            replica.apply(record.model_copy(update={"pnl_pct": 10.0 * (-1) ** n}))
        assert replica.recent_pnl.sample_std() > 1.0 / 0.3  # the spread grew past value / threshold
        assert replica.sizing_edge_of(TREND, 0.6, self._momentum_at(replica, 1.0)) == 1
        assert replica.sizing_edge_of(TREND, 0.6, self._momentum_at(replica, 5.0)) == 2
        self._momentum_at(replica, 1.0)
        assert decode_replica(encode_replica(replica), config).sizing_edge_of(TREND, 0.6, momentum) == 1
        calm = ModelReplica(config)  # as many updates, a small spread, read once (cached) before an import
        for record in make_outcomes(np.random.default_rng(3), config, 30):
            calm.apply(record.model_copy(update={"pnl_pct": 0.01}))
        assert calm.sizing_edge_of(TREND, 0.6, self._momentum_at(calm, 1.0)) == 2
        calm.import_state(replica.export_state())
        assert calm.sizing_edge_of(TREND, 0.6, momentum) == 1  # the imported spread, not the cached one

    def test_without_levels_the_edge_is_one_bit(self) -> None:
        replica = ModelReplica(greedy_config(sizing_edge=True))
        assert [replica.sizing_edge_of(TREND, 0.6, self._momentum_at(replica, v)) for v in (-1.0, 0.0, 0.01, 99.0)] == [
            0,
            0,
            1,
            1,
        ]

    def test_a_recorded_level_is_learnt_under_its_prefix(self) -> None:
        config = greedy_config(sizing_edge=True, sizing_edge_levels=(0.3,), counterfactual_sizing=False)
        replica = ModelReplica(config)
        assert replica.decide_sizing(0.6, 0.3, 0.3, "d", edge=2).state_key.startswith("E2|")
        record = make_outcome(np.random.default_rng(6), config, 0)
        record = record.model_copy(
            update={"sizing": record.sizing.model_copy(update={"state_key": "E2|" + record.sizing.state_key})}
        )
        replica.apply(record)
        coarse = replica._sizing_levels[0].key(**record.sizing.state.model_dump())
        assert sorted(replica.sizing_table.keys) == sorted([record.sizing.state_key, coarse, "E2|" + coarse])

    def test_the_unit_return_edge_learns_per_meta_key_and_reads_mean_over_spread(self) -> None:
        config = greedy_config(sizing_edge=True, sizing_edge_source="unit_return", sizing_edge_levels=(0.5,))
        replica = ModelReplica(config)
        momentum = next(i for i, a in enumerate(META_ACTIONS) if a.strategy == "dual_momentum")
        assert replica.sizing_edge_of(TREND, 0.6, momentum) == 1  # nothing learnt: as a return just above 0
        record = make_outcome(np.random.default_rng(6), config, 0)
        size = SIZING_ACTIONS[record.sizing.action_index]
        exposure = size.size_multiplier * size.leverage
        strategy = STRATEGIES.index(META_ACTIONS[record.meta.action_index].strategy)
        for pnl in (3.0, 1.0):  # per unit of exposure: mean 2 / exposure, spread 1 / exposure
            replica.apply(record.model_copy(update={"position_id": f"p{pnl}", "pnl_pct": pnl * exposure}))
        keys = replica.state_levels(MetaState(**record.meta.state.model_dump()))
        assert sorted(k for k in replica.sizing_table.keys if k.startswith("U:")) == sorted("U:" + k for k in keys)
        for key in keys:
            row = replica.sizing_table.row("U:" + key)
            assert row is not None
            assert row[2 * strategy] == pytest.approx(2.0) and row[2 * strategy + 1] == pytest.approx(5.0)
        # what a decision in that state reads (sizing_edge_of computes these keys from the signal)
        assert replica._unit_return_edge(keys, strategy) == 2  # mean / spread = 2 / 1 > 0.5
        replica.apply(record.model_copy(update={"position_id": "p-", "pnl_pct": -9.0 * exposure}))
        assert replica._unit_return_edge(keys, strategy) == 0  # mean (3 + 1 - 9) / 3 per unit
        assert replica._unit_return_edge(keys, (strategy + 1) % 3) == 0  # never traded: mean 0, not above

    def test_without_the_unit_source_no_unit_rows(self) -> None:
        replica = ModelReplica(greedy_config(sizing_edge=True, sizing_edge_levels=(0.5,)))
        for record in make_outcomes(np.random.default_rng(3), replica.config, 20):
            replica.apply(record)
        assert not any(k.startswith("U:") for k in replica.sizing_table.keys)

    @pytest.mark.parametrize("levels", [(0.0,), (0.3, 0.3), tuple(float(i) for i in range(1, 10))])
    def test_levels_must_be_distinct_and_few(self, levels: tuple[float, ...]) -> None:
        with pytest.raises(ValueError, match="sizing_edge_levels"):
            greedy_config(sizing_edge=True, sizing_edge_levels=levels)
