"""The model replica: a deterministic state machine over the completed-position log.

Every worker feeds the same `rl.outcomes` log, in the same order, into its own replica;
the same records in the same order give bit-identical Q-tables, trackers and episodes.
Decisions read the replica; only `apply` changes it.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from rl_worker.core.actions import (
    META_ACTIONS,
    N_META_ACTIONS,
    N_SIZING_ACTIONS,
    SIZING_ACTIONS,
    effective_limits,
    meta_mask,
    sizing_mask,
)
from rl_worker.core.config import CoreConfig
from rl_worker.core.episodes import EpisodeTracker
from rl_worker.core.market import EquityCurve, MarketFeatures, WinRateTracker
from rl_worker.core.outcome import Outcome
from rl_worker.core.qlearning import (
    DecisionRandom,
    EpsilonSchedule,
    QTable,
    Selection,
    select_action,
    td_update,
)
from rl_worker.core.rewards import (
    meta_reward,
    regime_alignment,
    risk_penalty,
    sharpe_signal,
    size_reward,
    volatility_adjustment,
)
from rl_worker.core.state import (
    MetaState,
    SizingState,
    meta_state_key,
    sizing_state_key,
)

__all__ = ["AppliedOutcome", "Decision", "ModelReplica"]


@dataclass(frozen=True, slots=True)
class Decision:
    """A chosen action with everything the decision record needs."""

    state: MetaState | SizingState
    state_key: str
    selection: Selection
    epsilon: float
    model_version: int


@dataclass(frozen=True, slots=True)
class AppliedOutcome:
    meta_reward: float
    size_reward: float
    meta_td_error: float
    size_td_error: float
    terminal: bool


class ModelReplica:
    """Both agents' Q-tables, the trackers and the episode tracker, advanced one outcome at a time."""

    def __init__(self, config: CoreConfig) -> None:
        self.config = config
        q = config.qlearning
        self.epsilon_schedule = EpsilonSchedule(q.epsilon_start, q.epsilon_min, q.epsilon_decay)
        self.meta_table = QTable(N_META_ACTIONS)
        self.sizing_table = QTable(N_SIZING_ACTIONS)
        self.winrate = WinRateTracker(config.market.winrate_window)
        self.equity = EquityCurve(config.market)
        self.recent_pnl: deque[float] = deque(maxlen=config.reward.sharpe_window)
        self.episodes = EpisodeTracker(q.gamma)
        self.applied: set[str] = set()
        self.n_updates = 0
        self.log_offset = -1
        self.meta_reward_total = 0.0
        self.size_reward_total = 0.0
        self._random = DecisionRandom(config.seed)
        self._sizing_next_mask = sizing_mask(config.risk.max_size_multiplier, config.risk.max_leverage)

    # ---- reading ---------------------------------------------------------------------------

    @property
    def model_version(self) -> int:
        """Log records consumed: the offset of the next `rl.outcomes` record to apply."""
        return self.log_offset + 1

    @property
    def epsilon(self) -> float:
        return self.epsilon_schedule(self.n_updates)

    def decide_meta(self, market: MarketFeatures, confidence: float, decision_id: str) -> Decision:
        """Meta action (strategy, model, weight) for a signal, inside the regime mask."""
        state = MetaState(
            regime=market.regime,
            volatility=market.volatility,
            market_pressure=market.market_pressure,
            confidence=confidence,
            previous_winrate=self.winrate.winrate,
            account_health=self.equity.health,
        )
        key = meta_state_key(state, self.config.meta_bins)
        epsilon = self.epsilon
        selection = select_action(
            self.meta_table.row(key),
            meta_mask(market.regime, self.config),
            epsilon,
            self._random.generator(decision_id),
        )
        return Decision(state, key, selection, epsilon, self.model_version)

    def decide_sizing(
        self,
        signal_confidence: float,
        portfolio_exposure: float,
        volatility: float,
        decision_id: str,
        max_size_multiplier: float | None = None,
        max_leverage: float | None = None,
    ) -> Decision:
        """Sizing action (multiplier, leverage) within the configured limits tightened by the event's."""
        state = SizingState(
            signal_confidence=signal_confidence,
            portfolio_exposure=portfolio_exposure,
            recent_winrate=self.winrate.winrate,
            volatility=volatility,
            equity_curve_slope=self.equity.slope,
        )
        key = sizing_state_key(state, self.config.sizing_bins)
        epsilon = self.epsilon
        limits = effective_limits(self.config.risk, max_size_multiplier, max_leverage)
        selection = select_action(
            self.sizing_table.row(key), sizing_mask(*limits), epsilon, self._random.generator(decision_id)
        )
        return Decision(state, key, selection, epsilon, self.model_version)

    # ---- the state machine -----------------------------------------------------------------

    def apply(self, outcome: Outcome, offset: int | None = None) -> AppliedOutcome | None:
        """Apply one log record; returns None for a position already applied (or an old offset).

        `offset` is the record's `rl.outcomes` offset; without it records count 0, 1, 2, ...
        """
        if offset is None:
            offset = self.log_offset + 1
        elif offset <= self.log_offset:
            return None
        self.log_offset = offset
        if outcome.position_id in self.applied:
            return None
        cfg = self.config
        meta, sizing = outcome.meta, outcome.sizing
        meta_action = META_ACTIONS[meta.action_index]
        sizing_action = SIZING_ACTIONS[sizing.action_index]
        pnl = outcome.pnl_pct

        sharpe = sharpe_signal(pnl, self.recent_pnl, cfg.reward)
        alignment = regime_alignment(meta.state.regime, meta_action.strategy, cfg.reward)
        r_meta = meta_reward(pnl, outcome.max_drawdown_pct, sharpe, alignment, cfg.reward)
        risk = risk_penalty(
            outcome.max_drawdown_pct, sizing_action.size_multiplier, sizing_action.leverage, cfg.reward
        )
        vol_adjustment = volatility_adjustment(
            sizing.state.volatility, sizing_action.size_multiplier, sizing_action.leverage
        )
        r_size = size_reward(pnl, risk, vol_adjustment, cfg.reward)

        self.recent_pnl.append(pnl)
        self.winrate.record(pnl > 0.0)
        self.equity.record(outcome.equity)
        winrate = self.winrate.winrate
        terminal = (self.n_updates + 1) % cfg.qlearning.episode_length == 0

        next_meta_key = next_sizing_key = None
        if not terminal:
            next_meta_key = meta_state_key(
                MetaState(
                    regime=outcome.next_regime,
                    volatility=outcome.next_volatility,
                    market_pressure=outcome.next_market_pressure,
                    confidence=meta.state.confidence,
                    previous_winrate=winrate,
                    account_health=self.equity.health,
                ),
                cfg.meta_bins,
            )
            next_sizing_key = sizing_state_key(
                SizingState(
                    signal_confidence=sizing.state.signal_confidence,
                    portfolio_exposure=sizing.state.portfolio_exposure,
                    recent_winrate=winrate,
                    volatility=outcome.next_volatility,
                    equity_curve_slope=self.equity.slope,
                ),
                cfg.sizing_bins,
            )
        alpha, gamma = cfg.qlearning.alpha, cfg.qlearning.gamma
        meta_td = td_update(
            self.meta_table,
            meta.state_key,
            meta.action_index,
            r_meta,
            next_meta_key,
            meta_mask(outcome.next_regime, cfg),
            alpha,
            gamma,
        )
        size_td = td_update(
            self.sizing_table,
            sizing.state_key,
            sizing.action_index,
            r_size,
            next_sizing_key,
            self._sizing_next_mask,
            alpha,
            gamma,
        )
        self.episodes.step(r_meta, outcome.closed_at_ms)
        if terminal:
            self.episodes.end(outcome.closed_at_ms)
        self.applied.add(outcome.position_id)
        self.n_updates += 1
        self.meta_reward_total += r_meta
        self.size_reward_total += r_size
        return AppliedOutcome(r_meta, r_size, meta_td, size_td, terminal)
