"""Episode tracker: start / step / end, discounted returns and episode summaries."""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["EpisodeSummary", "EpisodeTracker", "discounted_returns"]


def discounted_returns(rewards: Sequence[float], gamma: float) -> list[float]:
    """R_t = sum_k gamma^k r_{t+k} for every step t of an episode (computed backwards)."""
    returns = [0.0] * len(rewards)
    running = 0.0
    for t in range(len(rewards) - 1, -1, -1):
        running = rewards[t] + gamma * running
        returns[t] = running
    return returns


@dataclass(frozen=True, slots=True)
class EpisodeSummary:
    episode: int
    steps: int
    total_reward: float
    discounted_return: float
    started_at_ms: int
    ended_at_ms: int

    @property
    def duration_ms(self) -> int:
        return self.ended_at_ms - self.started_at_ms

    def as_dict(self) -> dict[str, Any]:
        return asdict(self) | {"duration_ms": self.duration_ms}


class EpisodeTracker:
    """Collects the rewards of the running episode and keeps summaries of the last `history` ones."""

    __slots__ = ("_gamma", "episode", "rewards", "started_at_ms", "summaries")

    def __init__(self, gamma: float, history: int = 100) -> None:
        self._gamma = gamma
        self.episode = 0
        self.rewards: list[float] = []
        self.started_at_ms: int | None = None
        self.summaries: deque[EpisodeSummary] = deque(maxlen=history)

    @property
    def active(self) -> bool:
        return self.started_at_ms is not None

    def start(self, at_ms: int) -> None:
        if self.active:
            raise RuntimeError(f"episode {self.episode} is already running")
        self.started_at_ms = at_ms
        self.rewards = []

    def step(self, reward: float, at_ms: int) -> None:
        if self.started_at_ms is None:
            self.start(at_ms)
        self.rewards.append(reward)

    def end(self, at_ms: int) -> EpisodeSummary:
        if self.started_at_ms is None:
            raise RuntimeError("no episode is running")
        summary = EpisodeSummary(
            episode=self.episode,
            steps=len(self.rewards),
            total_reward=sum(self.rewards),
            discounted_return=discounted_returns(self.rewards, self._gamma)[0] if self.rewards else 0.0,
            started_at_ms=self.started_at_ms,
            ended_at_ms=at_ms,
        )
        self.summaries.append(summary)
        self.episode += 1
        self.started_at_ms = None
        self.rewards = []
        return summary

    def to_dict(self) -> dict[str, Any]:
        return {
            "episode": self.episode,
            "rewards": list(self.rewards),
            "started_at_ms": self.started_at_ms,
            "summaries": [asdict(s) for s in self.summaries],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], gamma: float, history: int = 100) -> EpisodeTracker:
        tracker = cls(gamma, history)
        tracker.episode = int(data["episode"])
        tracker.rewards = [float(r) for r in data["rewards"]]
        tracker.started_at_ms = data["started_at_ms"]
        tracker.summaries.extend(EpisodeSummary(**s) for s in data["summaries"])
        return tracker
