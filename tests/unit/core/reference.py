"""Slow reference forms of the core's fast paths, kept with the tests as oracles.

Each is the textbook form of something the package computes faster: the tests check that the
package agrees with it. Nothing in `rl_worker` imports this module.
"""

from __future__ import annotations

from bisect import bisect_right

import numpy as np
import numpy.typing as npt

from rl_worker.core.actions import META_ACTIONS, SIZING_ACTIONS, ActionMask
from rl_worker.core.config import CoreConfig, MetaBins, SizingBins
from rl_worker.core.exceptions import NoAllowedActionError
from rl_worker.core.qlearning import DecisionRandom, QTable, Selection, UniformSource, select_greedy
from rl_worker.core.state import MetaState, SizingState
from rl_worker.core.types import FloatArray

IndexArray = npt.NDArray[np.intp]


def as_mask(indices: IndexArray | list[int] | ActionMask) -> ActionMask:
    """An index array as the package's ActionMask (a new object each call)."""
    return indices if isinstance(indices, ActionMask) else ActionMask.of(np.asarray(indices, dtype=np.intp))


def meta_state_key(state: MetaState, bins: MetaBins) -> str:
    """`REGIME|v<i>p<i>c<i>w<i>h<i>`: the regime and the bin index of each continuous feature."""
    return (
        f"{state.regime}|v{bisect_right(bins.volatility, state.volatility)}"
        f"p{bisect_right(bins.market_pressure, state.market_pressure)}"
        f"c{bisect_right(bins.confidence, state.confidence)}"
        f"w{bisect_right(bins.previous_winrate, state.previous_winrate)}"
        f"h{bisect_right(bins.account_health, state.account_health)}"
    )


def sizing_state_key(state: SizingState, bins: SizingBins) -> str:
    """`c<i>e<i>w<i>v<i>s<i>`: the bin index of each sizing feature."""
    return (
        f"c{bisect_right(bins.signal_confidence, state.signal_confidence)}"
        f"e{bisect_right(bins.portfolio_exposure, state.portfolio_exposure)}"
        f"w{bisect_right(bins.recent_winrate, state.recent_winrate)}"
        f"v{bisect_right(bins.volatility, state.volatility)}"
        f"s{bisect_right(bins.equity_curve_slope, state.equity_curve_slope)}"
    )


def meta_mask(regime: str, config: CoreConfig) -> IndexArray:
    """Indices of the meta actions whose strategy the regime table allows."""
    allowed = config.regime_strategies[regime]
    return np.array([i for i, a in enumerate(META_ACTIONS) if a.strategy in allowed], dtype=np.intp)


def sizing_mask(max_size_multiplier: float, max_leverage: float) -> IndexArray:
    """Indices of the sizing actions within the given (already effective) limits."""
    mask = np.array(
        [
            i
            for i, a in enumerate(SIZING_ACTIONS)
            if a.size_multiplier <= max_size_multiplier and a.leverage <= max_leverage
        ],
        dtype=np.intp,
    )
    if mask.size == 0:
        raise NoAllowedActionError(
            f"risk limits size<={max_size_multiplier} leverage<={max_leverage} admit no sizing action"
        )
    return mask


def td_update(
    table: QTable,
    state_key: str,
    action: int,
    reward: float,
    next_state_key: str | None,
    next_mask: IndexArray | ActionMask,
    alpha: float,
    gamma: float,
) -> float:
    """`QTable.td_update` with the next state's mask as an index array."""
    return table.td_update(state_key, action, reward, next_state_key, as_mask(next_mask), alpha, gamma)


def select_action(
    q_row: FloatArray | None, mask: IndexArray | ActionMask, epsilon: float, rng: UniformSource
) -> Selection:
    """`select_greedy` for a numpy row of Q-values (None for a state never updated): the greedy set by a scan."""
    action_mask = as_mask(mask)
    greedy = None
    if q_row is not None:
        values = q_row[action_mask.indices]
        greedy = tuple(action_mask.indices[values == values.max()].tolist())
    return select_greedy(greedy, action_mask, epsilon, rng)


def compute_propensities(
    q_row: FloatArray | None, mask: IndexArray | ActionMask, epsilon: float, n_actions: int
) -> FloatArray:
    """pi(.|s) for every action of the space (zeros where masked), by the formula."""
    indices = as_mask(mask).indices
    probs = np.zeros(n_actions, dtype=np.float64)
    probs[indices] = epsilon / len(indices)
    if q_row is None:
        greedy = indices
    else:
        allowed_values = q_row[indices]
        greedy = indices[allowed_values == allowed_values.max()]
    probs[greedy] += (1.0 - epsilon) / len(greedy)
    return probs


def numpy_generator(randoms: DecisionRandom, decision_id: str) -> np.random.Generator:
    """numpy's own PCG64 generator in the state `DecisionRandom.stream(decision_id)` starts from."""
    state, inc = randoms._seed(decision_id)
    bit_generator = np.random.PCG64(0)
    full = bit_generator.state
    full["state"] = {"state": state, "inc": inc}
    full["has_uint32"] = 0
    full["uinteger"] = 0
    bit_generator.state = full
    return np.random.Generator(bit_generator)
