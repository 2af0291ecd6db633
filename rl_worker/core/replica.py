"""The model replica: a deterministic state machine over the completed-position log.

Every worker feeds the same `rl.outcomes` log, in the same order, into its own replica;
the same records in the same order give bit-identical Q-tables, trackers and episodes.
Decisions read the replica; only its operations change it: `apply` (a completed position),
`skip` (an unreadable log record), `apply_hyperparameters` and `reset_to` (the learning log's
control records, see core.control) and `import_state` (a restored snapshot; `export_state` is
what a snapshot stores).

Besides the seed's TD rule on the state key of each decision, the configuration's
`LearningRules` (see `CoreConfig` and its profiles) can switch on:

- the visit-count step size max(alpha, 1/n) (`rl_worker.core.qlearning`);
- backoff to coarser state keys: every outcome also updates the rows of coarser keys (the same
  features with some left out, `meta_backoff` / `sizing_backoff`, kept as rows of the same table
  under an `L<level>:` prefix), and a decision reads the finest key whose row has at least
  `backoff_visits` updates per allowed action: a fine state seen rarely is decided by what its
  coarser states learnt;
- strategy first (`meta_strategy_first`): the meta agent also keeps each strategy's value (rows
  `S:<key>`, one cell per strategy, updated with every meta reward of the strategy traded) and
  decides greedily among the actions of the best strategy (then by the actions' own values);
  exploration stays uniform over all allowed actions, so the propensity formula is unchanged;
- shrunk sizing values (`sizing_shrink`): a sizing decision reads every allowed size's value shrunk
  from the fine key towards the coarser ones, as the strategy values are (a coarser key's value
  counts for `backoff_strength` updates), instead of the first key with `backoff_visits` updates
  per action: with counterfactual updates a fine key passes that threshold after 3 positions,
  whose mean return is mostly noise; `meta_shrink` does the same for the action within the best
  strategy;
- the meta agent's edge in the sizing key (`sizing_edge`): the best size depends most on the
  traded action's edge, which the sizing state does not carry. When the sizing decision is made
  (after the meta decision), `sizing_edge_of` reads the meta agent's shrunk value of the traded
  strategy in the signal's state; the sizing key becomes `E1|<key>` if it is above 0, else
  `E0|<key>`. The bit is recorded in the decision's state key, so `apply` reads it from the log
  (the replica stays a function of the log), and the coarser sizing rows are learnt with and
  without it. With `sizing_edge_levels` the edge has more levels, `E0|` ... `E<n>|`: how many of the
  thresholds 0 and the levels the value exceeds, in units of the recent pnl spread (the sharpe
  signal's, replica state already: no new state, and scale-free);
- counterfactual sizing updates (`counterfactual_sizing`): a closed position's pnl and drawdown
  say what every other size multiplier and leverage would have earned on the same price path,
  so every sizing action within the configured limits is updated with its own reward, the chosen
  one with the realised reward. Assumptions: the position's return and adverse excursion per unit
  of exposure do not depend on the size taken (pnl and drawdown scale linearly with
  size_multiplier x leverage: no market impact, no leverage-dependent costs); a position whose
  drawdown would reach 100 % of its margin is liquidated there (pnl -100 %, drawdown 100 %).
  Where a market breaks these assumptions (costs or tail risk that grow with leverage), the other
  actions' values are biased and only the chosen action's own updates see the difference.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import NamedTuple

import numpy as np

from rl_worker.core.actions import (
    META_ACTIONS,
    N_META_ACTIONS,
    N_SIZING_ACTIONS,
    SIZING_ACTIONS,
    ActionMask,
    effective_limits,
    meta_action_mask,
    sizing_action_mask,
)
from rl_worker.core.config import CoreConfig, MetaBins, SizingBins
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
    _MAX_EXPOSURE,
    meta_reward,
    pnl_spread,
    regime_alignment,
    risk_penalty,
    sharpe_signal,
    size_reward,
    volatility_adjustment,
)
from rl_worker.core.state import MetaKeyBuilder, MetaState, SizingKeyBuilder, SizingState
from rl_worker.core.types import MODELS, REGIMES, STRATEGIES, WEIGHTS

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
        rules = config.learning
        self.meta_table = QTable(N_META_ACTIONS)
        self.sizing_table = QTable(N_SIZING_ACTIONS)
        self.winrate = WinRateTracker(config.market.winrate_window)
        self.equity = EquityCurve(config.market)
        self.recent_pnl = PnlWindow(config.reward.sharpe_window)
        self.episodes = EpisodeTracker(rules.episode_gamma)
        # insertion-ordered, bounded by config.dedupe_window: redeliveries come within seconds
        self.applied: dict[str, None] = {}
        self.n_updates = 0
        self.log_offset = -1
        self.meta_reward_total = 0.0
        self.size_reward_total = 0.0
        self._random = DecisionRandom(config.seed)
        # Everything below is derived from the (frozen) config once, for the hot paths.
        self._meta_keys = MetaKeyBuilder(
            config.meta_bins, levels=rules.meta_backoff if rules.backoff_visits > 0 else ()
        )
        self._sizing_keys = SizingKeyBuilder(config.sizing_bins)
        self._meta_masks = {regime: meta_action_mask(regime, config) for regime in REGIMES}
        self._sizing_next_mask = sizing_action_mask(config.risk.max_size_multiplier, config.risk.max_leverage)
        self._episode_length = rules.episode_length
        self._visit_step = rules.step_size == "visits"
        self._backoff_visits = rules.backoff_visits
        self._backoff_strength = rules.backoff_strength
        # Coarser keys, coarsest first (none without backoff).
        self._meta_levels: tuple[MetaKeyBuilder, ...] = ()
        self._sizing_levels: tuple[SizingKeyBuilder, ...] = ()
        if rules.backoff_visits > 0:
            self._meta_levels = tuple(
                MetaKeyBuilder(_keep_meta(config.meta_bins, kept), f"L{level}:")
                for level, kept in enumerate(rules.meta_backoff)
            )
            self._sizing_levels = tuple(
                SizingKeyBuilder(_keep_sizing(config.sizing_bins, kept), f"L{level}:")
                for level, kept in enumerate(rules.sizing_backoff)
            )
        self._meta_levels_fine_first = tuple(reversed(self._meta_levels))
        self._sizing_levels_fine_first = tuple(reversed(self._sizing_levels))
        # Strategy first: per regime, the allowed strategies as a mask of strategy indices (rows "S:<key>"),
        # and per set of greedy strategies the allowed actions that trade them.
        self._strategy_first = rules.meta_strategy_first
        self._factored = rules.meta_strategy_first and rules.meta_factored
        self._strategy_masks = {
            regime: ActionMask.of(
                np.array(sorted({STRATEGIES.index(META_ACTIONS[a].strategy) for a in mask.members}), dtype=np.intp)
            )
            for regime, mask in self._meta_masks.items()
        }
        self._strategy_submasks: dict[tuple[str, tuple[int, ...] | None], ActionMask] = {}
        self._counterfactual = _Counterfactual(self._sizing_next_mask, config) if rules.counterfactual_sizing else None
        self._meta_epsilon_at: tuple[int, float] = (-1, 0.0)  # (n_updates, epsilon), cached per update
        self._sizing_epsilon_at: tuple[int, float] = (-1, 0.0)
        # Decision caches: per fine state (and mask), the greedy set and the rows it reads (see decide_meta).
        self._meta_greedy: dict[tuple[str, ...], _CachedGreedy] = {}
        self._meta_greedy_stack: dict[tuple[tuple[str, ...], int], _CachedGreedy] = {}
        self._sizing_greedy: dict[tuple[str, ActionMask, str], _CachedGreedy] = {}
        self._sizing_context = rules.sizing_context
        self._meta_shrink = rules.meta_shrink
        self._stack_margin = rules.meta_stack_margin if rules.meta_strategy_first else 0.0
        self._stack_action = rules.meta_stack_action
        self._sizing_edge = rules.sizing_edge and rules.meta_strategy_first
        # edge thresholds in units of the recent pnl spread (sizing_edge_levels); (0.0,) is the one bit
        self._edge_thresholds = tuple(sorted((0.0, *rules.sizing_edge_levels)))
        self._edge_spread_at: tuple[int, float] = (-1, 1.0)  # (n_updates, spread), cached per update
        self._edge_unit = self._sizing_edge and rules.sizing_edge_source == "unit_return"
        self._sizing_shrink = rules.sizing_shrink and rules.backoff_visits > 0
        self._sizing_masks: dict[tuple[float | None, float | None], ActionMask] = {}
        self._context_prefixes: dict[tuple[str, int], str] = {}
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

    def decide_meta(
        self, market: MarketFeatures, confidence: float, decision_id: str, stack: int | None = None
    ) -> Decision:
        """Meta action (strategy, model, weight) for a signal, inside the regime mask.

        `stack`: the stack's own meta action carried by the signal, if any; with the rule
        `meta_stack_margin` the greedy choice keeps its strategy unless the evidence says another pays
        more (see `_stack_strategies`); without the rule it is not read.

        The greedy set of a fine state (read through its backoff levels and strategy rows) is cached
        with the rows it reads, resolved once: while none of those rows changes (an apply writes only
        its own state's rows) a decision is the key, a dictionary lookup, the random stream and the
        pick; after a change the greedy set is read again from those rows, without key lookups.
        """
        regime = market.regime
        winrate = self.winrate.winrate
        health = self.equity.health
        volatility, pressure = market.volatility, market.market_pressure
        keys = self._meta_keys.keys(regime, volatility, pressure, confidence, winrate, health)  # finest first
        table = self.meta_table
        if stack is None or not self._stack_margin:
            stack = None
            cached = self._meta_greedy.get(keys)
        else:
            cached = self._meta_greedy_stack.get((keys, stack))
        if cached is None or cached.table is not table or (cached.rows_at != len(table.keys) and cached.gained_rows()):
            cached = self._meta_cached(table, keys, regime, stack)
            if stack is None:
                self._meta_greedy[keys] = cached
            else:
                self._meta_greedy_stack[(keys, stack)] = cached
        elif cached.version != table.version:
            reads = cached.reads
            if reads is None:
                cached.greedy = self._factored_greedy(table, keys, regime)
            elif table.changed_since(reads, cached.version):
                cached.greedy = self._meta_greedy_at(cached, regime)
            cached.version = table.version
        greedy, mask = cached.greedy, cached.mask
        epsilon = self.meta_epsilon
        selection = select_greedy(greedy, mask, epsilon, self._random.stream(decision_id))
        state = MetaState(regime, volatility, pressure, confidence, winrate, health)
        return Decision(state, keys[0], selection, epsilon, self.log_offset + 1)

    def _meta_cached(
        self, table: QTable, keys: tuple[str, ...], regime: str, stack: int | None = None
    ) -> _CachedGreedy:
        """A fine state's cache entry: its rows resolved (plain keys finest first, strategy rows coarsest
        first, with a stack action the reward spread row) and its greedy set read from them."""
        mask = self._meta_masks[regime]
        if stack is not None and self._stack_margin and not self._factored and stack in mask.allowed:
            row_index = table.row_index
            rows = tuple(row_index(key) for key in keys)
            strategy_keys = tuple("S:" + key for key in reversed(keys))
            strategy_rows = tuple(row_index(key) for key in strategy_keys)
            spread_key = _SPREAD_PREFIX + keys[-1]
            spread_row = row_index(spread_key)
            every = (*keys, *strategy_keys, spread_key)
            every_row = (*rows, *strategy_rows, spread_row)
            cached = _CachedGreedy(
                table,
                mask,
                rows,
                tuple(i for i in strategy_rows if i is not None),
                tuple(i for i in every_row if i is not None),
                tuple(k for k, i in zip(every, every_row, strict=True) if i is None),
            )
            cached.stack, cached.spread_row = stack, spread_row
            cached.greedy = self._meta_greedy_at(cached, regime)
        elif self._factored:  # reads rows per strategy: recomputed after any write
            cached = _CachedGreedy(table, mask, (), (), None, ())
            cached.greedy = self._factored_greedy(table, keys, regime)
        else:
            row_index = table.row_index
            rows = tuple(row_index(key) for key in keys)
            strategy_keys = tuple("S:" + key for key in reversed(keys)) if self._strategy_first else ()
            strategy_rows = tuple(row_index(key) for key in strategy_keys)
            cached = _CachedGreedy(
                table,
                mask,
                rows,
                tuple(i for i in strategy_rows if i is not None),
                tuple(i for i in (*rows, *strategy_rows) if i is not None),
                tuple(k for k, i in zip((*keys, *strategy_keys), (*rows, *strategy_rows), strict=True) if i is None),
            )
            cached.greedy = self._meta_greedy_at(cached, regime)
        cached.version = table.version
        return cached

    def _meta_greedy_at(self, cached: _CachedGreedy, regime: str) -> tuple[int, ...] | None:
        """The greedy meta actions of a state, read from its resolved rows as the table stands: with
        strategy first, the best strategies by their values shrunk across the backoff levels (see
        `_greedy_strategies`), then the best actions of those strategies; each from the finest key whose
        row has `backoff_visits` updates per action considered."""
        table = cached.table
        per_action = self._backoff_visits
        if self._strategy_first:
            strategies = table.shrunk_greedy(
                cached.strategy_rows, self._strategy_masks[regime].members, self._backoff_strength
            )
            stack = cached.stack
            if stack is not None:
                strategies = self._stack_strategies(table, cached, strategies, stack)
            submask = self._strategy_submasks.get((regime, strategies))
            if submask is None:
                submask = self._strategy_submask(regime, strategies)
            if self._meta_shrink:
                coarsest_first = [i for i in reversed(cached.rows) if i is not None]
                return _shrunk_greedy(table, coarsest_first, submask, self._backoff_strength) or submask.members
            by = table.first_row_with(cached.rows, per_action * len(submask))
            greedy = table.greedy_at(by, submask) or submask.members
            if stack is not None and self._stack_action and stack in submask.allowed:
                greedy = (stack,) if by is None else self._stack_within(table, cached, by, greedy, stack)
            return greedy
        mask = cached.mask
        return table.greedy_at(table.first_row_with(cached.rows, per_action * len(mask)), mask)

    def _stack_strategies(
        self, table: QTable, cached: _CachedGreedy, strategies: tuple[int, ...] | None, stack: int
    ) -> tuple[int, ...]:
        """The greedy strategies with the stack's choice as the default (rule `meta_stack_margin`): the stack's
        strategy s0 unless the best strategy s* beats it by the margin, z standard errors of the difference,

            v(s*) - v(s0) > z * sigma * sqrt(u(s*) + u(s0))

        with v the values shrunk across the backoff levels (as `_greedy_strategies`), u their sampling variance
        in units of one reward's (`QTable.shrunk_value_spread`) and sigma^2 the reward variance pooled over the
        strategies of the coarsest key (`_reward_variance`). A fine state seen rarely keeps the stack's choice
        unless its coarser states' evidence says otherwise; where the stack's rule is wrong (a coarse key's
        many positions say so) the agent still deviates."""
        s0 = _META_PARTS[stack][0]
        if strategies is None or s0 in strategies:  # nothing learnt yet, or a tie: the stack's
            return (s0,)
        variance = self._reward_variance(table, cached.spread_row)
        if variance is None:
            return (s0,)
        rows, strength = cached.strategy_rows, self._backoff_strength
        best, best_spread = table.shrunk_value_spread(rows, strategies[0], strength)
        value, spread = table.shrunk_value_spread(rows, s0, strength)
        if best - value > self._stack_margin * math.sqrt(variance * (best_spread + spread)):
            return strategies
        return (s0,)

    def _stack_within(
        self, table: QTable, cached: _CachedGreedy, row: int, greedy: tuple[int, ...], stack: int
    ) -> tuple[int, ...]:
        """Within the stack's strategy, the stack's action unless the best action of `row` beats it by the
        margin (rule `meta_stack_action`; each cell the mean of its rewards, as in `_stack_strategies`)."""
        if stack in greedy:
            return (stack,)
        variance = self._reward_variance(table, cached.spread_row)
        if variance is None:
            return (stack,)
        best, best_spread = table.shrunk_value_spread((row,), greedy[0], 1.0)
        value, spread = table.shrunk_value_spread((row,), stack, 1.0)
        if best - value > self._stack_margin * math.sqrt(variance * (best_spread + spread)):
            return greedy
        return (stack,)

    @staticmethod
    def _reward_variance(table: QTable, spread_row: int | None) -> float | None:
        """The meta reward's variance within the strategies of one coarsest key, pooled (row 'V:<key>': per
        strategy s the running mean of the reward in cell 2s and of its square in cell 2s+1); None before
        two updates."""
        if spread_row is None:
            return None
        q_values, visits = table.q_values[spread_row], table.visits[spread_row]
        total = weighted = 0.0
        for s in range(len(STRATEGIES)):
            n = float(visits[2 * s])
            if n:
                mean = float(q_values[2 * s])
                total += n
                weighted += n * max(float(q_values[2 * s + 1]) - mean * mean, 0.0)
        return weighted / total if total >= 2.0 else None

    def _factored_greedy(self, table: QTable, keys: tuple[str, ...], regime: str) -> tuple[int, ...] | None:
        """Strategy, then within each best strategy its best models and weights (each value shrunk as the
        strategy's): the greedy set is every (strategy, model, weight) of those; None before any update.
        Off by default; its cache entry is recomputed after any write to the table."""
        strategies = self._greedy_strategies(table, keys, self._strategy_masks[regime])
        if strategies is None:
            return None
        greedy: list[int] = []
        for s in strategies:
            models = self._greedy_strategies(table, keys, _MODEL_MASK, f"M{s}:") or _MODEL_MASK.members
            weights = self._greedy_strategies(table, keys, _WEIGHT_MASK, f"W{s}:") or _WEIGHT_MASK.members
            greedy.extend(_META_BY_PARTS[(s, m, w)] for m in models for w in weights)
        return tuple(sorted(greedy))

    def _greedy_strategies(
        self, table: QTable, keys: Sequence[str], strategy_mask: ActionMask, prefix: str = "S:"
    ) -> tuple[int, ...] | None:
        """The allowed strategies with the best value, each value shrunk from the finest key towards the coarser:

            v_coarsest = Q(coarsest, s)
            v_level    = (n * Q(level, s) + strength * v_coarser) / (n + strength),  n = updates of that cell

        (the coarser key's estimate counts as `strength` pseudo-updates; `QTable.shrunk_greedy` does the
        arithmetic). None: no key seen yet (all tie).
        """
        row_index = table.row_index
        rows = [i for i in (row_index(prefix + key) for key in reversed(keys)) if i is not None]
        return table.shrunk_greedy(rows, strategy_mask.members, self._backoff_strength)

    def _strategy_submask(self, regime: str, strategies: tuple[int, ...] | None) -> ActionMask:
        mask = self._meta_masks[regime]
        if strategies is not None:
            names = {STRATEGIES[i] for i in strategies}
            mask = ActionMask.of(
                np.array([a for a in mask.members if META_ACTIONS[a].strategy in names], dtype=np.intp)
            )
        self._strategy_submasks[(regime, strategies)] = mask
        return mask

    def decide_sizing(
        self,
        signal_confidence: float,
        portfolio_exposure: float,
        volatility: float,
        decision_id: str,
        max_size_multiplier: float | None = None,
        max_leverage: float | None = None,
        regime: str | None = None,
        meta_action: int | None = None,
        edge: int | None = None,
    ) -> Decision:
        """Sizing action (multiplier, leverage) within the configured limits tightened by the event's.

        `regime` and `meta_action` (the signal's regime and the meta action traded) are the sizing
        context when the rules have one (`sizing_context`); without them the plain keys decide.
        `edge` (`sizing_edge_of`, with the rule `sizing_edge`) prefixes the state key: 'E<edge>|<key>'.
        """
        winrate = self.winrate.winrate
        slope = self.equity.slope
        key = self._sizing_keys.key(signal_confidence, portfolio_exposure, winrate, volatility, slope)
        edge_prefix = self._edge_prefix(edge)
        key = edge_prefix + key
        limits = (max_size_multiplier, max_leverage)
        mask = self._sizing_masks.get(limits)
        if mask is None:
            mask = sizing_action_mask(*effective_limits(self.config.risk, max_size_multiplier, max_leverage))
            if len(self._sizing_masks) < 1024:  # per-event limits are few in practice; never grow without bound
                self._sizing_masks[limits] = mask
        table = self.sizing_table
        context = ""
        if self._sizing_context and regime is not None and meta_action is not None:
            context = self._context_prefix(regime, meta_action)
        cached = self._sizing_greedy.get((key, mask, context))
        if cached is None or cached.table is not table or (cached.rows_at != len(table.keys) and cached.gained_rows()):
            state = SizingState(signal_confidence, portfolio_exposure, winrate, volatility, slope)
            keys = self._sizing_key_chain(key, state, context, edge_prefix)
            rows = tuple(table.row_index(k) for k in keys)
            read = tuple(i for i in rows if i is not None)
            cached = _CachedGreedy(
                table, mask, rows, (), read, tuple(k for k, i in zip(keys, rows, strict=True) if i is None)
            )
            cached.greedy = self._sizing_greedy_at(cached)
            cached.version = table.version
            self._sizing_greedy[(key, mask, context)] = cached
        elif cached.version != table.version:
            reads = cached.reads
            if reads is None or table.changed_since(reads, cached.version):
                cached.greedy = self._sizing_greedy_at(cached)
            cached.version = table.version
        greedy = cached.greedy
        epsilon = self.sizing_epsilon
        selection = select_greedy(greedy, mask, epsilon, self._random.stream(decision_id))
        state = SizingState(signal_confidence, portfolio_exposure, winrate, volatility, slope)
        return Decision(state, key, selection, epsilon, self.log_offset + 1)

    def _sizing_greedy_at(self, cached: _CachedGreedy) -> tuple[int, ...] | None:
        """The greedy sizes of a state, read from its resolved rows (finest first) as the table stands: each
        size's value shrunk across them (`sizing_shrink`), else the finest row with `backoff_visits` updates
        per allowed size."""
        table, mask = cached.table, cached.mask
        if self._sizing_shrink:
            coarsest_first = [i for i in reversed(cached.rows) if i is not None]
            return _shrunk_greedy(table, coarsest_first, mask, self._backoff_strength)
        return table.greedy_at(table.first_row_with(cached.rows, self._backoff_visits * len(mask)), mask)

    def sizing_edge_of(self, market: MarketFeatures, confidence: float, meta_action: int) -> int:
        """1 if the meta agent's value of the traded action's strategy in this signal's state (shrunk from
        the coarsest key to the finest, as for the strategy choice) is above 0, else 0; 1 before any update.
        With `sizing_edge_levels`: how many of the thresholds (0 and the levels, in units of the recent pnl
        spread of the sharpe signal) the value exceeds; before any update, as a value just above 0.

        The sizing agent's best size depends most on the traded action's edge, which its own five features
        do not see; this is the meta agent's estimate of it, in one bit or a few levels (rule `sizing_edge`).
        """
        keys = self._meta_keys.keys(
            market.regime, market.volatility, market.market_pressure, confidence, self.winrate.winrate,
            self.equity.health,
        )
        thresholds = self._edge_thresholds
        strategy = _META_PARTS[meta_action][0]
        if self._edge_unit:
            return self._unit_return_edge(keys, strategy)
        table = self.meta_table
        row_index = table.row_index
        rows = [i for i in (row_index("S:" + key) for key in reversed(keys)) if i is not None]
        if not rows:
            return bisect_left(thresholds, 0.0) + 1  # as for a value just above 0
        value = table.shrunk_value(rows, strategy, self._backoff_strength)
        if len(thresholds) == 1:
            return 1 if value > 0.0 else 0
        n_updates, spread = self._edge_spread_at
        if n_updates != self.n_updates:
            spread = pnl_spread(self.recent_pnl, self.config.reward.sharpe_floor)
            self._edge_spread_at = (self.n_updates, spread)
        return bisect_left(thresholds, value / spread)  # how many thresholds the value exceeds

    def _unit_return_edge(self, keys: tuple[str, ...], strategy: int) -> int:
        """The edge from the traded strategy's return per unit of exposure (`sizing_edge_source`
        'unit_return'): its mean (and standard deviation) shrunk from the coarsest meta key to the finest."""
        table = self.sizing_table
        row_index = table.row_index
        thresholds = self._edge_thresholds
        rows = [i for i in (row_index(_UNIT_PREFIX + key) for key in reversed(keys)) if i is not None]
        if not rows:
            return bisect_left(thresholds, 0.0) + 1  # as for a return just above 0
        cell, strength = 2 * strategy, self._backoff_strength
        mean = table.shrunk_value(rows, cell, strength)
        if len(thresholds) == 1:
            return 1 if mean > 0.0 else 0
        variance = table.shrunk_value(rows, cell + 1, strength) - mean * mean
        if variance <= 0.0:  # one return (or none yet) at every level: no scale
            return bisect_left(thresholds, 0.0) + (1 if mean > 0.0 else 0)
        return bisect_left(thresholds, mean / math.sqrt(variance))

    def _edge_prefix(self, edge: int | None) -> str:
        """The sizing key's prefix for the meta agent's edge ('E0|' / 'E1|'; '' without the rule or an edge)."""
        return _EDGE_PREFIXES[edge] if self._sizing_edge and edge is not None else ""

    def _sizing_key_chain(self, key: str, state: SizingState, context: str, edge_prefix: str = "") -> list[str]:
        """The keys a sizing decision reads, in order: the fine key (with its edge prefix, if any), then its
        backoff levels' keys from the finer to the coarser (with the edge prefix first, then without); with a
        context, all of them under it first."""
        keys = [key]
        if self._sizing_levels or context:
            coarser = [b.key(*state) for b in self._sizing_levels_fine_first]
            keys += [*(edge_prefix + k for k in coarser), *coarser] if edge_prefix else coarser
            if context:
                keys = [context + k for k in keys] + keys
        return keys

    def greedy_meta_actions(self, state: MetaState, stack: int | None = None) -> tuple[int, ...]:
        """The meta actions `decide_meta` chooses among when it does not explore, in a (logged) state:
        the candidate's greedy policy for off-policy evaluation (every allowed action before any update);
        `stack` as in decide_meta."""
        cached = self._meta_cached(self.meta_table, self._meta_keys.keys(*state), state.regime, stack)
        return cached.greedy or cached.mask.members

    def greedy_sizing_actions(
        self,
        state: SizingState,
        mask: ActionMask,
        regime: str | None = None,
        meta_action: int | None = None,
        edge: int | None = None,
    ) -> tuple[int, ...]:
        """The sizing actions `decide_sizing` chooses among when it does not explore, in a (logged) state
        under the decision's effective mask (see greedy_meta_actions); `edge` as in decide_sizing."""
        context = ""
        if self._sizing_context and regime is not None and meta_action is not None:
            context = self._context_prefix(regime, meta_action)
        edge_prefix = self._edge_prefix(edge)
        table = self.sizing_table
        key = edge_prefix + self._sizing_keys.key(*state)
        rows = tuple(table.row_index(k) for k in self._sizing_key_chain(key, state, context, edge_prefix))
        return self._sizing_greedy_at(_CachedGreedy(table, mask, rows, (), None, ())) or mask.members

    def state_levels(self, state: MetaState | SizingState) -> tuple[str, ...]:
        """A state's keys, the finest (its state key) first, then its backoff levels' keys from the finer
        to the coarser (none without backoff): how the agents pool a state with its neighbours."""
        if isinstance(state, MetaState):
            return self._meta_keys.keys(*state)
        return (self._sizing_keys.key(*state), *(b.key(*state) for b in self._sizing_levels_fine_first))

    def _context_prefix(self, regime: str, meta_action: int) -> str:
        """'X:<regime>|<strategy>|...|' for the sizing context's features (cached per regime and meta action)."""
        prefix = self._context_prefixes.get((regime, meta_action))
        if prefix is None:
            action = META_ACTIONS[meta_action]
            parts = {"regime": regime, "strategy": action.strategy, "model": action.model, "weight": str(action.weight)}
            prefix = "X:" + "".join(parts[name] + "|" for name in self._sizing_context)
            self._context_prefixes[(regime, meta_action)] = prefix
        return prefix

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

        meta_table, sizing_table = self.meta_table, self.sizing_table
        meta_alpha, meta_gamma = self._meta_alpha, self._meta_gamma
        sizing_alpha, sizing_gamma = self._sizing_alpha, self._sizing_gamma
        visit_step = self._visit_step
        bootstrap_meta = not terminal and meta_gamma > 0.0
        bootstrap_sizing = not terminal and sizing_gamma > 0.0
        next_volatility = outcome.next_volatility
        next_meta_key = next_sizing_key = None
        if bootstrap_meta:
            next_meta_args = (
                next_regime,
                next_volatility,
                outcome.next_market_pressure,
                meta_state.confidence,
                winrate,
                equity.health,
            )
            next_meta_key = self._meta_keys.key(*next_meta_args)
        if bootstrap_sizing:
            sizing_keys = self._sizing_keys
            slope_bin = equity.slope_bin(sizing_keys.slope_edges)
            next_sizing_args = (
                sizing_state.signal_confidence,
                sizing_state.portfolio_exposure,
                winrate,
                next_volatility,
                equity.slope,
            )
            next_sizing_key = sizing_keys.key_with_slope_bin(*next_sizing_args[:4], slope_bin)
        next_meta_mask = self._meta_masks[next_regime]
        meta_td = meta_table.td_update(
            meta.state_key,
            meta_action,
            r_meta,
            next_meta_key,
            next_meta_mask,
            meta_alpha,
            meta_gamma,
            visit_step,
        )
        meta_keys = [(meta.state_key, next_meta_key)]
        if self._meta_levels:
            state_args = (
                meta_state.regime,
                meta_state.volatility,
                meta_state.market_pressure,
                meta_state.confidence,
                meta_state.previous_winrate,
                meta_state.account_health,
            )
            for builder in self._meta_levels:
                next_key = builder.key(*next_meta_args) if bootstrap_meta else None
                meta_keys.append((builder.key(*state_args), next_key))
                meta_table.td_update(
                    meta_keys[-1][0],
                    meta_action,
                    r_meta,
                    next_key,
                    next_meta_mask,
                    meta_alpha,
                    meta_gamma,
                    visit_step,
                )
        if self._strategy_first:
            strategy = STRATEGIES.index(META_ACTIONS[meta_action].strategy)
            next_strategy_mask = self._strategy_masks[next_regime]
            _, model, weight = _META_PARTS[meta_action]
            for key, next_key in meta_keys:
                next_strategy_key = None if next_key is None else "S:" + next_key
                rows = [("S:" + key, strategy)]
                if self._factored:  # bootstrapped, as the strategy's value, on the next state's best strategy
                    rows += [(f"M{strategy}:{key}", model), (f"W{strategy}:{key}", weight)]
                for row_key, cell in rows:
                    meta_table.td_update(
                        row_key, cell, r_meta, next_strategy_key, next_strategy_mask, meta_alpha, meta_gamma, visit_step
                    )
        if self._stack_margin:  # the reward's running mean and mean square per strategy, at the coarsest key
            spread_key = _SPREAD_PREFIX + meta_keys[1 if len(meta_keys) > 1 else 0][0]  # the coarsest key
            cell = 2 * STRATEGIES.index(META_ACTIONS[meta_action].strategy)
            meta_table.td_update(spread_key, cell, r_meta, None, next_meta_mask, meta_alpha, 0.0, visit_step)
            meta_table.td_update(
                spread_key, cell + 1, r_meta * r_meta, None, next_meta_mask, meta_alpha, 0.0, visit_step
            )
        if self._edge_unit:  # the traded strategy's return per unit of exposure and its square, per meta key
            unit = pnl / (multiplier * leverage)
            cell = 2 * STRATEGIES.index(META_ACTIONS[meta_action].strategy)
            cells, values = (cell, cell + 1), [unit, unit * unit]
            for key, _ in meta_keys:
                sizing_table.td_update_cells(_UNIT_PREFIX + key, cells, values, 0.0, sizing_alpha, visit_step)
        next_sizing_mask = self._sizing_next_mask
        sizing_args = (
            sizing_state.signal_confidence,
            sizing_state.portfolio_exposure,
            sizing_state.recent_winrate,
            sizing_state.volatility,
            sizing_state.equity_curve_slope,
        )
        counterfactual = self._counterfactual
        # (row, next row) of every sizing key this outcome updates beyond the fine one: the coarser levels, and
        # with a sizing context each key under it (bootstrapped on the plain next key: the next context is unknown)
        sizing_rows = [
            (sizing_builder.key(*sizing_args), sizing_builder.key(*next_sizing_args) if bootstrap_sizing else None)
            for sizing_builder in self._sizing_levels
        ]
        if self._sizing_edge and sizing.state_key.startswith("E"):  # the decision's edge, as recorded
            edge_prefix = sizing.state_key[:3]
            sizing_rows += [(edge_prefix + key, next_key) for key, next_key in sizing_rows]
        if self._sizing_context:
            context = self._context_prefix(meta_state.regime, meta_action)
            sizing_rows += [
                (context + key, next_key) for key, next_key in [(sizing.state_key, next_sizing_key), *sizing_rows]
            ]
        if counterfactual is None:
            size_td = sizing_table.td_update(
                sizing.state_key,
                sizing_action,
                r_size,
                next_sizing_key,
                next_sizing_mask,
                sizing_alpha,
                sizing_gamma,
                visit_step,
            )
            for key, next_key in sizing_rows:
                sizing_table.td_update(
                    key,
                    sizing_action,
                    r_size,
                    next_key,
                    next_sizing_mask,
                    sizing_alpha,
                    sizing_gamma,
                    visit_step,
                )
        else:
            actions, rewards = counterfactual.rewards(
                pnl, drawdown, sizing_state.volatility, multiplier * leverage, sizing_action, r_size
            )
            keys = [(sizing.state_key, next_sizing_key), *sizing_rows]
            row = sizing_table.row(sizing.state_key)
            size_td = r_size - (0.0 if row is None else float(row[sizing_action]))
            for key, next_key in keys:
                bootstrap = sizing_gamma * sizing_table.next_max(next_key, next_sizing_mask) if next_key else 0.0
                if key == sizing.state_key:
                    size_td += bootstrap
                sizing_table.td_update_cells(key, actions, rewards, bootstrap, sizing_alpha, visit_step)
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
            self.meta_table,
            self.sizing_table,
            self.winrate,
            self.equity,
            self.recent_pnl,
            self.episodes,
            self.applied,
            self.n_updates,
            self.log_offset,
            self.meta_reward_total,
            self.size_reward_total,
            self._hyperparameters,
            self._hyperparameters_offset,
            self._epsilon_origin,
        )

    def import_state(self, state: ReplicaState) -> None:
        """Replace the learned state (a restored checkpoint); the configuration stays this replica's."""
        self.meta_table, self.sizing_table = state.meta_table, state.sizing_table
        self._meta_greedy.clear()
        self._meta_greedy_stack.clear()
        self._sizing_greedy.clear()
        self.winrate, self.equity, self.recent_pnl = state.winrate, state.equity, state.recent_pnl
        self._edge_spread_at = (-1, 1.0)
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


