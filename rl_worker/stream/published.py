"""What this worker knows was published on `rl.decisions`, per partition, and where a next owner must read.

The decisions topic is co-partitioned with the inputs: a decision goes to the partition of the
input record that made it. When a partition is (re)assigned, the records after its committed
input offsets are delivered again, and some of their decisions are already on the topic
(published by the previous owner, killed before its next offset commit). The worker reads them
back before it processes the partition (`DecisionRecovery`), and the join then takes a published
decision as made (no second record, the outcome credits the published action) instead of deciding
again.

How far back to read. A decision is *at risk* while any input record that can trigger it is not
committed: the signal for a meta decision; the signal and the execution for a sizing decision
(whichever of the two comes second makes it, and a redelivery may see them in another order).
Every worker keeps the topic offsets of the at-risk decisions of its partitions: those it read
back, and its own once the broker acknowledged them. After each successful input offset commit
it drops the decisions that are no longer at risk; `recover_from` is then the lowest offset still
at risk, or the end of the partition as known when none is. Every decision record carries, in
its `rl.recover_from` header, that value as of its sending, and its triggers in `rl.triggers`.
So the last record of a partition tells the next owner where to start reading: everything at
risk for the committed offsets of that time is at or after it, every later decision record is
after it, and committed offsets only move forward, so what is at risk now is a subset.

Kafka-free on purpose (the Faust layer feeds it), so the unit tests cover it without a broker.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

__all__ = [
    "RECOVER_FROM_HEADER",
    "TRIGGERS_HEADER",
    "PartitionLedger",
    "PublishedDecision",
    "PublishedDecisions",
    "Trigger",
    "decode_triggers",
    "encode_triggers",
    "recover_from_header",
]

RECOVER_FROM_HEADER = "rl.recover_from"
TRIGGERS_HEADER = "rl.triggers"

Trigger = tuple[str, int]  # (input topic, offset) on the decision's partition


def encode_triggers(triggers: Iterable[Trigger]) -> bytes:
    return ",".join(f"{topic}:{offset}" for topic, offset in triggers).encode()


def decode_triggers(value: bytes | None) -> tuple[Trigger, ...] | None:
    """The triggers of a decision record; None when the header is missing or unreadable."""
    if not value:
        return None
    out = []
    try:
        for item in value.decode().split(","):
            topic, _, offset = item.rpartition(":")
            out.append((topic, int(offset)))
    except (UnicodeDecodeError, ValueError):
        return None
    return tuple(out)


def recover_from_header(headers: Iterable[tuple[str, bytes]]) -> int | None:
    """The `rl.recover_from` value of a decision record's headers; None when absent or unreadable."""
    for key, value in headers:
        if key == RECOVER_FROM_HEADER:
            try:
                return int(value)
            except ValueError:
                return None
    return None


@dataclass(frozen=True, slots=True)
class PublishedDecision:
    """One decision record read back from the topic."""

    offset: int
    decision_id: str
    value: bytes
    triggers: tuple[Trigger, ...] | None  # None: written without the header (an older worker)


@dataclass(slots=True)
class _AtRisk:
    offset: int
    triggers: tuple[Trigger, ...]
    decision_id: str | None  # its bytes sit in `recovered` until it is no longer at risk
    covered_since: float | None = None  # when a commit first covered all its triggers


@dataclass(slots=True)
class PartitionLedger:
    """One partition: the decisions read back, the offsets still at risk, the next owner's start."""

    next_offset: int
    committed: dict[str, int]
    recovered: dict[str, bytes] = field(default_factory=dict)
    at_risk: list[_AtRisk] = field(default_factory=list)
    recover_from: int = 0
    header_value: bytes = b"0"
    settled: bool = False
    held: dict[str, int] = field(default_factory=dict)  # topic -> offset a seek of ours went back to

    def is_at_risk(self, entry: _AtRisk) -> bool:
        committed = self.committed
        return any(offset >= committed.get(topic, 0) for topic, offset in entry.triggers)

    def refresh(self, now: float, margin_s: float) -> None:
        """Drop the decisions whose triggers a commit has covered for `margin_s`. The margin is a
        guard beyond the argument above: Faust can seek a partition back to a committed offset it
        fetched before a later commit (a race inside a rebalance, seen on Apache Kafka), and a
        decision kept a little longer costs only a longer read-back."""
        kept = []
        for entry in self.at_risk:
            if self.is_at_risk(entry):
                entry.covered_since = None
                kept.append(entry)
                continue
            if entry.covered_since is None:
                entry.covered_since = now
            if now - entry.covered_since < margin_s:
                kept.append(entry)
            elif entry.decision_id is not None:
                self.recovered.pop(entry.decision_id, None)
        self.at_risk = kept
        self.recover_from = kept[0].offset if kept else self.next_offset
        self.header_value = str(self.recover_from).encode()


