"""Checkpoints of the replica: the stores (snapshots by `rl.outcomes` offset, a forward-only latest
pointer, last K kept) and the `Checkpointer` (restore, cadence, writer with backoff, final checkpoint).

Layout under the namespace `rl_worker:<app_id>` (Redis backend):

    <ns>:ckpt:<offset>   the snapshot bytes (rl_worker.core.snapshot, JSON, never pickle)
    <ns>:ckpt:index      sorted set of the offsets kept
    <ns>:ckpt:latest     the highest offset written; it only ever moves forward
    <ns>:ckpt:pinned     set of pinned offsets: retention never deletes them (weekly backups,
                         and every checkpoint a reset record names)

One Lua script writes a checkpoint, its index entry, the pointer and the trim together,
so a reader never sees a half-written checkpoint. Retention keeps the last K unpinned
checkpoints; pinned ones are kept besides them.
"""

from __future__ import annotations

import abc
import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from rl_worker.core.config import CoreConfig
from rl_worker.core.exceptions import SnapshotError
from rl_worker.core.replica import ModelReplica
from rl_worker.core.snapshot import decode_replica, encode_replica
from rl_worker.settings import CheckpointSettings, Settings
from rl_worker.stream.exceptions import CheckpointStoreError
from rl_worker.stream.metrics import WorkerMetrics

