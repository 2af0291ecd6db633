"""Rebuild a replica from the outcomes log, the way every worker does, for bit-for-bit comparisons."""

from __future__ import annotations

from rl_worker.core.snapshot import encode_replica
from rl_worker.settings import Settings
from rl_worker.stream.checkpoints import MemoryCheckpointStore
from rl_worker.stream.runtime import WorkerRuntime
from tests.integration.harness import read_topic, run


def replay_outcomes(bootstrap: str, topic: str, expect: int | None) -> tuple[bytes, int]:
    """(snapshot bytes of a fresh replica fed the whole log from offset 0, records in the log).

    `expect=None` reads until the log has been quiet for two seconds."""
    records = run(read_topic(bootstrap, topic, expect=expect, timeout_s=30))
    runtime = WorkerRuntime(Settings(), MemoryCheckpointStore())
    for record in sorted(records, key=lambda r: r.offset):
        runtime.apply_record(record.offset, record.value)
    return encode_replica(runtime.replica), len(records)
