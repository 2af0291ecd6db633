"""The seed's go-live criteria, each as pass / fail / not enough data.

The seed ("RL v2") puts the RL agents live when, against the previous system (v1, here the
control arm): win rate >= v1, Sharpe >= v1, max drawdown <= v1, epsilon < 0.1 at maturity,
the Q-tables growing, and no critical errors. A comparison with v1 is

- **not enough data** while either arm has fewer than `min_positions` trades, or while RL is
  behind v1 by a margin that is not significant (more data decides it);
- **pass** when RL's estimate is at least v1's (at most, for the drawdown);
- **fail** when RL is significantly behind: the two-proportion test at level alpha (win rate),
  or the bootstrap interval of the difference lying wholly on the wrong side of 0 (Sharpe,
  max drawdown over equally long curves).

Epsilon is judged once the model has applied `maturity_outcomes` outcomes; the Q-tables grow
when the later reading has more visits than the earlier one and no fewer states.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass
from typing import Any

from rl_worker.analysis.comparison import ArmComparison
from rl_worker.analysis.performance import ArmStatistics

__all__ = ["Criterion", "TableReading", "Verdict", "evaluate_criteria", "overall_verdict"]


class Verdict(enum.StrEnum):
    PASS = "pass"  # noqa: S105 (a verdict, not a password)
    FAIL = "fail"
    NOT_ENOUGH_DATA = "not enough data"


@dataclass(frozen=True)
class Criterion:
    name: str
    verdict: Verdict
    detail: str

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "verdict": self.verdict.value, "detail": self.detail}


@dataclass(frozen=True)
class TableReading:
    """The Q-tables' size after some number of applied outcomes."""

    outcomes_applied: int
    meta_states: int
    sizing_states: int
    visits: int


def _fmt(value: float) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.4g}"


def _versus(
    name: str, rl: float, control: float, ahead: bool, behind_significantly: bool, detail: str
) -> Criterion:
    figures = f"RL {_fmt(rl)} vs control {_fmt(control)}{detail}"
    if ahead:
        return Criterion(name, Verdict.PASS, figures)
    if behind_significantly:
        return Criterion(name, Verdict.FAIL, figures + ", significantly behind")
    return Criterion(name, Verdict.NOT_ENOUGH_DATA, figures + ", behind but not significantly")


def evaluate_criteria(
    control: ArmStatistics,
    rl: ArmStatistics,
    comparison: ArmComparison,
    *,
    epsilon: float | None,
    outcomes_applied: int,
    maturity_outcomes: int,
    tables: tuple[TableReading, TableReading] | None,
    critical_errors: int | None,
    min_positions: int = 100,
    epsilon_threshold: float = 0.1,
) -> list[Criterion]:
    """The six criteria of the module docstring, in the seed's order."""
    criteria: list[Criterion] = []
    few = min(control.positions, rl.positions) < min_positions
    few_detail = (
        f"RL {rl.positions} and control {control.positions} positions; each arm needs {min_positions}"
    )

    if few:
        criteria.append(Criterion("win rate >= v1", Verdict.NOT_ENOUGH_DATA, few_detail))
    else:
        test = comparison.win_rate
        behind = test is not None and test.difference < 0 and test.p_value < comparison.alpha
        p = f" (p = {test.p_value:.3g})" if test is not None else ""
        criteria.append(_versus("win rate >= v1", rl.win_rate, control.win_rate,
                                rl.win_rate >= control.win_rate, behind, p))

    sharpe = comparison.sharpe_difference
    if few or sharpe is None or math.isnan(rl.sharpe_per_trade) or math.isnan(control.sharpe_per_trade):
        criteria.append(Criterion("Sharpe >= v1", Verdict.NOT_ENOUGH_DATA, few_detail if few else "no spread"))
    else:
        ci = f" (difference CI [{_fmt(sharpe.ci_low)}, {_fmt(sharpe.ci_high)}])"
        criteria.append(_versus("Sharpe >= v1", rl.sharpe_per_trade, control.sharpe_per_trade,
                                rl.sharpe_per_trade >= control.sharpe_per_trade, sharpe.ci_high < 0.0, ci))

    drawdown = comparison.max_drawdown_difference
    if few or drawdown is None:
        criteria.append(Criterion("max drawdown <= v1", Verdict.NOT_ENOUGH_DATA, few_detail))
    else:
        detail = (
            f" (whole curves); over {drawdown.length} trades each: difference {_fmt(drawdown.estimate)}, "
            f"CI [{_fmt(drawdown.ci_low)}, {_fmt(drawdown.ci_high)}]"
        )
        criteria.append(_versus("max drawdown <= v1", rl.max_drawdown_pct, control.max_drawdown_pct,
                                drawdown.estimate <= 0.0,
                                drawdown.ci_low > 0.0, detail))

    name = f"epsilon < {epsilon_threshold:g} at maturity"
    if epsilon is None or outcomes_applied < maturity_outcomes:
        criteria.append(Criterion(name, Verdict.NOT_ENOUGH_DATA,
                                  f"{outcomes_applied} outcomes applied, maturity at {maturity_outcomes}"))
    else:
        verdict = Verdict.PASS if epsilon < epsilon_threshold else Verdict.FAIL
        criteria.append(Criterion(name, verdict, f"epsilon {epsilon:.4g} after {outcomes_applied} outcomes"))

    if tables is None or tables[1].outcomes_applied <= tables[0].outcomes_applied:
        criteria.append(Criterion("Q-tables growing", Verdict.NOT_ENOUGH_DATA, "needs two readings apart"))
    else:
        before, after = tables
        grew = (
            after.visits > before.visits
            and after.meta_states >= before.meta_states
            and after.sizing_states >= before.sizing_states
        )
        detail = (
            f"states meta {before.meta_states}->{after.meta_states}, sizing {before.sizing_states}->"
            f"{after.sizing_states}, visits {before.visits}->{after.visits}"
        )
        criteria.append(Criterion("Q-tables growing", Verdict.PASS if grew else Verdict.FAIL, detail))

    if critical_errors is None:
        criteria.append(Criterion("no critical errors", Verdict.NOT_ENOUGH_DATA, "no error count available"))
    else:
        verdict = Verdict.PASS if critical_errors == 0 else Verdict.FAIL
        criteria.append(Criterion("no critical errors", verdict, f"{critical_errors} critical errors"))
    return criteria


def overall_verdict(criteria: list[Criterion]) -> Verdict:
    """Fail if any criterion fails, pass if all pass, otherwise not enough data."""
    verdicts = {c.verdict for c in criteria}
    if Verdict.FAIL in verdicts:
        return Verdict.FAIL
    if verdicts == {Verdict.PASS}:
        return Verdict.PASS
    return Verdict.NOT_ENOUGH_DATA
