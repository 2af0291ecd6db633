"""Offline A/B runs: arms by the stable hash, both arms learned from, the oracle's figures."""

from __future__ import annotations

from rl_worker.core.arms import BaselinePolicy, assign_arm
from rl_worker.sim.ab import run_offline_ab
from rl_worker.sim.demo_config import demo_core_config


def test_arms_split_by_hash_and_the_replica_learns_from_both() -> None:
    run = run_offline_ab(300, 3, demo_core_config(3), 0.3, policies={"rl": "rl", "control": "baseline"},
                         snapshot_at=100)
    n_control = sum(assign_arm(f"sim3-{i:06d}", 0.3) == "control" for i in range(300))
    assert len(run.trades["control"]) == n_control and len(run.trades["rl"]) == 300 - n_control
    assert run.replica.n_updates == 300  # both arms' positions were applied
    # the fixed baseline trades dual_momentum / xgb / 0.5: the replica visited that action's cells
    visits = run.replica.meta_table.visits[: len(run.replica.meta_table)]
    assert visits[:, 2].sum() >= n_control  # index (0 * 4 + 0) * 5 + 2 = dual_momentum, xgb, 0.5
    assert len(run.meta.actions) == len(run.trades["rl"]) == len(run.sizing.rewards)
    assert all(0 < p <= 1 for p in run.meta.propensities)
    assert run.snapshot is not None
    assert run.meta.since(100).positions[0] >= 100
    assert run.oracle_pnl["rl"] != run.oracle_pnl["control"]


def test_share_one_is_apprentice_mode() -> None:
    run = run_offline_ab(60, 4, demo_core_config(4), 1.0, baseline=BaselinePolicy(kind="uniform"))
    assert len(run.trades["rl"]) == 0 and len(run.trades["control"]) == 60
    assert run.replica.n_updates == 60 and len(run.meta.actions) == 0
