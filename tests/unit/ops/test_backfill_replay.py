"""The backfill's replay without a broker: the merge order, and learning from the join's own
Outcome gives the same replica and log as validating each log record back (the worker's path)."""

from __future__ import annotations

import hashlib

import numpy as np

from rl_worker.contract import decode_event
from rl_worker.core.config import CoreConfig
from rl_worker.core.outcome import Outcome
from rl_worker.core.replica import ModelReplica
from rl_worker.core.snapshot import encode_replica
from rl_worker.ops.backfill import (
    BackfillCounts,
    InputRecord,
    LoggedActions,
    LoggedPolicyReplica,
    replay_order,
    replay_positions,
)
from rl_worker.positions import PositionJoiner
from rl_worker.sim import events as f

EXPECTED = {"s": "SIGNAL_GENERATED", "e": "TRADE_EXECUTED", "c": "POSITION_CLOSED"}


def record(topic: str, partition: int, offset: int, ts: int) -> InputRecord:
    return InputRecord(topic, partition, offset, ts, None, None)


def test_the_merge_is_a_sort_when_timestamps_grow_and_keeps_each_partition_in_offset_order() -> None:
    rng = np.random.default_rng(3)
    records = []
    for topic in EXPECTED:
        for partition in range(3):
            ts = np.cumsum(rng.integers(0, 3, 40))  # ties across topics and partitions
            records += [record(topic, partition, offset, int(t)) for offset, t in enumerate(ts)]
    rng.shuffle(records)  # type: ignore[arg-type]
    rank = {"s": 0, "e": 1, "c": 2}
    assert replay_order(records, EXPECTED) == sorted(
        records, key=lambda r: (r.timestamp_ms, rank[r.topic], r.partition, r.offset)
    )
    # a partition whose timestamps go back stays in offset order (the live worker reads it so)
    late = [record("s", 0, 0, 10), record("s", 0, 1, 5), record("e", 0, 0, 7)]
    assert [(r.topic, r.offset) for r in replay_order(late, EXPECTED)] == [("e", 0), ("s", 0), ("s", 1)]


def history(n: int) -> tuple[list[InputRecord], list[bytes]]:
    """n positions traded by a worker (its decisions published), three events each."""
    rng = np.random.default_rng(7)
    joiner = PositionJoiner(ModelReplica(CoreConfig()), "rl", lambda: 0)
    records: list[InputRecord] = []
    decisions: list[bytes] = []
    for i in range(n):
        pid = f"p{i:04d}"
        row = None
        for topic, event in (("s", f.signal(pid, rng)), ("e", f.execution(pid, rng)), ("c", f.close(pid, rng))):
            value = f.encode(event)
            records.append(InputRecord(topic, i % 2, len(records), 1000 + len(records), pid.encode(), value))
            result = joiner.handle(row, decode_event(value), (topic, i % 2, len(records)))
            row = result.row
            decisions += [e.value for e in result.emits if e.kind == "decision"]
            for emit in result.emits:
                if emit.kind == "outcome":
                    joiner.replica.apply(Outcome.model_validate_json(emit.value))
    return records, decisions


def test_learning_from_the_built_outcome_equals_learning_from_the_log_record() -> None:
    records, decisions = history(60)

    def backfill(from_json: bool) -> tuple[str, str, BackfillCounts, LoggedActions]:
        logged = LoggedActions("decisions")
        for value in decisions:
            assert logged.add_decision_record(value)
        replica = LoggedPolicyReplica(CoreConfig(), logged)
        counts = BackfillCounts()
        log = []
        for _, value in replay_positions(replay_order(records, EXPECTED), replica, EXPECTED, "rl", counts):
            log.append(value)
        if from_json:  # the worker's path: a replica reading the log validates each record back
            replica = ModelReplica(CoreConfig())  # type: ignore[assignment]
            for value in log:
                replica.apply(Outcome.model_validate_json(value))
        return (hashlib.sha256(encode_replica(replica)).hexdigest(), hashlib.sha256(b"\n".join(log)).hexdigest(),
                counts, logged)

    built, from_log = backfill(False), backfill(True)
    assert built[2].applied == 60 and built[2].skipped == 0 and built[2].incomplete == 0
    assert built[1] == from_log[1]
    # the same tables, trackers and update count (the snapshot also names the log offset: both 59)
    assert built[0] == from_log[0]
    assert not built[3].decisions  # each position's decisions were let go once it was learned
