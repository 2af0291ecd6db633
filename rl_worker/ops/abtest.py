"""`rl-worker ab-test report`: the A/B arms of an app id side by side, tested, and kept in a history.

The report replays the learning log (`rl_worker.ops.learning_log`) and, over the positions
closed since `--since` (all when absent), gives per arm the figures of
`rl_worker.analysis.performance`, between the arms the tests of `rl_worker.analysis.comparison`,
and the seed's go-live criteria (`rl_worker.analysis.criteria`). Every complete report is pushed
to a Redis list per app id (`rl_worker:<app id>:ab:history`, newest first, the last
`RL_AB__HISTORY_SIZE` kept); `--history` lists them with the trend of the verdicts.

Exit status: 0 for a report; 1 when there is nothing to compare (no completed positions, or an
arm without positions) -- the figures there are still printed, nothing is stored; 2 on a usage
error (a `--since` that is not a time).
"""

from __future__ import annotations

import json
import math
import re
import time
from pathlib import Path
from typing import Any

import numpy as np
import redis.asyncio as aioredis

from rl_worker.analysis.comparison import compare_arms
from rl_worker.analysis.criteria import evaluate_criteria, overall_verdict
from rl_worker.analysis.learning_log import LogTally, read_table_sizes
from rl_worker.analysis.performance import summarize_arm
from rl_worker.contract import to_epoch_ms
from rl_worker.errors import RlWorkerError
from rl_worker.ops.log_replay import ReplayResult
from rl_worker.settings import Settings
from rl_worker.stream.connections import redis_options

__all__ = [
    "AbTestError",
    "ReportHistory",
    "build_report",
    "format_history",
    "format_report",
    "parse_since",
    "plot_report",
]

_RELATIVE = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhdw])$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


