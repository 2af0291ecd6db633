"""State builders for the two agents and their discretisation into state keys."""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import asdict, dataclass

from rl_worker.core.config import MetaBins, SizingBins
from rl_worker.core.market import MarketFeatures

__all__ = [
    "MetaState",
    "SizingState",
    "build_meta_state",
    "build_sizing_state",
    "meta_state_key",
    "sizing_state_key",
]


@dataclass(frozen=True, slots=True)
class MetaState:
    """What the meta agent (strategy x model x weight) sees when a signal arrives."""

    regime: str
    volatility: float
    market_pressure: float
    confidence: float
    previous_winrate: float
    account_health: float

    def as_dict(self) -> dict[str, str | float]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class SizingState:
    """What the sizing agent (multiplier x leverage) sees when a trade is executed."""

    signal_confidence: float
    portfolio_exposure: float
    recent_winrate: float
    volatility: float
    equity_curve_slope: float

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def build_meta_state(
    market: MarketFeatures, confidence: float, previous_winrate: float, account_health: float
) -> MetaState:
    return MetaState(
        regime=market.regime,
        volatility=market.volatility,
        market_pressure=market.market_pressure,
        confidence=confidence,
        previous_winrate=previous_winrate,
        account_health=account_health,
    )


def build_sizing_state(
    signal_confidence: float,
    portfolio_exposure: float,
    recent_winrate: float,
    volatility: float,
    equity_curve_slope: float,
) -> SizingState:
    return SizingState(
        signal_confidence=signal_confidence,
        portfolio_exposure=portfolio_exposure,
        recent_winrate=recent_winrate,
        volatility=volatility,
        equity_curve_slope=equity_curve_slope,
    )


def meta_state_key(state: MetaState, bins: MetaBins) -> str:
    """`REGIME|v<i>p<i>c<i>w<i>h<i>`: the regime and the bin index of each continuous feature."""
    return (
        f"{state.regime}|v{bisect_right(bins.volatility, state.volatility)}"
        f"p{bisect_right(bins.market_pressure, state.market_pressure)}"
        f"c{bisect_right(bins.confidence, state.confidence)}"
        f"w{bisect_right(bins.previous_winrate, state.previous_winrate)}"
        f"h{bisect_right(bins.account_health, state.account_health)}"
    )


def sizing_state_key(state: SizingState, bins: SizingBins) -> str:
    """`c<i>e<i>w<i>v<i>s<i>`: the bin index of each sizing feature."""
    return (
        f"c{bisect_right(bins.signal_confidence, state.signal_confidence)}"
        f"e{bisect_right(bins.portfolio_exposure, state.portfolio_exposure)}"
        f"w{bisect_right(bins.recent_winrate, state.recent_winrate)}"
        f"v{bisect_right(bins.volatility, state.volatility)}"
        f"s{bisect_right(bins.equity_curve_slope, state.equity_curve_slope)}"
    )
