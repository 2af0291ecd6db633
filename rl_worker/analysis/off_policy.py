"""Off-policy evaluation: what a candidate policy would have earned on logged decisions.

Each logged decision i of one agent has a state s_i, the logged action a_i, its logging
propensity mu_i = pi_log(a_i | s_i) (written on the decision), and the reward r_i the
replica computed for it. The candidate (target) policy pi gives pi(a_i | s_i), and its
Q-values serve as the reward model q(s, a). With importance weights w_i = pi(a_i|s_i) / mu_i:

    IPS   = (1/n) sum_i w_i r_i
    SNIPS = sum_i w_i r_i / sum_i w_i
    DR    = (1/n) sum_i [ sum_a pi(a|s_i) q(s_i, a) + w_i (r_i - q(s_i, a_i)) ]
    ESS   = (sum_i w_i)^2 / sum_i w_i^2          (effective sample size, n when every w_i = 1)

Each estimates the candidate's expected reward per decision (a one-step value: the market
does not depend on the actions, so each decision is scored against its own reward, with the
other agent's logged action held fixed). IPS and DR are unbiased when every action the
candidate can take had a positive logging propensity; DR's variance shrinks as q approaches
the expected reward. Intervals are percentile bootstraps over the decisions
(`scipy.stats.bootstrap`; SNIPS resamples w r and w in pairs).

Small logging propensities make a few weights huge: the report then warns, and names why
(a low effective sample size, one decision carrying much of the weight, most of the weight
sitting on decisions logged with a propensity below `min_propensity`, or a mean weight far
from 1 -- its expectation under the logging policy -- which shows the candidate's actions were
rarely tried even when no huge weight happens to be in the sample).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import stats

from rl_worker.core.actions import ActionMask
from rl_worker.core.qlearning import QTable
from rl_worker.core.types import FloatArray

__all__ = [
    "ESTIMATORS",
    "LoggedDecisions",
    "OffPolicyEstimate",
    "OffPolicyReport",
    "effective_sample_size",
    "estimate_off_policy",
    "logged_decisions_for_candidate",
]

ESTIMATORS = ("IPS", "SNIPS", "DR")


@dataclass(frozen=True)
class LoggedDecisions:
    """The columns the estimators read, one value per logged decision of one agent."""

    agent: str
    reward: FloatArray
    logged_propensity: FloatArray  # mu(a_i | s_i), in (0, 1]
    target_propensity: FloatArray  # pi(a_i | s_i), in [0, 1]
    model_logged: FloatArray  # q(s_i, a_i)
    model_target: FloatArray  # sum_a pi(a | s_i) q(s_i, a)

    def __post_init__(self) -> None:
        columns = ("reward", "logged_propensity", "target_propensity", "model_logged", "model_target")
        n = None
        for name in columns:
            column = np.asarray(getattr(self, name), dtype=np.float64).reshape(-1)
            if not np.all(np.isfinite(column)):
                raise ValueError(f"{name} must be finite")
            if n is not None and column.size != n:
                raise ValueError(f"{name} has {column.size} values, expected {n}")
            n = column.size
            object.__setattr__(self, name, column)
        if np.any(self.logged_propensity <= 0.0) or np.any(self.logged_propensity > 1.0):
            raise ValueError("logged propensities must lie in (0, 1]")
        if np.any(self.target_propensity < 0.0) or np.any(self.target_propensity > 1.0):
            raise ValueError("target propensities must lie in [0, 1]")

    def __len__(self) -> int:
        return int(self.reward.size)

    @property
    def weights(self) -> FloatArray:
        return self.target_propensity / self.logged_propensity


def logged_decisions_for_candidate(
    agent: str,
    table: QTable,
    state_keys: Sequence[str],
    masks: Sequence[ActionMask],
    actions: Sequence[int],
    logged_propensities: Sequence[float],
    rewards: Sequence[float],
    epsilon: float = 0.0,
    calibrate: bool = True,
    min_visits: int = 0,
    min_state_decisions: int = 5,
) -> LoggedDecisions:
    """The columns for a candidate that acts epsilon-greedily on `table` (0: its greedy policy).

    As the worker decides: within the decision's mask, greedy ties broken uniformly, and every
    allowed action greedy in a state the table never updated (all its values are 0).

    The reward model q is the candidate's Q-values, `calibrate`d: a Q-value is a discounted
    return (r + gamma * V(next state)), not a one-step reward, and a cell updated a few times
    still sits near its start (0). Within a state, the Q-values of well-learned cells (at least
    `min_visits` updates; about 3 / alpha) differ as the expected rewards do when the next state
    does not depend on the action, but their level is off by gamma * V. So

        q(s, a) = Q(s, a) + shift(s)   if cell (s, a) has >= min_visits updates
                = level(s)             otherwise

    shift(s) = mean of (r_i - Q(s, a_i)) over the logged decisions in s whose cell is well learned,
    level(s) = mean logged reward in s (both the overall mean for a state with fewer than
    `min_state_decisions` such decisions). DR is unbiased whatever q is; a better q only narrows it.
    `calibrate=False` takes the raw Q-values (0 for a state never updated).
    """
    n = len(state_keys)
    if not (len(masks) == len(actions) == len(logged_propensities) == len(rewards) == n):
        raise ValueError("every column needs one value per decision")
    reward = np.asarray(rewards, dtype=np.float64)
    target = np.empty(n)
    greedy_sets: list[tuple[int, ...]] = []
    rows: list[tuple[FloatArray, npt.NDArray[np.int64]] | None] = []
    for i, (key, mask, action) in enumerate(zip(state_keys, masks, actions, strict=True)):
        if action not in mask.allowed:
            raise ValueError(f"decision {i}: logged action {action} is outside its mask")
        greedy = table.greedy_actions(key, mask) or mask.members
        probability = epsilon / len(mask)
        if action in greedy:
            probability += (1.0 - epsilon) / len(greedy)
        target[i] = probability
        greedy_sets.append(greedy)
        index = table.row_index(key)
        rows.append(None if index is None else (table.q_values[index], table.visits[index]))

    def learned(i: int, a: int) -> bool:
        row = rows[i]
        return row is not None and (not calibrate or row[1][a] >= min_visits)

    shift = level = np.zeros(n)
    if calibrate and n:
        trusted = np.array([learned(i, a) for i, a in enumerate(actions)])
        q_logged = np.array([rows[i][0][a] if trusted[i] else 0.0 for i, a in enumerate(actions)])  # type: ignore[index]
        shift = _state_means(state_keys, reward - q_logged, trusted, min_state_decisions)
        level = _state_means(state_keys, reward, np.ones(n, dtype=bool), min_state_decisions)

    def model(i: int, a: int) -> float:
        row = rows[i]
        if learned(i, a):
            return float(row[0][a]) + float(shift[i])  # type: ignore[index]
        return float(level[i])

    model_logged = np.array([model(i, a) for i, a in enumerate(actions)])
    model_target = np.empty(n)
    for i, (mask, greedy) in enumerate(zip(masks, greedy_sets, strict=True)):
        value = (1.0 - epsilon) * float(np.mean([model(i, a) for a in greedy]))
        if epsilon > 0.0:
            value += epsilon * float(np.mean([model(i, a) for a in mask.members]))
        model_target[i] = value
    return LoggedDecisions(
        agent, reward, np.asarray(logged_propensities, dtype=np.float64), target, model_logged, model_target
    )


def _state_means(
    state_keys: Sequence[str], values: FloatArray, use: npt.NDArray[np.bool_], min_count: int
) -> FloatArray:
    """Per decision: the mean of `values[use]` in its state, or the overall mean for a rarely seen state."""
    overall = float(values[use].mean()) if use.any() else 0.0
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}
    for key, value, counted in zip(state_keys, values.tolist(), use.tolist(), strict=True):
        if counted:
            sums[key] = sums.get(key, 0.0) + value
            counts[key] = counts.get(key, 0) + 1
    return np.array([sums[k] / counts[k] if counts.get(k, 0) >= min_count else overall for k in state_keys])


def effective_sample_size(weights: FloatArray) -> float:
    """(sum w)^2 / sum w^2; 0 when every weight is 0."""
    weights = np.asarray(weights, dtype=np.float64)
    squares = float(np.dot(weights, weights))
    return float(weights.sum()) ** 2 / squares if squares > 0 else 0.0


@dataclass(frozen=True)
class OffPolicyEstimate:
    estimator: str
    value: float
    ci_low: float
    ci_high: float

    def covers(self, value: float) -> bool:
        return bool(self.ci_low <= value <= self.ci_high)

    def as_dict(self) -> dict[str, Any]:
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in self.__dict__.items()}


@dataclass(frozen=True)
class OffPolicyReport:
    """The three estimates for one agent, beside what the logging policy earned."""

    agent: str
    decisions: int
    logged_value: float  # mean reward of the logged decisions (the logging policy, on-policy)
    effective_sample_size: float
    agreement: float  # share of decisions whose logged action the candidate could take
    min_logged_propensity: float
    estimates: dict[str, OffPolicyEstimate]
    confidence: float
    warnings: list[str] = field(default_factory=list)

    @property
    def trustworthy(self) -> bool:
        return not self.warnings

    def as_dict(self) -> dict[str, Any]:
        def clean(value: float) -> float | None:
            return value if math.isfinite(value) else None

        return {
            "agent": self.agent,
            "decisions": self.decisions,
            "logged_value": clean(self.logged_value),
            "effective_sample_size": self.effective_sample_size,
            "agreement": clean(self.agreement),
            "min_logged_propensity": clean(self.min_logged_propensity),
            "confidence": self.confidence,
            "estimates": {name: e.as_dict() for name, e in self.estimates.items()},
            "warnings": list(self.warnings),
            "trustworthy": self.trustworthy,
        }


def _mean(x: FloatArray, axis: int = -1) -> Any:
    return np.mean(x, axis=axis)


def _ratio_of_means(x: FloatArray, y: FloatArray, axis: int = -1) -> Any:
    denominator = np.sum(y, axis=axis)
    return np.divide(
        np.sum(x, axis=axis), denominator, out=np.full(np.shape(denominator), np.nan), where=denominator > 0
    )


def _interval(
    samples: tuple[FloatArray, ...],
    statistic: Any,
    paired: bool,
    confidence: float,
    n_resamples: int,
    rng: np.random.Generator,
) -> tuple[float, float]:
    if samples[0].size < 2:
        return math.nan, math.nan
    with warnings.catch_warnings():
        # all-equal terms (e.g. every weight 0) give a degenerate distribution: NaN bounds
        warnings.simplefilter("ignore", stats.DegenerateDataWarning)
        warnings.simplefilter("ignore", RuntimeWarning)
        result = stats.bootstrap(
            samples,
            statistic,
            vectorized=True,
            paired=paired,
            n_resamples=n_resamples,
            batch=max(1, min(n_resamples, 2_000_000 // samples[0].size)),
            confidence_level=confidence,
            method="percentile",
            rng=rng,
        )
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def estimate_off_policy(
    logged: LoggedDecisions,
    rng: np.random.Generator,
    confidence: float = 0.95,
    n_resamples: int = 2000,
    min_propensity: float = 0.01,
    min_ess: float = 100.0,
    min_ess_fraction: float = 0.1,
    max_weight_share: float = 0.05,
    weight_mean_tolerance: float = 0.1,
) -> OffPolicyReport:
    """IPS, SNIPS and DR with bootstrap intervals, the effective sample size, and warnings."""
    n = len(logged)
    if n == 0:
        raise ValueError(f"no logged {logged.agent} decisions to evaluate")
    w = logged.weights
    r = logged.reward
    ips_terms = w * r
    dr_terms = logged.model_target + w * (r - logged.model_logged)
    total_weight = float(w.sum())
    ips = float(ips_terms.mean())
    snips = float(ips_terms.sum() / total_weight) if total_weight > 0 else math.nan
    dr = float(dr_terms.mean())
    estimates = {
        "IPS": OffPolicyEstimate("IPS", ips, *_interval((ips_terms,), _mean, False, confidence, n_resamples, rng)),
        "SNIPS": OffPolicyEstimate(
            "SNIPS", snips, *_interval((ips_terms, w), _ratio_of_means, True, confidence, n_resamples, rng)
        ),
        "DR": OffPolicyEstimate("DR", dr, *_interval((dr_terms,), _mean, False, confidence, n_resamples, rng)),
    }
    ess = effective_sample_size(w)
    supported = w > 0
    agreement = float(np.mean(supported))
    found: list[str] = []
    if ess < max(min_ess, min_ess_fraction * n):
        found.append(
            f"effective sample size {ess:.1f} of {n} decisions (below {max(min_ess, min_ess_fraction * n):.0f}): "
            "the candidate rarely takes the logged actions, or a few small propensities dominate"
        )
    mean_weight = total_weight / n
    if abs(mean_weight - 1.0) > weight_mean_tolerance:
        # E[w] = 1 under the logging policy: a sample mean far from it means the candidate's actions
        # were rarely tried (their large weights are missing, or a few of them dominate)
        found.append(
            f"the importance weights average {mean_weight:.2f} where 1 is expected: the logging policy rarely "
            "tried the candidate's actions"
        )
    if total_weight > 0:
        top_share = float(w.max()) / total_weight
        if top_share > max_weight_share:
            found.append(f"one decision carries {top_share:.1%} of the importance weight")
        tiny = supported & (logged.logged_propensity < min_propensity)
        tiny_share = float(w[tiny].sum()) / total_weight
        if tiny_share > 0.1:
            found.append(
                f"{int(tiny.sum())} decisions logged with propensity below {min_propensity:g} carry "
                f"{tiny_share:.0%} of the importance weight"
            )
    else:
        found.append("the candidate takes none of the logged actions: IPS and SNIPS have no support")
    if np.all(logged.logged_propensity == 1.0):
        found.append(
            f"the logging policy was deterministic (propensity 1.0): the candidate's other actions were "
            f"never tried; IPS/SNIPS see only the {agreement:.0%} of decisions it agrees with, DR leans "
            "on its Q-values"
        )
    return OffPolicyReport(
        agent=logged.agent,
        decisions=n,
        logged_value=float(r.mean()),
        effective_sample_size=ess,
        agreement=agreement,
        min_logged_propensity=float(logged.logged_propensity.min()),
        estimates=estimates,
        confidence=confidence,
        warnings=found,
    )
