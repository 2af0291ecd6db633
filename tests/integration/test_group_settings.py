"""The worker's consumer-group settings suit every broker as it ships.

Apache Kafka refuses a member whose session timeout is below group.min.session.timeout.ms
(6 s by default) and the consumer only logs it: the worker used to wait forever with its old
4 s default. The test broker keeps that default, so these tests are about a stock broker.
"""

from __future__ import annotations

import asyncio
import time
import urllib.error
from typing import Any

import pytest
from aiokafka.admin import AIOKafkaAdminClient

from rl_worker.settings import Settings
from rl_worker.stream.topics import _broker_config
from tests.integration.brokers import TestBroker

pytestmark = pytest.mark.integration

LIMITS = {"group.min.session.timeout.ms", "group.max.session.timeout.ms"}


async def broker_limits(bootstrap: str) -> dict[str, str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        return await _broker_config(admin, LIMITS)
    finally:
        await admin.close()


def test_default_session_timeout_is_accepted_and_the_worker_joins(stack_factory: Any, broker: TestBroker) -> None:
    limits = asyncio.run(broker_limits(broker.bootstrap))
    if broker.name == "apache-kafka":
        assert limits["group.min.session.timeout.ms"] == "6000"  # the broker's own default, not relaxed
    default_ms = Settings().session_timeout_s * 1000
    assert default_ms >= int(limits.get("group.min.session.timeout.ms", 0))
    assert default_ms <= int(limits.get("group.max.session.timeout.ms", default_ms))

    stack = stack_factory(RL_WEB_SNAPSHOT_TOKEN="")  # no RL_SESSION_TIMEOUT_S, no snapshot token: defaults
    worker = stack.start_worker()
    launched = time.monotonic()
    worker.wait_ready(timeout_s=90)
    deadline = time.monotonic() + 60
    while sorted(worker.health()["assigned_partitions"]) != [0, 1, 2, 3]:
        assert time.monotonic() < deadline, worker.log[-3000:]
        time.sleep(0.2)
    print(f"{broker.name}: launch to all partitions assigned {time.monotonic() - launched:.1f} s")
    with pytest.raises(urllib.error.HTTPError) as off:  # /snapshot hands out the model: off by default
        worker.get("/snapshot")
    assert off.value.code == 404


def test_a_session_timeout_the_broker_refuses_stops_the_worker_with_the_reason(
    stack_factory: Any, broker: TestBroker
) -> None:
    stack = stack_factory(RL_SESSION_TIMEOUT_S="4")
    worker = stack.start_worker()
    limits = asyncio.run(broker_limits(broker.bootstrap))
    if "group.min.session.timeout.ms" not in limits:  # tansu has no lower bound: 4 s joins
        worker.wait_ready(timeout_s=90)
        return
    code = worker.process.wait(60)
    assert code != 0
    assert "RL_SESSION_TIMEOUT_S=4 is outside the session timeouts the broker accepts (6 s" in worker.log
    assert "group.min/max.session.timeout.ms" in worker.log
