"""Tabular Q-learning: the Q-table with its TD update, epsilon-greedy selection with its
propensities, the epsilon schedule, and the per-decision random streams.

The hot paths (one TD update per agent per outcome, one selection per decision) avoid numpy
calls, which cost more than the arithmetic on rows of 40-60 values: single Q-values go
through memoryviews, and each row keeps its greedy set per mask up to date, so neither a
TD target nor a selection scans a row. Masks are `ActionMask` objects (rl_worker.core.actions).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

import numpy as np
import numpy.typing as npt

from rl_worker.core.actions import ActionMask
from rl_worker.core.types import FloatArray

__all__ = [
    "DecisionRandom",
    "DecisionStream",
    "EpsilonSchedule",
    "QTable",
    "Selection",
    "UniformSource",
    "select_greedy",
]


class QTable:
    """Q-values and visit counts of one agent: one row per state key seen in an update.

    `q_values` and `visits` are read-only numpy views (rows in key order, spare capacity at
    the end); write through `td_update` or `set_value`. Those keep, per row and mask, the
    greedy set (the best value and the allowed actions that reach it) exact, updating it in
    O(1) on most writes, so that neither a TD target nor a selection scans the row
    (`td_update_cells`, which moves many cells of a row at once, leaves them to one rescan). Single
    values are read and written through memoryviews (~30 ns, where numpy indexing costs
    ~100 ns and returns numpy scalars).
    """

    __slots__ = (
        "_greedy",
        "_index",
        "_q",
        "_q_view",
        "_row_visits",
        "_visits",
        "_visits_view",
        "_written",
        "keys",
        "n_actions",
        "q_values",
        "version",
        "visits",
    )

    def __init__(self, n_actions: int, capacity: int = 64) -> None:
        self.n_actions = n_actions
        # Bumped by every write (a new row, a value, a visit): what a reader caches is valid while it is unchanged.
        self.version = 0
        self.keys: list[str] = []
        self._index: dict[str, int] = {}
        self._greedy: list[dict[ActionMask, _GreedySet]] = []
        self._row_visits: list[int] = []
        # Per row, the version of its last write: a reader of a few rows can tell whether those changed.
        self._written: list[int] = []
        self._allocate(
            np.zeros((capacity, n_actions), dtype=np.float64), np.zeros((capacity, n_actions), dtype=np.int64)
        )

    def _allocate(self, q_values: FloatArray, visits: npt.NDArray[np.int64]) -> None:
        self._q = q_values
        self._visits = visits
        # Flat views (cell = row * n_actions + action); typeshed's memoryview knows no float cells.
        self._q_view: Any = memoryview(q_values.reshape(-1))  # type: ignore[arg-type]
        self._visits_view: Any = memoryview(visits.reshape(-1))  # type: ignore[arg-type]
        self.q_values: FloatArray = q_values.view()
        self.q_values.flags.writeable = False
        self.visits: npt.NDArray[np.int64] = visits.view()
        self.visits.flags.writeable = False

    def __len__(self) -> int:
        return len(self.keys)

    def row_index(self, state_key: str) -> int | None:
        return self._index.get(state_key)

    def row(self, state_key: str) -> FloatArray | None:
        """The Q-values of a state (a read-only view), or None for a state never updated (all zeros)."""
        i = self._index.get(state_key)
        return None if i is None else self.q_values[i]

    def ensure_row(self, state_key: str) -> int:
        i = self._index.get(state_key)
        if i is not None:
            return i
        i = len(self.keys)
        if i == self._q.shape[0]:
            self._allocate(
                np.concatenate([self._q, np.zeros_like(self._q)]),
                np.concatenate([self._visits, np.zeros_like(self._visits)]),
            )
        self.version += 1
        self.keys.append(state_key)
        self._index[state_key] = i
        self._greedy.append({})
        self._row_visits.append(0)
        self._written.append(self.version)
        return i

    def _store(self, i: int, action: int, value: float) -> None:
        """Write Q[i, action] = value, and keep the row's cached greedy sets exact."""
        view = self._q_view
        cell = i * self.n_actions + action
        old = view[cell]
        view[cell] = value
        self.version += 1
        self._written[i] = self.version
        cache = self._greedy[i]
        if cache and value != old:
            _update_greedy(cache, action, old, value)

    def set_value(self, state_key: str, action: int, value: float) -> None:
        """Overwrite one Q-value (tools and tests; learning goes through `td_update`)."""
        self._store(self.ensure_row(state_key), action, float(value))

    def _greedy_set(self, i: int, mask: ActionMask) -> _GreedySet:
        """The cached greedy set of row i within `mask`, rescanning the row if it is stale."""
        cache = self._greedy[i]
        entry = cache.get(mask)
        if entry is None:
            entry = cache[mask] = _GreedySet()
        if entry.actions is None:
            values = mask.values_of(self._q[i].tolist())
            entry.best = best = max(values)
            entry.actions = tuple(a for a, v in zip(mask.members, values, strict=True) if v == best)
        return entry

    def greedy_actions(self, state_key: str, mask: ActionMask) -> tuple[int, ...] | None:
        """The allowed actions with the highest Q-value, ascending; None for a state never updated."""
        i = self._index.get(state_key)
        return None if i is None else self._greedy_set(i, mask).actions

    def max_value(self, state_key: str, mask: ActionMask) -> float:
        """max over the allowed actions of Q(state, .), 0.0 for a state never updated."""
        i = self._index.get(state_key)
        return 0.0 if i is None else self._greedy_set(i, mask).best

    def used(self) -> tuple[FloatArray, npt.NDArray[np.int64]]:
        """The filled rows of the value and visit arrays (copies), in key order."""
        n = len(self.keys)
        return self._q[:n].copy(), self._visits[:n].copy()

    @classmethod
    def from_arrays(cls, keys: list[str], q_values: FloatArray, visits: npt.NDArray[np.int64]) -> QTable:
        n, n_actions = q_values.shape
        table = cls(n_actions, capacity=max(64, n))
        table.keys = list(keys)
        table._index = {k: i for i, k in enumerate(table.keys)}
        table._q[:n] = q_values
        table._visits[:n] = visits
        table._greedy = [{} for _ in range(n)]
        table._row_visits = [int(v) for v in visits.sum(axis=1)]
        table._written = [0] * n
        return table

    def row_visits(self, state_key: str) -> int:
        """Updates of all cells of a state's row so far (0 for a state never updated)."""
        i = self._index.get(state_key)
        return 0 if i is None else self._row_visits[i]

    # Reading by row index (`row_index`), for readers that resolve their keys once and read often.

    def changed_since(self, rows: tuple[int, ...], version: int) -> bool:
        """Whether any of these rows was written (a value, a visit) after the table stood at `version`."""
        return bool(rows) and max(map(self._written.__getitem__, rows)) > version

    def first_row_with(self, rows: Sequence[int | None], needed: float) -> int | None:
        """The first of `rows` with at least `needed` updates (None: a state never updated, 0), else the last."""
        row_visits = self._row_visits
        for i in rows:
            if (0 if i is None else row_visits[i]) >= needed:
                return i
        return rows[-1]

    def greedy_at(self, i: int | None, mask: ActionMask) -> tuple[int, ...] | None:
        """`greedy_actions` of row i (None: a state never updated)."""
        return None if i is None else self._greedy_set(i, mask).actions

    def shrunk_greedy(self, rows: Sequence[int], actions: tuple[int, ...], strength: float) -> tuple[int, ...] | None:
        """The `actions` with the best value shrunk along `rows` (coarsest first), None without rows:

            v = Q(rows[0], a),  then for each next row r:  v = (n * Q(r, a) + strength * v) / (n + strength)

        with n the updates of cell (r, a) (ModelReplica's backoff of strategy values)."""
        if not rows:
            return None
        shrunk_value = self.shrunk_value
        best = -math.inf
        greedy: tuple[int, ...] = ()
        for a in actions:
            value = shrunk_value(rows, a, strength)
            if value > best:
                best, greedy = value, (a,)
            elif value == best:
                greedy = (*greedy, a)
        return greedy

    def shrunk_value(self, rows: Sequence[int], action: int, strength: float) -> float:
        """One action's value shrunk along `rows` (coarsest first, at least one): the formula of
        `shrunk_greedy`."""
        q_view, visits_view, n_actions = self._q_view, self._visits_view, self.n_actions
        value = q_view[rows[0] * n_actions + action]
        for r in rows[1:]:
            cell = r * n_actions + action
            n = visits_view[cell]
            value = (n * q_view[cell] + strength * value) / (n + strength)
        return value

    def shrunk_value_spread(self, rows: Sequence[int], action: int, strength: float) -> tuple[float, float]:
        """`shrunk_value` and its sampling variance in units of one reward's variance (rows coarsest first):

            u = 1 / n  at the coarsest row (1 for a cell never updated),
            u = (n + strength^2 * u) / (n + strength)^2  for each next row

        (each cell the mean of its n rewards, the coarser estimate independent of it)."""
        q_view, visits_view, n_actions = self._q_view, self._visits_view, self.n_actions
        cell = rows[0] * n_actions + action
        value = q_view[cell]
        n = visits_view[cell]
        spread = 1.0 / n if n > 0 else 1.0
        for r in rows[1:]:
            cell = r * n_actions + action
            n = visits_view[cell]
            total = n + strength
            value = (n * q_view[cell] + strength * value) / total
            spread = (n + strength * strength * spread) / (total * total)
        return value, spread

    def next_max(self, next_state_key: str | None, next_mask: ActionMask) -> float:
        """max_a' Q(s', a') over the allowed actions; 0.0 for a terminal transition or a state never updated."""
        if next_state_key is None:
            return 0.0
        j = self._index.get(next_state_key)
        if j is None:
            return 0.0
        entry = self._greedy[j].get(next_mask)
        if entry is None or entry.actions is None:
            entry = self._greedy_set(j, next_mask)
        return entry.best

    def td_update_cells(
        self,
        state_key: str,
        actions: tuple[int, ...],
        rewards: list[float],
        bootstrap: float,
        alpha: float,
        visit_step: bool,
    ) -> None:
        """The TD update of several actions of one state with their own rewards and one shared
        bootstrap term `gamma * max_a' Q(s', a')` (counterfactual updates from one transition)."""
        i = self._index.get(state_key)
        if i is None:
            i = self.ensure_row(state_key)
        view, visits = self._q_view, self._visits_view
        base = i * self.n_actions
        for action, reward in zip(actions, rewards, strict=True):
            cell = base + action
            q = view[cell]
            n = visits[cell] + 1
            visits[cell] = n
            step = alpha
            if visit_step and n * alpha < 1.0:
                step = 1.0 / n
            view[cell] = q + step * (reward + bootstrap - q)
        # Many cells moved: the row's greedy sets are rescanned when next read (one scan, where keeping
        # them exact cell by cell cost a pass over every cached mask per cell).
        for entry in self._greedy[i].values():
            entry.actions = None
        self._row_visits[i] += len(actions)
        self.version += 1
        self._written[i] = self.version

    def td_update(
        self,
        state_key: str,
        action: int,
        reward: float,
        next_state_key: str | None,
        next_mask: ActionMask,
        alpha: float,
        gamma: float,
        visit_step: bool = False,
    ) -> float:
        """Apply one TD(0) update and return the TD error:

            td_target = reward + gamma * max_{a' in next_mask} Q(next_state, a')    (reward alone if terminal)
            td_error  = td_target - Q(state, action)
            Q(state, action) <- Q(state, action) + alpha * td_error

        The max is taken over the actions allowed in the next state only (masked actions never
        learn, so their zeros would bias the target); a next state never updated counts 0.
        With `visit_step`, alpha is replaced by max(alpha, 1/n), n = this cell's updates including this one.
        `next_state_key=None` marks a terminal transition. This is the hot path of
        `ModelReplica.apply`, so the lookups are written out here.
        """
        index = self._index
        i = index.get(state_key)
        if i is None:
            i = self.ensure_row(state_key)
        view = self._q_view
        cell = i * self.n_actions + action
        q = view[cell]
        td_target = reward
        if next_state_key is not None:
            next_max = 0.0  # a state never updated
            j = index.get(next_state_key)
            if j is not None:
                entry = self._greedy[j].get(next_mask)
                if entry is None or entry.actions is None:
                    entry = self._greedy_set(j, next_mask)
                next_max = entry.best
            td_target += gamma * next_max
        td_error = td_target - q
        visits = self._visits_view
        n = visits[cell] + 1
        visits[cell] = n
        self._row_visits[i] += 1
        self.version += 1
        self._written[i] = self.version
        step = alpha
        if visit_step and n * alpha < 1.0:
            step = 1.0 / n
        value = q + step * td_error
        view[cell] = value
        cache = self._greedy[i]
        if cache and value != q:
            _update_greedy(cache, action, q, value)
        return td_error


