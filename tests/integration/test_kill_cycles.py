"""Property 1 and 2 across SIGKILLs: a few kill/restart cycles of one of two workers mid-stream.

After each cycle: no decision id published twice, none with two actions, none missing, every
position's first outcome (the one every replica applies) credits the published actions; and at
the end both replicas equal a full replay of the learning log. scripts/soak.py runs the long version.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.integration.harness import run
from tests.integration.kill_cycles import HEADER, CycleResult, kill_cycles
from tests.integration.replay import assert_matches_full_replay

pytestmark = pytest.mark.integration

PARTITIONS = 4
CYCLES = 3


def test_kill_cycles_repeat_diverge_and_lose_nothing(stack_factory: Any) -> None:
    stack = stack_factory(RL_PARTITIONS=str(PARTITIONS))
    workers = [stack.start_worker(), stack.start_worker()]
    for worker in workers:
        worker.wait_ready()

    async def cycles() -> list[CycleResult]:
        return [r async for r in kill_cycles(stack, workers, CYCLES, PARTITIONS, positions=150, rate=600.0)]

    results = run(cycles())
    print("\n" + HEADER + "\n" + "\n".join(r.line() for r in results))
    assert len(results) == CYCLES
    for r in results:
        assert (r.repeated, r.divergent, r.missing, r.outcome_problems) == (0, 0, 0, 0), (r.line(), r.examples)
    for worker in workers:
        worker.wait_ready()
    assert_matches_full_replay(workers, stack.bootstrap, stack.outcomes)
    assert {w.health()["outcomes_applied"] for w in workers} == {CYCLES * 150}
