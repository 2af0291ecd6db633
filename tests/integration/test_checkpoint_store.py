"""The Redis checkpoint store on a real Redis: atomic writes, forward-only pointer, last K kept."""

from __future__ import annotations

import asyncio
import uuid

import pytest
import redis

from rl_worker.stream.checkpoints import RedisCheckpointStore
from rl_worker.stream.exceptions import CheckpointStoreError

pytestmark = pytest.mark.integration


def test_pointer_only_moves_forward_and_retention_trims_the_oldest(redis_url: str) -> None:
    namespace = f"rl_worker:test-{uuid.uuid4().hex[:8]}"

    async def scenario() -> tuple[list[int], int | None, bytes | None, bytes | None]:
        store = RedisCheckpointStore(redis_url, namespace, retention=3)
        try:
            for offset in (10, 20, 15, 30, 25):
                await store.save(offset, f"snapshot-{offset}".encode())
            return await store.offsets(), await store.latest_offset(), await store.load(30), await store.load(10)
        finally:
            await store.close()

    try:
        offsets, latest, newest, trimmed = asyncio.run(scenario())
        assert offsets == [30, 25, 20]
        assert latest == 30  # 25 came later but is older
        assert newest == b"snapshot-30" and trimmed is None
        client = redis.Redis.from_url(redis_url)
        assert sorted(k.decode() for k in client.scan_iter(f"{namespace}:*")) == sorted(
            [f"{namespace}:ckpt:{o}" for o in (20, 25, 30)] + [f"{namespace}:ckpt:index", f"{namespace}:ckpt:latest"]
        )
    finally:
        client = redis.Redis.from_url(redis_url)
        for key in client.scan_iter(f"{namespace}:*"):
            client.delete(key)
        client.close()


def test_an_unreachable_redis_is_a_store_error_not_a_crash() -> None:
    async def scenario() -> None:
        store = RedisCheckpointStore("redis://127.0.0.1:1/0", "rl_worker:nowhere", timeout_s=0.5)
        try:
            with pytest.raises(CheckpointStoreError):
                await store.save(1, b"x")
            with pytest.raises(CheckpointStoreError):
                await store.latest_offset()
        finally:
            await store.close()

    asyncio.run(scenario())
