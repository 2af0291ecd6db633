"""Off-policy evaluation: what a candidate policy would have earned on logged decisions.

Each logged decision i of one agent has a state s_i, the logged action a_i, its logging
propensity mu_i = pi_log(a_i | s_i) (written on the decision), and the reward r_i the
replica computed for it. The candidate (target) policy pi gives pi(a | s_i) for every allowed
action. With importance weights w_i = pi(a_i|s_i) / mu_i:

    IPS   = (1/n) sum_i w_i r_i
    SNIPS = sum_i w_i r_i / sum_i w_i
    ESS   = (sum_i w_i)^2 / sum_i w_i^2          (effective sample size, n when every w_i = 1)
    DR    = (1/n) sum_i sum_a pi(a|s_i) q(s_i, a)

DR's reward model q is fit on the logged decisions themselves. With a cell per (state, action) fit
as the importance-weighted mean reward of the decisions that took a in s, the doubly robust
correction terms w_i (r_i - q) sum to zero inside each cell, so DR is the direct estimate above.
It is consistent when the logged action depended on the decision's state (and a random draw)
only -- as the worker's epsilon-greedy decisions do -- but it needs every cell the candidate
chooses to have been tried, which epsilon-greedy logs over hundreds of states rarely give.

So q is hierarchical (empirical Bayes). Each fine cell (arm | state key, action) sits under the
coarser keys the agents already back off to (`ModelReplica.state_levels`: L1, L0), then its arm's
action over all states, then the action over all states among the cells the candidate chooses (its
most probable action there: it chose them for its own estimates of their values, so they are not
pooled with the cells it passed over), then the action over all states.

The cells hold rates, not rewards: r_i = x_i * rate(cell) + o_i(a), with x_i and o_i known per decision.
Every reward depends on the other agent's action, which the evaluation holds fixed at what was
traded, and each arm's policy draws it differently:
  * meta: x_i is the exposure the sizing agent traded (size multiplier x leverage): pnl, drawdown and
    (up to its clip) the Sharpe signal grow with it; o_i(a) is the known regime-alignment term
    w_align * [a's strategy is native to the regime]. The candidate's action a is valued at decision i's
    own exposure, x_i * rate + o_i(a), so the arms can share their cells (the arm is in no key);
  * sizing: x is the action's own exposure (the reward's spread across states grows with it, so one tau
    per level fits every size only in rate units); the meta action traded is not modelled, so the arm
    is part of every key but the last two.
Without the other agent's actions in the logs (older records) x = 1, o = 0 and the arm keys both agents.

Per node j: m_j, its mean (fine cells: the importance-weighted mean
rate; coarser nodes: the random-effects mean of their children, weights 1 / (tau^2 + v)), v_j,
its sampling variance (fine cells: sigma^2 / ESS_j, sigma^2 the within-cell variance of the rates
of its arm and action), and per level tau^2, the variance of the true values of a level's nodes
around their parent's, by the method of moments over the parents with two or more children:

    E[sum_j (m_j - mean_P)^2] = (1 - 1/n_P) sum_j (tau^2 + v_j)

The cells' values are the posterior, root first:

    q_j | q_parent  ~  N((1 - B_j) m_j + B_j q_parent,  B_j tau^2),   B_j = v_j / (v_j + tau^2)

where a node whose effective sample size is below `min_cell_ess` does not read its own mean
(B = 1: its parent's value, give or take tau -- a few heavy-tailed rewards are no estimate). The
point estimate uses the posterior means; the interval is the percentile interval of the value over
draws that resample the decisions (how often each state and choice comes up) and draw the cells'
values jointly from the posterior, so a choice that rests on pooled cells carries the spread of
its level (tau) into the interval instead of a refusal.

No estimate without support. A fine cell is unsupported when no node on its path -- itself, its
coarser keys, the action over all states -- has an effective sample size of `min_cell_ess`, or the
level it would be pooled across has no parent with two tried children (tau unknown). When the
candidate's choices fall on unsupported cells (more than `max_unsupported_share`, default none),
`estimate_off_policy` gives no estimate (`refusal` says why) rather than an interval that ignores
the gap; `pooled_share` reports the choices whose own cell was tried less than `min_cell_ess` times.
On the worker's own epsilon-greedy logs a candidate that chooses an action the logger hardly ever
took anywhere is refused: with epsilon = 0.02 and 40 actions such an action is tried with
probability 5e-4 per decision. The IPS/SNIPS warnings (low ESS, one decision carrying much of the
weight, tiny propensities, a mean weight far from 1) remain: their intervals ignore what the sample
lacks.
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

from rl_worker.analysis.learning_log import AgentColumns
from rl_worker.core.actions import META_ACTIONS, SIZING_ACTIONS, ActionMask
from rl_worker.core.config import RewardConfig
from rl_worker.core.replica import ModelReplica
from rl_worker.core.rewards import regime_alignment
from rl_worker.core.types import FloatArray

__all__ = [
    "ESTIMATORS",
    "LoggedDecisions",
    "OffPolicyEstimate",
    "OffPolicyReport",
    "candidate_greedy_actions",
    "effective_sample_size",
    "estimate_off_policy",
    "logged_decisions_for_candidate",
    "target_policies",
]

ESTIMATORS = ("IPS", "SNIPS", "DR")
_EXPOSURE = tuple(action.size_multiplier * action.leverage for action in SIZING_ACTIONS)


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
    # per decision its state's coarser keys, finer to coarser (the agents' backoff levels); () for none
    state_levels: Sequence[tuple[str, ...]] = ()
    # DR's reward model: r = scale_i * rate(cell) + offset_i[a], the rate pooled across cells; scale_i the part of
    # decision i that scales its reward (the traded exposure, for the meta agent), offset_i[a] a known part of the
    # reward of action a (the meta agent's regime alignment). () for 1 and 0.
    reward_scale: FloatArray = field(default_factory=lambda: np.zeros(0))
    reward_offset: Sequence[Mapping[int, float]] = ()
    action_scale: FloatArray = field(default_factory=lambda: np.zeros(0))  # per action index: x (sizing: exposure)

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
        if not self.state_levels:
            object.__setattr__(self, "state_levels", [()] * (n or 0))
        scale = np.asarray(self.reward_scale, dtype=np.float64).reshape(-1)
        if scale.size == 0:
            scale = np.ones(n or 0)
        if scale.size != n or not np.all(np.isfinite(scale)) or np.any(scale <= 0.0):
            raise ValueError(f"reward_scale needs {n} finite values above 0")
        object.__setattr__(self, "reward_scale", scale)
        action_scale = np.asarray(self.action_scale, dtype=np.float64).reshape(-1)
        if action_scale.size and (not np.all(np.isfinite(action_scale)) or np.any(action_scale <= 0.0)):
            raise ValueError("action_scale needs finite values above 0")
        if action_scale.size and (np.any(self.action < 0) or np.any(self.action >= action_scale.size)):
            raise ValueError("action_scale has no value for some logged action")
        object.__setattr__(self, "action_scale", action_scale)
        if not self.reward_offset:
            object.__setattr__(self, "reward_offset", [{}] * (n or 0))
        for name in ("state", "target_policy", "state_levels", "reward_offset"):
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


def target_policies(
    greedy: Sequence[tuple[int, ...]], masks: Sequence[ActionMask], epsilon: float = 0.0
) -> list[dict[int, float]]:
    """Per decision, pi(. | s_i) of a candidate that acts epsilon-greedily (0: greedily) on its greedy sets,
    greedy ties broken uniformly within the decision's mask."""
    cache: dict[tuple[tuple[int, ...], int], dict[int, float]] = {}
    policies = []
    for actions, mask in zip(greedy, masks, strict=True):
        policy = cache.get((actions, id(mask)))
        if policy is None:
            policy = dict.fromkeys(actions, (1.0 - epsilon) / len(actions))
            if epsilon > 0.0:
                for a in mask.members:
                    policy[a] = policy.get(a, 0.0) + epsilon / len(mask)
            cache[(actions, id(mask))] = policy
        policies.append(policy)
    return policies


