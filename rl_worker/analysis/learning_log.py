"""The learning log as columns: per arm the trades and their rewards, per agent the logged decisions.

A `LogTally` is fed every record of the log in order, each after the replica applied it (the
rewards are the replica's: they depend on the trades before, so the log is replayed from its
start); records closed before `since_ms` only advance the replica. Every arm's decisions enter
the off-policy columns when they were traded as published (an overridden decision's traded
action has no logged propensity) and carry a propensity (records from before it was logged do
not): each with the propensity of the policy that made it -- the RL arm's epsilon-greedy one,
a uniform control's 1/|A|, or 1.0 for the stack's own choice.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from rl_worker.analysis.criteria import TableReading
from rl_worker.analysis.performance import ArmTrades
from rl_worker.core.actions import ActionMask, effective_limits, meta_action_mask, sizing_action_mask
from rl_worker.core.config import CoreConfig
from rl_worker.core.outcome import Outcome
from rl_worker.core.replica import AppliedOutcome, ModelReplica
from rl_worker.core.state import MetaState, SizingState

__all__ = ["AgentColumns", "LogTally", "read_table_sizes"]


@dataclass
class AgentColumns:
    """One agent's logged decisions: what off-policy evaluation reads."""

    state_keys: list[str] = field(default_factory=list)
    masks: list[ActionMask] = field(default_factory=list)
    actions: list[int] = field(default_factory=list)
    propensities: list[float] = field(default_factory=list)
    rewards: list[float] = field(default_factory=list)
    states: list[MetaState | SizingState] = field(default_factory=list)  # the features behind each state key
    # sizing: the signal's regime and the meta action traded (what a sizing context reads); meta: None
    contexts: list[tuple[str, int] | None] = field(default_factory=list)
    arms: list[str] = field(default_factory=list)  # the arm (policy) that made each decision
    # the other agent's action as traded in the same position (meta: the sizing action; sizing: the meta action):
    # every reward depends on it, and off-policy evaluation holds it fixed
    other_actions: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.actions)


@dataclass
class _ArmColumns:
    pnl: list[float] = field(default_factory=list)
    meta: list[float] = field(default_factory=list)
    size: list[float] = field(default_factory=list)
    closed_at_ms: list[int] = field(default_factory=list)


def read_table_sizes(replica: ModelReplica) -> TableReading:
    """The replica's Q-table sizes and total visits now."""
    meta, sizing = replica.meta_table, replica.sizing_table
    visits = int(meta.visits[: len(meta)].sum() + sizing.visits[: len(sizing)].sum())
    return TableReading(replica.n_updates, len(meta), len(sizing), visits)


class LogTally:
    """Columns of the records closed at or after `since_ms` (all when None)."""

    def __init__(self, config: CoreConfig, rl_arm: str = "rl", since_ms: int | None = None) -> None:
        self.config = config
        self.rl_arm = rl_arm
        self.since_ms = since_ms
        self.arms: dict[str, _ArmColumns] = {}
        self.meta = AgentColumns()
        self.sizing = AgentColumns()
        self.records = 0  # records read, in the window or not
        self.included = 0
        self.unreadable = 0
        self.overridden = 0
        self.without_propensity = 0
        self.control_records = 0
        self.first_offset: int | None = None
        self.last_offset: int | None = None
        self.start_reading: TableReading | None = None

    def skip(self, offset: int) -> None:
        """A record the replica could not read (every replica skips it too)."""
        self.records += 1
        self.unreadable += 1
        self.last_offset = offset

    def control(self, offset: int) -> None:
        """A control record (hyperparameter change, reset) the replica applied."""
        self.records += 1
        self.control_records += 1
        self.last_offset = offset

    def add(self, outcome: Outcome, applied: AppliedOutcome | None, replica: ModelReplica, offset: int) -> None:
        """One record, after `replica.apply` returned `applied` (None: a repeated position, not counted)."""
        self.records += 1
        self.last_offset = offset
        if applied is None or (self.since_ms is not None and outcome.closed_at_ms < self.since_ms):
            return
        if self.start_reading is None:
            self.start_reading = read_table_sizes(replica)
            self.first_offset = offset
        self.included += 1
        columns = self.arms.setdefault(outcome.policy, _ArmColumns())
        columns.pnl.append(outcome.pnl_pct)
        columns.meta.append(applied.meta_reward)
        columns.size.append(applied.size_reward)
        columns.closed_at_ms.append(outcome.closed_at_ms)
        self.overridden += outcome.overridden
        meta, sizing = outcome.meta, outcome.sizing
        for step, agent, reward in ((meta, self.meta, applied.meta_reward), (sizing, self.sizing, applied.size_reward)):
            if step.decided_action_index is not None:
                continue  # overridden: the traded action was not drawn with the logged propensity
            if step.propensity is None:
                self.without_propensity += 1
                continue
            state: MetaState | SizingState
            context: tuple[str, int] | None = None
            other = sizing if step is meta else meta
            if step is meta:
                mask = meta_action_mask(meta.state.regime, self.config)
                state = MetaState(**meta.state.model_dump())
            else:
                limits = effective_limits(self.config.risk, sizing.max_size_multiplier, sizing.max_leverage)
                mask = sizing_action_mask(*limits)
                state = SizingState(**sizing.state.model_dump())
                context = (meta.state.regime, meta.action_index)
            agent.states.append(state)
            agent.contexts.append(context)
            agent.arms.append(outcome.policy)
            agent.other_actions.append(other.action_index)
            agent.state_keys.append(step.state_key)
            agent.masks.append(mask)
            agent.actions.append(step.action_index)
            agent.propensities.append(step.propensity)
            agent.rewards.append(reward)

    def trades(self, arm: str) -> ArmTrades:
        """The arm's trades in the window (empty when it has none)."""
        columns = self.arms.get(arm, _ArmColumns())
        return ArmTrades(
            arm,
            np.asarray(columns.pnl, dtype=np.float64),
            np.asarray(columns.meta, dtype=np.float64),
            np.asarray(columns.size, dtype=np.float64),
            np.asarray(columns.closed_at_ms, dtype=np.int64),
        )
