"""A/B arms: which arm serves a position, by a stable hash of its position id.

    bucket(position_id) = (u64 >> 11) / 2**53,   u64 = the 8-byte digest, little-endian, of
                          BLAKE2b(position_id as UTF-8, digest_size=8, person=b"rl-ab-arm")
    arm(position_id)    = "control" if bucket(position_id) < control_share else "rl"

The hash depends on nothing but the position id (no seed, no process hash salt, no worker
id), so both decisions of a position land in one arm, on every worker, across restarts and
replays; `person` keeps the buckets independent of every other BLAKE2b use in the project
(the exploration draws hash the decision ids with another key). Raising the share only moves
positions from the RL arm into the control arm, never the other way.
"""

from __future__ import annotations

import hashlib
from typing import Final, Literal

__all__ = ["ARMS", "CONTROL_ARM", "RL_ARM", "Arm", "arm_bucket", "assign_arm"]

Arm = Literal["rl", "control"]
RL_ARM: Final = "rl"
CONTROL_ARM: Final = "control"
ARMS: Final = (RL_ARM, CONTROL_ARM)

_PERSON: Final = b"rl-ab-arm"
_TWO_POW_MINUS_53: Final = 1.0 / (1 << 53)


def arm_bucket(position_id: str) -> float:
    """The position's place in [0, 1): uniform over ids, the same on every machine."""
    digest = hashlib.blake2b(position_id.encode(), digest_size=8, person=_PERSON).digest()
    # the top 53 bits: exact in a float, and never rounds up to 1.0
    return (int.from_bytes(digest, "little") >> 11) * _TWO_POW_MINUS_53


def assign_arm(position_id: str, control_share: float) -> Arm:
    """`control` for a stable `control_share` of the position ids, `rl` for the rest."""
    if not 0.0 <= control_share <= 1.0:
        raise ValueError(f"control_share must lie in [0, 1], got {control_share}")
    if control_share <= 0.0:
        return RL_ARM
    if control_share >= 1.0:
        return CONTROL_ARM
    return CONTROL_ARM if arm_bucket(position_id) < control_share else RL_ARM
