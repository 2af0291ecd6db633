"""The trading stack's side of the contract: publish an event, await its decision with a deadline,
fall back to the stack's own choice when none comes in time, and report what was traded.

    async with DecisionClient("broker:9092") as client:
        meta = await client.decide_meta(signal, deadline_s=0.25)        # signal -> meta decision
        sizing = await client.decide_sizing(execution, deadline_s=0.25)  # execution -> sizing decision
        ...trade meta.action and sizing.action...
        await client.report_close(close)                                 # the close, with what was traded

A decision that does not arrive before the deadline is replaced by the stack's own choice (the
signal's `strategy` / `model` / `weight`, the execution's `size_multiplier` / `leverage`, or the
client's defaults), and the fallback is reported where the worker reads it: a meta fallback on
the execution (`strategy`, `model`, `weight` as traded and `meta_fallback: true`), a sizing
fallback on the close (`size_multiplier`, `leverage` as traded and `sizing_fallback: true`). The
worker's outcome then credits what was traded, not what it published. A decision arriving
after its deadline is dropped.

The client reads `rl.decisions` from its end at start-up (every partition, no consumer group),
so it sees only decisions of events it published after starting.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from rl_worker.errors import RlWorkerError
from rl_worker.settings import TopicNames
from rl_worker.stream.internals import refresh_metadata

__all__ = ["Answer", "ClientError", "DecisionClient"]

META_FIELDS = ("strategy", "model", "weight")
SIZING_FIELDS = ("size_multiplier", "leverage")


class ClientError(RlWorkerError):
    """The client cannot do what was asked (not started, no choice to fall back to, no decisions topic)."""


@dataclass(frozen=True)
class Answer:
    """The action to trade: the worker's decision, or the stack's own choice after a timeout."""

    action: dict[str, Any]
    fallback: bool
    decision: dict[str, Any] | None = None  # the decision record, when one came in time
    waited_s: float = 0.0

    @property
    def policy(self) -> str:
        """The arm that decided (`rl`, `control`, ...), or `fallback`."""
        return "fallback" if self.decision is None else str(self.decision.get("policy", ""))


@dataclass
class _Position:
    meta: Answer | None = None
    sizing: Answer | None = None
    waiters: dict[str, asyncio.Future[dict[str, Any]]] = field(default_factory=dict)


def _dumps(event: Mapping[str, Any]) -> bytes:
    return json.dumps(event, separators=(",", ":")).encode()


class DecisionClient:
    """Publishes the stack's events and awaits the worker's decisions (see the module docstring)."""

    def __init__(
        self,
        bootstrap_servers: str,
        topics: TopicNames | None = None,
        default_meta: Mapping[str, Any] | None = None,
        default_sizing: Mapping[str, Any] | None = None,
        **kafka_options: Any,
    ) -> None:
        """`default_meta` / `default_sizing` are the fallbacks for events that carry no choice of their
        own; `kafka_options` go to both the producer and the consumer (TLS, SASL, client id)."""
        self.topics = topics or TopicNames()
        self.default_meta = dict(default_meta) if default_meta is not None else None
        self.default_sizing = dict(default_sizing) if default_sizing is not None else None
        self._producer = AIOKafkaProducer(bootstrap_servers=bootstrap_servers, linger_ms=1, **kafka_options)
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap_servers, enable_auto_commit=False, fetch_max_wait_ms=10, **kafka_options
        )
        self._positions: dict[str, _Position] = {}
        self._reader: asyncio.Task[None] | None = None
        self.late_decisions = 0  # decisions that came after their deadline
        self.duplicate_decisions = 0  # a second decision for one position and agent (e.g. after a worker restart)

    async def __aenter__(self) -> DecisionClient:
        await self.start()
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        await self.stop()

    async def start(self, metadata_timeout_s: float = 30.0) -> None:
        """Connect, and position the decision reader at the end of every partition of `rl.decisions`."""
        await self._producer.start()
        await self._consumer.start()
        topic = self.topics.decisions
        deadline = time.monotonic() + metadata_timeout_s
        partitions = None
        while True:
            if topic in await self._consumer.topics():
                await refresh_metadata(self._consumer)  # topics() leaves partitions_for_topic's view as it was
                partitions = self._consumer.partitions_for_topic(topic)
            if partitions or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.2)
        if not partitions:
            await self.stop()
            raise ClientError(f"topic {topic!r} does not exist (is a worker running on this broker?)")
        assigned = [TopicPartition(topic, p) for p in sorted(partitions)]
        self._consumer.assign(assigned)
        await self._consumer.seek_to_end(*assigned)
        for tp in assigned:  # resolve the end offsets now, before anything is published
            await self._consumer.position(tp)
        self._reader = asyncio.create_task(self._read_decisions(assigned))

    async def stop(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            try:
                await self._reader
            except asyncio.CancelledError:
                pass
            self._reader = None
        await self._consumer.stop()
        await self._producer.stop()

    async def _read_decisions(self, assigned: list[TopicPartition]) -> None:
        while True:
            batch = await self._consumer.getmany(*assigned, timeout_ms=200)
            for records in batch.values():
                for record in records:
                    try:
                        decision = json.loads(record.value)
                        position_id, agent = decision["position_id"], decision["agent"]
                    except (ValueError, KeyError, TypeError):
                        continue  # not a decision record: nothing waits for it
                    position = self._positions.get(position_id)
                    waiter = None if position is None else position.waiters.get(agent)
                    if waiter is None:
                        continue
                    if waiter.done():
                        self.late_decisions += waiter.cancelled()
                        self.duplicate_decisions += not waiter.cancelled()
                        continue
                    waiter.set_result(decision)

    async def _request(
        self, agent: str, topic: str, event: Mapping[str, Any], deadline_s: float, own: dict[str, Any] | None
    ) -> Answer:
        if self._reader is None:
            raise ClientError("the client is not started")
        position_id = str(event["position_id"])
        position = self._positions.setdefault(position_id, _Position())
        waiter: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        position.waiters[agent] = waiter
        started = time.monotonic()
        await self._producer.send_and_wait(topic, key=position_id.encode(), value=_dumps(event))
        remaining = deadline_s - (time.monotonic() - started)
        try:
            decision = await asyncio.wait_for(asyncio.shield(waiter), max(0.0, remaining))
        except TimeoutError:
            waiter.cancel()  # a late decision is counted and dropped
            if own is None:
                raise ClientError(
                    f"no {agent} decision for {position_id} within {deadline_s} s and no own choice to fall back to"
                ) from None
            return Answer(own, True, None, time.monotonic() - started)
        return Answer(dict(decision["action"]), False, decision, time.monotonic() - started)

    def _own(
        self, event: Mapping[str, Any], fields: tuple[str, ...], default: dict[str, Any] | None
    ) -> dict[str, Any] | None:
        if all(event.get(name) is not None for name in fields):
            return {name: event[name] for name in fields}
        return default

    async def decide_meta(self, signal: Mapping[str, Any], deadline_s: float) -> Answer:
        """Publish a SIGNAL_GENERATED and await its meta decision (or fall back after `deadline_s`)."""
        answer = await self._request(
            "meta", self.topics.signals, signal, deadline_s, self._own(signal, META_FIELDS, self.default_meta)
        )
        self._positions[str(signal["position_id"])].meta = answer
        return answer

    async def decide_sizing(
        self, execution: Mapping[str, Any], deadline_s: float, traded_meta: Mapping[str, Any] | None = None
    ) -> Answer:
        """Publish a TRADE_EXECUTED and await its sizing decision. The execution reports the meta action
        as traded: `traded_meta` when given (the stack traded something else), or the fallback."""
        position_id = str(execution["position_id"])
        position = self._positions.setdefault(position_id, _Position())
        event = dict(execution)
        if traded_meta is not None:
            event.update({name: traded_meta[name] for name in META_FIELDS})
        elif position.meta is not None and position.meta.fallback:
            event.update(position.meta.action)
            event["meta_fallback"] = True
        answer = await self._request(
            "sizing",
            self.topics.executions,
            event,
            deadline_s,
            self._own(execution, SIZING_FIELDS, self.default_sizing),
        )
        position.sizing = answer
        return answer

    async def report_close(self, close: Mapping[str, Any], traded_sizing: Mapping[str, Any] | None = None) -> None:
        """Publish the POSITION_CLOSED; it carries the sizing as traded after a sizing fallback, or the
        `traded_sizing` given (e.g. after a risk manager cut the leverage)."""
        position_id = str(close["position_id"])
        position = self._positions.pop(position_id, None)
        event = dict(close)
        if traded_sizing is not None:
            event.update({name: traded_sizing[name] for name in SIZING_FIELDS})
        elif position is not None and position.sizing is not None and position.sizing.fallback:
            event.update(position.sizing.action)
            event["sizing_fallback"] = True
        await self._producer.send_and_wait(self.topics.closes, key=position_id.encode(), value=_dumps(event))