# Factored meta values: each meta action as (strategy, model, weight) indices, and back.
_META_PARTS = tuple(
    (STRATEGIES.index(a.strategy), MODELS.index(a.model), WEIGHTS.index(a.weight)) for a in META_ACTIONS
)
_META_BY_PARTS = {parts: a for a, parts in enumerate(_META_PARTS)}
_EDGE_PREFIXES = tuple(f"E{edge}|" for edge in range(10))
_UNIT_PREFIX = "U:"  # sizing_edge_source 'unit_return': a strategy's return per unit of exposure, per meta key
_SPREAD_PREFIX = "V:"  # rule meta_stack_margin: the meta reward's running moments per strategy
_MODEL_MASK = ActionMask.of(np.arange(len(MODELS), dtype=np.intp))
_WEIGHT_MASK = ActionMask.of(np.arange(len(WEIGHTS), dtype=np.intp))


class _CachedGreedy:
    """A state's greedy set as of a table version, and the rows it is read from (indices, resolved once).

    `rows`: the plain keys' rows, finest first; `strategy_rows`: the strategy rows, coarsest first (a key
    without a row is None in `rows` and left out of `strategy_rows`); `reads`: every row the greedy set
    depends on (None: any write to the table may change it); `missing`: the keys that had no row. A key's
    first row changes what is read, so the entry is rebuilt then (`gained_rows`, checked when the table's
    row count moved past `rows_at`).
    """

    __slots__ = (
        "greedy", "mask", "missing", "reads", "rows", "rows_at", "spread_row", "stack", "strategy_rows", "table",
        "version",
    )

    def __init__(
        self,
        table: QTable,
        mask: ActionMask,
        rows: tuple[int | None, ...],
        strategy_rows: tuple[int, ...],
        reads: tuple[int, ...] | None,
        missing: tuple[str, ...],
    ) -> None:
        self.table = table
        self.mask = mask
        self.rows = rows
        self.strategy_rows = strategy_rows
        self.reads = reads
        self.missing = missing
        self.rows_at = len(table.keys)
        self.version = -1
        self.greedy: tuple[int, ...] | None = None
        self.stack: int | None = None  # the stack's action the greedy set defers to (rule meta_stack_margin)
        self.spread_row: int | None = None

    def gained_rows(self) -> bool:
        """Whether one of the keys that had no row has one now."""
        table = self.table
        self.rows_at = len(table.keys)
        row_index = table.row_index
        return any(row_index(key) is not None for key in self.missing)