def candidate_greedy_actions(candidate: ModelReplica, agent: str, columns: AgentColumns) -> list[tuple[int, ...]]:
    """The candidate's greedy actions in each logged state, as its own decisions would read its tables
    (backoff levels, strategy rows, sizing context): `ModelReplica.greedy_meta_actions` / `greedy_sizing_actions`."""
    if agent == "meta":
        return [candidate.greedy_meta_actions(state) for state in columns.states]  # type: ignore[arg-type]
    greedy = []
    for state, mask, context, key in zip(
        columns.states, columns.masks, columns.contexts, columns.state_keys, strict=True
    ):
        regime, meta_action = context or (None, None)
        edge = int(key[1]) if key[:1] == "E" and key[2:3] == "|" else None  # rule sizing_edge: 'E<0|1>|<key>'
        greedy.append(
            candidate.greedy_sizing_actions(state, mask, regime, meta_action, edge)  # type: ignore[arg-type]
        )
    return greedy


def logged_decisions_for_candidate(
    agent: str, candidate: ModelReplica, columns: AgentColumns, epsilon: float = 0.0
) -> LoggedDecisions:
    """The estimators' columns for a candidate replica acting epsilon-greedily (0: its greedy policy) on
    one agent's logged decisions; the reward model pools each state with its coarser keys
    (`ModelReplica.state_levels`)."""
    if not (len(columns.states) == len(columns.masks) == len(columns.state_keys) == len(columns)):
        raise ValueError("every column needs one value per decision")
    for i, (action, mask) in enumerate(zip(columns.actions, columns.masks, strict=True)):
        if action not in mask.allowed:
            raise ValueError(f"decision {i}: logged action {action} is outside its mask")
    greedy = candidate_greedy_actions(candidate, agent, columns)
    arms = columns.arms if len(columns.arms) == len(columns) else [""] * len(columns)
    scale: FloatArray = np.zeros(0)
    offset: list[dict[int, float]] = []
    action_scale: FloatArray = np.zeros(0)
    if agent == "meta" and len(columns.other_actions) == len(columns):
        # the meta reward per unit of the traded exposure: the sizing each arm's policy draws is then held
        # fixed by the model itself, and the arms share their cells
        scale, offset = meta_reward_parts(candidate.config.reward, columns)
        arms = [""] * len(columns)
    elif agent == "sizing":
        action_scale = np.array(_EXPOSURE)  # the size reward per unit of the action's own exposure
    return LoggedDecisions(
        agent,
        np.asarray(columns.rewards, dtype=np.float64),
        np.asarray(columns.propensities, dtype=np.float64),
        np.asarray(columns.actions, dtype=np.int64),
        [f"{arm}|{key}" for arm, key in zip(arms, columns.state_keys, strict=True)],
        target_policies(greedy, columns.masks, epsilon),
        [arm_levels(arm, candidate.state_levels(state)[1:]) for arm, state in zip(arms, columns.states, strict=True)],
        scale,
        offset,
        action_scale,
    )


