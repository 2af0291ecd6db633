"""Arm assignment: a documented, stable hash of the position id."""

from __future__ import annotations

import hashlib

import pytest

from rl_worker.core.arms import arm_bucket, assign_arm


def bucket_from_the_docstring(position_id: str) -> float:
    digest = hashlib.blake2b(position_id.encode(), digest_size=8, person=b"rl-ab-arm").digest()
    return (int.from_bytes(digest, "little") >> 11) / 2**53


IDS = [f"pos-{i}" for i in range(20_000)]


def test_bucket_is_the_documented_hash() -> None:
    for position_id in ["a", "pos-1", "sim0-000042", "ünïcødé", "x" * 256]:
        assert arm_bucket(position_id) == bucket_from_the_docstring(position_id)


def test_bucket_is_pinned() -> None:
    # Changing the hash would move live positions between arms: this value must never change.
    assert arm_bucket("pos-1") == 0.3449581840279715
    assert arm_bucket("sim0-000000") == 0.13942050822631347
    assert 0.0 <= min(map(arm_bucket, IDS)) and max(map(arm_bucket, IDS)) < 1.0


def test_share_is_honoured_and_shares_nest() -> None:
    at_20 = {p for p in IDS if assign_arm(p, 0.2) == "control"}
    at_50 = {p for p in IDS if assign_arm(p, 0.5) == "control"}
    # 20,000 draws: the binomial sd of the share is 0.0028; 0.01 is 3.5 sd
    assert abs(len(at_20) / len(IDS) - 0.2) < 0.01
    assert abs(len(at_50) / len(IDS) - 0.5) < 0.01
    assert at_20 < at_50  # raising the share only moves positions into control


def test_edges() -> None:
    assert all(assign_arm(p, 0.0) == "rl" for p in IDS[:100])
    assert all(assign_arm(p, 1.0) == "control" for p in IDS[:100])
    with pytest.raises(ValueError, match="control_share"):
        assign_arm("p", 1.5)
    with pytest.raises(ValueError, match="control_share"):
        assign_arm("p", float("nan"))
