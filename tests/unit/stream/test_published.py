"""The per-partition ledger of published decisions: what is at risk, where a next owner must read."""

from __future__ import annotations

from rl_worker.stream.published import (
    RECOVER_FROM_HEADER,
    TRIGGERS_HEADER,
    PublishedDecision,
    PublishedDecisions,
    decode_triggers,
    encode_triggers,
    recover_from_header,
)

SIG, EXE = "in.signals", "in.executions"


def test_triggers_round_trip_and_bad_headers_read_as_unknown() -> None:
    triggers = ((SIG, 12), (EXE, 7))
    assert decode_triggers(encode_triggers(triggers)) == triggers
    assert decode_triggers(None) is None
    assert decode_triggers(b"in.signals:x") is None
    assert recover_from_header([(TRIGGERS_HEADER, b"a:1"), (RECOVER_FROM_HEADER, b"42")]) == 42
    assert recover_from_header([(RECOVER_FROM_HEADER, b"nope")]) is None
    assert recover_from_header([]) is None


def test_recover_from_is_the_lowest_decision_still_at_risk_then_the_end() -> None:
    ledger = PublishedDecisions(margin_s=0)
    ledger.begin(3, [], end=100, committed={SIG: 50, EXE: 40})
    assert ledger.headers(3, [(SIG, 50)])[0] == (RECOVER_FROM_HEADER, b"100")
    ledger.on_sent(3, 100, ((SIG, 50),))  # meta of the signal at 50
    ledger.on_sent(3, 101, ((SIG, 49), (EXE, 41)))  # sizing: signal committed, execution not
    ledger.on_sent(3, 102, ((SIG, 52),))
    ledger.on_committed({(SIG, 3): 51}, settled=True)  # the signal at 50 is committed; the execution at 41 is not
    assert ledger.partitions[3].recover_from == 101
    ledger.on_committed({(EXE, 3): 42}, settled=True)
    assert ledger.partitions[3].recover_from == 102
    ledger.on_committed({(SIG, 3): 53}, settled=True)
    assert ledger.partitions[3].recover_from == 103  # nothing at risk: the end as known
    assert ledger.headers(3, [])[0] == (RECOVER_FROM_HEADER, b"103")


def test_recovered_decisions_are_found_until_their_triggers_are_committed() -> None:
    ledger = PublishedDecisions(margin_s=0)
    records = [
        PublishedDecision(10, "p1:meta", b"m1", ((SIG, 5),)),
        PublishedDecision(11, "p1:sizing", b"s1", ((SIG, 5), (EXE, 9))),
        PublishedDecision(12, "p2:meta", b"m2", ((SIG, 3),)),  # already committed: not at risk
        PublishedDecision(13, "p3:meta", b"m3", None),  # written without headers
    ]
    ledger.begin(0, records, end=13, committed={SIG: 4, EXE: 9})
    assert ledger.is_ready(0) and not ledger.is_ready(1)
    assert ledger.published(0, "p1:meta") == b"m1"
    assert ledger.published(0, "p1:sizing") == b"s1"
    assert ledger.published(0, "p2:meta") is None
    assert ledger.published(0, "p3:meta") == b"m3"
    assert ledger.partitions[0].next_offset == 14
    assert ledger.partitions[0].recover_from == 10
    ledger.on_committed({(SIG, 0): 6}, settled=True)
    assert ledger.published(0, "p1:meta") is None
    assert ledger.published(0, "p1:sizing") == b"s1"  # its execution is still uncommitted
    assert ledger.partitions[0].recover_from == 11
    ledger.on_committed({(EXE, 0): 10}, settled=True)
    assert ledger.published(0, "p1:sizing") is None
    assert ledger.partitions[0].recover_from == 14


def test_nothing_is_dropped_before_the_assignment_settles_and_the_last_commit_wins() -> None:
    """Faust can seek a partition back to a committed offset fetched before a later commit (and
    commit it again): until its streams are sought, no decision stops being published."""
    ledger = PublishedDecisions(margin_s=0)
    ledger.begin(1, [], end=0, committed={SIG: 10})
    ledger.on_sending(1, "p:meta", b"m")
    ledger.on_sent(1, 0, ((SIG, 10),), "p:meta")
    ledger.on_committed({(SIG, 1): 11}, settled=False)
    assert ledger.published(1, "p:meta") == b"m"
    assert ledger.partitions[1].recover_from == 0
    ledger.on_committed({(SIG, 1): 10}, settled=False)  # sought back, committed again
    assert ledger.partitions[1].committed[SIG] == 10
    ledger.on_committed({(SIG, 1): 10}, settled=True)
    assert ledger.published(1, "p:meta") == b"m"  # still at risk at 10
    ledger.on_committed({(SIG, 1): 11}, settled=True)
    assert ledger.published(1, "p:meta") is None
    assert ledger.partitions[1].recover_from == 1


def test_forgotten_partitions_ignore_acks_and_commits() -> None:
    ledger = PublishedDecisions(margin_s=0)
    ledger.begin(1, [], end=0, committed={SIG: 10})
    ledger.forget([1])
    ledger.on_sent(1, 1, ((SIG, 11),))
    ledger.on_committed({(SIG, 1): 12}, settled=True)
    assert not ledger.is_ready(1)
    assert ledger.headers(1, [(SIG, 1)])[0] == (RECOVER_FROM_HEADER, b"0")  # its recover_from when forgotten
    assert ledger.headers(5, [(SIG, 1)])[0] == (RECOVER_FROM_HEADER, b"0")  # never known


def test_a_forgotten_partition_keeps_its_last_recover_from_for_late_records() -> None:
    ledger = PublishedDecisions(margin_s=0)
    ledger.begin(3, [], end=40, committed={SIG: 9})
    ledger.forget()
    assert ledger.headers(3, [(SIG, 9)])[0] == (RECOVER_FROM_HEADER, b"40")


def test_after_a_seek_of_ours_nothing_is_dropped_until_the_record_comes_again() -> None:
    ledger = PublishedDecisions(margin_s=0)
    ledger.begin(2, [], end=0, committed={SIG: 5})
    ledger.on_committed({}, settled=True)
    ledger.on_sending(2, "p:meta", b"m")
    ledger.on_sent(2, 0, ((SIG, 5),), "p:meta")
    ledger.hold(2, SIG, 5)
    ledger.on_committed({(SIG, 2): 6}, settled=True)  # a commit of the record before the seek
    assert ledger.published(2, "p:meta") == b"m"
    ledger.on_taken(2, SIG, 7)
    assert ledger.any_held
    ledger.on_taken(2, SIG, 5)  # the record comes again
    assert not ledger.any_held
    ledger.on_committed({(SIG, 2): 6}, settled=True)
    assert ledger.published(2, "p:meta") is None


def test_a_covered_decision_stays_for_the_margin() -> None:
    now = [100.0]
    ledger = PublishedDecisions(margin_s=30, clock=lambda: now[0])
    ledger.begin(0, [], end=0, committed={SIG: 5})
    ledger.on_sending(0, "p:meta", b"m")
    ledger.on_sent(0, 0, ((SIG, 5),), "p:meta")
    ledger.on_committed({(SIG, 0): 6}, settled=True)
    assert ledger.published(0, "p:meta") == b"m" and ledger.partitions[0].recover_from == 0
    now[0] = 131.0
    ledger.on_committed({(SIG, 0): 7}, settled=True)
    assert ledger.published(0, "p:meta") is None and ledger.partitions[0].recover_from == 1