def meta_reward_parts(config: RewardConfig, columns: AgentColumns) -> tuple[FloatArray, list[dict[int, float]]]:
    """The meta reward's scale and known part per logged decision: pnl, drawdown and (up to its clip) the Sharpe
    signal grow with the traded exposure (size multiplier x leverage, the sizing action held fixed), and the regime
    alignment is w_align * [strategy native to the regime], whatever was traded."""
    scale = np.array([_EXPOSURE[s] for s in columns.other_actions], dtype=np.float64)
    offsets: dict[str, dict[int, float]] = {}
    offset = []
    for state in columns.states:
        regime = state.regime  # type: ignore[union-attr]
        found = offsets.get(regime)
        if found is None:
            found = offsets[regime] = {
                a: config.meta_alignment_weight * regime_alignment(regime, META_ACTIONS[a].strategy, config)
                for a in range(len(META_ACTIONS))
            }
        offset.append(found)
    return scale, offset


def arm_levels(arm: str, keys: tuple[str, ...]) -> tuple[str, ...]:
    """A decision's coarser keys for the reward model, each under its arm (as its state key is): the other
    agent's action, which every reward depends on, is drawn by the arm's policy, so an action's reward
    differs between arms, and the arms are pooled only at the root."""
    return (*(f"{arm}|{key}" for key in keys), f"{arm}|{ROOT_KEY}")


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
    unsupported_share: float  # the candidate's choices on (state, action) cells no level supports
    pooled_share: float  # ... on cells hardly tried themselves (their values rest on the coarser levels)
    between_state_sd: tuple[float, ...]  # tau per level below the root, finest first (nan: unknown)
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
            "pooled_share": self.pooled_share,
            "between_state_sd": [clean(v) for v in self.between_state_sd],
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


