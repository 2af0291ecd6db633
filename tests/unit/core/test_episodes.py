"""Episode tracker and discounted returns."""

from __future__ import annotations

import pytest

from rl_worker.core.episodes import EpisodeTracker, discounted_returns


def test_discounted_returns_by_hand() -> None:
    # R_2 = 3; R_1 = 2 + 0.5 * 3 = 3.5; R_0 = 1 + 0.5 * 3.5 = 2.75
    assert discounted_returns([1.0, 2.0, 3.0], 0.5) == [2.75, 3.5, 3.0]
    assert discounted_returns([1.0, 2.0, 3.0], 1.0) == [6.0, 5.0, 3.0]
    assert discounted_returns([1.0, 2.0, 3.0], 0.0) == [1.0, 2.0, 3.0]
    assert discounted_returns([], 0.9) == []


def test_start_step_end() -> None:
    tracker = EpisodeTracker(gamma=0.5)
    assert not tracker.active
    tracker.step(1.0, at_ms=1_000)  # a step starts an episode
    assert tracker.active
    tracker.step(2.0, at_ms=2_000)
    tracker.step(3.0, at_ms=3_000)
    summary = tracker.end(at_ms=4_500)
    assert (summary.episode, summary.steps) == (0, 3)
    assert summary.total_reward == 6.0
    assert summary.discounted_return == 2.75
    assert summary.duration_ms == 3_500
    assert summary.as_dict()["duration_ms"] == 3_500
    assert not tracker.active
    assert tracker.episode == 1
    tracker.start(at_ms=5_000)
    empty = tracker.end(at_ms=5_000)
    assert (empty.episode, empty.steps, empty.discounted_return) == (1, 0, 0.0)
    assert [s.episode for s in tracker.summaries] == [0, 1]


def test_misuse_is_an_error() -> None:
    tracker = EpisodeTracker(gamma=0.9)
    with pytest.raises(RuntimeError, match="no episode"):
        tracker.end(at_ms=0)
    tracker.start(at_ms=0)
    with pytest.raises(RuntimeError, match="already running"):
        tracker.start(at_ms=1)


def test_history_keeps_the_newest_summaries() -> None:
    tracker = EpisodeTracker(gamma=0.9, history=2)
    for episode in range(4):
        tracker.step(float(episode), at_ms=episode)
        tracker.end(at_ms=episode)
    assert [s.episode for s in tracker.summaries] == [2, 3]


def test_dict_round_trip() -> None:
    tracker = EpisodeTracker(gamma=0.9)
    tracker.step(0.1, at_ms=10)
    tracker.end(at_ms=20)
    tracker.step(-0.3, at_ms=30)
    restored = EpisodeTracker.from_dict(tracker.to_dict(), gamma=0.9)
    assert restored.to_dict() == tracker.to_dict()
    assert restored.active
    restored.step(0.2, at_ms=40)
    assert restored.end(at_ms=50).total_reward == pytest.approx(-0.1)
