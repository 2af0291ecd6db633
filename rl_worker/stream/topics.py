"""Topic layout: use the trading stack's topics as they are, create only what is missing."""

from __future__ import annotations

import asyncio
import logging

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

from rl_worker.contract import INPUT_EVENT_TYPES
from rl_worker.settings import Settings, TopicNames
from rl_worker.stream.connections import kafka_options, probe_kafka
from rl_worker.stream.exceptions import ConnectionConfigError, InfrastructureError, TopicLayoutError

__all__ = ["ensure_topics", "event_type_by_topic"]

log = logging.getLogger(__name__)


def event_type_by_topic(topics: TopicNames) -> dict[str, str]:
    """The event type each configured input topic carries (the contract's map, by topic name)."""
    return {getattr(topics, field): event_type for field, event_type in INPUT_EVENT_TYPES.items()}


async def _partition_counts(admin: AIOKafkaAdminClient, names: list[str]) -> dict[str, int]:
    existing = set(await admin.list_topics())
    present = [n for n in names if n in existing]
    counts: dict[str, int] = {}
    if present:
        for described in await admin.describe_topics(present):
            if described.get("error_code", 0) == 0 and described.get("partitions"):
                counts[described["topic"]] = len(described["partitions"])
    return counts


async def _broker_config(admin: AIOKafkaAdminClient, names: set[str]) -> dict[str, str]:
    """Some configs of one broker (DescribeConfigs); empty when the broker does not tell
    (tansu does not implement it; a secured cluster may not allow it)."""
    brokers = admin._client.cluster.brokers()  # the admin client has no public accessor
    if not brokers:
        return {}
    node = str(min(b.nodeId for b in brokers))
    try:
        responses = await asyncio.wait_for(
            admin.describe_configs([ConfigResource(ConfigResourceType.BROKER, node, dict.fromkeys(names))]), 5.0
        )
    except (KafkaError, TimeoutError, OSError) as exc:
        log.debug("broker %s does not describe its configs: %r", node, exc)
        return {}
    values: dict[str, str] = {}
    for response in responses:
        for error_code, _message, _type, _name, entries in (r[:5] for r in response.resources):
            if error_code:
                return {}
            values |= {entry[0]: entry[1] for entry in entries if entry[0] in names and entry[1] is not None}
    return values


async def check_group_settings(admin: AIOKafkaAdminClient, settings: Settings) -> None:
    """Fail at start-up, naming the setting, when the broker would refuse the group join.

    Apache Kafka rejects a member whose session timeout lies outside
    [group.min.session.timeout.ms, group.max.session.timeout.ms] (6 s .. 30 min by default)
    with INVALID_SESSION_TIMEOUT, which the consumer only logs: the worker would wait forever.
    """
    config = await _broker_config(admin, {"group.min.session.timeout.ms", "group.max.session.timeout.ms"})
    wanted_ms = int(settings.session_timeout_s * 1000)
    low, high = config.get("group.min.session.timeout.ms"), config.get("group.max.session.timeout.ms")
    if (low is not None and wanted_ms < int(low)) or (high is not None and wanted_ms > int(high)):
        raise ConnectionConfigError(
            f"RL_SESSION_TIMEOUT_S={settings.session_timeout_s:g} is outside the session timeouts the broker "
            f"accepts ({int(low or 0) / 1000:g} s .. {int(high or 0) / 1000:g} s: group.min/max.session.timeout.ms); "
            "it would refuse the group join"
        )


async def ensure_topics(settings: Settings, timeout_s: float = 30.0) -> int:
    """Create missing topics; return the input topics' (common) partition count.

    Connects as every client will first (`probe_kafka`) and checks that the broker accepts the
    group's session timeout: a misconfiguration stops here with a ConnectionConfigError.
    Existing input topics keep their partition count; they must all have the same one
    (co-partitioned by position id). Every other missing topic of `settings.topics` (decisions,
    dead letters, any output added there) gets that count (or `settings.partitions` when no
    input exists yet); the outcomes log gets one.
    """
    t = settings.topics
    inputs = [t.signals, t.executions, t.closes]
    await probe_kafka(settings, timeout_s=min(timeout_s, 10.0))
    admin = AIOKafkaAdminClient(**kafka_options(settings), request_timeout_ms=10000)
    try:
        await asyncio.wait_for(admin.start(), timeout_s)
        await check_group_settings(admin, settings)
        every = t.model_dump()  # field -> topic name: every topic of the settings is laid out here
        counts = await _partition_counts(admin, list(every.values()))
        input_counts = {counts[n] for n in inputs if n in counts}
        if len(input_counts) > 1:
            raise TopicLayoutError(
                f"input topics are not co-partitioned: {({n: counts.get(n) for n in inputs})}"
            )
        partitions = input_counts.pop() if input_counts else settings.partitions
        if counts.get(t.outcomes, 1) != 1:
            raise TopicLayoutError(f"{t.outcomes} must have exactly one partition, has {counts[t.outcomes]}")
        wanted = {name: 1 if field == "outcomes" else partitions for field, name in every.items()}
        # the outcomes log is the model's history: keep it forever (replicas rebuild from it)
        configs = {t.outcomes: {"retention.ms": "-1", "retention.bytes": "-1"}}
        missing = [NewTopic(n, p, 1, topic_configs=configs.get(n, {})) for n, p in wanted.items() if n not in counts]
        if missing:
            log.info("creating topics %s", {m.name: m.num_partitions for m in missing})
            try:
                await admin.create_topics(missing)
            except TopicAlreadyExistsError:
                pass  # a concurrent worker created it first: fine
        return partitions
    except (TimeoutError, KafkaError, OSError) as exc:
        raise InfrastructureError(f"cannot prepare topics on {settings.kafka_bootstrap}: {exc!r}") from exc
    finally:
        await admin.close()
