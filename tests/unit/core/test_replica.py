"""The model replica: applying outcomes, determinism, idempotence, risk limits, reproducible decisions."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from rl_worker.core.actions import SIZING_ACTIONS, effective_limits, meta_action_mask
from rl_worker.core.config import CoreConfig, RiskLimits
from rl_worker.core.exceptions import NoAllowedActionError
from rl_worker.core.market import MarketFeatures
from rl_worker.core.outcome import MetaStateModel, MetaStep, Outcome, SizingStateModel, SizingStep
from rl_worker.core.replica import ModelReplica
from rl_worker.core.snapshot import encode_replica
from rl_worker.core.types import LEVERAGE_LEVELS, SIZE_MULTIPLIERS
from rl_worker.sim.events import make_outcomes
from tests.unit.core.reference import compute_propensities

OutcomeFactory = Callable[..., Outcome]  # the `outcome_factory` fixture (tests/unit/core/conftest.py)


def with_learning(config: CoreConfig, **fields: float) -> CoreConfig:
    """`config` with the same hyperparameter fields set for both agents."""
    return config.model_copy(
        update={"meta": config.meta.model_copy(update=fields), "sizing": config.sizing.model_copy(update=fields)}
    )

TREND = MarketFeatures(regime="TREND", volatility=0.2, trend_strength=0.8, market_pressure=0.5)


def tables_bytes(replica: ModelReplica) -> tuple[bytes, ...]:
    meta_q, meta_visits = replica.meta_table.used()
    sizing_q, sizing_visits = replica.sizing_table.used()
    return meta_q.tobytes(), meta_visits.tobytes(), sizing_q.tobytes(), sizing_visits.tobytes()


def fed(config: CoreConfig, records: list[Outcome]) -> ModelReplica:
    replica = ModelReplica(config)
    for record in records:
        replica.apply(record)
    return replica


def hand_outcome(**overrides: object) -> Outcome:
    fields: dict[str, object] = {
        "position_id": "p1",
        "symbol": "BTCUSDT",
        "closed_at_ms": 1_000,
        "pnl_pct": 1.0,
        "max_drawdown_pct": 0.5,
        "equity": 10_100.0,
        "meta": MetaStep(
            decision_id="m1",
            state=MetaStateModel(
                regime="TREND",
                volatility=0.2,
                market_pressure=0.5,
                confidence=0.8,
                previous_winrate=0.5,
                account_health=1.0,
            ),
            state_key="TREND|v0p2c2w1h1",
            action_index=0,  # dual_momentum / xgb / 0.3: native to TREND
        ),
        "sizing": SizingStep(
            decision_id="s1",
            state=SizingStateModel(
                signal_confidence=0.8,
                portfolio_exposure=0.1,
                recent_winrate=0.5,
                volatility=0.2,
                equity_curve_slope=0.0,
            ),
            state_key="c2e0w1v0s1",
            action_index=9,  # 0.4 x 3
        ),
        "next_regime": "RANGE",
        "next_volatility": 0.1,
        "next_market_pressure": 0.0,
    }
    fields.update(overrides)
    return Outcome.model_validate(fields)


class TestApply:
    def test_first_outcome_by_hand(self) -> None:
        replica = ModelReplica(CoreConfig(profile="seed"))
        applied = replica.apply(hand_outcome())
        assert applied is not None
        # sharpe: no history -> 1.0 / floor 0.5 = 2.0; alignment 1 (dual_momentum in TREND)
        # meta = 1.0 - 0.5 * 0.5 + 0.2 * 2.0 + 0.15 * 1.0 = 1.3
        assert applied.meta_reward == pytest.approx(1.3, rel=1e-12)
        # risk = 0.5 * (0.4 * 3) / 5 = 0.12; vol adj = (1 - 0.4) * 1.2 / 25 = 0.0288
        # size = 1.0 - 0.4 * 0.12 + 0.1 * 0.0288 = 0.95488
        assert applied.size_reward == pytest.approx(0.95488, rel=1e-12)
        # unseen next states bootstrap 0: Q = 0 + 0.01 * (r - 0)
        assert applied.meta_td_error == pytest.approx(1.3, rel=1e-12)
        assert replica.meta_table.row("TREND|v0p2c2w1h1")[0] == pytest.approx(0.013)  # type: ignore[index]
        assert replica.sizing_table.row("c2e0w1v0s1")[9] == pytest.approx(0.0095488)  # type: ignore[index]
        assert not applied.terminal
        assert (replica.n_updates, replica.log_offset, replica.model_version) == (1, 0, 1)
        assert replica.winrate.winrate == 1.0
        assert replica.equity.peak == 10_100.0

    def test_later_outcome_bootstraps_from_a_learnt_next_state(self) -> None:
        replica = ModelReplica(CoreConfig(profile="seed"))
        # record 1 (a win): next state TREND v0 (0.2) p2 (0.5) c2 (0.8) w2 (winrate 1.0) h1 (at the peak)
        replica.apply(hand_outcome(next_regime="TREND", next_volatility=0.2, next_market_pressure=0.5))
        first_q = replica.meta_table.row("TREND|v0p2c2w1h1")[0]  # type: ignore[index]
        assert first_q == pytest.approx(0.013)
        # record 2 (flat) starts in that next state: r = 0 - 0 + 0.2 * 0 + 0.15 * 1 = 0.15,
        # its own next state (RANGE ...) is unseen
        meta = hand_outcome().meta.model_copy(update={"state_key": "TREND|v0p2c2w2h1"})
        replica.apply(hand_outcome(position_id="p2", pnl_pct=0.0, max_drawdown_pct=0.0, meta=meta))
        learnt = replica.meta_table.row("TREND|v0p2c2w2h1")
        assert learnt is not None
        assert learnt[0] == pytest.approx(0.01 * 0.15, rel=1e-12)
        # record 3 (a 0.5 % win) from the first state; winrate 2/3 -> w2, so its next state is
        # the learnt one: max over TREND's mask = 0.0015.
        # sharpe = 0.5 / max(0.5, std(1.0, 0.0) = sqrt(0.5)); r = 0.5 + 0.2 * sharpe + 0.15
        replica.apply(
            hand_outcome(
                position_id="p3",
                pnl_pct=0.5,
                max_drawdown_pct=0.0,
                next_regime="TREND",
                next_volatility=0.2,
                next_market_pressure=0.5,
            )
        )
        reward = 0.5 + 0.2 * (0.5 / 0.5**0.5) + 0.15
        td_target = reward + 0.99 * 0.0015
        q = replica.meta_table.row("TREND|v0p2c2w1h1")[0]  # type: ignore[index]
        assert q == pytest.approx(first_q + 0.01 * (td_target - first_q), rel=1e-12)

    def test_terminal_every_episode_length(self, outcomes_factory: Callable[..., list[Outcome]]) -> None:
        config = with_learning(CoreConfig(profile="seed", learning={"episode_length": 3}), alpha=1.0)
        replica = ModelReplica(config)
        terminals = []
        for record in outcomes_factory(np.random.default_rng(1), config, 7):
            applied = replica.apply(record)
            assert applied is not None
            terminals.append(applied.terminal)
            if applied.terminal:  # alpha 1 and no bootstrap: Q becomes the reward exactly
                row = replica.meta_table.row(record.meta.state_key)
                assert row is not None
                assert row[record.meta.action_index] == applied.meta_reward
        assert terminals == [False, False, True, False, False, True, False]
        assert [s.steps for s in replica.episodes.summaries] == [3, 3]
        assert replica.episodes.active

    def test_epsilon_decays_per_applied_outcome(
        self, short_episode_config: CoreConfig, outcomes_factory: Callable[..., list[Outcome]]
    ) -> None:
        replica = fed(short_episode_config, outcomes_factory(np.random.default_rng(2), short_episode_config, 4))
        assert replica.epsilon == pytest.approx(0.1 * 0.9**4)
        decision = replica.decide_meta(TREND, 0.7, "x")
        assert decision.epsilon == replica.epsilon
        assert decision.model_version == 4

    def test_offsets(self, config: CoreConfig, outcome_factory: OutcomeFactory) -> None:
        rng = np.random.default_rng(3)
        replica = ModelReplica(config)
        assert replica.apply(outcome_factory(rng, config, 0), offset=10) is not None
        assert replica.model_version == 11
        assert replica.apply(outcome_factory(rng, config, 1), offset=10) is None  # old offset
        assert replica.apply(outcome_factory(rng, config, 2), offset=4) is None
        assert replica.n_updates == 1
        assert replica.apply(outcome_factory(rng, config, 3)) is not None  # counts on from 10
        assert replica.log_offset == 11


class TestDeterminism:
    @given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 120))
    def test_same_records_same_order_bit_identical(self, seed: int, n: int, short_episode_config: CoreConfig) -> None:
        records = make_outcomes(np.random.default_rng(seed), short_episode_config, n)
        first = fed(short_episode_config, records)
        second = fed(short_episode_config, [r.model_copy() for r in records])
        assert tables_bytes(first) == tables_bytes(second)
        assert encode_replica(first) == encode_replica(second)

    def test_order_matters(self, config: CoreConfig, outcomes_factory: Callable[..., list[Outcome]]) -> None:
        records = outcomes_factory(np.random.default_rng(4), config, 60)
        assert encode_replica(fed(config, records)) != encode_replica(fed(config, records[::-1]))

    @given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 60), data=st.data())
    def test_redelivered_record_is_applied_once(
        self, seed: int, n: int, data: st.DataObject, short_episode_config: CoreConfig
    ) -> None:
        records = make_outcomes(np.random.default_rng(seed), short_episode_config, n)
        twice = data.draw(st.sets(st.integers(0, n - 1)))
        once = ModelReplica(short_episode_config)
        redelivered = ModelReplica(short_episode_config)
        for offset, record in enumerate(records):
            once.apply(record, offset)
            redelivered.apply(record, offset)
            if offset in twice:  # the same offset again, as after a consumer restart
                assert redelivered.apply(record, offset) is None
        assert tables_bytes(once) == tables_bytes(redelivered)
        assert encode_replica(once) == encode_replica(redelivered)

    @given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 60), data=st.data())
    def test_duplicate_position_at_a_later_offset_is_ignored(
        self, seed: int, n: int, data: st.DataObject, short_episode_config: CoreConfig
    ) -> None:
        records = make_outcomes(np.random.default_rng(seed), short_episode_config, n)
        duplicated = data.draw(st.lists(st.integers(0, n - 1), max_size=5))
        once = fed(short_episode_config, records)
        log = records + [records[i] for i in duplicated]  # a producer retry appended copies
        with_copies = ModelReplica(short_episode_config)
        for record in log:
            with_copies.apply(record)
        assert tables_bytes(once) == tables_bytes(with_copies)
        assert with_copies.n_updates == once.n_updates == n
        assert with_copies.log_offset == once.log_offset + len(duplicated)  # consumed, not applied
        assert with_copies.winrate.to_list() == once.winrate.to_list()
        assert with_copies.episodes.to_dict() == once.episodes.to_dict()


class TestRiskLimits:
    @given(
        configured_size=st.floats(0.2, 1.5),
        configured_leverage=st.floats(1.0, 30.0),
        event_size=st.none() | st.floats(-1.0, 3.0) | st.just(float("inf")),
        event_leverage=st.none() | st.floats(-5.0, 40.0) | st.just(float("inf")),
        confidence=st.floats(0.0, 1.0),
        exposure=st.floats(0.0, 1.0),
        volatility=st.floats(0.0, 1.0),
        decision_id=st.text(max_size=12),
        greedy_action=st.integers(0, len(SIZING_ACTIONS) - 1),
        epsilon=st.floats(0.0, 1.0),
    )
    def test_no_sizing_decision_exceeds_the_limits(
        self,
        configured_size: float,
        configured_leverage: float,
        event_size: float | None,
        event_leverage: float | None,
        confidence: float,
        exposure: float,
        volatility: float,
        decision_id: str,
        greedy_action: int,
        epsilon: float,
    ) -> None:
        config = with_learning(
            CoreConfig(
                profile="seed", risk=RiskLimits(max_size_multiplier=configured_size, max_leverage=configured_leverage)
            ),
            epsilon_start=epsilon,
            epsilon_min=0.0,
        )
        replica = ModelReplica(config)
        size_limit = configured_size if event_size is None else min(configured_size, event_size)
        leverage_limit = configured_leverage if event_leverage is None else min(configured_leverage, event_leverage)
        fits = any(a.size_multiplier <= size_limit and a.leverage <= leverage_limit for a in SIZING_ACTIONS)

        def decide() -> int:
            decision = replica.decide_sizing(confidence, exposure, volatility, decision_id, event_size, event_leverage)
            return decision.selection.action

        if not fits:
            with pytest.raises(NoAllowedActionError):
                decide()
            return
        first = decide()
        # Make an arbitrary action (often a forbidden one) the greedy one and decide again.
        key = replica.decide_sizing(confidence, exposure, volatility, decision_id).state_key
        table = replica.sizing_table
        table.set_value(key, greedy_action, 1e9)
        for action in (first, decide()):
            chosen = SIZING_ACTIONS[action]
            assert chosen.size_multiplier <= size_limit
            assert chosen.leverage <= leverage_limit
            assert chosen.size_multiplier <= configured_size
            assert chosen.leverage <= configured_leverage

    def test_event_limits_cannot_loosen(self) -> None:
        replica = ModelReplica(with_learning(CoreConfig(), epsilon_start=1.0, epsilon_min=1.0))
        chosen = {
            SIZING_ACTIONS[
                replica.decide_sizing(
                    0.5, 0.5, 0.5, f"d{i}", max_size_multiplier=5.0, max_leverage=100.0
                ).selection.action
            ]
            for i in range(400)
        }
        assert max(a.leverage for a in chosen) == 10  # the configured maximum, not 100
        assert max(a.size_multiplier for a in chosen) == 1.0
        assert effective_limits(replica.config.risk, 5.0, 100.0) == (1.0, 10.0)
        assert {a.leverage for a in chosen} == {lev for lev in LEVERAGE_LEVELS if lev <= 10}
        assert {a.size_multiplier for a in chosen} == set(SIZE_MULTIPLIERS)


class TestDecisions:
    def test_meta_decision_stays_inside_the_regime_mask(self, config: CoreConfig) -> None:
        replica = ModelReplica(with_learning(config, epsilon_start=1.0))
        for regime in ("TREND", "RANGE", "BREAKOUT", "MEAN_REVERSION"):
            market = MarketFeatures(regime=regime, volatility=0.5, trend_strength=0.5, market_pressure=0.0)
            allowed = set(meta_action_mask(regime, config).members)
            actions = {replica.decide_meta(market, 0.5, f"{regime}-{i}").selection.action for i in range(300)}
            assert actions <= allowed
            assert len(actions) > 30

    def test_meta_decision_state(self, config: CoreConfig) -> None:
        decision = ModelReplica(config).decide_meta(TREND, 0.8, "d")
        assert decision.state.as_dict() == {
            "regime": "TREND",
            "volatility": 0.2,
            "market_pressure": 0.5,
            "confidence": 0.8,
            "previous_winrate": 0.5,
            "account_health": 1.0,
        }
        assert decision.state_key == "TREND|v0p2c2w1h1"
        assert decision.selection.propensity == pytest.approx(1 / 40)  # unseen state: uniform
        assert decision.model_version == 0

    @given(seed=st.integers(0, 2**32 - 1), decision_id=st.text(max_size=20))
    def test_same_id_same_state_same_action(
        self, seed: int, decision_id: str, short_episode_config: CoreConfig
    ) -> None:
        records = make_outcomes(np.random.default_rng(seed), short_episode_config, 30)
        first, second = fed(short_episode_config, records), fed(short_episode_config, records)
        for replica in (first, second, first):
            meta = replica.decide_meta(TREND, 0.9, decision_id)
            sizing = replica.decide_sizing(0.9, 0.1, 0.3, decision_id, max_leverage=5.0)
            assert meta == first.decide_meta(TREND, 0.9, decision_id)
            assert sizing == second.decide_sizing(0.9, 0.1, 0.3, decision_id, max_leverage=5.0)

    def test_different_ids_explore_differently(self, config: CoreConfig) -> None:
        replica = ModelReplica(with_learning(config, epsilon_start=1.0))
        actions = {replica.decide_meta(TREND, 0.5, f"id-{i}").selection.action for i in range(200)}
        assert len(actions) > 30

    def test_frequencies_over_decision_ids_match_propensities(self) -> None:
        config = with_learning(CoreConfig(seed=42, profile="seed"), epsilon_start=0.4, epsilon_min=0.4)
        replica = ModelReplica(config)
        key = replica.decide_meta(TREND, 0.8, "probe").state_key
        table = replica.meta_table
        for action, value in enumerate(np.linspace(-1.0, 1.0, 60).tolist()):
            table.set_value(key, action, value)
        table.set_value(key, 3, 9.0)  # two greedy actions: dual_momentum and breakout
        table.set_value(key, 59, 9.0)
        table.set_value(key, 25, 99.0)  # mean_reversion is masked in TREND: never chosen
        n = 20_000
        counts = Counter(replica.decide_meta(TREND, 0.8, f"freq-{i}").selection.action for i in range(n))
        probs = compute_propensities(table.row(key), meta_action_mask("TREND", config), 0.4, 60)
        assert counts[25] == 0
        assert set(counts) <= set(np.flatnonzero(probs).tolist())
        frequencies = np.array([counts[a] for a in range(60)]) / n
        stderr = np.sqrt(probs * (1 - probs) / n)
        assert np.all(np.abs(frequencies - probs) <= 5 * stderr + 1e-9)
        assert frequencies[[3, 59]].sum() == pytest.approx(0.6 + 0.4 * 2 / 40, abs=0.02)
