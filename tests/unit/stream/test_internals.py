"""The Faust / mode / aiokafka internals the worker relies on are still there, shaped as checked."""

from __future__ import annotations

import pytest

from rl_worker.stream import internals


@pytest.mark.parametrize("internal", internals.INTERNALS, ids=lambda i: i.name.split(" ")[1])
def test_internal_is_still_there(internal: internals.Internal) -> None:
    try:
        internal.check()
    except AssertionError as exc:
        pytest.fail(
            f"{internal.name} changed: {exc}. rl_worker.stream.internals relies on it for: {internal.why} "
            f"(gain: {internal.gain}; checked against {internals.CHECKED_VERSIONS}). "
            "Re-measure with scripts/bench_worker.py and adapt or drop the patch.",
            pytrace=False,
        )


def test_every_internal_says_why_and_what_it_gained() -> None:
    for internal in internals.INTERNALS:
        assert internal.why and internal.gain, internal.name


def test_a_missing_internal_is_reported_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    from faust.transport.drivers import aiokafka as faust_aiokafka

    monkeypatch.delattr(faust_aiokafka.AIOKafkaConsumerThread, "_create_worker_consumer")
    problems = internals.check_internals()
    assert len(problems) == 1 and "_create_worker_consumer is gone" in problems[0]


def test_patches_apply_once_and_keep_the_setting() -> None:
    from faust.transport import consumer as faust_consumer

    internals.apply_patches(20)
    patched = faust_consumer.Consumer.wait_first
    internals.apply_patches(7)
    assert faust_consumer.Consumer.wait_first is patched
    assert internals._settings["fetch_max_wait_ms"] == 7
    assert internals.check_internals() == []
