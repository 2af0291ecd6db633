"""The completed-position record: what the replica applies, one per position, in log order."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from rl_worker.core.actions import N_META_ACTIONS, N_SIZING_ACTIONS
from rl_worker.core.types import Regime

__all__ = ["MetaStateModel", "MetaStep", "Outcome", "SizingStateModel", "SizingStep"]

_FINITE = ConfigDict(frozen=True, allow_inf_nan=False, extra="ignore")


class MetaStateModel(BaseModel):
    model_config = _FINITE
    regime: Regime
    volatility: float = Field(ge=0, le=1)
    market_pressure: float = Field(ge=-1, le=1)
    confidence: float = Field(ge=0, le=1)
    previous_winrate: float = Field(ge=0, le=1)
    account_health: float = Field(ge=0, le=1)


class SizingStateModel(BaseModel):
    model_config = _FINITE
    signal_confidence: float = Field(ge=0, le=1)
    portfolio_exposure: float = Field(ge=0, le=1)
    recent_winrate: float = Field(ge=0, le=1)
    volatility: float = Field(ge=0, le=1)
    equity_curve_slope: float = Field(ge=-1, le=1)


class MetaStep(BaseModel):
    """The meta decision of the position as it was traded.

    `action_index` is what was traded (the replica learns it); when the stack traded something
    else than the published decision, `decided_action_index` keeps the published one.
    `propensity` is the published decision's (for off-policy evaluation).
    """

    model_config = _FINITE
    decision_id: str
    state: MetaStateModel
    state_key: str
    action_index: int = Field(ge=0, lt=N_META_ACTIONS)
    propensity: float | None = Field(None, gt=0, le=1)
    decided_action_index: int | None = Field(None, ge=0, lt=N_META_ACTIONS)


class SizingStep(BaseModel):
    """The sizing decision of the position as it was traded (see MetaStep), with the limits in force."""

    model_config = _FINITE
    decision_id: str
    state: SizingStateModel
    state_key: str
    action_index: int = Field(ge=0, lt=N_SIZING_ACTIONS)
    propensity: float | None = Field(None, gt=0, le=1)
    decided_action_index: int | None = Field(None, ge=0, lt=N_SIZING_ACTIONS)
    max_size_multiplier: float | None = Field(None, gt=0, description="effective limit of the decision")
    max_leverage: float | None = Field(None, gt=0)


class Outcome(BaseModel):
    """One completed position: both decisions, the close, and the market seen at close.

    The next-state market features (regime, volatility, pressure at close) depend only on
    the close event, so the worker that joins the position computes them; the replica adds
    the order-dependent parts (win rate, account health, equity slope).
    """

    model_config = _FINITE
    kind: Literal["outcome"] = "outcome"
    position_id: str = Field(min_length=1)
    symbol: str
    closed_at_ms: int
    pnl_pct: float = Field(ge=-1e5, le=1e5)
    max_drawdown_pct: float = Field(ge=0, le=1e5)
    equity: float = Field(gt=0, le=1e15)
    meta: MetaStep
    sizing: SizingStep
    next_regime: Regime
    next_volatility: float = Field(ge=0, le=1)
    next_market_pressure: float = Field(ge=-1, le=1)
    policy: str = Field("rl", description="the A/B arm that decided the position (rl, control, ...)")
    overridden: bool = Field(False, description="the stack traded another action than a published decision")
