"""Fixtures: a session broker per name in RL_TEST_BROKERS (tansu, apache-kafka), the machine's Redis,
per-test stacks."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.integration.brokers import TestBroker, running_broker, test_broker_names
from tests.integration.harness import Stack


def use_docker() -> bool:
    """RL_TEST_DOCKER=1: Redis from testcontainers (fail if no engine); RL_TEST_DOCKER=0: the
    local Redis; unset: Docker when an engine answers. (Kafka comes from RL_TEST_BROKERS.)"""
    wanted = os.environ.get("RL_TEST_DOCKER")
    if wanted == "0":
        return False
    try:
        import docker

        docker.from_env(timeout=3).ping()
    except Exception as exc:  # no engine: any of several docker/requests errors
        if wanted == "1":
            pytest.fail(f"RL_TEST_DOCKER=1 but no Docker engine answers: {exc}")
        return False
    return True


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """With pytest-xdist (`scripts/test.sh` runs `-n 2 --dist loadgroup`), keep each broker's tests
    on one process, so each broker starts once and its tests keep their order, and keep a module
    whose tests share a module-scoped stack (its own broker) together too."""
    if not config.pluginmanager.hasplugin("xdist"):
        return
    for item in items:
        callspec = getattr(item, "callspec", None)
        name = callspec.params.get("broker") if callspec is not None else None
        group = f"broker-{name}" if name else f"module-{item.module.__name__ if item.module else item.nodeid}"
        item.add_marker(pytest.mark.xdist_group(group))


@pytest.fixture(scope="session", params=test_broker_names())
def broker(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestBroker]:
    """One broker of each kind named in RL_TEST_BROKERS, for the whole session (tests sharing it
    use their own topics and groups); pytest runs all tests of one broker before the next (with
    pytest-xdist, each broker's tests on one process: pytest_collection_modifyitems above)."""
    with running_broker(request.param, tmp_path_factory.mktemp(request.param)) as running:
        yield running


@pytest.fixture(scope="session")
def kafka_bootstrap(broker: TestBroker) -> str:
    return broker.bootstrap


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    if "RL_TEST_REDIS_URL" not in os.environ and use_docker():
        from testcontainers.community.redis import RedisContainer

        with RedisContainer("redis:7-alpine") as container:
            host, port = container.get_container_host_ip(), container.get_exposed_port(6379)
            yield f"redis://{host}:{port}/0"
        return
    url = os.environ.get("RL_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
    client = redis.Redis.from_url(url, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.exceptions.ConnectionError as exc:
        pytest.fail(f"Redis is required at {url} and does not answer: {exc}")
    finally:
        client.close()
    yield url


@pytest.fixture
def stack_factory(kafka_bootstrap: str, redis_url: str, tmp_path: Path) -> Iterator[type[Stack] | object]:
    stacks: list[Stack] = []

    def make(**extra_env: str) -> Stack:
        workdir = tmp_path / f"stack{len(stacks)}"
        workdir.mkdir()
        stack = Stack(kafka_bootstrap, redis_url, workdir, extra_env=extra_env)
        stacks.append(stack)
        return stack

    yield make
    client = redis.Redis.from_url(redis_url)
    for stack in stacks:
        stack.stop_all()
        for key in client.scan_iter(f"rl_worker:{stack.app_id}:*"):
            client.delete(key)
    client.close()
