"""Noticing assigned input partitions that make no progress while records wait on them.

A partition is stalled when records wait after its committed offset (the broker's end offset is
past it) and that committed offset has not moved for `timeout_s`; a partition assigned but never
made ready (its decisions not read back) counts too, and so does a rebalance that does not end,
or a table recovery that lasts `RECOVERY_FACTOR` times as long (while the positions table is
restored, the inputs wait by design).
The worker shows stalls in /health and metrics and, when they last, exits so that its
partitions go to another worker (or to its own replacement): seen on tansu with Faust 0.15.3, a
rebalance could leave a range of records undelivered until the next rebalance, with the
partition's commits stuck behind it and nothing else saying so.

Kafka-free: the Faust layer feeds it the committed offsets and end offsets.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

__all__ = ["Stall", "StallWatch", "records_dropped_on_the_way"]

TP = tuple[str, int]
RECOVERY_FACTOR = 3


@dataclass(frozen=True, slots=True)
class Stall:
    what: str  # "topic[partition]", or "rebalance"
    committed: int | None
    end: int | None
    for_s: float

    def describe(self) -> str:
        if self.committed is None:
            return f"{self.what}: no progress for {self.for_s:.0f} s"
        return (
            f"{self.what}: committed offset {self.committed} with records up to at least {self.end} "
            f"waiting, unchanged for {self.for_s:.0f} s"
        )


class StallWatch:
    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self._seen: dict[TP, tuple[int | None, float]] = {}  # tp -> (committed, since)
        self._rebalancing_since: float | None = None
        self._recovering_since: float | None = None
        self.stalls: list[Stall] = []
        self.stalled_since: float | None = None

    def check(
        self,
        now: float,
        committed: Mapping[TP, int | None],
        ends: Mapping[TP, int],
        rebalancing: bool,
        recovering: bool = False,
    ) -> list[Stall]:
        """`committed` has every assigned input partition (None: not made ready yet); `ends` the
        broker's end offsets of those it could read. Returns the stalls as of `now`."""
        stalls = []
        seen = {}
        for tp, offset in committed.items():
            previous = self._seen.get(tp)
            since = now if previous is None or previous[0] != offset else previous[1]
            end = ends.get(tp)
            waiting = offset is None or (end is not None and end > offset)
            if not waiting:
                since = now
            seen[tp] = (offset, since)
            if now - since >= self.timeout_s:
                stalls.append(Stall(f"{tp[0]}[{tp[1]}]", offset, end, now - since))
        self._seen = seen
        if rebalancing:
            if self._rebalancing_since is None:
                self._rebalancing_since = now
            elif now - self._rebalancing_since >= self.timeout_s:
                stalls.append(Stall("rebalance", None, None, now - self._rebalancing_since))
        else:
            self._rebalancing_since = None
        if recovering:
            if self._recovering_since is None:
                self._recovering_since = now
            elif now - self._recovering_since >= RECOVERY_FACTOR * self.timeout_s:
                stalls.append(Stall("table recovery", None, None, now - self._recovering_since))
        else:
            self._recovering_since = None
        self.stalls = stalls
        if not stalls:
            self.stalled_since = None
        elif self.stalled_since is None:
            self.stalled_since = now
        return stalls

    def forget(self, tps: Iterable[TP]) -> None:
        for tp in tps:
            self._seen.pop(tp, None)


def records_dropped_on_the_way(position: int | None, read: int | None, taken: int | None) -> bool:
    """The consumer's fetch position (`position`, the next offset it hands out) is past more than
    one record beyond what the agent took (`taken`), while everything Faust delivered of the
    partition (`read`, its read offset) was taken: records were handed out and never delivered.
    Records merely on their way show the same for a moment; the caller asks for two looks."""
    if position is None or read is None or taken is None:
        return False
    return taken >= read and position > taken + 1
