"""Control records of the learning log: a hyperparameter change and a reset to a checkpoint.

The learning log is the model's control plane. Besides one `Outcome` per completed position
it carries records that change the model; every replica applies them at their offset, so
every worker changes at the same point of the log and a replay reproduces the change:

- `HyperparametersRecord`: the per-agent alpha, gamma and epsilon schedule in force from
  this offset on. The epsilon schedule restarts at this offset from its new start
  (`epsilon(n) = max(min, start * decay ** (n - n_at_change))`), so `--meta-epsilon 0.05`
  means "explore 5 % now, and keep decaying".
- `ResetRecord`: load the learned state (tables, trackers, episodes, visit counts) and the
  hyperparameters of a named checkpoint, of this or another namespace, and continue from this
  offset. The record names the checkpoint's bytes by their sha256, so every replica either
  loads exactly the same state or refuses it.

Reward weights are not a hyperparameter here: they define what a Q-value estimates, so a
table learned under one set of weights is no estimate under another. Changing them is a new
model (backfill a namespace, evaluate, promote), and they are part of the fingerprint.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from rl_worker.core.config import AgentHyperparameters, CoreConfig
from rl_worker.core.outcome import Outcome

__all__ = [
    "AgentHyperparameters",
    "Hyperparameters",
    "HyperparametersRecord",
    "LogRecord",
    "ResetRecord",
    "decode_log_record",
]

_STRICT = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


class Hyperparameters(BaseModel):
    """Both agents' hyperparameters: what a tuning record carries and a checkpoint records."""

    model_config = _STRICT
    meta: AgentHyperparameters
    sizing: AgentHyperparameters

    @classmethod
    def from_config(cls, config: CoreConfig) -> Hyperparameters:
        """The hyperparameters a replica starts with, before any record changes them."""
        return cls(meta=config.meta, sizing=config.sizing)

    def changed(self, other: Hyperparameters) -> dict[str, tuple[float, float]]:
        """`{"meta.alpha": (this, other), ...}` for every value that differs."""
        out: dict[str, tuple[float, float]] = {}
        for agent in ("meta", "sizing"):
            mine, theirs = getattr(self, agent), getattr(other, agent)
            for name in AgentHyperparameters.model_fields:
                if getattr(mine, name) != getattr(theirs, name):
                    out[f"{agent}.{name}"] = (getattr(mine, name), getattr(theirs, name))
        return out


class HyperparametersRecord(BaseModel):
    """From this offset on, both agents learn and explore with these hyperparameters."""

    model_config = _STRICT
    kind: Literal["hyperparameters"] = "hyperparameters"
    hyperparameters: Hyperparameters
    issued_at_ms: int = Field(ge=0, description="when the operator issued it (audit only, never read by the model)")
    issued_by: str = Field(default="", max_length=256, description="who or what issued it (audit only)")
    reason: str = Field(default="", max_length=2000)


class ResetRecord(BaseModel):
    """From this offset on, the model is the named checkpoint's (learned state and hyperparameters)."""

    model_config = _STRICT
    kind: Literal["reset"] = "reset"
    app_id: str = Field(min_length=1, max_length=200, description="namespace that holds the checkpoint")
    checkpoint_offset: int = Field(ge=-1, description="the learning-log offset the checkpoint includes")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="hash of the checkpoint's bytes")
    issued_at_ms: int = Field(ge=0)
    issued_by: str = Field(default="", max_length=256)
    reason: str = Field(default="", max_length=2000, description="restore, promote, ...")


LogRecord = Annotated[Outcome | HyperparametersRecord | ResetRecord, Field(discriminator="kind")]
_OUTCOME_PREFIX = b'{"kind":"outcome"'
_LOG_RECORD: TypeAdapter[Outcome | HyperparametersRecord | ResetRecord] = TypeAdapter(LogRecord)


def decode_log_record(value: bytes) -> Outcome | HyperparametersRecord | ResetRecord:
    """One learning-log record; raises pydantic's ValidationError when it is none of the three.

    Records written before control records existed carry no `kind`: they are outcomes.
    """
    if value.startswith(_OUTCOME_PREFIX):  # what the worker writes: skip the union's dispatch (~25 % faster)
        return Outcome.model_validate_json(value)
    try:
        return _LOG_RECORD.validate_json(value)
    except ValidationError as exc:
        if any(e["type"] == "union_tag_not_found" for e in exc.errors()):
            return Outcome.model_validate_json(value)
        raise
