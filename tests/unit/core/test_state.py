"""State builders and their discretisation into state keys."""

from __future__ import annotations

from bisect import bisect_right

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from rl_worker.core.config import MetaBins, SizingBins
from rl_worker.core.market import MarketFeatures
from rl_worker.core.state import (
    MetaKeyBuilder,
    MetaState,
    SizingKeyBuilder,
    SizingState,
)
from tests.unit.core.reference import meta_state_key, sizing_state_key


def meta_key(state: MetaState, bins: MetaBins) -> str:
    return MetaKeyBuilder(bins).key(*state)


def sizing_key(state: SizingState, bins: SizingBins) -> str:
    return SizingKeyBuilder(bins).key(*state)


def meta_state(**overrides: float | str) -> MetaState:
    fields: dict = {
        "regime": "TREND",
        "volatility": 0.5,
        "market_pressure": -0.5,
        "confidence": 0.8,
        "previous_winrate": 0.4,
        "account_health": 0.5,
    }
    fields.update(overrides)
    return MetaState(**fields)


def sizing_state(**overrides: float) -> SizingState:
    fields = {
        "signal_confidence": 0.3,
        "portfolio_exposure": 0.9,
        "recent_winrate": 0.65,
        "volatility": 0.1,
        "equity_curve_slope": -0.2,
    }
    fields.update(overrides)
    return SizingState(**fields)


class TestMetaKey:
    def test_default_bins(self) -> None:
        # v: 0.5 in (0.33, 0.66] -> 1; p: -0.5 below -0.33 -> 0; c: 0.8 above 0.75 -> 2;
        # w: 0.4 on an edge goes up -> 1; h: 0.5 on the only edge -> 1
        assert meta_key(meta_state(), MetaBins()) == "TREND|v1p0c2w1h1"

    @pytest.mark.parametrize(
        ("volatility", "bin_index"), [(0.0, 0), (0.3299, 0), (0.33, 1), (0.6599, 1), (0.66, 2), (1.0, 2)]
    )
    def test_edges_belong_to_the_upper_bin(self, volatility: float, bin_index: int) -> None:
        key = meta_key(meta_state(volatility=volatility), MetaBins())
        assert key.split("|")[1].startswith(f"v{bin_index}p")

    def test_regime_is_part_of_the_key(self) -> None:
        assert meta_key(meta_state(regime="RANGE"), MetaBins()).startswith("RANGE|")

    def test_empty_bins_ignore_the_feature(self) -> None:
        bins = MetaBins(volatility=(), account_health=())
        calm = meta_key(meta_state(volatility=0.0, account_health=0.0), bins)
        wild = meta_key(meta_state(volatility=1.0, account_health=1.0), bins)
        assert calm == wild == "TREND|v0p0c2w1h0"

    def test_custom_bins(self) -> None:
        bins = MetaBins(confidence=(0.2, 0.4, 0.6, 0.8, 0.9))
        assert meta_key(meta_state(confidence=0.85), bins) == "TREND|v1p0c4w1h1"


class TestSizingKey:
    def test_default_bins(self) -> None:
        # c: 0.3 -> 0; e: 0.9 -> 1; w: 0.65 -> 2; v: 0.1 -> 0; s: -0.2 below 0.0 -> 0
        assert sizing_key(sizing_state(), SizingBins()) == "c0e1w2v0s0"

    def test_zero_slope_is_the_upper_bin(self) -> None:
        assert sizing_key(sizing_state(equity_curve_slope=0.0), SizingBins()).endswith("s1")

    def test_empty_bins_ignore_the_feature(self) -> None:
        bins = SizingBins(signal_confidence=(), equity_curve_slope=())
        low = sizing_key(sizing_state(signal_confidence=0.0, equity_curve_slope=-1.0), bins)
        high = sizing_key(sizing_state(signal_confidence=1.0, equity_curve_slope=1.0), bins)
        assert low == high == "c0e1w2v0s0"


@pytest.mark.parametrize("edges", [(0.5, 0.5), (0.7, 0.3)])
def test_bins_must_be_strictly_ascending(edges: tuple[float, ...]) -> None:
    with pytest.raises(ValidationError):
        MetaBins(volatility=edges)
    with pytest.raises(ValidationError):
        SizingBins(recent_winrate=edges)


def test_states_read_as_named_fields() -> None:
    market = MarketFeatures(regime="BREAKOUT", volatility=0.7, trend_strength=0.9, market_pressure=0.4)
    state = MetaState(market.regime, market.volatility, market.market_pressure, 0.6, 0.55, 0.9)
    assert state.as_dict() == {
        "regime": "BREAKOUT",
        "volatility": 0.7,
        "market_pressure": 0.4,
        "confidence": 0.6,
        "previous_winrate": 0.55,
        "account_health": 0.9,
    }
    sizing = SizingState(
        signal_confidence=0.6, portfolio_exposure=0.2, recent_winrate=0.55, volatility=0.7, equity_curve_slope=-0.1
    )
    assert sizing == SizingState(0.6, 0.2, 0.55, 0.7, -0.1)
    assert list(sizing.as_dict()) == [
        "signal_confidence",
        "portfolio_exposure",
        "recent_winrate",
        "volatility",
        "equity_curve_slope",
    ]


unit = st.floats(-0.2, 1.2, allow_nan=False)
edges = st.lists(st.floats(-1.0, 1.0), max_size=4, unique=True).map(lambda e: tuple(sorted(e)))


@given(
    regime=st.sampled_from(["TREND", "RANGE", "BREAKOUT", "MEAN_REVERSION"]),
    features=st.tuples(unit, st.floats(-1.0, 1.0), unit, unit, unit),
    bins=st.tuples(edges, edges, edges, edges, edges),
)
def test_meta_key_builder_matches_meta_state_key(
    regime: str, features: tuple[float, ...], bins: tuple[tuple[float, ...], ...]
) -> None:
    meta_bins = MetaBins(
        volatility=bins[0],
        market_pressure=bins[1],
        confidence=bins[2],
        previous_winrate=bins[3],
        account_health=bins[4],
    )
    builder = MetaKeyBuilder(meta_bins)
    expected = meta_state_key(MetaState(regime, *features), meta_bins)
    assert builder.key(regime, *features) == expected
    assert builder.key(regime, *features) == expected  # the cached key too


@given(
    features=st.tuples(unit, unit, unit, unit, st.floats(-1.0, 1.0)),
    bins=st.tuples(edges, edges, edges, edges, edges),
)
def test_sizing_key_builder_matches_sizing_state_key(
    features: tuple[float, ...], bins: tuple[tuple[float, ...], ...]
) -> None:
    sizing_bins = SizingBins(
        signal_confidence=bins[0],
        portfolio_exposure=bins[1],
        recent_winrate=bins[2],
        volatility=bins[3],
        equity_curve_slope=bins[4],
    )
    builder = SizingKeyBuilder(sizing_bins)
    expected = sizing_state_key(SizingState(*features), sizing_bins)
    assert builder.key(*features) == expected
    slope_bin = bisect_right(builder.slope_edges, features[4])
    assert builder.key_with_slope_bin(*features[:4], slope_bin) == expected
