"""The learning log as columns: arms, the window, the off-policy columns."""

from __future__ import annotations

import numpy as np

from rl_worker.analysis.learning_log import LogTally
from rl_worker.core import CoreConfig, ModelReplica
from rl_worker.sim.events import make_outcome


def test_columns_window_and_off_policy_decisions() -> None:
    config = CoreConfig()
    replica = ModelReplica(config)
    tally = LogTally(config, "rl", since_ms=1_700_000_000_000 + 60_000 * 2)  # from the third outcome on
    kinds = ["rl", "rl", "rl", "control", "rl", "rl", "rl"]
    for i, policy in enumerate(kinds):
        record = make_outcome(np.random.default_rng(i), config, i, policy=policy)
        meta = record.meta.model_copy(update={"propensity": 0.5})
        sizing = record.sizing.model_copy(update={"propensity": 0.25, "max_leverage": 3.0})
        if i == 5:  # overridden sizing: not an off-policy sample of the sizing agent
            sizing = sizing.model_copy(update={"decided_action_index": 0})
        if i == 6:  # logged before propensities were recorded
            meta = meta.model_copy(update={"propensity": None})
        record = record.model_copy(update={"meta": meta, "sizing": sizing, "overridden": i == 5})
        applied = replica.apply(record, i)
        tally.add(record, applied, replica, i)
    tally.add(record, replica.apply(record, 7), replica, 7)  # a repeated position: not counted
    tally.skip(8)
    assert tally.records == 9 and tally.included == 5 and tally.unreadable == 1
    assert len(tally.trades("rl")) == 4 and len(tally.trades("control")) == 1
    assert len(tally.trades("nobody")) == 0
    assert tally.overridden == 1 and tally.without_propensity == 1
    assert len(tally.meta) == 4  # outcomes 2, 3 (the control arm's), 4, 5 (6 has no propensity)
    assert len(tally.sizing) == 4  # outcomes 2, 3, 4, 6 (5 was overridden)
    assert tally.meta.propensities == [0.5, 0.5, 0.5, 0.5]
    assert all(max(m.members) < 40 for m in tally.sizing.masks)  # max leverage 3: 5 multipliers x 2 levels
    assert tally.start_reading is not None and tally.start_reading.outcomes_applied == 3
    rewards = tally.trades("rl").meta_reward
    assert np.isfinite(rewards).all()