__all__ = [
    "CheckpointStore",
    "Checkpointer",
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

    @abc.abstractmethod
    async def load_from(self, namespace: str, offset: int) -> bytes | None:
        """A checkpoint of another namespace (a reset record may name one), or of this one."""

    @abc.abstractmethod
    async def pin(self, offset: int) -> bool:
        """Keep this checkpoint whatever retention says; False if there is no such checkpoint."""

    @abc.abstractmethod
    async def unpin(self, offset: int) -> bool:
        """Hand it back to retention (it goes at the next write if it is not among the last K)."""

    @abc.abstractmethod
    async def pinned(self) -> set[int]: ...

    async def close(self) -> None:  # noqa: B027 - optional hook
        pass


class MemoryCheckpointStore(CheckpointStore):
    """The same semantics in a dict: for unit tests and for runs without Redis."""

    def __init__(
        self, retention: int = 5, namespace: str = "", registry: dict[str, MemoryCheckpointStore] | None = None
    ) -> None:
        """`registry` (namespace -> store) is shared by the stores that can read each other."""
        self.retention = retention
        self.namespace = namespace
        self.data: dict[int, bytes] = {}
        self.latest: int | None = None
        self.pins: set[int] = set()
        self.registry = registry if registry is not None else {}
        self.registry[namespace] = self

    async def save(self, offset: int, data: bytes) -> None:
        self.data[offset] = data
        if self.latest is None or offset > self.latest:
            self.latest = offset
        unpinned = sorted(o for o in self.data if o not in self.pins)
        for old in unpinned[: max(0, len(unpinned) - self.retention)]:
            del self.data[old]

    async def load_from(self, namespace: str, offset: int) -> bytes | None:
        store = self.registry.get(namespace)
        return None if store is None else store.data.get(offset)

    async def pin(self, offset: int) -> bool:
        if offset not in self.data:
            return False
        self.pins.add(offset)
        return True

    async def unpin(self, offset: int) -> bool:
        if offset not in self.pins:
            return False
        self.pins.discard(offset)
        return True

    async def pinned(self) -> set[int]:
        return set(self.pins)

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
local unpinned = {}
for _, kept in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do
  if redis.call('SISMEMBER', KEYS[4], kept) == 0 then table.insert(unpinned, kept) end
end
local excess = #unpinned - tonumber(ARGV[3])
for i = 1, excess do
  redis.call('DEL', ARGV[4] .. unpinned[i])
  redis.call('ZREM', KEYS[2], unpinned[i])
end
return current
"""

_PIN = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('SADD', KEYS[2], ARGV[1])
redis.call('ZADD', KEYS[3], ARGV[1], ARGV[1])
return 1
"""


class RedisCheckpointStore(CheckpointStore):
    """`options`: what `redis.asyncio.Redis.from_url` takes beside the URL (password, ACL user,
    TLS files): `from_settings` fills them from the settings, as every Redis client of the project."""

    def __init__(
        self,
        url: str,
        namespace: str,
        retention: int = 5,
        timeout_s: float = 2.0,
        options: dict[str, Any] | None = None,
    ) -> None:
        self.namespace = namespace
        self.retention = retention
        self._prefix = f"{namespace}:ckpt:"
        self._index = f"{namespace}:ckpt:index"
        self._latest = f"{namespace}:ckpt:latest"
        self._pinned = f"{namespace}:ckpt:pinned"
        self._redis = aioredis.Redis.from_url(
            url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s, retry_on_timeout=False, **(options or {})
        )
        self._save = self._redis.register_script(_SAVE)
        self._pin = self._redis.register_script(_PIN)

    @classmethod
    def from_settings(cls, settings: Settings, timeout_s: float = 2.0) -> RedisCheckpointStore:
        """The store of `settings.app_id` on RL_REDIS_URL with RL_REDIS__* credentials and TLS."""
        from rl_worker.stream.connections import redis_options

        return cls(
            settings.redis_url.get_secret_value(),
            settings.redis_namespace,
            settings.checkpoint.retention,
            timeout_s=timeout_s,
            options=redis_options(settings),
        )

    async def save(self, offset: int, data: bytes) -> None:
        try:
            await self._save(
                keys=[f"{self._prefix}{offset}", self._index, self._latest, self._pinned],
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

    async def load_from(self, namespace: str, offset: int) -> bytes | None:
        try:
            data = cast(bytes | None, await self._redis.get(f"{namespace}:ckpt:{offset}"))
        except (RedisError, OSError) as exc:
            raise CheckpointStoreError(f"checkpoint {namespace}:{offset} unreadable: {exc}") from exc
        return data

    async def pin(self, offset: int) -> bool:
        try:
            done = await self._pin(keys=[f"{self._prefix}{offset}", self._pinned, self._index], args=[offset])
        except (RedisError, OSError) as exc:
            raise CheckpointStoreError(f"checkpoint {offset} not pinned: {exc}") from exc
        return bool(done)

    async def unpin(self, offset: int) -> bool:
        try:
            removed = await self._redis.srem(self._pinned, str(offset))  # type: ignore[misc]
        except (RedisError, OSError) as exc:
            raise CheckpointStoreError(f"checkpoint {offset} not unpinned: {exc}") from exc
        return bool(removed)

    async def pinned(self) -> set[int]:
        try:
            members = await self._redis.smembers(self._pinned)  # type: ignore[misc]
        except (RedisError, OSError) as exc:
            raise CheckpointStoreError(f"pinned checkpoints unreadable: {exc}") from exc
        return {int(m) for m in members}

    async def close(self) -> None:
        await self._redis.aclose()


@dataclass
class RestoreResult:
    replica: ModelReplica | None
    offset: int | None
    skipped: list[str]


async def restore_newest_valid(
    store: CheckpointStore, config: CoreConfig, max_offset: int | None = None, *, before: int | None = None
) -> RestoreResult:
    """The newest checkpoint that decodes under `config` and does not lie past `max_offset`
    (the last offset of the log); corrupt, incompatible or foreign ones are reported and skipped.
    `before`: only checkpoints at offsets below it are wanted (a command that replays a window of the
    log); newer ones are passed over silently, they are not errors."""
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
        if before is not None and offset >= before:
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


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class Checkpointer:
    """Owns when and how this worker's replica is checkpointed: restore at start-up, the cadence
    rule, the writer with backoff, and the final checkpoint at shutdown.

    Cadence (`due`): a snapshot is taken after `every_outcomes` newly applied outcomes, or
    after `interval_s` seconds with at least one. The snapshot is encoded at once (a consistent
    copy) and handed to the writer task, which retries with exponential backoff while the store
    fails; decisions go on meanwhile. Only the newest pending snapshot is kept.
    """

    def __init__(
        self, replica: ModelReplica, store: CheckpointStore, settings: CheckpointSettings, metrics: WorkerMetrics
    ) -> None:
        self.replica = replica
        self.store = store
        self.settings = settings
        self.metrics = metrics
        self.restored_from: int | None = None
        self.restore_skipped: list[str] = []
        self.offset: int | None = None  # of the last checkpoint written (or restored)
        self.error: str | None = None
        self.last_ok_ms: int | None = None
        self._applied_since = 0
        self._last_s = time.monotonic()
        self._pending: tuple[int, bytes] | None = None
        self._pending_event = asyncio.Event()

    # ---- start-up ------------------------------------------------------------------------------

    async def restore(self, log_end: int | None = None) -> None:
        """Load the newest valid checkpoint into the replica, if the store can be read; else keep it
        empty (the log is replayed). A checkpoint at or past `log_end` (the outcomes log's end
        offset) belongs to another log (a broker that was reset, a topic recreated): reported and skipped."""
        try:
            result = await restore_newest_valid(
                self.store, self.replica.config, None if log_end is None else log_end - 1
            )
        except CheckpointStoreError as exc:
            log.error("checkpoint store unreachable at start-up, replaying the whole log: %s", exc)
            self.metrics.redis_up.set(0)
            self.error = str(exc)
            return
        self.metrics.redis_up.set(1)
        self.restore_skipped = result.skipped
        if result.replica is not None:
            self.replica.import_state(result.replica.export_state())
            self.restored_from = result.offset
            self.offset = result.offset
            log.info("restored replica from checkpoint at outcomes offset %s", result.offset)

    # ---- cadence -------------------------------------------------------------------------------

    def note_applied(self) -> None:
        self._applied_since += 1

    def due(self) -> bool:
        """The cadence rule: enough new outcomes, or enough time with any."""
        if self._applied_since >= self.settings.every_outcomes:
            return True
        return self._applied_since > 0 and time.monotonic() - self._last_s >= self.settings.interval_s

    def after_batch(self) -> None:
        # While the writer still holds a snapshot (a slow or absent Redis), encoding another
        # would only be thrown away: wait for it, the next batch checks again.
        if self._pending is None and self.due():
            self.snapshot_now()

    def snapshot_now(self) -> None:
        """Encode the replica now (consistent) and hand it to the writer task."""
        self._pending = (self.replica.log_offset, encode_replica(self.replica))
        self._pending_event.set()
        self._applied_since = 0
        self._last_s = time.monotonic()

    @property
    def pending_offset(self) -> int | None:
        return None if self._pending is None else self._pending[0]

    # ---- writing -------------------------------------------------------------------------------

    async def write_pending(self, stopping: Callable[[], bool]) -> None:
        """Write the newest pending snapshot; on failure back off and retry (decisions go on)."""
        delay = self.settings.retry_initial_s
        while not stopping():
            if self._pending is None:
                self._pending_event.clear()
                try:
                    await asyncio.wait_for(self._pending_event.wait(), 1.0)
                except TimeoutError:
                    continue
                continue
            offset, data = self._pending
            if await self.write_one(offset, data):
                if self._pending is not None and self._pending[0] == offset:
                    self._pending = None
                delay = self.settings.retry_initial_s
            else:
                await asyncio.sleep(delay)
                delay = min(self.settings.retry_max_s, delay * 2)

    async def write_final(self, timeout_s: float) -> None:
        """On shutdown: checkpoint what the last checkpoint does not hold yet, if the store answers in time."""
        if self.replica.n_updates == 0 or self.replica.log_offset == self.offset:
            return
        offset, data = self.replica.log_offset, encode_replica(self.replica)
        try:
            await asyncio.wait_for(self.write_one(offset, data), timeout_s)
        except TimeoutError:
            log.error("final checkpoint at %d not written: the store did not answer", offset)

    async def write_one(self, offset: int, data: bytes) -> bool:
        try:
            await self.store.save(offset, data)
        except CheckpointStoreError as exc:
            if self.error is None:
                log.error("checkpoint write failed, retrying with backoff: %s", exc)
            self.error = str(exc)
            self.metrics.checkpoint_failures.inc()
            self.metrics.redis_up.set(0)
            return False
        if self.error is not None:
            log.info("checkpoint store is back; wrote offset %d", offset)
        self.error = None
        self.offset = offset
        self.last_ok_ms = now_ms()
        self.metrics.checkpoint_writes.inc()
        self.metrics.checkpoint_offset.set(offset)
        self.metrics.redis_up.set(1)
        return True

    def health(self) -> dict[str, Any]:
        return {
            "offset": self.offset,
            "restored_from": self.restored_from,
            "restore_skipped": self.restore_skipped,
            "last_ok_ms": self.last_ok_ms,
            "pending_offset": self.pending_offset,
            "store_error": self.error,
        }