class _GreedySet:
    """The best value of a row within a mask, and the allowed actions that reach it (None: stale)."""

    __slots__ = ("actions", "best")

    def __init__(self) -> None:
        self.best = 0.0
        self.actions: tuple[int, ...] | None = None


def _update_greedy(cache: dict[ActionMask, _GreedySet], action: int, old: float, value: float) -> None:
    """Q[s, action] went from `old` to `value` (!= old): update the cached greedy sets of s."""
    for mask, entry in cache.items():
        greedy = entry.actions
        if greedy is None or action not in mask.allowed:
            continue
        best = entry.best
        if value > best:
            entry.best = value
            entry.actions = (action,)
        elif value == best:  # joins the greedy set (it was below: value != old)
            entry.actions = tuple(sorted((*greedy, action)))
        elif old == best:  # leaves the greedy set; if it was alone, the new maximum is unknown
            entry.actions = tuple(a for a in greedy if a != action) if len(greedy) > 1 else None


class UniformSource(Protocol):
    """Anything that draws a float uniformly from [0, 1), as `numpy.random.Generator.random()`."""

    def random(self) -> float: ...


class Selection(NamedTuple):
    """The chosen action, whether it was an exploration draw, and its propensity pi(action|state)."""

    action: int
    explored: bool
    propensity: float


