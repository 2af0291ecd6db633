"""Tabular Q-learning: the Q-table, the TD update, epsilon-greedy selection and its propensities.

    Q(s, a) <- Q(s, a) + alpha * (r + gamma * max_a' Q(s', a') - Q(s, a))

with max_a' taken over the actions allowed in s' (masked actions never learn, so their
zeros would bias the target), and no bootstrap term on a terminal transition.

Selection: with probability epsilon a uniformly random allowed action ("explored"),
otherwise a greedy one, ties among the greedy actions broken uniformly at random. So the
propensity of action a in state s is

    pi(a|s) = epsilon / |A| + (1 - epsilon) / |G|   if a in G (greedy set within the mask A)
            = epsilon / |A|                         if a in A \\ G
            = 0                                     if a is masked.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from rl_worker.core.types import FloatArray

__all__ = [
    "DecisionRandom",
    "EpsilonSchedule",
    "QTable",
    "Selection",
    "compute_propensities",
    "select_action",
    "td_update",
]

IndexArray = npt.NDArray[np.intp]


class QTable:
    """Q-values and visit counts of one agent: one numpy row per state key seen in an update."""

    __slots__ = ("_index", "keys", "n_actions", "q_values", "visits")

    def __init__(self, n_actions: int, capacity: int = 64) -> None:
        self.n_actions = n_actions
        self.keys: list[str] = []
        self._index: dict[str, int] = {}
        self.q_values: FloatArray = np.zeros((capacity, n_actions), dtype=np.float64)
        self.visits: npt.NDArray[np.int64] = np.zeros((capacity, n_actions), dtype=np.int64)

    def __len__(self) -> int:
        return len(self.keys)

    def row_index(self, state_key: str) -> int | None:
        return self._index.get(state_key)

    def row(self, state_key: str) -> FloatArray | None:
        """The Q-values of a state (a view), or None for a state never updated (all zeros)."""
        i = self._index.get(state_key)
        return None if i is None else self.q_values[i]

    def ensure_row(self, state_key: str) -> int:
        i = self._index.get(state_key)
        if i is not None:
            return i
        i = len(self.keys)
        if i == self.q_values.shape[0]:
            self.q_values = np.concatenate([self.q_values, np.zeros_like(self.q_values)])
            self.visits = np.concatenate([self.visits, np.zeros_like(self.visits)])
        self.keys.append(state_key)
        self._index[state_key] = i
        return i

    def max_value(self, state_key: str, mask: IndexArray) -> float:
        """max over the allowed actions of Q(state, .), 0.0 for a state never updated."""
        i = self._index.get(state_key)
        if i is None:
            return 0.0
        return float(self.q_values[i, mask].max())

    def used(self) -> tuple[FloatArray, npt.NDArray[np.int64]]:
        """The filled rows of the value and visit arrays (copies), in key order."""
        n = len(self.keys)
        return self.q_values[:n].copy(), self.visits[:n].copy()

    @classmethod
    def from_arrays(
        cls, keys: list[str], q_values: FloatArray, visits: npt.NDArray[np.int64]
    ) -> QTable:
        n, n_actions = q_values.shape
        table = cls(n_actions, capacity=max(64, n))
        table.keys = list(keys)
        table._index = {k: i for i, k in enumerate(table.keys)}
        table.q_values[:n] = q_values
        table.visits[:n] = visits
        return table


def td_update(
    table: QTable,
    state_key: str,
    action: int,
    reward: float,
    next_state_key: str | None,
    next_mask: IndexArray,
    alpha: float,
    gamma: float,
) -> float:
    """Apply one TD(0) update; `next_state_key=None` marks a terminal transition. Returns the TD error."""
    i = table.ensure_row(state_key)
    q = float(table.q_values[i, action])
    td_target = reward
    if next_state_key is not None:
        td_target += gamma * table.max_value(next_state_key, next_mask)
    td_error = td_target - q
    table.q_values[i, action] = q + alpha * td_error
    table.visits[i, action] += 1
    return td_error


@dataclass(frozen=True, slots=True)
class Selection:
    action: int
    explored: bool
    propensity: float


def select_action(
    q_row: FloatArray | None, mask: IndexArray, epsilon: float, rng: np.random.Generator
) -> Selection:
    """Epsilon-greedy over the allowed actions `mask`, random tie-break; see the module docstring."""
    n_allowed = len(mask)
    if q_row is None:
        greedy = mask
        best = 0.0
    else:
        allowed_values = q_row[mask]
        best = allowed_values.max()
        greedy = mask[allowed_values == best]
    n_greedy = len(greedy)
    if rng.random() < epsilon:
        action = int(mask[int(rng.random() * n_allowed)])
        explored = True
        is_greedy = q_row is None or q_row[action] == best
    else:
        action = int(greedy[int(rng.random() * n_greedy)]) if n_greedy > 1 else int(greedy[0])
        explored = False
        is_greedy = True
    propensity = epsilon / n_allowed
    if is_greedy:
        propensity += (1.0 - epsilon) / n_greedy
    return Selection(action, explored, propensity)


def compute_propensities(
    q_row: FloatArray | None, mask: IndexArray, epsilon: float, n_actions: int
) -> FloatArray:
    """pi(.|s) for every action of the space (zeros where masked)."""
    probs = np.zeros(n_actions, dtype=np.float64)
    probs[mask] = epsilon / len(mask)
    if q_row is None:
        greedy = mask
    else:
        allowed_values = q_row[mask]
        greedy = mask[allowed_values == allowed_values.max()]
    probs[greedy] += (1.0 - epsilon) / len(greedy)
    return probs


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


class DecisionRandom:
    """One generator per decision, seeded by (model seed, decision id), so any replay redraws it.

    Building a fresh `numpy.random.Generator` costs ~10 us; resetting the state of one
    PCG64 to a BLAKE2b hash of (seed, decision id) costs ~2 us and is just as reproducible.
    The returned generator is reused: draw from it before asking for the next one.
    """

    __slots__ = ("_bit_generator", "_generator", "_prefix", "_state")

    def __init__(self, seed: int) -> None:
        self._prefix = f"{seed}:".encode()
        self._bit_generator = np.random.PCG64(seed)
        self._generator = np.random.Generator(self._bit_generator)
        self._state = self._bit_generator.state

    def generator(self, decision_id: str) -> np.random.Generator:
        digest = hashlib.blake2b(self._prefix + decision_id.encode(), digest_size=32).digest()
        inner = self._state["state"]
        inner["state"] = int.from_bytes(digest[:16], "little")
        inner["inc"] = int.from_bytes(digest[16:], "little") | 1
        self._state["has_uint32"] = 0
        self._state["uinteger"] = 0
        self._bit_generator.state = self._state
        return self._generator
