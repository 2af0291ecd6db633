"""The positions table of the running worker: its rows, their expiry index, stream time, the changelog.

The Faust table (changelog-backed, keyed by position id) holds each row as its changelog bytes
(`rl_worker.positions.encode_row`), not as an object: a row as bytes is one object the cyclic GC
never scans, where a dict row is a dozen tracked containers; with tens of thousands of positions
held for their retention, full GC passes over dict rows stall the event loop for tens of
milliseconds. Rows restored by Faust's changelog recovery arrive as dicts and are read as they are.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from rl_worker.positions import PositionRow, decode_row, encode_key, encode_row
from rl_worker.stream.internals import memory_rows
from rl_worker.stream.metrics import WorkerMetrics

__all__ = ["PositionsTable"]

log = logging.getLogger(__name__)

Send = Callable[[str, bytes, bytes, int], Awaitable[Any]]


def _expiry_of(row: PositionRow) -> tuple[int, bool, int]:
    return row.updated_ms, row.outcome is not None, row.partition


class PositionsTable:
    """Owns the rows of one worker's positions, the expiry index and the stream time per partition.

    `rows` is the memory store's own dict (see `internals.memory_rows`). `expiry` keeps what the
    expiry scan needs per row (updated_ms, completed, partition) so it never parses rows.
    Stream time is the newest input record timestamp seen per partition: expiry compares rows
    with it, not with the wall clock, so a worker back from a long outage does not expire the
    positions whose closes are still waiting in its backlog.
    """

    def __init__(self, table: Any, metrics: WorkerMetrics) -> None:
        self.table = table
        self.metrics = metrics
        self.rows: dict[str, Any] = memory_rows(table)
        self.expiry: dict[str, tuple[int, bool, int]] = {}
        self.stream_time: dict[int, int] = {}

    @property
    def changelog_topic(self) -> str:
        return str(self.table.changelog_topic.get_topic_name())

    def observe(self, partition: int, event_ms: int) -> None:
        """Advance the partition's stream time to an input record's timestamp."""
        if event_ms > self.stream_time.get(partition, 0):
            self.stream_time[partition] = event_ms

    def row_of(self, position_id: str) -> PositionRow | None:
        value = self.rows.get(position_id)
        return None if value is None else decode_row(value)

    def put(self, position_id: str, row: PositionRow) -> tuple[bytes, bytes]:
        """Store a row; returns the changelog record (key, value) to send on the row's partition.

        What `table[position_id] = row` does, minus the sensors: the key as Faust writes it,
        the row as JSON bytes."""
        value = encode_row(row)
        self.rows[position_id] = value
        self.expiry[position_id] = _expiry_of(row)
        return encode_key(position_id), value

    async def expire(self, owned: set[int], open_ttl_ms: float, done_ttl_ms: float) -> None:
        """Drop rows whose partition's stream time passed their TTL (a tombstone on the changelog),
        and rows of partitions this worker no longer owns (from memory only: their new owner has them)."""
        rows, expiry = self.rows, self.expiry
        for i, key in enumerate(list(rows)):
            if i and i % 1000 == 0:
                # A big table is scanned in slices with events processed in between: one pass
                # over 25,000 rows in one go held the event loop ~30 ms (a p99 latency spike).
                await asyncio.sleep(0.001)
            value = rows.get(key)
            if value is None:
                continue
            if isinstance(value, dict):  # restored by changelog recovery: no index entry to trust
                updated_ms, done, partition = _expiry_of(decode_row(value))
            else:
                updated_ms, done, partition = expiry.get(key) or _expiry_of(decode_row(value))
            if partition not in owned:
                # left over from before a rebalance: the partition's new owner has the row
                del rows[key]
                expiry.pop(key, None)
                continue
            now = self.stream_time.get(partition)
            if now is None or now - updated_ms < (done_ttl_ms if done else open_ttl_ms):
                continue
            del rows[key]
            expiry.pop(key, None)
            self.table.send_changelog(partition, key, None)
            self.metrics.positions_expired.labels("completed" if done else "incomplete").inc()
            if not done:
                log.warning("position %s expired incomplete (has %s)", key, sorted(decode_row(value).inputs()))
        if len(expiry) > len(rows):  # rows Faust dropped itself (partitions moved away)
            for key in [k for k in expiry if k not in rows]:
                del expiry[key]