def select_greedy(greedy: tuple[int, ...] | None, mask: ActionMask, epsilon: float, rng: UniformSource) -> Selection:
    """Epsilon-greedy over the allowed actions A, ties among the greedy ones G broken uniformly:
    with probability epsilon a uniformly random allowed action ("explored"), otherwise a greedy
    one. The recorded propensity of the chosen action is

        pi(a|s) = epsilon / |A| + (1 - epsilon) / |G|   if a in G
                = epsilon / |A|                         if a in A \\ G    (0 if a is masked)

    `greedy` holds the allowed actions with the highest Q-value, ascending (None for a state
    never updated: every allowed action). At most two draws: explore or not, then the index
    among the allowed or among the greedy actions.
    """
    members = mask.members
    n_allowed = len(members)
    if greedy is None:
        greedy = members
    n_greedy = len(greedy)
    if rng.random() < epsilon:
        action = members[int(rng.random() * n_allowed)]
        explored = True
        is_greedy = greedy is members or action in greedy
    else:
        action = greedy[int(rng.random() * n_greedy)] if n_greedy > 1 else greedy[0]
        explored = False
        is_greedy = True
    propensity = epsilon / n_allowed
    if is_greedy:
        propensity += (1.0 - epsilon) / n_greedy
    return Selection(action, explored, propensity)


