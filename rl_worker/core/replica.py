"""The model replica: a deterministic state machine over the completed-position log.

Every worker feeds the same `rl.outcomes` log, in the same order, into its own replica;
the same records in the same order give bit-identical Q-tables, trackers and episodes.
Decisions read the replica; only its operations change it: `apply` (a completed position),
`skip` (an unreadable log record), `apply_hyperparameters` and `reset_to` (the learning log's
control records, see core.control) and `import_state` (a restored snapshot; `export_state` is
what a snapshot stores).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import NamedTuple

from rl_worker.core.actions import (
    META_ACTIONS,
    N_META_ACTIONS,
    N_SIZING_ACTIONS,
    SIZING_ACTIONS,
    effective_limits,
    meta_action_mask,
    sizing_action_mask,
)
from rl_worker.core.config import CoreConfig
from rl_worker.core.control import Hyperparameters
from rl_worker.core.episodes import EpisodeTracker
from rl_worker.core.exact import PnlWindow
from rl_worker.core.exceptions import ConfigError
from rl_worker.core.market import EquityCurve, MarketFeatures, WinRateTracker
from rl_worker.core.outcome import Outcome
from rl_worker.core.qlearning import (
    DecisionRandom,
    QTable,
    Selection,
    select_greedy,
)
from rl_worker.core.rewards import (
    meta_reward,
    regime_alignment,
    risk_penalty,
    sharpe_signal,
    size_reward,
    volatility_adjustment,
)
from rl_worker.core.state import MetaKeyBuilder, MetaState, SizingKeyBuilder, SizingState
from rl_worker.core.types import REGIMES

__all__ = ["AppliedOutcome", "Decision", "ModelReplica", "ReplicaState"]


class Decision(NamedTuple):
    """A chosen action with everything the decision record needs."""

    state: MetaState | SizingState
    state_key: str
    selection: Selection
    epsilon: float
    model_version: int


class AppliedOutcome(NamedTuple):
    """What one applied outcome did: both rewards, both TD errors, and whether it ended an episode."""

    meta_reward: float
    size_reward: float
    meta_td_error: float
    size_td_error: float
    terminal: bool


@dataclass(frozen=True, slots=True)
class ReplicaState:
    """Everything the log changes in a replica: what a snapshot stores and a restore puts back."""

    meta_table: QTable
    sizing_table: QTable
    winrate: WinRateTracker
    equity: EquityCurve
    recent_pnl: PnlWindow
    episodes: EpisodeTracker
    applied: dict[str, None]
    n_updates: int
    log_offset: int
    meta_reward_total: float
    size_reward_total: float
    hyperparameters: Hyperparameters
    hyperparameters_offset: int | None
    epsilon_origin: int


class ModelReplica:
    """Both agents' Q-tables, the trackers and the episode tracker, advanced one outcome at a time."""

    def __init__(self, config: CoreConfig) -> None:
        self.config = config
        q = config.qlearning
        self.meta_table = QTable(N_META_ACTIONS)
        self.sizing_table = QTable(N_SIZING_ACTIONS)
        self.winrate = WinRateTracker(config.market.winrate_window)
        self.equity = EquityCurve(config.market)
        self.recent_pnl = PnlWindow(config.reward.sharpe_window)
        self.episodes = EpisodeTracker(q.gamma)
        # insertion-ordered, bounded by config.dedupe_window: redeliveries come within seconds
        self.applied: dict[str, None] = {}
        self.n_updates = 0
        self.log_offset = -1
        self.meta_reward_total = 0.0
        self.size_reward_total = 0.0
        self._random = DecisionRandom(config.seed)
        # Everything below is derived from the (frozen) config once, for the hot paths.
        self._meta_keys = MetaKeyBuilder(config.meta_bins)
        self._sizing_keys = SizingKeyBuilder(config.sizing_bins)
        self._meta_masks = {regime: meta_action_mask(regime, config) for regime in REGIMES}
        self._sizing_next_mask = sizing_action_mask(config.risk.max_size_multiplier, config.risk.max_leverage)
        self._episode_length = q.episode_length
        self._meta_epsilon_at: tuple[int, float] = (-1, 0.0)  # (n_updates, epsilon), cached per update
        self._sizing_epsilon_at: tuple[int, float] = (-1, 0.0)
        self._set_hyperparameters(Hyperparameters.from_config(config), None, 0)

    # ---- reading ---------------------------------------------------------------------------

    @property
    def model_version(self) -> int:
        """Log records consumed: the offset of the next `rl.outcomes` record to apply."""
        return self.log_offset + 1

    @property
    def hyperparameters(self) -> Hyperparameters:
        """Both agents' hyperparameters in force (from the config, or the last control record)."""
        return self._hyperparameters

    @property
    def hyperparameters_offset(self) -> int | None:
        """The log offset of the record that put them in force; None: the configuration's."""
        return self._hyperparameters_offset

    @property
    def epsilon_origin(self) -> int:
        """`n_updates` when the epsilon schedules in force took effect (they decay from there)."""
        return self._epsilon_origin

    @property
    def meta_epsilon(self) -> float:
        n_updates, epsilon = self._meta_epsilon_at
        if n_updates != self.n_updates:
            epsilon = self._hyperparameters.meta.epsilon(self.n_updates - self._epsilon_origin)
            self._meta_epsilon_at = (self.n_updates, epsilon)
        return epsilon

    @property
    def sizing_epsilon(self) -> float:
        n_updates, epsilon = self._sizing_epsilon_at
        if n_updates != self.n_updates:
            epsilon = self._hyperparameters.sizing.epsilon(self.n_updates - self._epsilon_origin)
            self._sizing_epsilon_at = (self.n_updates, epsilon)
        return epsilon

    @property
    def epsilon(self) -> float:
        """The meta agent's epsilon (see `sizing_epsilon` for the other)."""
        return self.meta_epsilon

    def decide_meta(self, market: MarketFeatures, confidence: float, decision_id: str) -> Decision:
        """Meta action (strategy, model, weight) for a signal, inside the regime mask."""
        regime = market.regime
        winrate = self.winrate.winrate
        health = self.equity.health
        key = self._meta_keys.key(regime, market.volatility, market.market_pressure, confidence, winrate, health)
        epsilon = self.meta_epsilon
        mask = self._meta_masks[regime]
        selection = select_greedy(
            self.meta_table.greedy_actions(key, mask), mask, epsilon, self._random.stream(decision_id)
        )
        state = MetaState(regime, market.volatility, market.market_pressure, confidence, winrate, health)
        return Decision(state, key, selection, epsilon, self.log_offset + 1)

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
        winrate = self.winrate.winrate
        slope = self.equity.slope
        key = self._sizing_keys.key(signal_confidence, portfolio_exposure, winrate, volatility, slope)
        epsilon = self.sizing_epsilon
        mask = sizing_action_mask(*effective_limits(self.config.risk, max_size_multiplier, max_leverage))
        selection = select_greedy(
            self.sizing_table.greedy_actions(key, mask), mask, epsilon, self._random.stream(decision_id)
        )
        state = SizingState(signal_confidence, portfolio_exposure, winrate, volatility, slope)
        return Decision(state, key, selection, epsilon, self.log_offset + 1)

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
        position_id = outcome.position_id
        applied = self.applied
        if position_id in applied:
            return None
        reward_config = self.config.reward
        meta, sizing = outcome.meta, outcome.sizing
        meta_state, sizing_state = meta.state, sizing.state
        meta_action, sizing_action = meta.action_index, sizing.action_index
        chosen_size = SIZING_ACTIONS[sizing_action]
        multiplier, leverage = chosen_size.size_multiplier, chosen_size.leverage
        pnl = outcome.pnl_pct
        drawdown = outcome.max_drawdown_pct
        recent_pnl = self.recent_pnl

        sharpe = sharpe_signal(pnl, recent_pnl, reward_config)
        alignment = regime_alignment(meta_state.regime, META_ACTIONS[meta_action].strategy, reward_config)
        r_meta = meta_reward(pnl, drawdown, sharpe, alignment, reward_config)
        risk = risk_penalty(drawdown, multiplier, leverage, reward_config)
        vol_adjustment = volatility_adjustment(sizing_state.volatility, multiplier, leverage)
        r_size = size_reward(pnl, risk, vol_adjustment, reward_config)

        recent_pnl.append(pnl)
        winrate = self.winrate.record(pnl > 0.0)
        equity = self.equity
        equity.record(outcome.equity)
        n_updates = self.n_updates + 1
        terminal = n_updates % self._episode_length == 0
        next_regime = outcome.next_regime

        next_meta_key = next_sizing_key = None
        if not terminal:
            next_volatility = outcome.next_volatility
            next_meta_key = self._meta_keys.key(
                next_regime,
                next_volatility,
                outcome.next_market_pressure,
                meta_state.confidence,
                winrate,
                equity.health,
            )
            sizing_keys = self._sizing_keys
            next_sizing_key = sizing_keys.key_with_slope_bin(
                sizing_state.signal_confidence,
                sizing_state.portfolio_exposure,
                winrate,
                next_volatility,
                equity.slope_bin(sizing_keys.slope_edges),
            )
        meta_td = self.meta_table.td_update(
            meta.state_key, meta_action, r_meta, next_meta_key, self._meta_masks[next_regime],
            self._meta_alpha, self._meta_gamma,
        )
        size_td = self.sizing_table.td_update(
            sizing.state_key, sizing_action, r_size, next_sizing_key, self._sizing_next_mask,
            self._sizing_alpha, self._sizing_gamma,
        )
        closed_at_ms = outcome.closed_at_ms
        episodes = self.episodes
        episodes.step(r_meta, closed_at_ms)
        if terminal:
            episodes.end(closed_at_ms)
        applied[position_id] = None
        if len(applied) > self.config.dedupe_window:
            del applied[next(iter(applied))]
        self.n_updates = n_updates
        self.meta_reward_total += r_meta
        self.size_reward_total += r_size
        return AppliedOutcome(r_meta, r_size, meta_td, size_td, terminal)

    # ---- control records -------------------------------------------------------------------

    def _set_hyperparameters(self, hyperparameters: Hyperparameters, offset: int | None, origin: int) -> None:
        self._hyperparameters = hyperparameters
        self._hyperparameters_offset = offset
        self._epsilon_origin = origin
        self._meta_alpha, self._meta_gamma = hyperparameters.meta.alpha, hyperparameters.meta.gamma
        self._sizing_alpha, self._sizing_gamma = hyperparameters.sizing.alpha, hyperparameters.sizing.gamma
        self._meta_epsilon_at = (-1, 0.0)
        self._sizing_epsilon_at = (-1, 0.0)

    def export_state(self) -> ReplicaState:
        """The learned state (the live objects, not copies: encode it before the next `apply`)."""
        return ReplicaState(
            self.meta_table, self.sizing_table, self.winrate, self.equity, self.recent_pnl, self.episodes,
            self.applied, self.n_updates, self.log_offset, self.meta_reward_total, self.size_reward_total,
            self._hyperparameters, self._hyperparameters_offset, self._epsilon_origin,
        )

    def import_state(self, state: ReplicaState) -> None:
        """Replace the learned state (a restored checkpoint); the configuration stays this replica's."""
        self.meta_table, self.sizing_table = state.meta_table, state.sizing_table
        self.winrate, self.equity, self.recent_pnl = state.winrate, state.equity, state.recent_pnl
        self.episodes, self.applied = state.episodes, state.applied
        self.n_updates, self.log_offset = state.n_updates, state.log_offset
        self.meta_reward_total, self.size_reward_total = state.meta_reward_total, state.size_reward_total
        self._set_hyperparameters(state.hyperparameters, state.hyperparameters_offset, state.epsilon_origin)

    def skip(self, offset: int) -> None:
        """Step over a log record that cannot be read: every replica skips the same one, so they stay identical."""
        if offset > self.log_offset:
            self.log_offset = offset

    def _take_offset(self, offset: int | None) -> int | None:
        if offset is None:
            offset = self.log_offset + 1
        elif offset <= self.log_offset:
            return None
        self.log_offset = offset
        return offset

    def apply_hyperparameters(self, hyperparameters: Hyperparameters, offset: int | None = None) -> bool:
        """A hyperparameter record: learn and explore with these from here on. False for an old offset.

        The epsilon schedules restart here from their `epsilon_start`.
        """
        taken = self._take_offset(offset)
        if taken is None:
            return False
        self._set_hyperparameters(hyperparameters, taken, self.n_updates)
        return True

    def reset_to(self, source: ModelReplica, offset: int | None = None) -> bool:
        """A reset record: continue from `source`'s learned state and hyperparameters. False for an old offset.

        `source` is a decoded checkpoint (its objects are taken over, not copied). What stays
        this replica's: its configuration, its log position (the reset record's offset) and
        its memory of the position ids this log already applied (redeliveries of this log).
        """
        if source.config.fingerprint() != self.config.fingerprint():
            raise ConfigError(
                f"checkpoint model {source.config.fingerprint()} is not this model {self.config.fingerprint()}"
                " (action spaces, bins or rewards differ)"
            )
        taken = self._take_offset(offset)
        if taken is None:
            return False
        state = replace(source.export_state(), applied=self.applied, log_offset=taken, hyperparameters_offset=taken)
        self.import_state(state)
        return True
