"""Simulator presets: markets that differ in structure, not only in seed.

Each preset is a `SimConfig` (the oracle of `SyntheticMarket` scores every one of them
exactly). The learner's defaults are measured on all of them with the same settings; none
is the one they were tuned on.

- `regimes`: the original market. Four hidden regimes read from prices for ~85 % of the
  positions; the regime-native strategy pays; the best exposure falls with volatility.
- `murky`: the regimes are hard to read from prices (their volatility and trend bands overlap,
  the threshold rule gets ~half of them right), but order flow tells: in trending regimes the
  buy/sell pressure leans hard in the trade's direction, in ranging ones it is flat.
- `flow`: signal confidence and market pressure change which strategy pays: strong pressure
  (either way) helps momentum and breakout and hurts mean reversion, high confidence helps
  breakout; within one detected regime the best strategy depends on those two.
- `leverage`: leverage is punished beyond its exposure (the drawdown grows by 12 % per step of
  leverage above 1, a tail risk of its own), a crowded book (high portfolio exposure) widens
  every return, and the edge grows steeply with confidence, so the best size depends on
  confidence, portfolio exposure and volatility, and a given exposure is better taken with a
  larger multiplier and a smaller leverage.
"""

from __future__ import annotations

from rl_worker.core.config import CoreConfig
from rl_worker.sim.market import REGIME_PROFILES, RegimeProfile, SimConfig

__all__ = ["MURKY_PROFILES", "PRESETS", "preset_config"]

MURKY_PROFILES: dict[str, RegimeProfile] = {
    "TREND": RegimeProfile(volatility=0.011, volatility_spread=0.35, trend=(0.1, 0.5), reversion=0.0),
    "BREAKOUT": RegimeProfile(volatility=0.016, volatility_spread=0.35, trend=(0.1, 0.5), reversion=0.0),
    "RANGE": RegimeProfile(volatility=0.009, volatility_spread=0.35, trend=(0.0, 0.0), reversion=0.1),
    "MEAN_REVERSION": RegimeProfile(volatility=0.014, volatility_spread=0.35, trend=(0.0, 0.0), reversion=0.1),
}

PRESETS: dict[str, dict[str, object]] = {
    "regimes": {"regime_profiles": dict(REGIME_PROFILES)},
    "murky": {
        "regime_profiles": MURKY_PROFILES,
        "pressure_trend_lean": 0.0,
        "pressure_regime_lean": {"TREND": 0.25, "BREAKOUT": 0.25},
        "pressure_noise": 0.06,
    },
    "flow": {
        "pressure_trend_lean": 0.05,
        "pressure_noise": 0.2,
        "pressure_edge_pct": {"dual_momentum": 0.5, "breakout": 0.5, "mean_reversion": -0.6},
        "confidence_edge_pct": {"dual_momentum": 0.1, "breakout": 0.3, "mean_reversion": -0.15},
    },
    "leverage": {
        "leverage_drawdown": 0.12,
        "crowding": 1.0,
        "confidence_slope": 1.8,
    },
}


def preset_config(name: str, core: CoreConfig | None = None, **overrides: object) -> SimConfig:
    """The `SimConfig` of a preset (scored with `core`, the worker's core config)."""
    if name not in PRESETS:
        raise ValueError(f"unknown simulator preset {name!r}; choose from {sorted(PRESETS)}")
    fields: dict[str, object] = {"preset": name, **PRESETS[name], **overrides}
    if core is not None:
        fields["core"] = core
    return SimConfig.model_validate(fields)
