"""The synthetic market: hidden regimes, price windows, the three input events and the reward oracle.

A sticky Markov chain picks a hidden regime per position (TREND, RANGE, BREAKOUT,
MEAN_REVERSION). Each regime has its own distribution of per-bar volatility and trend
strength; the price window a signal carries is drawn from it, so
`rl_worker.core.market.compute_market_features` (with the default `MarketConfig`) recovers
the regime for about 85 % of the positions: weak trends pass for ranges, calm breakouts
for trends, and so on.

A position's underlying return R (percent of notional, in the position's direction) is normal,

    R ~ N(mu, s)
    mu = edge[regime][strategy] * (1 + weight_effect * (weight - 0.5)) * (0.6 + 0.8 * confidence)
         * intensity + model_effect * model_edge[regime][model] - cost_pct
    s  = noise_scale * 100 * per-bar volatility

where `intensity` is how pronounced a trend is (a weak trend is the one detection misses,
and the one that pays little either way). The sizing action scales the position: with
exposure x = size_multiplier * leverage, pnl and drawdown are reported on the margin,

    pnl_pct          = x * R
    max_drawdown_pct = x * (max(0, -R) + excursion),  excursion ~ excursion_scale * s * Gamma(4, 1/4)

The edge does not grow with volatility while the drawdown does, and the core's risk penalty
(drawdown * x / reference) is quadratic in x, so the best exposure is large in calm markets
and small in volatile ones. The trading cost makes a position of a non-native strategy lose
money, so that rewards are not all positive (with Q-values starting at zero, an agent whose
every action pays stops exploring as soon as one pays).

Every reward term of `rl_worker.core.rewards` is linear in pnl and drawdown except
`sharpe_signal`, a clipped pnl / spread; for a normal pnl its expectation has a closed
form, so `SyntheticMarket.score` returns the exact expected meta and size reward of every
action, given the hidden state, the detected regime and the spread of the pnl history that
the replica holds when it applies the positions one at a time, in the order they were
opened. When positions overlap (the live simulation keeps several in flight), the replica's
spread may be a few closes behind; the sharpe term is then approximate.

Pure: numpy and the standard library (plus the core's own pure functions); every draw
comes from generators seeded by (seed, position index), so the market a policy sees does
not depend on the actions it takes, and the same seed gives the same positions.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from rl_worker.core.actions import (
    META_ACTIONS,
    N_META_ACTIONS,
    N_SIZING_ACTIONS,
    SIZING_ACTIONS,
    effective_limits,
    meta_action_mask,
    sizing_action_mask,
)
from rl_worker.core.config import CoreConfig
from rl_worker.core.market import MarketFeatures, compute_market_features
from rl_worker.core.rewards import (
    meta_reward,
    pnl_spread,
    regime_alignment,
    risk_penalty,
    size_reward,
    volatility_adjustment,
)
from rl_worker.core.types import REGIMES, FloatArray

__all__ = [
    "MODEL_EDGE_PCT",
    "REGIME_PROFILES",
    "STRATEGY_EDGE_PCT",
    "HiddenState",
    "OpenedPosition",
    "RegimeProfile",
    "ScoredChoice",
    "SimConfig",
    "SyntheticMarket",
    "expected_clipped_normal",
    "expected_shortfall_normal",
]


@dataclass(frozen=True, slots=True)
class RegimeProfile:
    """How a regime's price windows are drawn.

    volatility: median per-bar log-return std; volatility_spread: its lognormal sigma.
    trend: the range of drift / volatility per bar (0 = no drift); reversion: the pull of
    an Ornstein-Uhlenbeck deviation back to its level per bar (0 = a random walk).
    """

    volatility: float
    volatility_spread: float
    trend: tuple[float, float]
    reversion: float


# The core detects with cap 0.03: trend if efficiency ratio >= 0.45, BREAKOUT if the scaled
# volatility >= 0.6 (std 0.018) else TREND; RANGE if <= 0.35 (std 0.0105) else MEAN_REVERSION.
# Medians sit inside their bands and the spreads cross the borders now and then.
REGIME_PROFILES: dict[str, RegimeProfile] = {
    "TREND": RegimeProfile(volatility=0.0095, volatility_spread=0.25, trend=(0.3, 0.9), reversion=0.0),
    "BREAKOUT": RegimeProfile(volatility=0.025, volatility_spread=0.2, trend=(0.3, 0.9), reversion=0.0),
    "RANGE": RegimeProfile(volatility=0.0065, volatility_spread=0.25, trend=(0.0, 0.0), reversion=0.3),
    "MEAN_REVERSION": RegimeProfile(volatility=0.0165, volatility_spread=0.25, trend=(0.0, 0.0), reversion=0.3),
}

# Mean underlying return (percent) of each strategy in each hidden regime, before costs, at
# weight 0.5, confidence 0.5 and typical intensity: the regime-native strategy earns, the
# strategy the core's regime mask leaves out loses, the other one roughly pays its costs.
STRATEGY_EDGE_PCT: dict[str, dict[str, float]] = {
    "TREND": {"dual_momentum": 0.6, "mean_reversion": -0.45, "breakout": 0.2},
    "BREAKOUT": {"dual_momentum": 0.25, "mean_reversion": -0.6, "breakout": 0.7},
    "RANGE": {"dual_momentum": -0.35, "mean_reversion": 0.45, "breakout": 0.0},
    "MEAN_REVERSION": {"dual_momentum": -0.05, "mean_reversion": 0.6, "breakout": -0.4},
}

# A model's additive edge (percent): sequence models read trends, tree models read ranges.
MODEL_EDGE_PCT: dict[str, dict[str, float]] = {
    "TREND": {"xgb": 0.0, "lgbm": 0.02, "nhits": 0.06, "lstm": 0.08},
    "BREAKOUT": {"xgb": 0.0, "lgbm": 0.0, "nhits": 0.08, "lstm": 0.05},
    "RANGE": {"xgb": 0.06, "lgbm": 0.08, "nhits": 0.0, "lstm": -0.02},
    "MEAN_REVERSION": {"xgb": 0.08, "lgbm": 0.05, "nhits": 0.0, "lstm": 0.0},
}

_NATIVE_STRATEGY = {
    "TREND": "dual_momentum",
    "BREAKOUT": "breakout",
    "RANGE": "mean_reversion",
    "MEAN_REVERSION": "mean_reversion",
}
_BASE_PRICE = {"BTCUSDT": 60_000.0, "ETHUSDT": 3_000.0, "SOLUSDT": 150.0, "BNBUSDT": 550.0}
_SQRT_2PI = math.sqrt(2.0 * math.pi)
_EXPOSURES = np.array([a.size_multiplier * a.leverage for a in SIZING_ACTIONS])


class SimConfig(BaseModel):
    """Knobs of the synthetic stack; the defaults are the demo's market."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    run_id: str | None = Field(None, description="prefix of position and event ids; default sim<seed>")
    symbols: tuple[str, ...] = ("BTCUSDT", "ETHUSDT", "SOLUSDT")
    window: int = Field(30, ge=3, description="closes per price window")
    holding_bars: int = Field(10, ge=1, description="bars a position is held")
    bar_ms: int = Field(60_000, gt=0)
    start_ms: int = Field(1_704_067_200_000, ge=0, description="clock of position 0 (epoch ms)")
    regime_stickiness: float = Field(
        0.95, ge=0, le=1, description="probability that the next position keeps the hidden regime"
    )
    noise_scale: float = Field(1.0, gt=0, description="multiplies the spread s of the return R")
    excursion_scale: float = Field(0.5, ge=0, description="mean adverse excursion beyond the final loss, in units of s")
    weight_effect: float = Field(0.2, ge=0, le=2, description="strategy edge factor 1 + weight_effect * (weight - 0.5)")
    model_effect: float = Field(0.5, ge=0, description="multiplies the models' additive edges")
    cost_pct: float = Field(0.2, ge=0, description="fees and slippage per unit of exposure, in percent")
    initial_equity: float = Field(100_000.0, gt=0)
    equity_allocation: float = Field(0.02, gt=0, le=1, description="equity fraction one position's pnl_pct applies to")
    tight_limits_probability: float = Field(
        0.2, ge=0, le=1, description="share of executions that carry tighter per-event risk limits"
    )
    preset: str = Field("regimes", description="name of the market structure (see PRESETS); informative")
    regime_profiles: dict[str, RegimeProfile] = Field(
        default_factory=lambda: dict(REGIME_PROFILES), description="how each hidden regime's prices are drawn"
    )
    pressure_trend_lean: float = Field(
        0.15, ge=0, description="buy share lean per unit of trend, in the trend's direction"
    )
    pressure_regime_lean: dict[str, float] = Field(
        default_factory=dict, description="extra buy share lean in the position's direction, per hidden regime"
    )
    pressure_noise: float = Field(0.08, ge=0, description="std of the buy share's noise")
    pressure_edge_pct: dict[str, float] = Field(
        default_factory=dict,
        description="per strategy: percent added to the mean return per unit of (|pressure| - 0.33) / 0.33",
    )
    confidence_edge_pct: dict[str, float] = Field(
        default_factory=dict,
        description="per strategy: percent added to the mean return per unit of (confidence - 0.6) / 0.15",
    )
    confidence_slope: float = Field(
        0.8, ge=0, le=2, description="strategy edge factor (1 - slope / 2) + slope * confidence"
    )
    leverage_drawdown: float = Field(
        0.0, ge=0, description="drawdown factor 1 + leverage_drawdown * (leverage - 1): leverage's own tail risk"
    )
    crowding: float = Field(
        0.0, ge=0, description="return spread factor 1 + crowding * (portfolio_exposure - 0.4): a crowded book"
    )
    core: CoreConfig = Field(
        default_factory=lambda: CoreConfig(),
        description="the worker's core config: detection, masks, reward weights and risk limits to score by",
    )

    @field_validator("symbols")
    @classmethod
    def _some_symbols(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise ValueError("at least one symbol")
        return value


@dataclass(frozen=True, slots=True)
class HiddenState:
    """What the simulator knows about a position and the worker does not (plus what it detects)."""

    regime: str
    volatility: float  # per-bar log-return std of the window
    trend: float  # |drift| / volatility per bar (0 for RANGE and MEAN_REVERSION windows)
    confidence: float
    intensity: float  # how pronounced the regime is: scales every strategy edge (1 = typical)
    return_spread_pct: float  # s: std of the underlying return R
    excursion_pct: float  # mean adverse excursion beyond the final loss
    detected: MarketFeatures  # what compute_market_features reads from the signal
    pnl_spread: float  # the sharpe_signal spread of the pnl history before this position
    max_size_multiplier: float  # effective limits (config tightened by the event)
    max_leverage: float


@dataclass(frozen=True, slots=True)
class OpenedPosition:
    """A position that has been signalled and executed and waits for its actions and close."""

    index: int
    position_id: str
    symbol: str
    signal: dict[str, Any]
    execution: dict[str, Any]
    hidden: HiddenState

    @property
    def confidence(self) -> float:
        return float(self.signal["confidence"])


@dataclass(frozen=True, slots=True)
class ScoredChoice:
    """Expected rewards of a chosen (meta, sizing) pair against the best and the uniform allowed ones.

    The meta figures take the chosen sizing action as given and the sizing figures the
    chosen meta action: each agent is scored on the decision it actually controls.
    """

    hidden_regime: str
    detected_regime: str
    strategy: str
    meta_chosen: float
    meta_best: float
    meta_uniform: float
    best_meta_action: int
    size_chosen: float
    size_best: float
    size_uniform: float
    best_sizing_action: int

    @property
    def exposure_best(self) -> float:
        action = SIZING_ACTIONS[self.best_sizing_action]
        return action.size_multiplier * action.leverage


def _normal_pdf(z: float) -> float:
    return math.exp(-0.5 * z * z) / _SQRT_2PI


def _normal_cdf(z: float) -> float:
    return 0.5 * math.erfc(-z / math.sqrt(2.0))


_erfc = np.frompyfunc(math.erfc, 1, 1)


def _cdf(z: FloatArray) -> FloatArray:
    return 0.5 * np.asarray(_erfc(-z / math.sqrt(2.0)), dtype=np.float64)


def _pdf(z: FloatArray) -> FloatArray:
    return np.exp(-0.5 * z * z) / _SQRT_2PI


def expected_shortfall_normal(mean: float, std: float) -> float:
    """E[max(0, -X)] for X ~ N(mean, std): the expected loss part of a normal return."""
    if std <= 0.0:
        return max(0.0, -mean)
    z = mean / std
    return std * _normal_pdf(z) - mean * _normal_cdf(-z)


def expected_clipped_normal(mean: float, std: float, clip: float) -> float:
    """E[clip(X, -clip, clip)] for X ~ N(mean, std)."""
    if std <= 0.0:
        return max(-clip, min(clip, mean))
    lo, hi = (-clip - mean) / std, (clip - mean) / std
    p_lo, p_hi = _normal_cdf(lo), _normal_cdf(hi)
    inside = mean * (p_hi - p_lo) + std * (_normal_pdf(lo) - _normal_pdf(hi))
    return -clip * p_lo + clip * (1.0 - p_hi) + inside


class SyntheticMarket:
    """A synthetic trading stack: opens positions (signal + execution), closes them, scores choices.

    Use it sequentially: `open_position`, then `score` and `close_position` for that
    position, then the next one (the sharpe spread and the equity follow the closes).
    """

    def __init__(self, seed: int, config: SimConfig | None = None) -> None:
        self.seed = seed
        self.config = config or SimConfig()
        self.run_id = self.config.run_id or f"sim{seed}"
        self.equity = self.config.initial_equity
        self.n_opened = 0
        self.n_closed = 0
        core = self.config.core
        self._recent_pnl: deque[float] = deque(maxlen=core.reward.sharpe_window)
        self._chain = np.random.default_rng([seed, 0x5EED])
        self._regime = REGIMES[int(self._chain.integers(len(REGIMES)))]
        self._last_price = {s: _BASE_PRICE.get(s, 100.0) for s in self.config.symbols}
        self._mu_cache: tuple[OpenedPosition, FloatArray] | None = None
        self._alignment = {
            regime: [regime_alignment(regime, action.strategy, core.reward) for action in META_ACTIONS]
            for regime in REGIMES
        }

    # ---- opening -----------------------------------------------------------------------------

    def _next_regime(self) -> str:
        if self.n_opened > 0 and self._chain.random() >= self.config.regime_stickiness:
            others = [r for r in REGIMES if r != self._regime]
            self._regime = others[int(self._chain.integers(len(others)))]
        return self._regime

    def _draw_log_returns(
        self, rng: np.random.Generator, profile: RegimeProfile, volatility: float, drift: float, n: int
    ) -> FloatArray:
        shocks = rng.standard_normal(n)
        if profile.reversion > 0.0:
            # Ornstein-Uhlenbeck deviation from a level: returns anti-correlated, no drift.
            deviation = np.empty(n + 1)
            deviation[0] = rng.standard_normal() * volatility
            keep = 1.0 - profile.reversion
            for t in range(n):
                deviation[t + 1] = keep * deviation[t] + volatility * shocks[t]
            return np.diff(deviation)
        return drift + volatility * shocks

    def open_position(self) -> OpenedPosition:
        """Draw the next position: hidden state, SIGNAL_GENERATED and TRADE_EXECUTED event dicts."""
        cfg = self.config
        i = self.n_opened
        regime = self._next_regime()
        self.n_opened += 1
        rng = np.random.default_rng([self.seed, i, 0])
        profile = cfg.regime_profiles[regime]
        symbol = cfg.symbols[int(rng.integers(len(cfg.symbols)))]
        volatility = profile.volatility * math.exp(profile.volatility_spread * rng.standard_normal())
        direction = 1.0 if rng.random() < 0.5 else -1.0
        trend = float(rng.uniform(*profile.trend))
        returns = self._draw_log_returns(rng, profile, volatility, direction * trend * volatility, cfg.window - 1)
        # Pull the level gently back to the symbol's base so thousands of windows stay plausible.
        base = _BASE_PRICE.get(symbol, 100.0)
        start = math.log(self._last_price[symbol])
        start -= 0.1 * (start - math.log(base))
        log_prices = start + np.concatenate(([0.0], np.cumsum(returns)))
        prices = [float(p) for p in np.exp(log_prices)]
        if trend > 0.0:
            side = "LONG" if direction > 0 else "SHORT"
        else:
            # Mean reversion trades against the window's last deviation.
            side = "LONG" if log_prices[-1] < log_prices.mean() else "SHORT"
        confidence = float(np.clip(rng.beta(5.0, 4.0), 0.0, 1.0))
        total_volume = float(rng.lognormal(10.0, 0.5))
        lean = direction * (cfg.pressure_trend_lean * min(1.0, trend) + cfg.pressure_regime_lean.get(regime, 0.0))
        lean += cfg.pressure_noise * rng.standard_normal()
        buy_share = float(np.clip(0.5 + lean, 0.05, 0.95))
        buy_volume = round(total_volume * buy_share, 4)
        sell_volume = round(total_volume * (1.0 - buy_share), 4)
        # Exactly what the worker will compute from the signal event.
        detected = compute_market_features(prices, cfg.core.market, buy_volume, sell_volume)

        tight_size = tight_leverage = None
        if rng.random() < cfg.tight_limits_probability:
            tight_leverage = float(rng.choice([3.0, 5.0, 8.0]))
            if rng.random() < 0.5:
                tight_size = float(rng.choice([0.6, 0.8]))
        limits = effective_limits(cfg.core.risk, tight_size, tight_leverage)

        position_id = f"{self.run_id}-{i:06d}"
        opened_ms = cfg.start_ms + i * cfg.holding_bars * cfg.bar_ms
        entry_price = prices[-1]
        signal: dict[str, Any] = {
            "event_id": f"{position_id}-signal",
            "event_type": "SIGNAL_GENERATED",
            "position_id": position_id,
            "symbol": symbol,
            "timestamp": opened_ms,
            "side": side,
            "confidence": round(confidence, 6),
            "prices": prices,
            "buy_volume": buy_volume,
            "sell_volume": sell_volume,
            # What a rule-based stack would run without RL: the detected regime's native strategy.
            "strategy": _NATIVE_STRATEGY[detected.regime],
            "model": "xgb",
            "weight": 0.5,
        }
        execution: dict[str, Any] = {
            "event_id": f"{position_id}-execution",
            "event_type": "TRADE_EXECUTED",
            "position_id": position_id,
            "symbol": symbol,
            "timestamp": opened_ms + 1_000,
            "side": side,
            "entry_price": entry_price,
            "portfolio_exposure": round(float(rng.beta(2.0, 3.0)), 6),
            "equity": round(self.equity, 2),
            "size_multiplier": min(0.6, limits[0]),
            "leverage": min(3.0, limits[1]),
        }
        if tight_size is not None:
            execution["max_size_multiplier"] = tight_size
        if tight_leverage is not None:
            execution["max_leverage"] = tight_leverage
        spread_pct = cfg.noise_scale * 100.0 * volatility
        spread_pct *= max(0.1, 1.0 + cfg.crowding * (float(execution["portfolio_exposure"]) - 0.4))
        hidden = HiddenState(
            regime=regime,
            volatility=volatility,
            trend=trend,
            confidence=float(signal["confidence"]),
            # A weak trend is both the one detection misses and the one that pays little.
            intensity=trend / (0.5 * sum(profile.trend)) if trend > 0.0 else 1.0,
            return_spread_pct=spread_pct,
            excursion_pct=cfg.excursion_scale * spread_pct,
            detected=detected,
            pnl_spread=pnl_spread(self._recent_pnl, cfg.core.reward.sharpe_floor),
            max_size_multiplier=limits[0],
            max_leverage=limits[1],
        )
        return OpenedPosition(i, position_id, symbol, signal, execution, hidden)

    # ---- the reward oracle -------------------------------------------------------------------

    def expected_return(self, opened: OpenedPosition, meta_action_index: int) -> float:
        """mu: the mean underlying return (percent) of a meta action in this position."""
        cfg = self.config
        hidden = opened.hidden
        action = META_ACTIONS[meta_action_index]
        edge = STRATEGY_EDGE_PCT[hidden.regime][action.strategy]
        slope = cfg.confidence_slope
        edge *= (1.0 + cfg.weight_effect * (action.weight - 0.5)) * (1.0 - 0.5 * slope + slope * hidden.confidence)
        edge *= hidden.intensity
        if cfg.pressure_edge_pct:
            pressure = abs(hidden.detected.market_pressure)
            edge += cfg.pressure_edge_pct.get(action.strategy, 0.0) * (pressure - 0.33) / 0.33
        if cfg.confidence_edge_pct:
            edge += cfg.confidence_edge_pct.get(action.strategy, 0.0) * (hidden.confidence - 0.6) / 0.15
        return edge + cfg.model_effect * MODEL_EDGE_PCT[hidden.regime][action.model] - cfg.cost_pct

    def drawdown_factor(self, leverage: float) -> float:
        """How much more than the exposure the drawdown grows with leverage (1 unless the preset says)."""
        return 1.0 + self.config.leverage_drawdown * (leverage - 1.0)

    def expected_returns(self, opened: OpenedPosition) -> FloatArray:
        """mu of every meta action in this position (cached for the last position asked)."""
        cached = self._mu_cache
        if cached is not None and cached[0] is opened:
            return cached[1]
        mus = np.array([self.expected_return(opened, a) for a in range(N_META_ACTIONS)])
        self._mu_cache = (opened, mus)
        return mus

    def expected_meta_rewards(self, opened: OpenedPosition, sizing_action_index: int) -> FloatArray:
        """E[meta reward] of each of the 60 meta actions, given the sizing action taken (the scalar
        formulas of `expected_shortfall_normal` and `expected_clipped_normal`, over all actions at once)."""
        hidden = opened.hidden
        reward_cfg = self.config.core.reward
        sizing = SIZING_ACTIONS[sizing_action_index]
        exposure = sizing.size_multiplier * sizing.leverage
        factor = self.drawdown_factor(sizing.leverage)
        spread = hidden.return_spread_pct
        mus = self.expected_returns(opened)
        z = mus / spread
        shortfall = spread * _pdf(z) - mus * _cdf(-z)
        drawdown = exposure * factor * (shortfall + hidden.excursion_pct)
        mean, std, clip = (
            exposure * mus / hidden.pnl_spread,
            exposure * spread / hidden.pnl_spread,
            reward_cfg.sharpe_clip,
        )
        lo, hi = (-clip - mean) / std, (clip - mean) / std
        p_lo, p_hi = _cdf(lo), _cdf(hi)
        sharpe = -clip * p_lo + clip * (1.0 - p_hi) + mean * (p_hi - p_lo) + std * (_pdf(lo) - _pdf(hi))
        alignment = self._alignment[hidden.detected.regime]
        return np.array(
            [
                meta_reward(float(exposure * mu), float(d), float(sh), al, reward_cfg)
                for mu, d, sh, al in zip(mus, drawdown, sharpe, alignment, strict=True)
            ]
        )

    def expected_size_rewards(self, opened: OpenedPosition, meta_action_index: int) -> FloatArray:
        """E[size reward] of each of the 40 sizing actions, given the meta action taken."""
        hidden = opened.hidden
        reward_cfg = self.config.core.reward
        mu = float(self.expected_returns(opened)[meta_action_index])
        unit_drawdown = expected_shortfall_normal(mu, hidden.return_spread_pct) + hidden.excursion_pct
        out = np.empty(N_SIZING_ACTIONS)
        for b, action in enumerate(SIZING_ACTIONS):
            exposure = float(_EXPOSURES[b])
            drawdown = exposure * self.drawdown_factor(action.leverage) * unit_drawdown
            risk = risk_penalty(drawdown, action.size_multiplier, action.leverage, reward_cfg)
            adjustment = volatility_adjustment(hidden.detected.volatility, action.size_multiplier, action.leverage)
            out[b] = size_reward(exposure * mu, risk, adjustment, reward_cfg)
        return out

    def allowed_meta(self, opened: OpenedPosition) -> np.ndarray:
        """The core's meta mask for the detected regime."""
        return meta_action_mask(opened.hidden.detected.regime, self.config.core).indices

    def allowed_sizing(self, opened: OpenedPosition) -> np.ndarray:
        """The core's sizing mask for the configured limits tightened by the event's."""
        return sizing_action_mask(opened.hidden.max_size_multiplier, opened.hidden.max_leverage).indices

    def score(self, opened: OpenedPosition, meta_action_index: int, sizing_action_index: int) -> ScoredChoice:
        """Expected rewards of the chosen actions, of the best allowed ones and of a uniform allowed choice."""
        meta_values = self.expected_meta_rewards(opened, sizing_action_index)
        meta_allowed = self.allowed_meta(opened)
        best_meta = int(meta_allowed[int(np.argmax(meta_values[meta_allowed]))])
        size_values = self.expected_size_rewards(opened, meta_action_index)
        size_allowed = self.allowed_sizing(opened)
        best_size = int(size_allowed[int(np.argmax(size_values[size_allowed]))])
        return ScoredChoice(
            hidden_regime=opened.hidden.regime,
            detected_regime=opened.hidden.detected.regime,
            strategy=META_ACTIONS[meta_action_index].strategy,
            meta_chosen=float(meta_values[meta_action_index]),
            meta_best=float(meta_values[best_meta]),
            meta_uniform=float(meta_values[meta_allowed].mean()),
            best_meta_action=best_meta,
            size_chosen=float(size_values[sizing_action_index]),
            size_best=float(size_values[best_size]),
            size_uniform=float(size_values[size_allowed].mean()),
            best_sizing_action=best_size,
        )

    # ---- closing -----------------------------------------------------------------------------

    def close_position(
        self, opened: OpenedPosition, meta_action_index: int, sizing_action_index: int
    ) -> dict[str, Any]:
        """Draw the outcome of the chosen actions and return the POSITION_CLOSED event dict."""
        cfg = self.config
        hidden = opened.hidden
        rng = np.random.default_rng([self.seed, opened.index, 1])
        sizing = SIZING_ACTIONS[sizing_action_index]
        exposure = sizing.size_multiplier * sizing.leverage
        mu = float(self.expected_returns(opened)[meta_action_index])
        underlying = mu + hidden.return_spread_pct * float(rng.standard_normal())
        excursion = hidden.excursion_pct * float(rng.gamma(4.0, 0.25))
        pnl_pct = exposure * underlying
        drawdown_pct = exposure * self.drawdown_factor(sizing.leverage) * (max(0.0, -underlying) + excursion)

        direction = 1.0 if opened.signal["side"] == "LONG" else -1.0
        entry_price = float(opened.execution["entry_price"])
        exit_price = entry_price * max(0.05, 1.0 + direction * underlying / 100.0)
        # Closes at close time: the signal window shifted by the holding period, whose new bars
        # follow the hidden regime and are bent (a bridge) to end at the exit price.
        profile = cfg.regime_profiles[hidden.regime]
        bars = min(cfg.holding_bars, cfg.window - 1)
        new_returns = self._draw_log_returns(
            rng, profile, hidden.volatility, direction * hidden.trend * hidden.volatility, bars
        )
        path = np.cumsum(new_returns)
        path += (math.log(exit_price / entry_price) - path[-1]) * np.arange(1, bars + 1) / bars
        tail = [float(p) for p in entry_price * np.exp(path)]
        tail[-1] = exit_price
        prices = list(opened.signal["prices"][bars:]) + tail

        self._recent_pnl.append(pnl_pct)
        self.equity = max(1.0, self.equity * (1.0 + cfg.equity_allocation * pnl_pct / 100.0))
        self._last_price[opened.symbol] = exit_price
        self.n_closed += 1
        return {
            "event_id": f"{opened.position_id}-close",
            "event_type": "POSITION_CLOSED",
            "position_id": opened.position_id,
            "symbol": opened.symbol,
            "timestamp": int(opened.signal["timestamp"]) + cfg.holding_bars * cfg.bar_ms,
            "exit_price": exit_price,
            "pnl_pct": pnl_pct,
            "max_drawdown_pct": drawdown_pct,
            "equity": round(self.equity, 2),
            "prices": prices,
        }
