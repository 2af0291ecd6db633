"""Stalled partitions: committed offsets that do not move while records wait."""

from __future__ import annotations

from rl_worker.stream.stalls import StallWatch

TP0, TP1 = ("in.signals", 0), ("in.signals", 1)


def test_a_partition_with_waiting_records_and_a_stuck_commit_is_a_stall() -> None:
    watch = StallWatch(timeout_s=10)
    assert watch.check(0, {TP0: 5, TP1: 7}, {TP0: 9, TP1: 7}, rebalancing=False) == []
    assert watch.check(9, {TP0: 5, TP1: 7}, {TP0: 9, TP1: 7}, rebalancing=False) == []
    stalls = watch.check(10, {TP0: 5, TP1: 7}, {TP0: 9, TP1: 7}, rebalancing=False)
    assert [s.what for s in stalls] == ["in.signals[0]"]
    assert "committed offset 5" in stalls[0].describe()
    assert watch.stalled_since == 10
    # progress clears it
    assert watch.check(11, {TP0: 6, TP1: 7}, {TP0: 9, TP1: 7}, rebalancing=False) == []
    assert watch.stalled_since is None


def test_an_idle_partition_is_not_stalled_and_its_clock_starts_when_records_arrive() -> None:
    watch = StallWatch(timeout_s=10)
    watch.check(0, {TP0: 5}, {TP0: 5}, rebalancing=False)
    assert watch.check(30, {TP0: 5}, {TP0: 5}, rebalancing=False) == []
    assert watch.check(31, {TP0: 5}, {TP0: 8}, rebalancing=False) == []
    assert watch.check(39, {TP0: 5}, {TP0: 8}, rebalancing=False) == []  # counted from the last idle check
    assert len(watch.check(40, {TP0: 5}, {TP0: 8}, rebalancing=False)) == 1


def test_a_partition_never_made_ready_and_an_endless_rebalance_are_stalls() -> None:
    watch = StallWatch(timeout_s=10)
    watch.check(0, {TP0: None}, {}, rebalancing=True)
    stalls = watch.check(12, {TP0: None}, {}, rebalancing=True)
    assert sorted(s.what for s in stalls) == ["in.signals[0]", "rebalance"]
    assert watch.check(13, {}, {}, rebalancing=False) == []


def test_a_table_recovery_is_a_stall_only_when_it_lasts_much_longer() -> None:
    watch = StallWatch(timeout_s=10)
    watch.check(0, {}, {}, rebalancing=False, recovering=True)
    assert watch.check(25, {}, {}, rebalancing=False, recovering=True) == []
    assert [s.what for s in watch.check(30, {}, {}, rebalancing=False, recovering=True)] == ["table recovery"]


def test_records_dropped_on_the_way_to_the_agent() -> None:
    from rl_worker.stream.stalls import records_dropped_on_the_way

    # the soak's diagnostics: fetched up to 86, Faust's read offset 43, the agent took up to 47
    assert records_dropped_on_the_way(87, 43, 47)
    assert not records_dropped_on_the_way(48, 47, 47)  # all taken: idle
    assert not records_dropped_on_the_way(87, 60, 47)  # delivered records still in the stream
    assert not records_dropped_on_the_way(87, None, 47)  # nothing known
    assert not records_dropped_on_the_way(None, 43, 47)
    assert not records_dropped_on_the_way(87, 43, None)  # nothing taken yet (the start check's case)
