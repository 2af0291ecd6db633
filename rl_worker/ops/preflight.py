"""`rl-worker preflight`: what must hold before workers are (re)deployed against a cluster.

Checks, in order: the broker answers; Redis answers (through the checkpoint store the worker
uses); the three input topics exist and are co-partitioned; the learning log exists with one
partition. Nothing is created or written. Exit code 0 when every check passes, 1 otherwise.
`--first-deploy` (an empty cluster or a new namespace) accepts missing topics, which the first
worker creates; partition counts that do not fit still fail.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import asdict, dataclass

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from rl_worker.settings import Settings
from rl_worker.stream.checkpoints import RedisCheckpointStore
from rl_worker.stream.connections import kafka_options, probe_kafka, probe_redis, redis_options
from rl_worker.stream.exceptions import CheckpointStoreError, InfrastructureError

__all__ = ["Check", "format_checks", "run_preflight"]


@dataclass(frozen=True)
class Check:
    """One pre-flight check: its name, whether it passed, and what was seen."""

    name: str
    ok: bool
    detail: str


async def _topic_partitions(settings: Settings, timeout_s: float) -> dict[str, int]:
    """Partition counts of every topic the broker lists (raises on an unreachable broker)."""
    admin = AIOKafkaAdminClient(**kafka_options(settings), request_timeout_ms=int(timeout_s * 1000))
    try:
        await asyncio.wait_for(admin.start(), timeout_s)
        names = sorted(await asyncio.wait_for(admin.list_topics(), timeout_s))
        counts: dict[str, int] = {}
        if names:
            for described in await asyncio.wait_for(admin.describe_topics(names), timeout_s):
                if described.get("error_code", 0) == 0:
                    counts[described["topic"]] = len(described.get("partitions") or [])
        return counts
    finally:
        await admin.close()


async def check_broker(settings: Settings, timeout_s: float) -> tuple[Check, dict[str, int] | None]:
    protocol = settings.kafka.security_protocol
    try:
        # as every client of the worker connects (TLS, SASL): a refusal comes back with its cause
        await probe_kafka(settings, timeout_s)
        counts = await _topic_partitions(settings, timeout_s)
    except InfrastructureError as exc:  # ConnectionConfigError (credentials, TLS) or unreachable
        return Check("broker reachable", False, str(exc)), None
    except (TimeoutError, KafkaError, OSError) as exc:
        return Check("broker reachable", False, f"{settings.kafka_bootstrap}: {exc!r}"), None
    return Check("broker reachable", True, f"{settings.kafka_bootstrap} ({protocol}): {len(counts)} topics"), counts


async def check_redis(settings: Settings, timeout_s: float) -> Check:
    try:
        await probe_redis(settings, timeout_s)  # a refused password or TLS trust, with its cause
    except InfrastructureError as exc:
        return Check("redis reachable", False, str(exc))
    store = RedisCheckpointStore(
        settings.redis_url.get_secret_value(), settings.redis_namespace, timeout_s=timeout_s,
        options=redis_options(settings),
    )
    try:
        offsets = await store.offsets()
        latest = await store.latest_offset()
    except CheckpointStoreError as exc:
        # the message names the failed call, never the URL (it may carry a password)
        return Check("redis reachable", False, str(exc))
    finally:
        await store.close()
    if latest is None:
        return Check("redis reachable", True, f"namespace {settings.redis_namespace}: no checkpoint yet")
    return Check(
        "redis reachable", True,
        f"namespace {settings.redis_namespace}: {len(offsets)} checkpoints, latest at offset {latest}",
    )


def check_inputs(settings: Settings, counts: dict[str, int] | None, allow_missing: bool) -> list[Check]:
    t = settings.topics
    inputs = [t.signals, t.executions, t.closes]
    if counts is None:
        return [
            Check("input topics present", False, "not checked: the broker did not answer"),
            Check("input topics co-partitioned", False, "not checked: the broker did not answer"),
        ]
    missing = [n for n in inputs if n not in counts]
    if not missing:
        present = Check("input topics present", True, ", ".join(inputs))
    elif allow_missing:
        present = Check(
            "input topics present", True,
            f"missing: {', '.join(missing)}; the first worker creates them (first deploy)",
        )
    else:
        present = Check(
            "input topics present", False,
            f"missing: {', '.join(missing)} (the trading stack's topics: check RL_TOPICS__*; "
            "--first-deploy on an empty cluster)",
        )
    partitions = {n: counts[n] for n in inputs if n in counts}
    same = len(set(partitions.values())) <= 1 and (bool(partitions) or allow_missing)
    detail = ", ".join(f"{n}={p}" for n, p in partitions.items()) or "no input topic yet"
    if partitions and len(partitions) < len(inputs) and same:
        detail += f"; missing ones get {next(iter(partitions.values()))}"
    elif not partitions and allow_missing:
        detail += f"; they get RL_PARTITIONS={settings.partitions}"
    return [present, Check("input topics co-partitioned", same, f"partitions {detail}")]


def check_learning_log(settings: Settings, counts: dict[str, int] | None, allow_missing: bool) -> Check:
    name = settings.topics.outcomes
    if counts is None:
        return Check("learning log present", False, "not checked: the broker did not answer")
    if name not in counts:
        if allow_missing:
            return Check("learning log present", True, f"{name} missing: the first worker creates it (first deploy)")
        return Check(
            "learning log present", False,
            f"{name} missing: check RL_TOPICS__OUTCOMES (--first-deploy on a new namespace: the first worker "
            "creates it)",
        )
    if counts[name] != 1:
        return Check("learning log present", False, f"{name} has {counts[name]} partitions; it must have exactly 1")
    return Check("learning log present", True, f"{name}: 1 partition")


async def run_preflight(settings: Settings, *, first_deploy: bool = False, timeout_s: float = 10.0) -> list[Check]:
    """All checks, in order. `first_deploy` accepts missing input topics and a missing learning log
    (the first worker creates them); partition counts that do not fit still fail."""
    (broker, counts), redis_check = await asyncio.gather(
        check_broker(settings, timeout_s), check_redis(settings, timeout_s)
    )
    return [
        broker, redis_check, *check_inputs(settings, counts, first_deploy),
        check_learning_log(settings, counts, first_deploy),
    ]


def format_checks(checks: list[Check], as_json: bool = False) -> str:
    if as_json:
        return json.dumps({"ok": all(c.ok for c in checks), "checks": [asdict(c) for c in checks]}, indent=2)
    width = max(len(c.name) for c in checks)
    lines = [f"{'ok  ' if c.ok else 'FAIL'} {c.name:<{width}}  {c.detail}" for c in checks]
    lines.append("pre-flight: all checks passed" if all(c.ok for c in checks) else "pre-flight: FAILED")
    return "\n".join(lines)