class PublishedDecisions:
    """The ledgers of the partitions this worker owns (one per partition number)."""

    def __init__(self, margin_s: float = 30.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.partitions: dict[int, PartitionLedger] = {}
        self.last_recover_from: dict[int, int] = {}  # partition -> recover_from when it was forgotten
        self.any_held = False
        self.margin_s = margin_s
        self.clock = clock

    def begin(
        self,
        partition: int,
        records: Iterable[PublishedDecision],
        end: int,
        committed: Mapping[str, int],
    ) -> PartitionLedger:
        """Start owning a partition: `records` are its decisions from the recovery start to `end`,
        `committed` the input offsets committed for it (topic -> next offset to read)."""
        ledger = PartitionLedger(next_offset=end, committed=dict(committed))
        for record in sorted(records, key=lambda r: r.offset):
            # Without the header (written by an older worker) the triggers are unknown: the
            # decision is kept for this recovery but not tracked as at risk.
            ledger.recovered[record.decision_id] = record.value
            if record.triggers is not None:
                ledger.at_risk.append(_AtRisk(record.offset, record.triggers, record.decision_id))
            ledger.next_offset = max(ledger.next_offset, record.offset + 1)
        # Decisions no longer at risk (all their triggers committed) are dropped here: the row that
        # holds them was written before that commit, so no redelivered record decides them again.
        ledger.refresh(self.clock(), self.margin_s)
        self.partitions[partition] = ledger
        return ledger

    def forget(self, partitions: Iterable[int] | None = None) -> None:
        for partition in list(self.partitions) if partitions is None else partitions:
            ledger = self.partitions.pop(partition, None)
            if ledger is not None:
                self.last_recover_from[partition] = ledger.recover_from

    def is_ready(self, partition: int) -> bool:
        return partition in self.partitions

    def published(self, partition: int, decision_id: str) -> bytes | None:
        """The record already on the topic for this decision id, if it was read back."""
        ledger = self.partitions.get(partition)
        return None if ledger is None else ledger.recovered.get(decision_id)

    def headers(self, partition: int, triggers: Iterable[Trigger]) -> list[tuple[str, bytes]]:
        ledger = self.partitions.get(partition)
        if ledger is None:
            # A record of a partition between two assignments (Faust can hand the agent a record
            # of the old one): the last value known is older than the truth, so still valid (a
            # longer read-back); 0 would make the next owner read the whole partition.
            recover_from = str(self.last_recover_from.get(partition, 0)).encode()
        else:
            recover_from = ledger.header_value
        return [(RECOVER_FROM_HEADER, recover_from), (TRIGGERS_HEADER, encode_triggers(triggers))]

    def on_sending(self, partition: int, decision_id: str, value: bytes) -> None:
        """One of our decision records is being sent: from now on it counts as published (Faust
        can deliver a record twice within one assignment, when it seeks back to the committed
        offset after the partition was made ready)."""
        ledger = self.partitions.get(partition)
        if ledger is not None:
            ledger.recovered[decision_id] = value

    def on_sent(
        self, partition: int, offset: int, triggers: tuple[Trigger, ...], decision_id: str | None = None
    ) -> None:
        """The broker acknowledged one of our decision records at `offset`."""
        ledger = self.partitions.get(partition)
        if ledger is None:
            return  # the partition moved away meanwhile: its next owner reads the record back
        ledger.at_risk.append(_AtRisk(offset, triggers, decision_id))
        if offset >= ledger.next_offset:
            ledger.next_offset = offset + 1
        else:  # acknowledgements arrive in offset order per partition; keep the list sorted anyway
            ledger.at_risk.sort(key=lambda e: e.offset)

    def on_committed(self, offsets: Mapping[tuple[str, int], int], settled: bool) -> None:
        """Input offsets (topic, partition) -> next offset to read, committed successfully.

        `settled`: the assignment's streams are resumed and sought to their committed offsets.
        Until then Faust can still seek a partition back to a committed offset it fetched before
        a later commit (and then commit that older offset again): the broker's committed offset
        can move back, so nothing is dropped before the seek (the last commit reported wins)."""
        touched = set()
        for (topic, partition), offset in offsets.items():
            ledger = self.partitions.get(partition)
            if ledger is None:
                continue
            if offset != ledger.committed.get(topic):
                ledger.committed[topic] = offset
                touched.add(partition)
        if not settled:
            return
        for partition, ledger in self.partitions.items():
            if ledger.held:
                continue
            if partition in touched or not ledger.settled or ledger.at_risk:
                ledger.settled = True
                ledger.refresh(self.clock(), self.margin_s)

    def hold(self, partition: int, topic: str, offset: int) -> None:
        """We seek `topic[partition]` back to `offset`: drop nothing of the partition until the
        record at `offset` comes again (commits made meanwhile may cover records that will)."""
        ledger = self.partitions.get(partition)
        if ledger is not None:
            ledger.held[topic] = offset
            self.any_held = True

    def on_taken(self, partition: int, topic: str, offset: int) -> None:
        """A record is being processed (called only while `any_held`)."""
        ledger = self.partitions.get(partition)
        if ledger is not None and ledger.held.get(topic, -1) >= offset:
            del ledger.held[topic]
            ledger.settled = False  # refreshed at the next settled commit
            self.any_held = any(p.held for p in self.partitions.values())
