"""Between-arm tests: is the RL arm better or worse than the control arm, and how sure is that?

Every difference is RL minus control. Distributions come from scipy:

- Welch's t-test (`scipy.stats.ttest_ind(equal_var=False)`) on the mean pnl and on each mean
  reward, with its confidence interval of the difference;
- the two-proportion z-test on the win rate (pooled standard error; `scipy.stats.norm`),
  equivalent to a chi-square test of the 2x2 table without continuity correction;
- percentile bootstrap intervals (`scipy.stats.bootstrap`, the arms resampled independently)
  for the difference in per-trade Sharpe and in max drawdown. A max drawdown grows with the
  length of the curve, so the drawdowns are compared over equally long curves: m = the smaller
  arm's trade count, each resample draws m trades per arm; the point estimate uses each arm's
  last m trades;
- the positions needed to detect the observed difference at the current split between arms
  (two-sided level alpha, the given power), from the normal approximation:

      n_control = (z_{1-alpha/2} + z_power)^2 * (s_c^2 + s_rl^2 / k) / delta^2,   n_rl = k * n_control

  with k = n_rl / n_control, delta the observed difference and s the observed spreads; for
  the win rate the same with the pooled and unpooled binomial variances.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats

from rl_worker.analysis.performance import ArmTrades, max_drawdown, sharpe_ratio
from rl_worker.core.types import FloatArray

__all__ = [
    "ArmComparison",
    "BootstrapInterval",
    "ProportionTest",
    "SampleSize",
    "WelchTest",
    "compare_arms",
    "positions_needed_for_means",
    "positions_needed_for_proportions",
    "two_proportion_test",
    "welch_test",
]


def _clean(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    return value


@dataclass(frozen=True)
class WelchTest:
    """Welch's t-test of mean(rl) - mean(control)."""

    difference: float
    statistic: float
    p_value: float
    dof: float
    ci_low: float
    ci_high: float

    def as_dict(self) -> dict[str, Any]:
        return _clean(dict(self.__dict__))  # type: ignore[no-any-return]


@dataclass(frozen=True)
class ProportionTest:
    """Two-proportion z-test of rate(rl) - rate(control)."""

    difference: float
    statistic: float
    p_value: float

    def as_dict(self) -> dict[str, Any]:
        return _clean(dict(self.__dict__))  # type: ignore[no-any-return]


@dataclass(frozen=True)
class BootstrapInterval:
    """A bootstrap confidence interval of a difference (rl - control)."""

    estimate: float
    ci_low: float
    ci_high: float
    confidence: float
    resamples: int
    length: int | None = None  # trades per arm in each resample, when equal lengths are compared

    @property
    def excludes_zero(self) -> bool:
        return bool(self.ci_low > 0.0 or self.ci_high < 0.0)

    def as_dict(self) -> dict[str, Any]:
        return _clean(dict(self.__dict__))  # type: ignore[no-any-return]


@dataclass(frozen=True)
class SampleSize:
    """Positions per arm (and in total) needed to detect the observed difference; None if it is zero."""

    control: int | None
    rl: int | None

    @property
    def total(self) -> int | None:
        return None if self.control is None or self.rl is None else self.control + self.rl

    def as_dict(self) -> dict[str, Any]:
        return {"control": self.control, "rl": self.rl, "total": self.total}


def welch_test(rl: FloatArray, control: FloatArray, alpha: float = 0.05) -> WelchTest | None:
    """Welch's t-test with its (1 - alpha) interval; None when an arm has fewer than two values."""
    rl, control = np.asarray(rl, dtype=np.float64), np.asarray(control, dtype=np.float64)
    if rl.size < 2 or control.size < 2:
        return None
    difference = float(rl.mean() - control.mean())
    if rl.var(ddof=1) == 0.0 and control.var(ddof=1) == 0.0:
        # no spread at all: the means either equal (nothing to detect) or differ with certainty
        p = 1.0 if difference == 0.0 else 0.0
        return WelchTest(difference, math.copysign(math.inf, difference) if p == 0 else 0.0, p, math.nan,
                         difference, difference)
    with warnings.catch_warnings():
        # one arm without spread is fine for Welch; scipy still warns about its moments
        warnings.simplefilter("ignore", RuntimeWarning)
        result = stats.ttest_ind(rl, control, equal_var=False)
    interval = result.confidence_interval(1.0 - alpha)
    return WelchTest(
        difference, float(result.statistic), float(result.pvalue), float(result.df),
        float(interval.low), float(interval.high),
    )


