"""The position join without a broker: any arrival order, duplicates, redeliveries, conflicts."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest

from rl_worker.contract import InvalidEventError, decode_event
from rl_worker.core import CoreConfig, ModelReplica, Outcome
from rl_worker.positions import PositionJoiner, decode_row, encode_row
from rl_worker.sim import events as f

TOPICS = ("signals", "executions", "closes")


def events_of(pid: str, seed: int = 0, **execution_extra: object) -> dict[str, object]:
    rng = np.random.default_rng(seed)
    raw = {
        "signals": f.signal(pid, rng),
        "executions": f.execution(pid, rng, **execution_extra),
        "closes": f.close(pid, rng),
    }
    return {topic: decode_event(f.encode(event)) for topic, event in raw.items()}


def joiner() -> PositionJoiner:
    return PositionJoiner(ModelReplica(CoreConfig()), "rl", lambda: 1_000)


@pytest.mark.parametrize("order", list(itertools.permutations(TOPICS)))
def test_any_order_gives_one_meta_one_sizing_one_outcome(order: tuple[str, ...]) -> None:
    j = joiner()
    events = events_of("p1")
    row = None
    emitted = []
    for offset, topic in enumerate(order):
        result = j.handle(row, events[topic], (topic, 0, offset))
        assert result.status == "applied"
        row = result.row
        emitted.extend(result.emits)
    kinds = sorted(e.kind for e in emitted)
    assert kinds == ["decision", "decision", "outcome"]
    agents = sorted(json.loads(e.value)["agent"] for e in emitted if e.kind == "decision")
    assert agents == ["meta", "sizing"]
    outcome = Outcome.model_validate_json(next(e.value for e in emitted if e.kind == "outcome"))
    assert outcome.position_id == "p1"
    sizing = next(json.loads(e.value) for e in emitted if e.kind == "decision" and b'"sizing"' in e.value)
    assert sizing["source"]["topic"] == "executions"  # even when decided on the signal's arrival


def test_duplicate_changes_nothing_and_redelivery_reemits_the_same_bytes() -> None:
    j = joiner()
    events = events_of("p1")
    first = j.handle(None, events["signals"], ("signals", 0, 5))
    assert [e.kind for e in first.emits] == ["decision"]
    duplicate = j.handle(first.row, events["signals"], ("signals", 0, 9))
    assert duplicate.status == "duplicate" and duplicate.emits == []
    redelivered = j.handle(first.row, events["signals"], ("signals", 0, 5))
    assert redelivered.status == "redelivered"
    assert [e.value for e in redelivered.emits] == [e.value for e in first.emits]


def test_redelivered_signal_reemits_the_sizing_decision_it_triggered() -> None:
    j = joiner()
    events = events_of("p1")
    row = j.handle(None, events["executions"], ("executions", 1, 3)).row
    on_signal = j.handle(row, events["signals"], ("signals", 1, 4))
    assert len(on_signal.emits) == 2
    again = j.handle(on_signal.row, events["signals"], ("signals", 1, 4))
    assert [e.value for e in again.emits] == [e.value for e in on_signal.emits]
    # the execution's own redelivery emitted nothing the first time, so it re-emits nothing
    assert j.handle(on_signal.row, events["executions"], ("executions", 1, 3)).emits == []


def test_a_different_second_signal_is_a_conflict() -> None:
    j = joiner()
    events = events_of("p1")
    row = j.handle(None, events["signals"], ("signals", 0, 1)).row
    other = events["signals"].model_copy(update={"event_id": "another"})
    with pytest.raises(InvalidEventError) as info:
        j.handle(row, other, ("signals", 0, 2))
    assert info.value.kind == "ConflictingEvent"
    other_symbol = events["closes"].model_copy(update={"symbol": "ETHUSDT"})
    with pytest.raises(InvalidEventError):
        j.handle(row, other_symbol, ("closes", 0, 3))


def test_execution_whose_limits_admit_no_action_is_rejected_before_it_is_stored() -> None:
    j = joiner()
    events = events_of("p1", max_leverage=0.5)
    with pytest.raises(InvalidEventError) as info:
        j.handle(None, events["executions"], ("executions", 0, 0))
    assert info.value.kind == "NoAllowedAction"


def test_sizing_respects_the_tighter_of_event_and_config_limits() -> None:
    j = joiner()
    events = events_of("p1", max_leverage=3.0, max_size_multiplier=5.0)
    row = j.handle(None, events["signals"], ("signals", 0, 0)).row
    sizing = json.loads(j.handle(row, events["executions"], ("executions", 0, 0)).emits[0].value)
    assert sizing["action"]["leverage"] <= 3
    assert sizing["limits"] == {"max_size_multiplier": 1.0, "max_leverage": 3.0}


@pytest.mark.parametrize("order", list(itertools.permutations(TOPICS)))
def test_rows_survive_their_codec_at_every_stage(order: tuple[str, ...]) -> None:
    # The table holds rows as these bytes, and changelog recovery hands them back as the parsed dict.
    j = joiner()
    events = events_of("p1")
    row = None
    for offset, topic in enumerate(order):
        row = j.handle(row, events[topic], (topic, 3, offset), event_ms=5_000 + offset).row
        stored = encode_row(row)
        assert decode_row(stored) == row
        assert decode_row(json.loads(stored)) == row
        assert encode_row(decode_row(stored)) == stored
        row = decode_row(stored)  # the join goes on from what the table holds
    assert row is not None and row.partition == 3 and row.updated_ms == 5_002
    assert row.inputs() == ["signal", "execution", "close"]
    assert row.meta is not None and row.sizing is not None and row.outcome is not None


def _decisions(emits: list) -> dict[str, dict]:  # type: ignore[type-arg]
    return {json.loads(e.value)["agent"]: json.loads(e.value) for e in emits if e.kind == "decision"}


def test_a_published_decision_is_taken_as_made_and_the_outcome_credits_it() -> None:
    """A row lost with a killed worker: its decisions are on the topic; the new owner must not
    decide again (another replica state could pick another action), and the outcome must
    credit what was published."""
    events = events_of("p1")
    first = joiner()
    row = None
    emitted = []
    for offset, topic in enumerate(TOPICS[:2]):
        result = first.handle(row, events[topic], (topic, 0, offset))
        row, emitted = result.row, emitted + result.emits
    published = {f"p1:{agent}": json.dumps(record).encode() for agent, record in _decisions(emitted).items()}
    # a different action for the same id, as another replica state would give
    published["p1:sizing"] = json.dumps(json.loads(published["p1:sizing"]) | {"action_index": 3}).encode()

    second = joiner()  # a new owner with an empty row: the table write was lost
    row = None
    for offset, topic in enumerate(TOPICS):
        result = second.handle(row, events[topic], (topic, 0, offset), published=published.get)
        row = result.row
        assert [e.kind for e in result.emits] == (["outcome"] if topic == "closes" else [])
    outcome = Outcome.model_validate_json(result.emits[0].value)
    assert outcome.sizing.action_index == 3
    assert outcome.meta.action_index == json.loads(published["p1:meta"])["action_index"]


def test_a_redelivery_does_not_resend_a_published_decision_but_sends_an_unpublished_one() -> None:
    j = joiner()
    events = events_of("p1")
    signal = j.handle(None, events["signals"], ("signals", 0, 5))
    both = j.handle(signal.row, events["executions"], ("executions", 0, 6))
    sizing = both.emits[0].value
    again = j.handle(both.row, events["executions"], ("executions", 0, 6), published={"p1:sizing": sizing}.get)
    assert again.status == "redelivered" and again.emits == []
    lost = j.handle(both.row, events["executions"], ("executions", 0, 6), published={}.get)
    assert [e.value for e in lost.emits] == [sizing]  # never published: sent now, same bytes


def test_a_row_older_than_the_topic_takes_the_published_record() -> None:
    j = joiner()
    events = events_of("p1")
    signal = j.handle(None, events["signals"], ("signals", 0, 5))
    other = json.dumps(json.loads(signal.emits[0].value) | {"action_index": 7}).encode()
    result = j.handle(signal.row, events["executions"], ("executions", 0, 6), published={"p1:meta": other}.get)
    assert result.row.meta is not None and json.loads(result.row.meta.record)["action_index"] == 7
