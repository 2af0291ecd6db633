"""The learning report: over a rolling window, how much of the best achievable expected reward above a
uniformly random policy the chosen actions earn, and what each hidden regime ends up trading.

    fraction = (mean E[r | chosen] - mean E[r | uniform allowed])
               / (mean E[r | best allowed] - mean E[r | uniform allowed])

0 for a uniformly random policy (in expectation), 1 for an oracle that sees the hidden state.
Computed for the meta agent, the sizing agent and both together (gaps summed).
"""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass
from typing import Any

from rl_worker.core.types import REGIMES
from rl_worker.sim.market import ScoredChoice

__all__ = ["LearningReport", "LearningSnapshot"]


@dataclass(frozen=True, slots=True)
class LearningSnapshot:
    """The report's figures at one point of a run."""

    positions: int
    fraction: float
    meta_fraction: float
    sizing_fraction: float
    mean_reward: float
    most_chosen_strategy: dict[str, str]

    def as_dict(self) -> dict[str, Any]:
        return {
            "positions": self.positions,
            "fraction": self.fraction,
            "meta_fraction": self.meta_fraction,
            "sizing_fraction": self.sizing_fraction,
            "mean_reward": self.mean_reward,
            "most_chosen_strategy": dict(self.most_chosen_strategy),
        }


def _fraction(chosen: float, best: float, uniform: float) -> float:
    gap = best - uniform
    return (chosen - uniform) / gap if gap > 0.0 else 0.0


class LearningReport:
    """A rolling window (default 500 positions) of scored choices, plus a cumulative regime confusion."""

    def __init__(self, window: int = 500) -> None:
        if window < 1:
            raise ValueError("window must be at least 1")
        self.window = window
        self.positions = 0
        self._scored: deque[ScoredChoice] = deque(maxlen=window)
        self._rewards: deque[float] = deque(maxlen=window)
        # hidden regime -> detected regime -> count, since the start
        self.confusion: dict[str, Counter[str]] = {r: Counter() for r in REGIMES}

    def record(self, scored: ScoredChoice, reward: float | None = None) -> None:
        """Add one position; `reward` is the realised reward (meta + size), else the expected one."""
        self.positions += 1
        self._scored.append(scored)
        self._rewards.append(scored.meta_chosen + scored.size_chosen if reward is None else reward)
        self.confusion[scored.hidden_regime][scored.detected_regime] += 1

    def _sums(self) -> tuple[float, float, float, float, float, float]:
        n = len(self._scored) or 1
        s = self._scored
        return (
            sum(x.meta_chosen for x in s) / n,
            sum(x.meta_best for x in s) / n,
            sum(x.meta_uniform for x in s) / n,
            sum(x.size_chosen for x in s) / n,
            sum(x.size_best for x in s) / n,
            sum(x.size_uniform for x in s) / n,
        )

    @property
    def meta_fraction(self) -> float:
        chosen, best, uniform, *_ = self._sums()
        return _fraction(chosen, best, uniform)

    @property
    def sizing_fraction(self) -> float:
        *_, chosen, best, uniform = self._sums()
        return _fraction(chosen, best, uniform)

    @property
    def fraction(self) -> float:
        """Both agents together: the summed gaps to uniform over the summed achievable gaps."""
        m_chosen, m_best, m_uniform, s_chosen, s_best, s_uniform = self._sums()
        return _fraction(m_chosen + s_chosen, m_best + s_best, m_uniform + s_uniform)

    @property
    def mean_reward(self) -> float:
        return sum(self._rewards) / len(self._rewards) if self._rewards else 0.0

    def strategy_counts(self) -> dict[str, Counter[str]]:
        """Per hidden regime, how often each strategy was chosen within the window."""
        counts: dict[str, Counter[str]] = {r: Counter() for r in REGIMES}
        for x in self._scored:
            counts[x.hidden_regime][x.strategy] += 1
        return counts

    def most_chosen_strategy(self) -> dict[str, str]:
        """Per hidden regime seen in the window, the strategy chosen most often (ties: first in name order)."""
        return {
            regime: min(c.items(), key=lambda kv: (-kv[1], kv[0]))[0]
            for regime, c in self.strategy_counts().items()
            if c
        }

    def detection_accuracy(self) -> float:
        """Share of positions, since the start, whose regime the core detected right."""
        total = sum(sum(c.values()) for c in self.confusion.values())
        right = sum(c[r] for r, c in self.confusion.items())
        return right / total if total else 0.0

    def snapshot(self) -> LearningSnapshot:
        return LearningSnapshot(
            positions=self.positions,
            fraction=self.fraction,
            meta_fraction=self.meta_fraction,
            sizing_fraction=self.sizing_fraction,
            mean_reward=self.mean_reward,
            most_chosen_strategy=self.most_chosen_strategy(),
        )
