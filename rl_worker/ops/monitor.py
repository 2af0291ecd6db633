"""`rl-worker monitor`: Q-table growth, updates, epsilon and reward of running workers, from /health."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

__all__ = ["run_monitor"]


def fetch_health(url: str) -> dict[str, Any] | None:
    try:
        with urllib.request.urlopen(f"{url.rstrip('/')}/health", timeout=3) as response:  # noqa: S310
            return dict(json.loads(response.read()))
    except (OSError, ValueError):
        return None


def _table(samples: dict[str, list[dict[str, Any]]]) -> Table:
    table = Table(title="rl_worker monitor")
    for column in ("worker", "status", "model version", "updates/s", "epsilon", "meta states",
                   "sizing states", "mean reward meta", "mean reward sizing", "checkpoint"):
        table.add_column(column)
    for url, series in samples.items():
        if not series or series[-1]["health"] is None:
            table.add_row(url, "unreachable", *[""] * 8)
            continue
        last = series[-1]
        h = last["health"]
        rate = ""
        earlier = [s for s in series[:-1] if s["health"] is not None]
        if earlier:
            first = earlier[-1]
            dt = last["t"] - first["t"]
            rate = f"{(h['outcomes_applied'] - first['health']['outcomes_applied']) / dt:,.1f}" if dt > 0 else ""
        reward = h.get("mean_reward") or {}
        table.add_row(
            url, h["status"], str(h["model_version"]), rate, f"{h['epsilon']:.4f}",
            str(h["q_states"]["meta"]), str(h["q_states"]["sizing"]),
            "-" if reward.get("meta") is None else f"{reward['meta']:+.4f}",
            "-" if reward.get("sizing") is None else f"{reward['sizing']:+.4f}",
            str(h["checkpoint"]["offset"]),
        )
    return table


def _fmt(value: Any, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _trading_table(samples: dict[str, list[dict[str, Any]]]) -> Table | None:
    """Per worker and arm: the trading figures of /health (None when no worker reports any)."""
    table = Table(title="trading performance (per arm, from the log each worker applied)")
    for column in ("worker", "arm", "positions", "win rate", "last 100", "mean pnl %", "Sharpe/trade",
                   "max DD %", "overrides", "explored", "account health"):
        table.add_column(column)
    rows = 0
    for url, series in samples.items():
        health = series[-1]["health"] if series else None
        trading = (health or {}).get("trading")
        if not trading:
            continue
        explored = trading.get("explored_share") or {}
        explored_text = " ".join(f"{a} {_fmt(v, '.1%')}" for a, v in explored.items())
        for arm, figures in trading["arms"].items():
            overrides = figures.get("overrides") or {}
            table.add_row(
                url, arm, str(figures["positions"]), _fmt(figures["win_rate"], ".3f"),
                _fmt(figures["rolling_win_rate"], ".3f"), _fmt(figures["mean_pnl_pct"], "+.3f"),
                _fmt(figures["sharpe_per_trade"], "+.3f"), _fmt(figures["max_drawdown_pct"], ".1f"),
                " ".join(f"{a} {n}" for a, n in overrides.items()) or "0",
                explored_text, _fmt(trading.get("account_health"), ".2f"),
            )
            rows += 1
    return table if rows else None


def plot_samples(samples: dict[str, list[dict[str, Any]]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
    for url, series in samples.items():
        points = [s for s in series if s["health"] is not None]
        if not points:
            continue
        t0 = points[0]["t"]
        ts = [p["t"] - t0 for p in points]
        hs = [p["health"] for p in points]
        axes[0].plot(ts, [h["q_states"]["meta"] for h in hs], label=f"meta {url}")
        axes[0].plot(ts, [h["q_states"]["sizing"] for h in hs], label=f"sizing {url}", linestyle="--")
        axes[1].plot(ts, [h["outcomes_applied"] for h in hs], label=url)
        axes[2].plot(ts, [h["epsilon"] for h in hs], label=url)
    axes[0].set(title="Q-table states", xlabel="seconds")
    axes[1].set(title="outcomes applied (TD updates per agent)", xlabel="seconds")
    axes[2].set(title="epsilon", xlabel="seconds")
    for ax in axes:
        ax.legend(fontsize="small")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


async def run_monitor(
    urls: list[str], continuous: bool, interval_s: float, samples: int | None, png: Path | None
) -> dict[str, list[dict[str, Any]]]:
    """Poll the workers' /health; print a table per sample; plot the series to `png` at the end."""
    console = Console()
    series: dict[str, list[dict[str, Any]]] = {url: [] for url in urls}
    taken = 0
    limit = samples if samples is not None else (None if continuous else 1)
    try:
        while limit is None or taken < limit:
            if taken:
                await asyncio.sleep(interval_s)
            for url in urls:
                series[url].append({"t": time.monotonic(), "health": await asyncio.to_thread(fetch_health, url)})
            taken += 1
            console.print(_table(series))
            trading = _trading_table(series)
            if trading is not None:
                console.print(trading)
    except (KeyboardInterrupt, asyncio.CancelledError):
        pass
    if png is not None:
        plot_samples(series, png)
        console.print(f"plot: {png.resolve()}")
    return series