ROOT_KEY = "*"  # the coarsest level of the reward model: an action over every state


@dataclass(frozen=True)
class _Level:
    """One level of the reward model's hierarchy: its (key, action) nodes, fit on the logged decisions."""

    parent: npt.NDArray[np.int64]  # node -> its node one level coarser (-1 at the root)
    mean: FloatArray  # m: importance-weighted mean reward (fine) or random-effects mean of its children
    variance: FloatArray  # v: sampling variance of m (inf without data)
    ess: FloatArray  # effective sample size of the decisions beneath
    between: float  # tau^2: variance of this level's true values around their parent's (nan: unknown)
    usable: npt.NDArray[np.bool_]  # its own mean enters its value: data with ess >= min_cell_ess


@dataclass(frozen=True)
class _PooledModel:
    """DR's reward model: each (state, action) cell pooled towards the coarser keys (the agents'
    backoff levels, then the action over all states). See the module docstring for the equations."""

    levels: tuple[_Level, ...]  # finest first
    policy: sparse.csr_matrix  # n x fine cells: pi(a | s_i) in the column of cell (s_i, a)
    supported: npt.NDArray[np.bool_]  # per fine cell: some node on its path has ess >= min_cell_ess
    pooled: npt.NDArray[np.bool_]  # per fine cell: its own ess is below min_cell_ess
    cell_mass: FloatArray  # per fine cell: sum_i pi(a | s_i) / n
    scaled_policy: sparse.csr_matrix  # pi(a | s_i) * scale_i: the rate's weight in the value
    offset_policy: sparse.csr_matrix  # pi(a | s_i) * offset_i[a]: the known part of the value

    @classmethod
    def fit(cls, logged: LoggedDecisions, min_cell_ess: float) -> _PooledModel:
        n = len(logged)
        # the last two levels: the action over all states among the cells the candidate chooses (or passes
        # over), then the action over all states
        paths = [
            (key, *levels, ROOT_KEY, ROOT_KEY) for key, levels in zip(logged.state, logged.state_levels, strict=True)
        ]
        depth = len(paths[0])
        if any(len(p) != depth for p in paths):
            raise ValueError("every decision needs the same number of coarser state keys")
        nodes: list[dict[tuple[str, int, bool], int]] = [{} for _ in range(depth)]
        parents: list[list[int]] = [[] for _ in range(depth)]

        def cell(path: tuple[str, ...], action: int, chosen: bool) -> int:
            """The fine cell of (path[0], action), creating its path up to the root. A cell the candidate
            chooses (its most probable action there) is pooled only with cells it also chooses: it chose
            them for their (its) values, so they are not exchangeable with the cells it passed over."""
            found = nodes[0].get((path[0], action, chosen))
            if found is not None:
                return found
            below = -1
            for level in range(depth - 1, -1, -1):  # root first, so every parent exists before its child
                node = (path[level], action, chosen and level < depth - 1)
                index = nodes[level].get(node)
                if index is None:
                    index = nodes[level][node] = len(parents[level])
                    parents[level].append(below)
                below = index
            return below

        rows, columns, probabilities, scaled, offsets = [], [], [], [], []
        action_scale = logged.action_scale
        logged_cells = []
        for i, (path, policy, logged_action, scale, offset) in enumerate(
            zip(paths, logged.target_policy, logged.action.tolist(), logged.reward_scale.tolist(),
                logged.reward_offset, strict=True)
        ):
            top = max(policy.values())
            for a, p in policy.items():
                if p > 0.0:
                    rows.append(i)
                    columns.append(cell(path, int(a), p == top))
                    probabilities.append(p)
                    scaled.append(p * scale * (float(action_scale[a]) if action_scale.size else 1.0))
                    offsets.append(p * offset.get(int(a), 0.0))
            logged_cells.append(cell(path, int(logged_action), policy.get(logged_action, 0.0) == top))
        logged_cell = np.array(logged_cells, dtype=np.int64)
        n_cells = len(parents[0])
        # the cells hold rates: (r - the known part of the logged action's reward) / the decision's scale
        known = np.array(
            [o.get(int(a), 0.0) for o, a in zip(logged.reward_offset, logged.action.tolist(), strict=True)]
        )
        rate = (logged.reward - known) / logged.reward_scale
        if action_scale.size:
            rate = rate / action_scale[logged.action]
        inverse = 1.0 / logged.logged_propensity
        weight = np.bincount(logged_cell, inverse, n_cells)
        squares = np.bincount(logged_cell, inverse**2, n_cells)
        has = weight > 0
        mean = np.divide(np.bincount(logged_cell, inverse * rate, n_cells), weight, out=np.zeros(n_cells), where=has)
        ess = np.divide(weight**2, squares, out=np.zeros(n_cells), where=has)
        group = np.arange(n_cells)  # each fine cell's node under its arm's root (the 3rd level from the top)
        for level in range(depth - 3):
            group = np.array(parents[level], dtype=np.int64)[group]
        variance = np.divide(_reward_variance(rate, logged_cell, mean, group), ess,
                             out=np.full(n_cells, math.inf), where=has)
        levels: list[_Level] = []
        for level in range(depth):
            parent = np.array(parents[level], dtype=np.int64)
            if level == depth - 1:
                levels.append(_Level(parent, mean, variance, ess, math.nan, ess >= min_cell_ess))
                break
            between = _between_variance(mean, variance, parent, len(parents[level + 1]))
            levels.append(_Level(parent, mean, variance, ess, between, ess >= min_cell_ess))
            # the parent's value: the children's random-effects mean, each weighted by 1 / (tau^2 + v)
            precision = np.where(np.isfinite(variance), 1.0 / (np.nan_to_num(between) + variance), 0.0)
            size = len(parents[level + 1])
            total = np.bincount(parent, precision, size)
            mean = np.divide(np.bincount(parent, precision * mean, size), total, out=np.zeros(size), where=total > 0)
            variance = np.divide(1.0, total, out=np.full(size, math.inf), where=total > 0)
            ess = np.bincount(parent, ess, size)
        # a fine cell is supported when some node on its path was tried often enough (and its value is known)
        supported = np.zeros(n_cells, dtype=bool)
        path_index = np.arange(n_cells)
        for node_level in levels:
            supported |= node_level.ess[path_index] >= min_cell_ess
            if node_level is not levels[-1]:
                path_index = node_level.parent[path_index]
        supported &= np.isfinite(cls._draw(tuple(levels), None, None)[0])
        policy = sparse.csr_matrix((probabilities, (rows, columns)), shape=(n, n_cells))
        mass = np.asarray(policy.sum(axis=0)).reshape(-1) / n
        return cls(
            tuple(levels), policy, supported, levels[0].ess < min_cell_ess, mass,
            sparse.csr_matrix((scaled, (rows, columns)), shape=(n, n_cells)),
            sparse.csr_matrix((offsets, (rows, columns)), shape=(n, n_cells)),
        )

    @staticmethod
    def _draw(
        levels: tuple[_Level, ...], rng: np.random.Generator | None, size: int | None
    ) -> FloatArray:
        """The fine cells' values: their posterior means (rng None; shape 1 x cells), or `size` joint draws
        from the posterior, root first: q_child | q_parent ~ N((1 - B) m + B q_parent, B tau^2),
        B = v / (v + tau^2) (1 without data: the parent's value, give or take tau)."""
        rows = 1 if size is None else size
        root = levels[-1]
        values = np.broadcast_to(root.mean, (rows, root.mean.size)).copy()
        values[:, ~root.usable] = np.nan
        if rng is not None:
            spread = np.where(root.usable, root.variance, 0.0)
            values += rng.standard_normal(values.shape) * np.sqrt(spread)
        for level in reversed(levels[:-1]):
            tau2, v = level.between, level.variance
            has = level.usable  # a thinner node's own mean (a few, maybe extreme, rewards) is not read
            if math.isnan(tau2):  # how much states differ is unknown: only a cell's own data count
                shrink = np.where(has, 0.0, np.nan)
                spread = np.where(has, v, np.nan)
            else:
                shrink = np.ones_like(v)
                np.divide(v, v + tau2, out=shrink, where=has & (v + tau2 > 0))
                spread = shrink * tau2
            parent_values = values[:, level.parent]
            values = (1.0 - shrink) * np.where(has, level.mean, 0.0) + shrink * parent_values
            values = np.where(has & (shrink == 0.0), level.mean, values)  # 0 x nan of an unknown parent
            if rng is not None:
                values = values + rng.standard_normal(values.shape) * np.sqrt(np.nan_to_num(spread))
        return values

    def value(self) -> float:
        """sum_c mass_c q_c over the supported cells the candidate needs, per unit of their mass."""
        values = self._draw(self.levels, None, None)[0]
        used = (self.cell_mass > 0) & self.supported
        scaled = np.asarray(self.scaled_policy.sum(axis=0)).reshape(-1)
        known = np.asarray(self.offset_policy.sum(axis=0)).reshape(-1)
        total = self.cell_mass[used].sum() * self.policy.shape[0]
        return float((np.dot(scaled[used], values[used]) + known[used].sum()) / total)

    def interval(
        self, n: int, confidence: float, n_resamples: int, rng: np.random.Generator
    ) -> tuple[float, float]:
        """Percentile interval of the value over draws: per draw the decisions are resampled (how often each
        state and choice comes up) and the cells' values drawn from the model's posterior."""
        if n < 2:
            return math.nan, math.nan
        results = []
        batch = max(1, min(n_resamples, 2_000_000 // max(n, self.policy.shape[1])))
        for start in range(0, n_resamples, batch):
            k = min(batch, n_resamples - start)
            counts = rng.multinomial(n, np.full(n, 1.0 / n), size=k).astype(np.float64)
            total = np.asarray((self.policy.T @ counts.T).T)[:, self.supported].sum(axis=1)
            scaled = np.asarray((self.scaled_policy.T @ counts.T).T)[:, self.supported]
            known = np.asarray((self.offset_policy.T @ counts.T).T)[:, self.supported].sum(axis=1)
            values = self._draw(self.levels, rng, k)[:, self.supported]
            value = np.sum(scaled * values, axis=1) + known
            results.append(value[total > 0] / total[total > 0])
        drawn = np.concatenate(results)
        if drawn.size < 0.95 * n_resamples:  # most resamples lost every supported choice (a handful of decisions)
            return math.nan, math.nan
        tail = 50.0 * (1.0 - confidence)
        low, high = np.percentile(drawn, [tail, 100.0 - tail])
        return float(low), float(high)


def _reward_variance(
    reward: FloatArray, logged_cell: npt.NDArray[np.int64], mean: FloatArray, group: npt.NDArray[np.int64]
) -> FloatArray:
    """Per fine cell, the variance of one decision's reward: pooled within the cells of its group (the
    coarsest key below the root, with the action: the spread of a reward grows with the position size,
    which each arm's policy sets), shrunk towards all cells' with 10 pseudo-degrees of freedom."""
    residual = (reward - mean[logged_cell]) ** 2
    n_groups = int(group.max()) + 1
    counts = np.bincount(logged_cell, minlength=group.size)
    squares = np.bincount(group[logged_cell], residual, n_groups)
    freedom = np.bincount(group, np.maximum(counts - 1, 0), n_groups)
    total_freedom = float(freedom.sum())
    overall = float(squares.sum()) / total_freedom if total_freedom > 0 else float(np.var(reward))
    overall = max(overall, 1e-12)
    return ((squares + 10.0 * overall) / (freedom + 10.0))[group]


def _between_variance(mean: FloatArray, variance: FloatArray, parent: npt.NDArray[np.int64], size: int) -> float:
    """tau^2 of one level by the method of moments, over the parents with two or more children with data:
    E[sum_j (m_j - mean_P)^2] = (1 - 1/n_P) sum_j (tau^2 + v_j); nan when no parent has two. 0 when every
    parent has one child only (e.g. the arms' level of a log with one arm): the child is its parent."""
    if np.bincount(parent, minlength=size).max(initial=0) <= 1:
        return 0.0
    has = np.isfinite(variance)
    children = np.bincount(parent[has], minlength=size)
    centre = np.divide(np.bincount(parent[has], mean[has], size), children, out=np.zeros(size), where=children > 0)
    use = has & (children[parent] >= 2)
    if not use.any():
        return math.nan
    spread = float(np.sum((mean[use] - centre[parent[use]]) ** 2))
    noise = float(np.sum((1.0 - 1.0 / children[parent[use]]) * variance[use]))
    freedom = float(np.sum(children[children >= 2] - 1))
    return max(0.0, (spread - noise) / freedom)


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
    """IPS, SNIPS and DR with intervals, the effective sample size, and warnings. No estimate when more
    than `max_unsupported_share` of the candidate's choices fall on (state, action) cells that even the
    coarsest level does not support: no node on the cell's path (the cell, its coarser keys, the action
    over all states) has an effective sample size of `min_cell_ess`, or the level it would be pooled
    across has no two tried states to tell how much states differ. `pooled_share` is the part of the
    candidate's choices whose own cell has an effective sample size below `min_cell_ess`: their values
    come mostly from the coarser levels (and their spread, tau, widens the interval)."""
    n = len(logged)
    if n == 0:
        raise ValueError(f"no logged {logged.agent} decisions to evaluate")
    w = logged.weights
    r = logged.reward
    ess = effective_sample_size(w)
    agreement = float(np.mean(w > 0))
    model = _PooledModel.fit(logged, min_cell_ess)
    needed = model.cell_mass > 0
    unsupported = float(model.cell_mass[needed & ~model.supported].sum())
    common: dict[str, Any] = {
        "agent": logged.agent,
        "decisions": n,
        "logged_value": float(r.mean()),
        "effective_sample_size": ess,
        "agreement": agreement,
        "min_logged_propensity": float(logged.logged_propensity.min()),
        "unsupported_share": unsupported,
        "pooled_share": float(model.cell_mass[needed & model.pooled].sum()),
        "between_state_sd": tuple(
            math.sqrt(level.between) if math.isfinite(level.between) else math.nan for level in model.levels[:-1]
        ),
        "confidence": confidence,
    }
    if unsupported > max_unsupported_share:
        thin = needed & ~model.supported
        return OffPolicyReport(
            **common,
            estimates={},
            refusal=(
                f"no estimate: {unsupported:.0%} of the candidate's choices fall on {int(thin.sum())} "
                f"(state, action) pairs that neither the logged decisions nor their coarser states support "
                f"(effective sample size below {min_cell_ess:g} at every level, the action over all states "
                "included) -- the logs say nothing about what those would have earned. To judge a candidate, "
                "log exploring decisions: a control share with a uniform baseline (e.g. RL_AB__CONTROL_SHARE=0.2 "
                "RL_AB__BASELINE__KIND=uniform), or apprentice mode with it (RL_AB__CONTROL_SHARE=1); or "
                "evaluate over a longer window."
            ),
        )
    ips_terms = w * r
    total_weight = float(w.sum())
    snips = float(ips_terms.sum() / total_weight) if total_weight > 0 else math.nan
    dr = model.value()
    estimates = {
        "IPS": OffPolicyEstimate(
            "IPS", float(ips_terms.mean()), *_interval((ips_terms,), _mean, False, confidence, n_resamples, rng)
        ),
        "SNIPS": OffPolicyEstimate(
            "SNIPS", snips, *_interval((ips_terms, w), _ratio_of_means, True, confidence, n_resamples, rng)
        ),
        "DR": OffPolicyEstimate("DR", dr, *model.interval(n, confidence, n_resamples, rng)),
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
