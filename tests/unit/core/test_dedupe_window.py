"""The replica remembers the last `dedupe_window` position ids, and forgets the oldest first."""

from __future__ import annotations

import numpy as np

from rl_worker.core import CoreConfig, ModelReplica
from rl_worker.core.snapshot import decode_replica, encode_replica
from rl_worker.sim.events import make_outcomes


def test_window_forgets_the_oldest_and_survives_a_snapshot() -> None:
    config = CoreConfig(dedupe_window=3)
    records = make_outcomes(np.random.default_rng(5), config, 4)
    replica = ModelReplica(config)
    for record in records:
        assert replica.apply(record) is not None
    assert list(replica.applied) == [r.position_id for r in records[1:]]
    restored = decode_replica(encode_replica(replica), config)
    assert restored.apply(records[3]) is None  # still remembered: ignored
    assert restored.apply(records[0]) is not None  # forgotten: applied again
    assert list(restored.applied) == [r.position_id for r in (*records[2:], records[0])]