class AbTestError(RlWorkerError):
    """Nothing to report (no positions, an empty arm) or a bad option; `report` holds what could be computed."""

    def __init__(self, message: str, report: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.report = report


def parse_since(text: str | None, now_ms: int | None = None) -> int | None:
    """`--since`: ISO-8601 with a zone, epoch milliseconds, or a span back from now (`90m`, `24h`, `7d`)."""
    if text is None:
        return None
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    value = text.strip()
    relative = _RELATIVE.match(value)
    if relative:
        return now_ms - int(float(relative.group(1)) * _UNIT_S[relative.group(2)] * 1000)
    try:
        return to_epoch_ms(int(value) if value.isdigit() else value)
    except ValueError as exc:
        raise AbTestError(f"--since {text!r}: {exc} (or a span such as 24h, 7d)") from None


def build_report(settings: Settings, result: ReplayResult, since_ms: int | None, seed: int = 0) -> dict[str, Any]:
    """The report as JSON-ready data; raises AbTestError (with the partial report) when it cannot compare."""
    ab = settings.ab
    tally = result.tally
    replica = result.replica
    rl_arm, control_arm = settings.policy, ab.control_policy
    window = (
        "" if since_ms is None else f" closed since {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(since_ms / 1000))}"
    )
    arms = {
        arm: summarize_arm(tally.trades(arm), ab.trades_per_year)
        for arm in dict.fromkeys([rl_arm, control_arm, *tally.arms])
    }
    report: dict[str, Any] = {
        "app_id": settings.app_id,
        "generated_at_ms": int(time.time() * 1000),
        "model_version": replica.model_version,
        "since_ms": since_ms,
        "log": {
            "records": tally.records,
            "positions": tally.included,
            "unreadable": tally.unreadable,
            "control_records": tally.control_records,
            "overridden": tally.overridden,
            "first_offset": tally.first_offset,
            "last_offset": tally.last_offset,
        },
        "model": {
            "epsilon": replica.epsilon,
            "outcomes_applied": replica.n_updates,
            "q_states": {"meta": len(replica.meta_table), "sizing": len(replica.sizing_table)},
        },
        "arms": {arm: stats.as_dict() for arm, stats in arms.items()},
    }
    if tally.included == 0:
        raise AbTestError(f"the learning log of {settings.app_id} holds no completed positions{window}", report)
    empty = [arm for arm in (rl_arm, control_arm) if arms[arm].positions == 0]
    if empty:
        hint = " (RL_AB__CONTROL_SHARE is 0: every position goes to the RL arm)" if control_arm in empty else ""
        raise AbTestError(f"the {' and '.join(empty)} arm has no positions{window}{hint}: nothing to compare", report)
    comparison = compare_arms(
        tally.trades(control_arm),
        tally.trades(rl_arm),
        np.random.default_rng(seed),
        alpha=ab.alpha,
        power=ab.power,
        n_resamples=ab.bootstrap_resamples,
    )
    readings = None if tally.start_reading is None else (tally.start_reading, read_table_sizes(replica))
    criteria = evaluate_criteria(
        arms[control_arm],
        arms[rl_arm],
        comparison,
        epsilon=replica.epsilon,
        outcomes_applied=replica.n_updates,
        maturity_outcomes=ab.maturity_outcomes,
        tables=readings,
        critical_errors=tally.unreadable,
        min_positions=ab.min_positions,
    )
    report["comparison"] = comparison.as_dict()
    report["criteria"] = [c.as_dict() for c in criteria]
    report["verdict"] = overall_verdict(criteria).value
    return report


def _num(value: Any, spec: str = ".4g") -> str:
    return "-" if value is None or (isinstance(value, float) and not math.isfinite(value)) else format(value, spec)


def format_report(report: dict[str, Any]) -> str:
    """The report as text for a terminal."""
    lines = [
        f"A/B report of {report['app_id']} at model version {report['model_version']} "
        f"({report['log']['positions']} positions, {report['log']['overridden']} overridden, "
        f"{report['log']['unreadable']} unreadable log records)",
        "",
        f"{'arm':<10}{'positions':>10}{'win rate':>10}{'mean pnl':>10}{'total pnl':>11}{'Sharpe':>9}"
        f"{'Sharpe/yr':>10}{'max DD':>9}{'meta r':>9}{'size r':>9}",
    ]
    for arm, s in report["arms"].items():
        lines.append(
            f"{arm:<10}{s['positions']:>10}{_num(s['win_rate'], '.3f'):>10}{_num(s['mean_pnl_pct'], '+.3f'):>10}"
            f"{_num(s['total_pnl_pct'], '+.1f'):>11}{_num(s['sharpe_per_trade'], '+.3f'):>9}"
            f"{_num(s['sharpe_annualised'], '+.2f'):>10}{_num(s['max_drawdown_pct'], '.1f'):>9}"
            f"{_num(s['mean_meta_reward'], '+.3f'):>9}{_num(s['mean_size_reward'], '+.3f'):>9}"
        )
    comparison = report.get("comparison")
    if comparison is not None:
        lines += ["", "RL minus control:"]
        for name, test in comparison["welch"].items():
            if test is not None:
                lines.append(
                    f"  {name:<12} Welch t {_num(test['statistic'], '+.2f')}, p = {_num(test['p_value'], '.3g')}, "
                    f"difference {_num(test['difference'], '+.4f')} "
                    f"[{_num(test['ci_low'], '+.4f')}, {_num(test['ci_high'], '+.4f')}]"
                )
        win = comparison["win_rate"]
        if win is not None:
            lines.append(
                f"  {'win rate':<12} z {_num(win['statistic'], '+.2f')}, p = {_num(win['p_value'], '.3g')}, "
                f"difference {_num(win['difference'], '+.4f')}"
            )
        for name, key in (("Sharpe", "sharpe_difference"), ("max DD", "max_drawdown_difference")):
            interval = comparison[key]
            if interval is not None:
                length = f" over {interval['length']} trades each" if interval.get("length") else ""
                lines.append(
                    f"  {name:<12} difference {_num(interval['estimate'], '+.4f')}, bootstrap "
                    f"{interval['confidence']:.0%} CI [{_num(interval['ci_low'], '+.4f')}, "
                    f"{_num(interval['ci_high'], '+.4f')}]{length}"
                )
        needed = comparison["positions_needed"]
        lines.append(
            f"  positions needed to detect the observed difference (power {comparison['power']:.0%}): "
            f"pnl {_num(needed['pnl_pct']['total'], 'd')}, win rate {_num(needed['win_rate']['total'], 'd')}"
        )
        lines += ["", f"verdict: {comparison['verdict']}"]
    criteria = report.get("criteria")
    if criteria:
        lines += ["", "go-live criteria (seed):"]
        for c in criteria:
            lines.append(f"  {c['verdict']:<16} {c['name']}: {c['detail']}")
        lines.append(f"  overall: {report['verdict']}")
    return "\n".join(lines)


def plot_report(tally: LogTally, arms: list[str], path: Path, window: int = 50) -> Path:
    """Cumulative pnl per arm and the rolling win rate (last `window` trades) per arm, to a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (top, bottom) = plt.subplots(2, 1, figsize=(10, 7), sharex=False)
    for arm in arms:
        trades = tally.trades(arm)
        if not len(trades):
            continue
        x = np.arange(1, len(trades) + 1)
        top.plot(x, np.cumsum(trades.pnl_pct), label=f"{arm} ({len(trades)})")
        wins = (trades.pnl_pct > 0).astype(float)
        rolling = np.convolve(wins, np.ones(window) / window, mode="valid") if len(wins) >= window else wins
        bottom.plot(np.arange(len(wins) - len(rolling) + 1, len(wins) + 1), rolling, label=arm)
    top.set_title("cumulative pnl_pct per arm")
    top.set_xlabel("the arm's positions")
    top.legend()
    bottom.set_title(f"rolling win rate (last {window} positions)")
    bottom.set_xlabel("the arm's positions")
    bottom.set_ylim(0, 1)
    bottom.legend()
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


class ReportHistory:
    """The stored reports of one app id: a Redis list, newest first, capped."""

    def __init__(self, settings: Settings) -> None:
        self.key = f"{settings.redis_namespace}:ab:history"
        self.size = settings.ab.history_size
        self._redis = aioredis.Redis.from_url(
            settings.redis_url.get_secret_value(),
            socket_timeout=5.0,
            socket_connect_timeout=5.0,
            **redis_options(settings),
        )

    async def push(self, report: dict[str, Any]) -> None:
        comparison = report.get("comparison") or {}
        pnl = (comparison.get("welch") or {}).get("pnl_pct") or {}
        entry = {
            "generated_at_ms": report["generated_at_ms"],
            "model_version": report["model_version"],
            "since_ms": report["since_ms"],
            "positions": {arm: s["positions"] for arm, s in report["arms"].items()},
            "pnl_difference": pnl.get("difference"),
            "pnl_p_value": pnl.get("p_value"),
            "comparison": comparison.get("verdict"),
            "criteria": {c["name"]: c["verdict"] for c in report.get("criteria", [])},
            "verdict": report.get("verdict"),
        }
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.lpush(self.key, json.dumps(entry, separators=(",", ":")))
            pipe.ltrim(self.key, 0, self.size - 1)
            await pipe.execute()

    async def entries(self, limit: int | None = None) -> list[dict[str, Any]]:
        raw = await self._redis.lrange(self.key, 0, (limit or self.size) - 1)
        return [json.loads(item) for item in raw]

    async def close(self) -> None:
        await self._redis.aclose()


_MARK = {"pass": "P", "fail": "F", "not enough data": "."}


def format_history(app_id: str, entries: list[dict[str, Any]]) -> str:
    """The stored reports, newest first, and the trend of each verdict (oldest -> newest)."""
    if not entries:
        return f"no stored A/B reports for {app_id} (run `rl-worker ab-test report` first)"
    lines = [f"A/B reports of {app_id}, newest first ({len(entries)}):"]
    for entry in entries:
        when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(entry["generated_at_ms"] / 1000))
        positions = ", ".join(f"{arm} {n}" for arm, n in entry["positions"].items())
        lines.append(
            f"  {when}  model {entry['model_version']:>8}  {positions}  pnl p = {_num(entry['pnl_p_value'], '.3g')}"
            f"  verdict: {entry['verdict']}"
        )
    oldest_first = list(reversed(entries))
    lines += ["", "trend (oldest -> newest; P pass, F fail, . not enough data):"]
    lines.append(f"  {'overall':<34} {''.join(_MARK.get(e['verdict'], '?') for e in oldest_first)}")
    names = list(dict.fromkeys(name for e in oldest_first for name in e["criteria"]))
    for name in names:
        marks = "".join(_MARK.get(e["criteria"].get(name, ""), " ") for e in oldest_first)
        lines.append(f"  {name:<34} {marks}")
    return "\n".join(lines)