def _shrunk_greedy(table: QTable, rows: Sequence[int], mask: ActionMask, strength: float) -> tuple[int, ...] | None:
    """`QTable.shrunk_greedy` (rows coarsest first) on whole rows at once, in numpy: the same formula in the same
    order of operations, so the same floats and the same greedy set (a unit test compares them); 25-40 sizes
    per row make the per-cell loop the larger cost."""
    if not rows:
        return None
    indices = mask.indices
    q_values, visits = table.q_values, table.visits
    values = q_values[rows[0], indices]
    for i in rows[1:]:
        n = visits[i, indices]
        values = (n * q_values[i, indices] + strength * values) / (n + strength)
    return tuple(indices[values == values.max()].tolist())


def _keep_meta(bins: MetaBins, kept: tuple[str, ...]) -> MetaBins:
    """The bins with every feature not in `kept` ignored (one bin)."""
    return bins.model_copy(update={name: () for name in MetaBins.model_fields if name not in kept})


def _keep_sizing(bins: SizingBins, kept: tuple[str, ...]) -> SizingBins:
    return bins.model_copy(update={name: () for name in SizingBins.model_fields if name not in kept})


class _Counterfactual:
    """The size reward every sizing action within the configured limits would have earned on a closed
    position's price path (see the module docstring for the assumptions).

    The loop below is `size_reward(cell_pnl, risk_penalty(...), volatility_adjustment(...))` of
    rewards.py written out (operation for operation, in the same order, so each cell is
    bit-identical to the functions' result): ~40 cells per outcome made the three calls per
    cell the largest part of `apply`.
    """

    __slots__ = ("_allowed", "_cells", "_reward_config", "actions")

    def __init__(self, mask: ActionMask, config: CoreConfig) -> None:
        self.actions = mask.members
        self._allowed = mask.allowed
        self._cells = tuple(
            (a, SIZING_ACTIONS[a].size_multiplier, float(SIZING_ACTIONS[a].leverage)) for a in mask.members
        )
        self._reward_config = config.reward

    def rewards(
        self, pnl: float, drawdown: float, volatility: float, exposure: float, chosen: int, chosen_reward: float
    ) -> tuple[tuple[int, ...], list[float]]:
        unit_pnl, unit_drawdown = pnl / exposure, drawdown / exposure
        config = self._reward_config
        reference = config.risk_reference_leverage
        w_risk, w_vol = config.size_risk_weight, config.size_volatility_weight
        calm = 1.0 - 2.0 * volatility
        rewards: list[float] = []
        append = rewards.append
        for action, multiplier, leverage in self._cells:
            if action == chosen:
                append(chosen_reward)
                continue
            cell_exposure = multiplier * leverage
            cell_pnl, cell_drawdown = unit_pnl * cell_exposure, unit_drawdown * cell_exposure
            if cell_drawdown >= 100.0:  # liquidated: the margin is gone
                cell_pnl, cell_drawdown = -100.0, 100.0
            risk = cell_drawdown * multiplier * leverage / reference  # risk_penalty
            adjustment = calm * cell_exposure / _MAX_EXPOSURE  # volatility_adjustment
            append(cell_pnl - w_risk * risk + w_vol * adjustment)  # size_reward
        if chosen not in self._allowed:  # traded beyond today's configured limits (a replayed log)
            return (*self.actions, chosen), [*rewards, chosen_reward]
        return self.actions, rewards
