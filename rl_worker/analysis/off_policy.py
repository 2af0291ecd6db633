"""Off-policy evaluation: what a candidate policy would have earned on logged decisions.

Each logged decision i of one agent has a state s_i, the logged action a_i, its logging
propensity mu_i = pi_log(a_i | s_i) (written on the decision), and the reward r_i the
replica computed for it. The candidate (target) policy pi gives pi(a | s_i) for every allowed
action. With importance weights w_i = pi(a_i|s_i) / mu_i:

    IPS   = (1/n) sum_i w_i r_i
    SNIPS = sum_i w_i r_i / sum_i w_i
    ESS   = (sum_i w_i)^2 / sum_i w_i^2          (effective sample size, n when every w_i = 1)
    DR    = (1/n) sum_i [ sum_a pi(a|s_i) q(s_i, a) + w_i (r_i - q(s_i, a_i)) ]

DR's reward model q is fit on the logged decisions themselves, one cell per (state, action):

    q(s, a) = sum_{i in cell} r_i / mu_i  /  sum_{i in cell} 1 / mu_i

the importance-weighted mean reward of the decisions that took a in s. Inside a cell the
correction terms w_i (r_i - q) then sum to zero, so DR is the direct estimate
(1/n) sum_i sum_a pi(a|s_i) q(s_i, a): the per-state mean reward of the candidate's action(s),
weighted by how often each state came up. It is consistent whenever the logged action depended
on the decision's state (and a random draw) only -- as the worker's epsilon-greedy decisions do
-- and every cell the candidate needs was tried; the state may include the decision's action mask
(pi is computed per mask), while q pools a state's decisions over masks (the reward of an action
does not depend on which others the limits allowed).

Intervals are percentile bootstraps over the decisions (IPS and SNIPS with
`scipy.stats.bootstrap`; DR by resampling the decisions and refitting q in every resample, so the
interval carries the reward model's own error -- a model fit once and held fixed would not).

No estimate without support. When a cell the candidate needs has an effective sample size
below `min_cell_ess` (its action was hardly ever tried in that state in the window) the data
say nothing about it, and `estimate_off_policy` gives no estimate at all (`refusal` says why)
rather than an interval that ignores the gap. On the worker's own epsilon-greedy logs this is the
usual case for a candidate whose greedy action differs from the one that was traded: with
epsilon = 0.02 and 40 actions it is tried with probability 5e-4 per decision. The IPS/SNIPS
warnings (low ESS, one decision carrying much of the weight, tiny propensities, a mean weight
far from 1) remain: their intervals ignore what the sample lacks; DR's is the one to read.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import sparse, stats

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
    """The columns the estimators read, one value per logged decision of one agent, and the
    candidate's action probabilities in each decision (`target_policy[i]`: action -> pi(a | s_i),
    the actions it may take only)."""

    agent: str
    reward: FloatArray
    logged_propensity: FloatArray  # mu(a_i | s_i), in (0, 1]
    action: npt.NDArray[np.int64]
    state: Sequence[str]
    target_policy: Sequence[Mapping[int, float]]

    def __post_init__(self) -> None:
        n = None
        for name in ("reward", "logged_propensity", "action"):
            column = np.asarray(getattr(self, name), dtype=np.int64 if name == "action" else np.float64).reshape(-1)
            if name != "action" and not np.all(np.isfinite(column)):
                raise ValueError(f"{name} must be finite")
            if n is not None and column.size != n:
                raise ValueError(f"{name} has {column.size} values, expected {n}")
            n = column.size
            object.__setattr__(self, name, column)
        for name in ("state", "target_policy"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"{name} has {len(getattr(self, name))} values, expected {n}")
        if np.any(self.logged_propensity <= 0.0) or np.any(self.logged_propensity > 1.0):
            raise ValueError("logged propensities must lie in (0, 1]")
        for i, policy in enumerate(self.target_policy):
            if any(p < 0.0 for p in policy.values()) or not math.isclose(sum(policy.values()), 1.0, abs_tol=1e-9):
                raise ValueError(f"decision {i}: the candidate's probabilities must be >= 0 and sum to 1")

    def __len__(self) -> int:
        return int(self.reward.size)

    @property
    def target_propensity(self) -> FloatArray:
        """pi(a_i | s_i)."""
        return np.array([policy.get(int(a), 0.0) for policy, a in zip(self.target_policy, self.action, strict=True)])

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
) -> LoggedDecisions:
    """The columns for a candidate that acts epsilon-greedily on `table` (0: its greedy policy).

    As the worker decides: within the decision's mask, greedy ties broken uniformly, and every
    allowed action greedy in a state the table never updated (all its values are 0).
    """
    n = len(state_keys)
    if not (len(masks) == len(actions) == len(logged_propensities) == len(rewards) == n):
        raise ValueError("every column needs one value per decision")
    cache: dict[tuple[str, int], dict[int, float]] = {}
    policies: list[dict[int, float]] = []
    for i, (key, mask, action) in enumerate(zip(state_keys, masks, actions, strict=True)):
        if action not in mask.allowed:
            raise ValueError(f"decision {i}: logged action {action} is outside its mask")
        policy = cache.get((key, id(mask)))
        if policy is None:
            greedy = table.greedy_actions(key, mask) or mask.members
            policy = dict.fromkeys(greedy, (1.0 - epsilon) / len(greedy))
            if epsilon > 0.0:
                for a in mask.members:
                    policy[a] = policy.get(a, 0.0) + epsilon / len(mask)
            cache[(key, id(mask))] = policy
        policies.append(policy)
    return LoggedDecisions(
        agent,
        np.asarray(rewards, dtype=np.float64),
        np.asarray(logged_propensities, dtype=np.float64),
        np.asarray(actions, dtype=np.int64),
        list(state_keys),
        policies,
    )


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
    """The three estimates for one agent (none when the logs do not support the candidate: then
    `refusal` says why), beside what the logging policy earned."""

    agent: str
    decisions: int
    logged_value: float  # mean reward of the logged decisions (the logging policy, on-policy)
    effective_sample_size: float
    agreement: float  # share of decisions whose logged action the candidate could take
    min_logged_propensity: float
    unsupported_share: float  # the candidate's probability mass on (state, action) cells hardly tried
    estimates: dict[str, OffPolicyEstimate]
    confidence: float
    warnings: list[str] = field(default_factory=list)
    refusal: str | None = None

    @property
    def estimated(self) -> bool:
        return self.refusal is None

    @property
    def trustworthy(self) -> bool:
        """An estimate, and no warning about the importance weights."""
        return self.estimated and not self.warnings

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
            "unsupported_share": self.unsupported_share,
            "confidence": self.confidence,
            "estimated": self.estimated,
            "refusal": self.refusal,
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


@dataclass(frozen=True)
class _CellModel:
    """DR with the per-(state, action) cell model as sparse matrices over the decisions:
    value(c) = (c @ P) . ((c @ Wr) / (c @ W)) / sum(c) for decision multiplicities c."""

    policy: sparse.csr_matrix  # n x cells: pi(a | s_i) in the column of cell (s_i, a)
    weight: sparse.csr_matrix  # n x cells: 1 / mu_i in the column of cell (s_i, a_i)
    weighted_reward: sparse.csr_matrix  # ... r_i / mu_i
    cell_ess: FloatArray  # per cell the candidate needs
    cell_mass: FloatArray  # per cell: sum_i pi(a | s_i) / n

    @classmethod
    def fit(cls, logged: LoggedDecisions) -> _CellModel:
        n = len(logged)
        cells: dict[tuple[str, int], int] = {}
        rows, columns, probabilities = [], [], []
        for i, (key, policy) in enumerate(zip(logged.state, logged.target_policy, strict=True)):
            for a, p in policy.items():
                if p > 0.0:
                    rows.append(i)
                    columns.append(cells.setdefault((key, int(a)), len(cells)))
                    probabilities.append(p)
        logged_rows, logged_columns = [], []
        for i, (key, a) in enumerate(zip(logged.state, logged.action.tolist(), strict=True)):
            column = cells.get((key, a))
            if column is not None:  # a cell the candidate never needs does not enter the estimate
                logged_rows.append(i)
                logged_columns.append(column)
        shape = (n, len(cells))
        inverse = 1.0 / logged.logged_propensity[logged_rows]
        weight = sparse.csr_matrix((inverse, (logged_rows, logged_columns)), shape=shape)
        weighted_reward = sparse.csr_matrix(
            (inverse * logged.reward[logged_rows], (logged_rows, logged_columns)), shape=shape
        )
        sums = np.asarray(weight.sum(axis=0)).reshape(-1)
        squares = np.asarray(weight.multiply(weight).sum(axis=0)).reshape(-1)
        ess = np.divide(sums**2, squares, out=np.zeros_like(sums), where=squares > 0)
        policy = sparse.csr_matrix((probabilities, (rows, columns)), shape=shape)
        mass = np.asarray(policy.sum(axis=0)).reshape(-1) / max(1, n)
        return cls(policy, weight, weighted_reward, ess, mass)

    def values(self, counts: FloatArray) -> FloatArray:
        """The estimate for each row of decision multiplicities (k x n)."""
        policy = np.asarray((self.policy.T @ counts.T).T)
        weight = np.asarray((self.weight.T @ counts.T).T)
        weighted_reward = np.asarray((self.weighted_reward.T @ counts.T).T)
        with np.errstate(invalid="ignore", divide="ignore"):
            model = weighted_reward / weight  # a cell absent from a resample: NaN, the resample is dropped
            return np.sum(policy * model, axis=1) / counts.sum(axis=1)


def _dr_interval(
    model: _CellModel, n: int, confidence: float, n_resamples: int, rng: np.random.Generator
) -> tuple[float, float]:
    if n < 2:
        return math.nan, math.nan
    values = []
    batch = max(1, min(n_resamples, 2_000_000 // n))
    for start in range(0, n_resamples, batch):
        counts = rng.multinomial(n, np.full(n, 1.0 / n), size=min(batch, n_resamples - start)).astype(np.float64)
        values.append(model.values(counts))
    resampled = np.concatenate(values)
    resampled = resampled[np.isfinite(resampled)]
    if resampled.size < 0.95 * n_resamples:  # many resamples lost a thinly tried cell: no interval
        return math.nan, math.nan
    tail = 50.0 * (1.0 - confidence)
    low, high = np.percentile(resampled, [tail, 100.0 - tail])
    return float(low), float(high)


def estimate_off_policy(
    logged: LoggedDecisions,
    rng: np.random.Generator,
    confidence: float = 0.95,
    n_resamples: int = 2000,
    min_cell_ess: float = 5.0,
    max_unsupported_share: float = 0.0,
    min_propensity: float = 0.01,
    min_ess: float = 100.0,
    min_ess_fraction: float = 0.1,
    max_weight_share: float = 0.05,
    weight_mean_tolerance: float = 0.1,
) -> OffPolicyReport:
    """IPS, SNIPS and DR with bootstrap intervals, the effective sample size, and warnings; no
    estimate when more than `max_unsupported_share` of the candidate's probability mass lies on
    (state, action) cells with an effective sample size below `min_cell_ess`: with k tries a
    bootstrap resample misses a cell with probability about e^-k (k = 5: under 1 % of the resamples,
    which are dropped); with fewer the interval would rest on the resamples that happened to see it."""
    n = len(logged)
    if n == 0:
        raise ValueError(f"no logged {logged.agent} decisions to evaluate")
    w = logged.weights
    r = logged.reward
    ess = effective_sample_size(w)
    agreement = float(np.mean(w > 0))
    cell_model = _CellModel.fit(logged)
    thin = cell_model.cell_ess < min_cell_ess
    unsupported = float(cell_model.cell_mass[thin].sum())
    common: dict[str, Any] = {
        "agent": logged.agent,
        "decisions": n,
        "logged_value": float(r.mean()),
        "effective_sample_size": ess,
        "agreement": agreement,
        "min_logged_propensity": float(logged.logged_propensity.min()),
        "unsupported_share": unsupported,
        "confidence": confidence,
    }
    if unsupported > max_unsupported_share:
        untried = int(np.sum(cell_model.cell_ess[thin] == 0))
        return OffPolicyReport(
            **common,
            estimates={},
            refusal=(
                f"no estimate: {unsupported:.0%} of the candidate's choices fall on {int(thin.sum())} "
                f"(state, action) pairs tried too rarely in the logged decisions (effective sample size below "
                f"{min_cell_ess:g}; {untried} never tried) -- the logs say nothing about what those would have "
                "earned. Log with more exploration (e.g. a uniform control share) or a longer window."
            ),
        )
    ips_terms = w * r
    total_weight = float(w.sum())
    snips = float(ips_terms.sum() / total_weight) if total_weight > 0 else math.nan
    dr = float(cell_model.values(np.ones((1, n)))[0])
    estimates = {
        "IPS": OffPolicyEstimate(
            "IPS", float(ips_terms.mean()), *_interval((ips_terms,), _mean, False, confidence, n_resamples, rng)
        ),
        "SNIPS": OffPolicyEstimate(
            "SNIPS", snips, *_interval((ips_terms, w), _ratio_of_means, True, confidence, n_resamples, rng)
        ),
        "DR": OffPolicyEstimate("DR", dr, *_dr_interval(cell_model, n, confidence, n_resamples, rng)),
    }
    found: list[str] = []
    if ess < max(min_ess, min_ess_fraction * n):
        found.append(
            f"effective sample size {ess:.1f} of {n} decisions (below {max(min_ess, min_ess_fraction * n):.0f}): "
            "the candidate rarely takes the logged actions, or a few small propensities dominate (IPS, SNIPS)"
        )
    mean_weight = total_weight / n
    if abs(mean_weight - 1.0) > weight_mean_tolerance:
        # E[w] = 1 under the logging policy: a sample mean far from it means the candidate's actions
        # were rarely tried (their large weights are missing, or a few of them dominate)
        found.append(
            f"the importance weights average {mean_weight:.2f} where 1 is expected: the logging policy rarely "
            "tried the candidate's actions (IPS, SNIPS)"
        )
    if total_weight > 0:
        top_share = float(w.max()) / total_weight
        if top_share > max_weight_share:
            found.append(f"one decision carries {top_share:.1%} of the importance weight (IPS, SNIPS)")
        tiny = (w > 0) & (logged.logged_propensity < min_propensity)
        tiny_share = float(w[tiny].sum()) / total_weight
        if tiny_share > 0.1:
            found.append(
                f"{int(tiny.sum())} decisions logged with propensity below {min_propensity:g} carry "
                f"{tiny_share:.0%} of the importance weight (IPS, SNIPS)"
            )
    else:
        found.append("the candidate takes none of the logged actions: IPS and SNIPS have no support")
    if np.all(logged.logged_propensity == 1.0):
        found.append(
            f"the logging policy was deterministic (propensity 1.0): IPS/SNIPS see only the {agreement:.0%} of "
            "decisions the candidate agrees with; DR assumes the stack's choice depended on the state alone"
        )
    return OffPolicyReport(**common, estimates=estimates, warnings=found)
