"""Tuning advice: per-agent statistics of a replica and its recent log, and the rules that read them.

`WindowObserver` watches the last outcomes of the log being applied (rewards, TD errors, and
whether each decision's state had ever been updated: in a state never updated every allowed
action is greedy, so the choice is a uniform draw whatever epsilon is). `agent_stats` adds what
the tables hold. `recommend` turns both into per-agent advice, each with its reason:

- fewer than `min_updates` outcomes applied: wait (the statistics are noise);
- Q-value spread far above the reward spread (std over visited cells > `q_spread_ratio` x
  reward std): bootstrapped targets dominate the values -> lower gamma and alpha;
- |TD error| growing over the window: the values do not settle -> lower alpha;
- most decisions random ("always random": epsilon + (1 - epsilon) x share in unseen states
  > `random_share`): lower epsilon when it is the cause; when unseen states are the cause,
  say so (the bins are too fine for the data: no epsilon helps);
- otherwise: keep.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from rl_worker.core.control import AgentHyperparameters, Hyperparameters
from rl_worker.core.qlearning import QTable
from rl_worker.core.replica import AppliedOutcome, ModelReplica

__all__ = [
    "AgentStats",
    "Recommendation",
    "TuningRules",
    "WindowObserver",
    "agent_stats",
    "apply_recommendations",
    "recommend",
]

AGENTS = ("meta", "sizing")


@dataclass
class _AgentWindow:
    rewards: list[float] = field(default_factory=list)
    td_errors: list[float] = field(default_factory=list)
    unseen: int = 0


class WindowObserver:
    """Collects, per agent, the rewards, TD errors and unseen-state decisions of applied outcomes."""

    def __init__(self) -> None:
        self.agents = {agent: _AgentWindow() for agent in AGENTS}

    def observe(self, unseen_meta: bool, unseen_sizing: bool, applied: AppliedOutcome) -> None:
        meta, sizing = self.agents["meta"], self.agents["sizing"]
        meta.rewards.append(applied.meta_reward)
        meta.td_errors.append(applied.meta_td_error)
        meta.unseen += unseen_meta
        sizing.rewards.append(applied.size_reward)
        sizing.td_errors.append(applied.size_td_error)
        sizing.unseen += unseen_sizing

    def observe_apply(self, replica: ModelReplica, outcome: Any, offset: int | None = None) -> AppliedOutcome | None:
        """Apply `outcome` to `replica` and observe it (the states are checked before the update)."""
        unseen_meta = replica.meta_table.row_index(outcome.meta.state_key) is None
        unseen_sizing = replica.sizing_table.row_index(outcome.sizing.state_key) is None
        applied = replica.apply(outcome, offset)
        if applied is not None:
            self.observe(unseen_meta, unseen_sizing, applied)
        return applied


@dataclass(frozen=True)
class AgentStats:
    """What the advice reads for one agent."""

    agent: str
    n_updates: int
    epsilon: float
    states: int
    cells_visited: int
    cells_visited_under_3: int
    q_std: float
    window: int
    reward_mean: float
    reward_std: float
    reward_trend: float  # mean of the window's second half minus its first half
    td_abs_first_half: float
    td_abs_second_half: float
    unseen_share: float

    @property
    def random_share(self) -> float:
        """Expected share of decisions that were a uniform draw: explored, or greedy in an unseen state."""
        return self.epsilon + (1.0 - self.epsilon) * self.unseen_share

    def as_dict(self) -> dict[str, Any]:
        return asdict(self) | {"random_share": self.random_share}


def _mean(values: list[float]) -> float:
    return float(np.mean(values)) if values else 0.0


def _table_stats(table: QTable) -> tuple[int, int, int, float]:
    q_values, visits = table.used()
    visited = visits > 0
    q_std = float(np.std(q_values[visited])) if visited.any() else 0.0
    return len(table), int(visited.sum()), int((visited & (visits < 3)).sum()), q_std


def agent_stats(replica: ModelReplica, window: WindowObserver) -> dict[str, AgentStats]:
    out: dict[str, AgentStats] = {}
    for agent in AGENTS:
        table = replica.meta_table if agent == "meta" else replica.sizing_table
        states, visited, under_3, q_std = _table_stats(table)
        seen = window.agents[agent]
        n = len(seen.rewards)
        half = n // 2
        td_abs = [abs(t) for t in seen.td_errors]
        out[agent] = AgentStats(
            agent=agent,
            n_updates=replica.n_updates,
            epsilon=replica.meta_epsilon if agent == "meta" else replica.sizing_epsilon,
            states=states,
            cells_visited=visited,
            cells_visited_under_3=under_3,
            q_std=q_std,
            window=n,
            reward_mean=_mean(seen.rewards),
            reward_std=float(np.std(seen.rewards)) if n else 0.0,
            reward_trend=_mean(seen.rewards[half:]) - _mean(seen.rewards[:half]) if n >= 2 else 0.0,
            td_abs_first_half=_mean(td_abs[:half]),
            td_abs_second_half=_mean(td_abs[half:]),
            unseen_share=seen.unseen / n if n else 0.0,
        )
    return out


@dataclass(frozen=True)
class TuningRules:
    """The thresholds of the advice (documented in the module docstring)."""

    min_updates: int = 200
    q_spread_ratio: float = 3.0
    td_growth: float = 1.1
    random_share: float = 0.5


@dataclass(frozen=True)
class Recommendation:
    agent: str
    parameter: str  # "alpha" | "gamma" | "epsilon" | "wait" | "keep" | "bins"
    current: float | None
    suggested: float | None
    reason: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _round(value: float) -> float:
    """Three significant digits: advice, not a computation."""
    return float(f"{value:.3g}")


def recommend(
    stats: dict[str, AgentStats], hyperparameters: Hyperparameters, rules: TuningRules | None = None
) -> list[Recommendation]:
    rules = rules or TuningRules()
    out: list[Recommendation] = []
    for agent in AGENTS:
        s = stats[agent]
        hp: AgentHyperparameters = getattr(hyperparameters, agent)
        if s.n_updates < rules.min_updates or s.window < 2:
            out.append(Recommendation(
                agent, "wait", None, None,
                f"only {s.n_updates} outcomes applied ({s.window} in the window); below {rules.min_updates} "
                "the statistics are noise: wait for more closed positions",
            ))
            continue
        before = len(out)
        if s.reward_std > 0 and s.q_std > rules.q_spread_ratio * s.reward_std:
            reason = (
                f"Q-values spread {s.q_std:.3g} (std over {s.cells_visited} visited cells), "
                f"{s.q_std / s.reward_std:.1f}x the reward spread {s.reward_std:.3g}: bootstrapped targets "
                "dominate the values; a shorter horizon and a smaller step average more"
            )
            out.append(Recommendation(agent, "gamma", hp.gamma, _round(max(0.5, hp.gamma * 0.9)), reason))
            out.append(Recommendation(agent, "alpha", hp.alpha, _round(hp.alpha / 2), reason))
        elif s.td_abs_first_half > 0 and s.td_abs_second_half > rules.td_growth * s.td_abs_first_half:
            out.append(Recommendation(
                agent, "alpha", hp.alpha, _round(hp.alpha / 2),
                f"|TD error| grew from {s.td_abs_first_half:.3g} to {s.td_abs_second_half:.3g} over the last "
                f"{s.window} outcomes: the values do not settle; a smaller step averages more",
            ))
        if s.random_share > rules.random_share:
            if s.epsilon >= s.unseen_share * (1.0 - s.epsilon) and s.epsilon > hp.epsilon_min:
                out.append(Recommendation(
                    agent, "epsilon", _round(s.epsilon), _round(max(hp.epsilon_min, s.epsilon / 2)),
                    f"{s.random_share:.0%} of decisions were random, mostly exploration (epsilon "
                    f"{s.epsilon:.3g}): exploit more",
                ))
            else:
                out.append(Recommendation(
                    agent, "bins", None, None,
                    f"{s.random_share:.0%} of decisions were random, {s.unseen_share:.0%} in states never "
                    f"updated before ({s.states} states, {s.cells_visited_under_3} of {s.cells_visited} "
                    "visited cells seen under 3 times): the state key is too fine for the data; "
                    "a lower epsilon would not help (coarser bins need a new model: backfill and promote)",
                ))
        if len(out) == before:
            out.append(Recommendation(
                agent, "keep", None, None,
                f"Q spread {s.q_std:.3g} vs reward spread {s.reward_std:.3g}, |TD| "
                f"{s.td_abs_first_half:.3g} -> {s.td_abs_second_half:.3g}, {s.random_share:.0%} random "
                f"decisions, reward trend {s.reward_trend:+.3g}: nothing to change",
            ))
    return out


def apply_recommendations(hyperparameters: Hyperparameters, advice: list[Recommendation]) -> Hyperparameters:
    """The hyperparameters the advice suggests (epsilon: a schedule restarting at the suggested value)."""
    agents = {agent: getattr(hyperparameters, agent).model_dump() for agent in AGENTS}
    for rec in advice:
        if rec.suggested is None or not math.isfinite(rec.suggested):
            continue
        name = "epsilon_start" if rec.parameter == "epsilon" else rec.parameter
        agents[rec.agent][name] = rec.suggested
    return Hyperparameters.model_validate(agents)
