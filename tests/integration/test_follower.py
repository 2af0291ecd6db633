"""The outcomes follower on its own (no Faust app): restore, catch-up and follow on a real broker."""

from __future__ import annotations

import asyncio
import uuid

import numpy as np
import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from rl_worker.core import CoreConfig, ModelReplica
from rl_worker.core.snapshot import encode_replica
from rl_worker.settings import CheckpointSettings, Settings, TopicNames
from rl_worker.sim.events import make_outcomes
from rl_worker.stream.checkpoints import MemoryCheckpointStore
from rl_worker.stream.follower import OutcomesFollower
from rl_worker.stream.runtime import WorkerRuntime
from tests.integration.harness import produce, run

pytestmark = pytest.mark.integration


async def create_log(bootstrap: str, topic: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10000)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, 1, 1)])
    finally:
        await admin.close()


def test_follower_restores_catches_up_and_follows_like_a_replay(kafka_bootstrap: str) -> None:
    topic = f"t{uuid.uuid4().hex[:10]}.outcomes"
    config = CoreConfig()
    outcomes = make_outcomes(np.random.default_rng(4), config, 60)
    values = [o.model_dump_json().encode() for o in outcomes]
    log = [*values[:30], b"{unreadable", *values[30:50]]  # 51 records, one unreadable; 10 more while following
    reference = ModelReplica(config)
    checkpoint = b""
    for offset, value in enumerate(log):
        if value.startswith(b"{unreadable"):
            reference.skip(offset)
        else:
            reference.apply(outcomes[offset if offset < 30 else offset - 1], offset)
        if offset == 19:
            checkpoint = encode_replica(reference)
    run(create_log(kafka_bootstrap, topic))
    run(produce(kafka_bootstrap, [(topic, None, v) for v in log]))

    async def scenario() -> tuple[WorkerRuntime, int]:
        store = MemoryCheckpointStore()
        await store.save(19, checkpoint)
        settings = Settings(
            kafka_bootstrap=kafka_bootstrap,
            topics=TopicNames(outcomes=topic),
            core=config,
            checkpoint=CheckpointSettings(every_outcomes=10),
        )
        runtime = WorkerRuntime(settings, store)
        follower = OutcomesFollower(settings, runtime)
        await follower.start()  # restore the checkpoint at 19, catch up with the log's (reported) end
        caught_up = runtime.replica.model_version
        stop = asyncio.Event()
        following = asyncio.create_task(follower.follow(stop.is_set))
        await produce(kafka_bootstrap, [(topic, None, v) for v in values[50:]])
        for _ in range(600):
            if runtime.replica.model_version >= 61:
                break
            await asyncio.sleep(0.05)
        stop.set()
        await following
        await follower.stop()
        return runtime, caught_up

    runtime, caught_up = run(scenario())
    assert runtime.checkpointer.restored_from == 19
    # tansu reports the end offset of the last batch's first record: catch-up reaches at least that
    assert 20 < caught_up <= 51
    for offset, outcome in enumerate(outcomes[50:], start=51):
        reference.apply(outcome, offset)
    assert runtime.replica.model_version == 61 and runtime.replica.n_updates == 60
    assert encode_replica(runtime.replica) == encode_replica(reference)
    assert runtime.checkpointer.pending_offset is not None  # the cadence asked for a checkpoint