@dataclass(frozen=True, slots=True)
class EpsilonSchedule:
    """epsilon(n) = max(minimum, start * decay ** n), n = outcomes applied."""

    start: float
    minimum: float
    decay: float

    def __call__(self, n_updates: int) -> float:
        return max(self.minimum, self.start * self.decay**n_updates)

    def __repr__(self) -> str:
        return f"EpsilonSchedule({self.start} * {self.decay}^n, floor {self.minimum})"


_MASK64 = (1 << 64) - 1
_MASK128 = (1 << 128) - 1
_PCG_MULTIPLIER = 0x2360ED051FC65DA44385DF649FCCF645  # PCG_DEFAULT_MULTIPLIER_128, as numpy's PCG64
_TWO_POW_MINUS_53 = 1.0 / 9007199254740992.0


class DecisionStream:
    """numpy's PCG64 (XSL-RR 128/64) and `Generator.random()`, in Python integers.

    A decision needs one or two uniforms; stepping a 128-bit LCG in Python ints costs
    ~0.2 us a draw, while re-seeding a numpy bit generator through its `state` dict costs
    ~1.5 us. The draws are bit-identical to `numpy.random.Generator(PCG64)` set to the same
    state and increment (a unit test checks this against numpy).
    """

    __slots__ = ("_inc", "_state")

    def __init__(self, state: int, inc: int) -> None:
        self._state = state
        self._inc = inc

    def random(self) -> float:
        state = (self._state * _PCG_MULTIPLIER + self._inc) & _MASK128
        self._state = state
        mixed = ((state >> 64) ^ state) & _MASK64
        rotation = state >> 122
        output = ((mixed >> rotation) | (mixed << ((64 - rotation) & 63))) & _MASK64
        return (output >> 11) * _TWO_POW_MINUS_53


class DecisionRandom:
    """Randomness per decision, seeded by (model seed, decision id), so any replay redraws it.

    The PCG64 state and increment are a BLAKE2b hash of (seed, decision id); `stream` gives
    the pure-Python PCG64 stream the selections draw from (the tests check it against numpy's).
    """

    __slots__ = ("_prefix",)

    def __init__(self, seed: int) -> None:
        self._prefix = f"{seed}:".encode()

    def _seed(self, decision_id: str) -> tuple[int, int]:
        digest = int.from_bytes(hashlib.blake2b(self._prefix + decision_id.encode(), digest_size=32).digest(), "little")
        return digest & _MASK128, (digest >> 128) | 1  # the digest's first 16 bytes, its last 16 (odd)

    def stream(self, decision_id: str) -> DecisionStream:
        return DecisionStream(*self._seed(decision_id))
