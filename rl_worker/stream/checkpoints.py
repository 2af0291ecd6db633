"""Checkpoint stores: replica snapshots by `rl.outcomes` offset, a forward-only latest pointer, last K kept.

Layout under the namespace `rl_worker:<app_id>` (Redis backend):

    <ns>:ckpt:<offset>   the snapshot bytes (rl_worker.core.snapshot, JSON, never pickle)
    <ns>:ckpt:index      sorted set of the offsets kept
    <ns>:ckpt:latest     the highest offset written; it only ever moves forward

One Lua script writes a checkpoint, its index entry, the pointer and the trim together,
so a reader never sees a half-written checkpoint.
"""

from __future__ import annotations

import abc
import logging
from dataclasses import dataclass
from typing import cast

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from rl_worker.core.config import CoreConfig
from rl_worker.core.exceptions import SnapshotError
from rl_worker.core.replica import ModelReplica
from rl_worker.core.snapshot import decode_replica
from rl_worker.stream.exceptions import CheckpointStoreError

__all__ = [
    "CheckpointStore",
    "MemoryCheckpointStore",
    "RedisCheckpointStore",
    "RestoreResult",
    "restore_newest_valid",
]

log = logging.getLogger(__name__)


class CheckpointStore(abc.ABC):
    """Where replica snapshots live. All methods raise CheckpointStoreError on I/O failure."""

    @abc.abstractmethod
    async def save(self, offset: int, data: bytes) -> None: ...

    @abc.abstractmethod
    async def offsets(self) -> list[int]:
        """Offsets of the kept checkpoints, newest first."""

    @abc.abstractmethod
    async def load(self, offset: int) -> bytes | None: ...

    @abc.abstractmethod
    async def latest_offset(self) -> int | None: ...

    async def close(self) -> None:  # noqa: B027 - optional hook
        pass


class MemoryCheckpointStore(CheckpointStore):
    """The same semantics in a dict: for unit tests and for runs without Redis."""

    def __init__(self, retention: int = 5) -> None:
        self.retention = retention
        self.data: dict[int, bytes] = {}
        self.latest: int | None = None

    async def save(self, offset: int, data: bytes) -> None:
        self.data[offset] = data
        if self.latest is None or offset > self.latest:
            self.latest = offset
        for old in sorted(self.data)[: max(0, len(self.data) - self.retention)]:
            del self.data[old]

    async def offsets(self) -> list[int]:
        return sorted(self.data, reverse=True)

    async def load(self, offset: int) -> bytes | None:
        return self.data.get(offset)

    async def latest_offset(self) -> int | None:
        return self.latest


_SAVE = """
redis.call('SET', KEYS[1], ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[1], ARGV[1])
local current = tonumber(redis.call('GET', KEYS[3]) or '-1')
if tonumber(ARGV[1]) > current then redis.call('SET', KEYS[3], ARGV[1]) end
local excess = redis.call('ZCARD', KEYS[2]) - tonumber(ARGV[3])
if excess > 0 then
  for _, old in ipairs(redis.call('ZRANGE', KEYS[2], 0, excess - 1)) do
    redis.call('DEL', ARGV[4] .. old)
    redis.call('ZREM', KEYS[2], old)
  end
end
return current
"""


class RedisCheckpointStore(CheckpointStore):
    def __init__(self, url: str, namespace: str, retention: int = 5, timeout_s: float = 2.0) -> None:
        self.namespace = namespace
        self.retention = retention
        self._prefix = f"{namespace}:ckpt:"
        self._index = f"{namespace}:ckpt:index"
        self._latest = f"{namespace}:ckpt:latest"
        self._redis = aioredis.Redis.from_url(
            url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s, retry_on_timeout=False
        )
        self._save = self._redis.register_script(_SAVE)

    async def save(self, offset: int, data: bytes) -> None:
        try:
            await self._save(
                keys=[f"{self._prefix}{offset}", self._index, self._latest],
                args=[offset, data, self.retention, self._prefix],
            )
        except (RedisError, OSError) as exc:
            raise CheckpointStoreError(f"checkpoint {offset} not written: {exc}") from exc

    async def offsets(self) -> list[int]:
        try:
            members = cast(list[bytes], await self._redis.zrevrange(self._index, 0, -1))
        except (RedisError, OSError) as exc:
            raise CheckpointStoreError(f"checkpoint index unreadable: {exc}") from exc
        return [int(m) for m in members]

    async def load(self, offset: int) -> bytes | None:
        try:
            data = cast(bytes | None, await self._redis.get(f"{self._prefix}{offset}"))
        except (RedisError, OSError) as exc:
            raise CheckpointStoreError(f"checkpoint {offset} unreadable: {exc}") from exc
        return data

    async def latest_offset(self) -> int | None:
        try:
            value = await self._redis.get(self._latest)
        except (RedisError, OSError) as exc:
            raise CheckpointStoreError(f"latest pointer unreadable: {exc}") from exc
        return None if value is None else int(value)

    async def close(self) -> None:
        await self._redis.aclose()


@dataclass
class RestoreResult:
    replica: ModelReplica | None
    offset: int | None
    skipped: list[str]


async def restore_newest_valid(
    store: CheckpointStore, config: CoreConfig, max_offset: int | None = None
) -> RestoreResult:
    """The newest checkpoint that decodes under `config` and does not lie past `max_offset`
    (the last offset of the log); corrupt, incompatible or foreign ones are reported and skipped."""
    skipped: list[str] = []
    latest = await store.latest_offset()
    candidates = await store.offsets()
    if latest is not None and latest not in candidates:
        candidates.insert(0, latest)
    for offset in candidates:
        if max_offset is not None and offset > max_offset:
            log.error("checkpoint %s skipped: past the end of the outcomes log (%s)", offset, max_offset)
            skipped.append(f"{offset}: past the end of the outcomes log ({max_offset}): another log's checkpoint")
            continue
        data = await store.load(offset)
        if data is None:
            skipped.append(f"{offset}: missing")
            continue
        try:
            replica = decode_replica(data, config)
        except SnapshotError as exc:
            log.error("checkpoint %s skipped: %s", offset, exc)
            skipped.append(f"{offset}: {exc}")
            continue
        return RestoreResult(replica, offset, skipped)
    return RestoreResult(None, None, skipped)