def two_proportion_test(wins_rl: int, n_rl: int, wins_control: int, n_control: int) -> ProportionTest | None:
    """z = (p_rl - p_c) / sqrt(p (1 - p) (1/n_rl + 1/n_c)), p pooled; two-sided p from N(0, 1)."""
    if n_rl < 1 or n_control < 1:
        return None
    p_rl, p_control = wins_rl / n_rl, wins_control / n_control
    pooled = (wins_rl + wins_control) / (n_rl + n_control)
    se = math.sqrt(pooled * (1.0 - pooled) * (1.0 / n_rl + 1.0 / n_control))
    difference = p_rl - p_control
    if se == 0.0:  # both arms all wins or all losses: no difference to test
        return ProportionTest(difference, 0.0, 1.0)
    z = difference / se
    return ProportionTest(difference, z, float(2.0 * stats.norm.sf(abs(z))))


def _z_sum(alpha: float, power: float) -> float:
    return float(stats.norm.ppf(1.0 - alpha / 2.0) + stats.norm.ppf(power))


def positions_needed_for_means(
    delta: float, sd_control: float, sd_rl: float, ratio: float, alpha: float = 0.05, power: float = 0.8
) -> SampleSize:
    """Positions per arm to detect a difference `delta` of means; `ratio` = n_rl / n_control."""
    if not (math.isfinite(delta) and math.isfinite(sd_control) and math.isfinite(sd_rl)) or delta == 0.0:
        return SampleSize(None, None)
    n_control = _z_sum(alpha, power) ** 2 * (sd_control**2 + sd_rl**2 / ratio) / delta**2
    return SampleSize(max(2, math.ceil(n_control)), max(2, math.ceil(ratio * n_control)))


def positions_needed_for_proportions(
    p_control: float, p_rl: float, ratio: float, alpha: float = 0.05, power: float = 0.8
) -> SampleSize:
    """Positions per arm to detect rates p_rl vs p_control (normal approximation, unequal arms)."""
    delta = p_rl - p_control
    if not (math.isfinite(p_control) and math.isfinite(p_rl)) or delta == 0.0:
        return SampleSize(None, None)
    pooled = (p_control + ratio * p_rl) / (1.0 + ratio)
    z_alpha, z_power = float(stats.norm.ppf(1.0 - alpha / 2.0)), float(stats.norm.ppf(power))
    root = z_alpha * math.sqrt(pooled * (1 - pooled) * (1 + 1 / ratio)) + z_power * math.sqrt(
        p_control * (1 - p_control) + p_rl * (1 - p_rl) / ratio
    )
    n_control = root**2 / delta**2
    return SampleSize(max(1, math.ceil(n_control)), max(1, math.ceil(ratio * n_control)))


