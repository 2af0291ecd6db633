"""An input partition's commit starts at its committed offset (internals._commit_only_from_the_committed_offset).

Faust's own rule is run on a stand-in consumer holding exactly the state Faust keeps per partition
(`_acked`, `_acked_index`, `_gap`, `_committed_offset`): the cases below are the interleavings seen
after a rebalance, where Faust committed over the record at the committed offset.
"""

from __future__ import annotations

from collections import defaultdict
from types import SimpleNamespace
from typing import Any

import pytest
from faust.transport import consumer as faust_consumer
from faust.types import TP
from intervaltree import IntervalTree

from rl_worker.stream import internals

INPUT = TP("t.signals", 6)
OTHER = TP("app-positions-changelog", 6)


def consumer(acked: dict[TP, list[int]], faust_committed: dict[TP, int], broker_committed: int | None) -> Any:
    def rl_committed_offset(topic: str, partition: int) -> int | None:
        return broker_committed if topic == INPUT.topic else None

    app = SimpleNamespace(rl_committed_offset=rl_committed_offset, holes=[])
    app.rl_on_hole = lambda tp, offset: app.holes.append((tp, offset))
    return SimpleNamespace(
        app=app,
        _acked=defaultdict(list, {tp: list(v) for tp, v in acked.items()}),
        _acked_index=defaultdict(set, {tp: set(v) for tp, v in acked.items()}),
        _gap=defaultdict(IntervalTree),
        _committed_offset=defaultdict(lambda: None, faust_committed),
    )


@pytest.fixture(autouse=True)
def patched() -> None:
    internals.refetch_gaps_of({INPUT.topic})
    internals.apply_patches(20)


def new_offset(state: Any, tp: TP) -> int | None:
    return faust_consumer.Consumer._new_offset(state, tp)  # type: ignore[no-any-return]


def test_faust_alone_commits_over_the_record_at_the_committed_offset() -> None:
    """The flaw being guarded: record 10 (the committed offset, the next to read) never acked,
    11 and 12 acked -> Faust's own rule commits 13."""
    faust_rule = faust_consumer.Consumer._rl_worker_faust_new_offset  # type: ignore[attr-defined]
    state = consumer({INPUT: [11, 12]}, {INPUT: 10}, 10)
    assert faust_rule(state, INPUT) == 13


def test_a_hole_at_the_committed_offset_is_not_committed_over() -> None:
    state = consumer({INPUT: [11, 12]}, {INPUT: 10}, 10)
    assert new_offset(state, INPUT) is None
    assert state.app.holes == [(INPUT, 11)]  # the app seeks the partition back at once
    assert state._acked[INPUT] == [11, 12]  # kept: committed once 10 comes again
    state._acked[INPUT].append(10)
    state._acked_index[INPUT].add(10)
    assert new_offset(state, INPUT) == 13


def test_faust_without_a_committed_offset_uses_the_brokers() -> None:
    """Faust's seek to the committed offsets failed inside a second rebalance: it knows none and
    would commit any run; the offset read from the broker at the assignment still holds."""
    state = consumer({INPUT: [40, 41]}, {}, 37)
    assert new_offset(state, INPUT) is None
    state = consumer({INPUT: [37, 38, 39, 41]}, {}, 37)
    assert new_offset(state, INPUT) == 40


def test_no_commit_while_no_committed_offset_is_known() -> None:
    state = consumer({INPUT: [0, 1]}, {}, None)
    assert new_offset(state, INPUT) is None


def test_the_higher_of_the_two_views_is_the_start() -> None:
    # Faust's view ahead of the app's (a commit the broker has not reported back yet): runs start there
    state = consumer({INPUT: [15, 16]}, {INPUT: 15}, 10)
    assert new_offset(state, INPUT) == 17


def test_a_run_below_the_committed_offset_does_not_move_it_back() -> None:
    state = consumer({INPUT: [3, 4]}, {}, 10)
    assert new_offset(state, INPUT) is None


def test_other_topics_keep_faust_rule() -> None:
    state = consumer({OTHER: [11, 12]}, {OTHER: 10}, None)
    assert new_offset(state, OTHER) == 13


def test_an_offset_gap_in_an_input_topic_is_not_acknowledged_and_is_reported() -> None:
    import asyncio

    state = consumer({}, {INPUT: 10}, 10)
    asyncio.run(faust_consumer.Consumer._add_gap(state, INPUT, 11, 15))  # type: ignore[arg-type]
    assert not state._gap[INPUT] and state.app.holes == [(INPUT, 15)]
