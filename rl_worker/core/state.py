"""State builders for the two agents and their discretisation into state keys.

States and decisions are NamedTuples: immutable records, built per decision at a third of
the cost of a frozen dataclass.
"""

from __future__ import annotations

from bisect import bisect_right
from typing import NamedTuple

from rl_worker.core.config import MetaBins, SizingBins

__all__ = ["MetaKeyBuilder", "MetaState", "SizingKeyBuilder", "SizingState"]


class MetaState(NamedTuple):
    """What the meta agent (strategy x model x weight) sees when a signal arrives."""

    regime: str
    volatility: float
    market_pressure: float
    confidence: float
    previous_winrate: float
    account_health: float

    def as_dict(self) -> dict[str, str | float]:
        return self._asdict()


class SizingState(NamedTuple):
    """What the sizing agent (multiplier x leverage) sees when a trade is executed."""

    signal_confidence: float
    portfolio_exposure: float
    recent_winrate: float
    volatility: float
    equity_curve_slope: float

    def as_dict(self) -> dict[str, float]:
        return self._asdict()


class MetaKeyBuilder:
    """The meta state key, `REGIME|v<i>p<i>c<i>w<i>h<i>`: the regime and the bin index
    (`bisect_right(edges, value)`) of each continuous feature, in MetaState's order. Takes the
    raw features (`key(*state)` for a MetaState), so the hot path builds no state to key it.

    Keys are cached per combination of bin indices, so a decision pays five bisections and a
    dictionary lookup instead of formatting a string.
    """

    __slots__ = ("_cache", "_edges", "_levels", "_levels_cache", "_prefix", "_radix")

    _FEATURES = ("volatility", "market_pressure", "confidence", "previous_winrate", "account_health")

    def __init__(self, bins: MetaBins, prefix: str = "", levels: tuple[tuple[str, ...], ...] = ()) -> None:
        self._prefix = prefix  # "L<level>:" for the coarser keys of backoff
        # Backoff levels, coarsest first: which of the five features each keeps (the rest read bin 0).
        self._levels = tuple(tuple(f in kept for f in self._FEATURES) for kept in levels)
        self._levels_cache: dict[str, dict[int, tuple[str, ...]]] = {}
        self._edges = (
            bins.volatility,
            bins.market_pressure,
            bins.confidence,
            bins.previous_winrate,
            bins.account_health,
        )
        self._radix = tuple(len(edges) + 1 for edges in self._edges)
        self._cache: dict[str, dict[int, str]] = {}

    def key(
        self,
        regime: str,
        volatility: float,
        market_pressure: float,
        confidence: float,
        previous_winrate: float,
        account_health: float,
    ) -> str:
        ev, ep, ec, ew, eh = self._edges
        _, rp, rc, rw, rh = self._radix
        v = bisect_right(ev, volatility)
        p = bisect_right(ep, market_pressure)
        c = bisect_right(ec, confidence)
        w = bisect_right(ew, previous_winrate)
        h = bisect_right(eh, account_health)
        keys = self._cache.get(regime)
        if keys is None:
            keys = self._cache[regime] = {}
        cell = (((v * rp + p) * rc + c) * rw + w) * rh + h
        key = keys.get(cell)
        if key is None:
            key = keys[cell] = f"{self._prefix}{regime}|v{v}p{p}c{c}w{w}h{h}"
        return key

    def keys(
        self,
        regime: str,
        volatility: float,
        market_pressure: float,
        confidence: float,
        previous_winrate: float,
        account_health: float,
    ) -> tuple[str, ...]:
        """The fine key, then the backoff levels' keys from the finest to the coarsest (`L<i>:` prefixed)."""
        ev, ep, ec, ew, eh = self._edges
        _, rp, rc, rw, rh = self._radix
        v = bisect_right(ev, volatility)
        p = bisect_right(ep, market_pressure)
        c = bisect_right(ec, confidence)
        w = bisect_right(ew, previous_winrate)
        h = bisect_right(eh, account_health)
        cache = self._levels_cache.get(regime)
        if cache is None:
            cache = self._levels_cache[regime] = {}
        cell = (((v * rp + p) * rc + c) * rw + w) * rh + h
        keys = cache.get(cell)
        if keys is None:
            indices = (v, p, c, w, h)
            levels = [f"{self._prefix}{regime}|v{v}p{p}c{c}w{w}h{h}"]
            for level in range(len(self._levels) - 1, -1, -1):
                lv, lp, lc, lw, lh = (i if kept else 0 for i, kept in zip(indices, self._levels[level], strict=True))
                levels.append(f"L{level}:{regime}|v{lv}p{lp}c{lc}w{lw}h{lh}")
            keys = cache[cell] = tuple(levels)
        return keys


class SizingKeyBuilder:
    """The sizing state key, `c<i>e<i>w<i>v<i>s<i>`: the bin index of each feature in SizingState's
    order (`key(*state)` for a SizingState; see MetaKeyBuilder)."""

    __slots__ = ("_cache", "_edges", "_prefix", "_radix")

    def __init__(self, bins: SizingBins, prefix: str = "") -> None:
        self._prefix = prefix
        self._edges = (
            bins.signal_confidence,
            bins.portfolio_exposure,
            bins.recent_winrate,
            bins.volatility,
            bins.equity_curve_slope,
        )
        self._radix = tuple(len(edges) + 1 for edges in self._edges)
        self._cache: dict[int, str] = {}

    @property
    def slope_edges(self) -> tuple[float, ...]:
        return self._edges[4]

    def key_with_slope_bin(
        self,
        signal_confidence: float,
        portfolio_exposure: float,
        recent_winrate: float,
        volatility: float,
        slope_bin: int,
    ) -> str:
        """The key, given the equity slope's bin index (`bisect_right(slope_edges, slope)`)."""
        ec, ee, ew, ev, _ = self._edges
        _, re, rw, rv, rs = self._radix
        c = bisect_right(ec, signal_confidence)
        e = bisect_right(ee, portfolio_exposure)
        w = bisect_right(ew, recent_winrate)
        v = bisect_right(ev, volatility)
        cell = (((c * re + e) * rw + w) * rv + v) * rs + slope_bin
        key = self._cache.get(cell)
        if key is None:
            key = self._cache[cell] = f"{self._prefix}c{c}e{e}w{w}v{v}s{slope_bin}"
        return key

    def key(
        self,
        signal_confidence: float,
        portfolio_exposure: float,
        recent_winrate: float,
        volatility: float,
        equity_curve_slope: float,
    ) -> str:
        return self.key_with_slope_bin(
            signal_confidence,
            portfolio_exposure,
            recent_winrate,
            volatility,
            bisect_right(self._edges[4], equity_curve_slope),
        )