def _bootstrap(
    statistic: Callable[[FloatArray, FloatArray], Any],
    rl: FloatArray,
    control: FloatArray,
    estimate: float,
    confidence: float,
    n_resamples: int,
    rng: np.random.Generator,
    length: int | None = None,
) -> BootstrapInterval:
    with warnings.catch_warnings():
        # a degenerate resample distribution (e.g. zero spreads) yields NaN bounds, reported as such
        warnings.simplefilter("ignore", stats.DegenerateDataWarning)
        warnings.simplefilter("ignore", RuntimeWarning)
        result = stats.bootstrap(
            (rl, control),
            statistic,
            vectorized=True,
            paired=False,
            n_resamples=n_resamples,
            batch=max(1, min(n_resamples, 2_000_000 // max(rl.size, control.size))),
            confidence_level=confidence,
            method="percentile",
            rng=rng,
        )
    interval = result.confidence_interval
    return BootstrapInterval(estimate, float(interval.low), float(interval.high), confidence, n_resamples, length)


def _sharpe_difference(x: FloatArray, y: FloatArray, axis: int = -1) -> Any:
    return np.asarray(sharpe_ratio(np.moveaxis(x, axis, -1))) - np.asarray(sharpe_ratio(np.moveaxis(y, axis, -1)))


def _drawdown_difference(length: int) -> Callable[..., Any]:
    def statistic(x: FloatArray, y: FloatArray, axis: int = -1) -> Any:
        x, y = np.moveaxis(x, axis, -1)[..., :length], np.moveaxis(y, axis, -1)[..., :length]
        return np.asarray(max_drawdown(x)) - np.asarray(max_drawdown(y))

    return statistic


@dataclass(frozen=True)
class ArmComparison:
    """The RL arm against the control arm (every difference is rl - control)."""

    alpha: float
    power: float
    pnl: WelchTest | None
    meta_reward: WelchTest | None
    size_reward: WelchTest | None
    win_rate: ProportionTest | None
    sharpe_difference: BootstrapInterval | None
    max_drawdown_difference: BootstrapInterval | None
    positions_needed_pnl: SampleSize
    positions_needed_win_rate: SampleSize

    @property
    def pnl_significant(self) -> bool:
        return self.pnl is not None and self.pnl.p_value < self.alpha

    @property
    def verdict(self) -> str:
        """One line: which arm has the higher mean pnl, if the difference is significant."""
        if self.pnl is None:
            return "not enough data (each arm needs at least two positions)"
        if not self.pnl_significant:
            return f"no significant difference in mean pnl (p = {self.pnl.p_value:.3g})"
        better = "RL" if self.pnl.difference > 0 else "control"
        return f"{better} arm has the higher mean pnl (p = {self.pnl.p_value:.3g})"

    def as_dict(self) -> dict[str, Any]:
        def part(value: Any) -> Any:
            return None if value is None else value.as_dict()

        return {
            "alpha": self.alpha,
            "power": self.power,
            "verdict": self.verdict,
            "pnl_significant": self.pnl_significant,
            "welch": {"pnl_pct": part(self.pnl), "meta_reward": part(self.meta_reward),
                      "size_reward": part(self.size_reward)},
            "win_rate": part(self.win_rate),
            "sharpe_difference": part(self.sharpe_difference),
            "max_drawdown_difference": part(self.max_drawdown_difference),
            "positions_needed": {"pnl_pct": self.positions_needed_pnl.as_dict(),
                                 "win_rate": self.positions_needed_win_rate.as_dict()},
        }


def compare_arms(
    control: ArmTrades,
    rl: ArmTrades,
    rng: np.random.Generator,
    alpha: float = 0.05,
    power: float = 0.8,
    n_resamples: int = 2000,
) -> ArmComparison:
    """All the tests of the module docstring; a test that an arm's size does not allow is None."""
    if not 0.0 < alpha < 1.0 or not 0.0 < power < 1.0:
        raise ValueError("alpha and power must lie in (0, 1)")
    n_c, n_r = len(control), len(rl)
    pc, pr = control.pnl_pct, rl.pnl_pct
    both_rewards = control.has_rewards and rl.has_rewards
    sharpe = drawdown = None
    if n_c >= 2 and n_r >= 2:
        sharpe_estimate = float(np.asarray(sharpe_ratio(pr)) - np.asarray(sharpe_ratio(pc)))
        sharpe = _bootstrap(_sharpe_difference, pr, pc, sharpe_estimate, 1.0 - alpha, n_resamples, rng)
        length = min(n_c, n_r)
        dd_estimate = float(max_drawdown(pr[-length:])) - float(max_drawdown(pc[-length:]))
        drawdown = _bootstrap(
            _drawdown_difference(length), pr, pc, dd_estimate, 1.0 - alpha, n_resamples, rng, length
        )
    ratio = n_r / n_c if n_c and n_r else 1.0
    wins_c, wins_r = int(np.count_nonzero(pc > 0)), int(np.count_nonzero(pr > 0))
    if n_c >= 2 and n_r >= 2:
        needed_pnl = positions_needed_for_means(
            float(pr.mean() - pc.mean()), float(pc.std(ddof=1)), float(pr.std(ddof=1)), ratio, alpha, power
        )
        needed_win = positions_needed_for_proportions(wins_c / n_c, wins_r / n_r, ratio, alpha, power)
    else:
        needed_pnl = needed_win = SampleSize(None, None)
    return ArmComparison(
        alpha=alpha,
        power=power,
        pnl=welch_test(pr, pc, alpha),
        meta_reward=welch_test(rl.meta_reward, control.meta_reward, alpha) if both_rewards else None,
        size_reward=welch_test(rl.size_reward, control.size_reward, alpha) if both_rewards else None,
        win_rate=two_proportion_test(wins_r, n_r, wins_c, n_c),
        sharpe_difference=sharpe,
        max_drawdown_difference=drawdown,
        positions_needed_pnl=needed_pnl,
        positions_needed_win_rate=needed_win,
    )
