"""Offline learning: every simulator preset x learner x agent, with baselines measured in the same run.

Each run trades `--positions` positions of one preset and seed through the worker's own
`PositionJoiner` and a pure `ModelReplica` (no Kafka, no Redis), with `--in-flight` positions
open at a time as the demo keeps them (decisions read a replica that lags by as many closes).
The market's oracle scores every choice; the figure is the share of the best achievable
expected reward above a uniformly random policy,

    share = (E[r | chosen] - E[r | uniform allowed]) / (E[r | best allowed] - E[r | uniform allowed])

per agent over the last `--window` positions (0 for random, 1 for an oracle that sees the hidden
state). Learners, all on the same positions:

    random    uniformly random among the allowed actions
    rule      the stack's own choices as its events carry them (the detected regime's native strategy,
              xgb, weight 0.5; size 0.6 x leverage 3): the A/B control arm
    seed      the replica with RL_CORE__PROFILE=seed (alpha 0.01, gamma 0.99, epsilon 0.1 -> 0.01, plain TD)
    linucb    a disjoint LinUCB contextual bandit per agent on the same state features (here, not in the
              worker): one ridge regression per action, UCB width `--linucb-alpha`
    default   the replica with the default settings (CoreConfig())

    .venv/bin/python scripts/offline_learning.py                         # 4 presets x 5 learners x 12 seeds
    .venv/bin/python scripts/offline_learning.py --seeds 1-3 --presets regimes,flow --learners seed,default
    .venv/bin/python scripts/offline_learning.py --variant '{"meta": {"gamma": 0.99}}'   # a default with overrides

It writes `--out` (JSON: every run's figures and curves, plus the summary table) and a PNG of the
learning curves per preset (`--png`), and prints the table: mean and worst seed per preset x learner x agent.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from rl_worker.core import CoreConfig
from rl_worker.core.actions import N_META_ACTIONS, N_SIZING_ACTIONS
from rl_worker.core.replica import AppliedOutcome
from rl_worker.core.types import REGIMES
from rl_worker.sim.market import OpenedPosition, ScoredChoice, SyntheticMarket
from rl_worker.sim.offline import run_offline_learning
from rl_worker.sim.presets import PRESETS, preset_config

LEARNERS = ("random", "rule", "seed", "linucb", "default")
META_FEATURES = ("volatility", "market_pressure", "confidence", "previous_winrate", "account_health")
SIZING_FEATURES = ("signal_confidence", "portfolio_exposure", "recent_winrate", "volatility", "equity_curve_slope")


class _DisjointLinUCB:
    """LinUCB with one ridge regression per action (Li et al. 2010, algorithm 1), Sherman-Morrison updates."""

    def __init__(self, n_actions: int, dim: int, alpha: float) -> None:
        self.alpha = alpha
        self.a_inv = np.repeat(np.eye(dim)[None], n_actions, axis=0)
        self.b = np.zeros((n_actions, dim))
        self.theta = np.zeros((n_actions, dim))

    def choose(self, x: np.ndarray, allowed: np.ndarray) -> int:
        a_inv = self.a_inv[allowed]
        width = np.sqrt(np.einsum("i,aij,j->a", x, a_inv, x))
        scores = self.theta[allowed] @ x + self.alpha * width
        return int(allowed[int(np.argmax(scores))])

    def learn(self, action: int, x: np.ndarray, reward: float) -> None:
        a_inv = self.a_inv[action]
        ax = a_inv @ x
        a_inv -= np.outer(ax, ax) / (1.0 + x @ ax)
        self.b[action] += reward * x
        self.theta[action] = a_inv @ self.b[action]


def _meta_features(state: dict[str, Any]) -> np.ndarray:
    regime = [1.0 if state["regime"] == r else 0.0 for r in REGIMES]
    return np.array([*regime, *(float(state[f]) for f in META_FEATURES)])


def _sizing_features(state: dict[str, Any]) -> np.ndarray:
    return np.array([1.0, *(float(state[f]) for f in SIZING_FEATURES)])


class LinUCBBaseline:
    """Both agents as disjoint LinUCB bandits on the decision records' state features."""

    def __init__(self, alpha: float) -> None:
        self.meta = _DisjointLinUCB(N_META_ACTIONS, len(REGIMES) + len(META_FEATURES), alpha)
        self.sizing = _DisjointLinUCB(N_SIZING_ACTIONS, 1 + len(SIZING_FEATURES), alpha)

    def choose(
        self, opened: OpenedPosition, meta: dict[str, Any], sizing: dict[str, Any], market: SyntheticMarket
    ) -> tuple[int, int]:
        return (
            self.meta.choose(_meta_features(meta["state"]), market.allowed_meta(opened)),
            self.sizing.choose(_sizing_features(sizing["state"]), market.allowed_sizing(opened)),
        )

    def learn(
        self, meta: dict[str, Any], sizing: dict[str, Any], meta_index: int, sizing_index: int, applied: AppliedOutcome
    ) -> None:
        self.meta.learn(meta_index, _meta_features(meta["state"]), applied.meta_reward)
        self.sizing.learn(sizing_index, _sizing_features(sizing["state"]), applied.size_reward)


def share(scored: list[ScoredChoice], agent: str) -> float:
    """The share of the best achievable expected reward above uniform, over `scored`."""
    if agent == "meta":
        chosen = sum(x.meta_chosen for x in scored)
        best = sum(x.meta_best for x in scored)
        uniform = sum(x.meta_uniform for x in scored)
    else:
        chosen = sum(x.size_chosen for x in scored)
        best = sum(x.size_best for x in scored)
        uniform = sum(x.size_uniform for x in scored)
    gap = best - uniform
    return (chosen - uniform) / gap if gap > 0.0 else 0.0


def _seeds(text: str) -> list[int]:
    seeds: list[int] = []
    for part in text.split(","):
        if "-" in part:
            lo, hi = part.split("-")
            seeds.extend(range(int(lo), int(hi) + 1))
        else:
            seeds.append(int(part))
    return seeds


def run_one(preset: str, learner: str, seed: int, args: argparse.Namespace, variant: dict[str, Any]) -> dict[str, Any]:
    if learner == "seed":
        core = CoreConfig(profile="seed")
    else:
        core = CoreConfig.model_validate(variant)
    policy: Any = "rl" if learner in ("seed", "default") else learner
    if learner == "linucb":
        policy = LinUCBBaseline(args.linucb_alpha)
    started = time.perf_counter()
    run = run_offline_learning(
        args.positions,
        seed,
        core,
        preset_config(preset),
        policy=policy,
        window=args.window,
        every=args.positions + 1,
        in_flight=args.in_flight,
    )
    scored = run.scored
    last = scored[-args.window :]
    curve = []
    for end in range(args.curve_every, len(scored) + 1, args.curve_every):
        chunk = scored[max(0, end - args.curve_window) : end]
        curve.append({"positions": end, "meta": share(chunk, "meta"), "sizing": share(chunk, "sizing")})
    result: dict[str, Any] = {
        "preset": preset,
        "learner": learner,
        "seed": seed,
        "meta": share(last, "meta"),
        "sizing": share(last, "sizing"),
        "curve": curve,
        "seconds": time.perf_counter() - started,
    }
    if learner in ("seed", "default"):
        replica = run.replica
        assert replica is not None
        result["epsilon_end"] = replica.epsilon
        result["meta_rows"], result["sizing_rows"] = len(replica.meta_table), len(replica.sizing_table)
    return result


def summarise(runs: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, dict[str, float]]]]:
    """preset -> learner -> agent -> {mean, worst, best, seeds}."""
    table: dict[str, dict[str, dict[str, dict[str, float]]]] = {}
    for run in runs:
        cell = table.setdefault(run["preset"], {}).setdefault(run["learner"], {})
        for agent in ("meta", "sizing"):
            cell.setdefault(agent, {"values": []})["values"].append(run[agent])  # type: ignore[arg-type]
    for learners in table.values():
        for agents in learners.values():
            for agent, stats in agents.items():
                values: list[float] = stats.pop("values")  # type: ignore[assignment]
                agents[agent] = {
                    "mean": statistics.fmean(values),
                    "worst": min(values),
                    "best": max(values),
                    "seeds": len(values),
                }
    return table


def print_table(table: dict[str, dict[str, dict[str, dict[str, float]]]]) -> None:
    print(f"\n{'preset':<10}{'learner':<10}{'meta mean':>10}{'worst':>8}{'sizing mean':>13}{'worst':>8}")
    for preset, learners in table.items():
        for learner, agents in learners.items():
            m, s = agents["meta"], agents["sizing"]
            print(f"{preset:<10}{learner:<10}{m['mean']:>10.3f}{m['worst']:>8.3f}{s['mean']:>13.3f}{s['worst']:>8.3f}")


def plot(runs: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    presets = list(dict.fromkeys(r["preset"] for r in runs))
    learners = list(dict.fromkeys(r["learner"] for r in runs))
    fig, axes = plt.subplots(len(presets), 2, figsize=(11, 2.6 * len(presets)), squeeze=False, sharex=True)
    for row, preset in enumerate(presets):
        for col, agent in enumerate(("meta", "sizing")):
            ax = axes[row][col]
            for learner in learners:
                curves = [r["curve"] for r in runs if r["preset"] == preset and r["learner"] == learner]
                if not curves:
                    continue
                x = [p["positions"] for p in curves[0]]
                y = np.mean([[p[agent] for p in c] for c in curves], axis=0)
                ax.plot(x, y, label=learner)
            ax.axhline(0.0, color="grey", linewidth=0.5)
            ax.set_ylim(-0.2, 1.0)
            ax.set_title(f"{preset}: {agent} (mean of {len(curves)} seeds)", fontsize=9)
            if row == len(presets) - 1:
                ax.set_xlabel("positions closed")
            if col == 0:
                ax.set_ylabel("share of best above random")
    axes[0][1].legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=60)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--positions", type=int, default=5000)
    parser.add_argument("--seeds", default="1-12", help="market seeds: 1-12 or 1,4,9")
    parser.add_argument("--presets", default=",".join(PRESETS))
    parser.add_argument("--learners", default=",".join(LEARNERS))
    parser.add_argument("--window", type=int, default=2000, help="positions at the end that the figures cover")
    parser.add_argument("--in-flight", type=int, default=32, help="positions open at a time")
    parser.add_argument("--curve-every", type=int, default=250)
    parser.add_argument("--curve-window", type=int, default=500)
    parser.add_argument("--linucb-alpha", type=float, default=1.0)
    parser.add_argument("--variant", default="{}", help="JSON CoreConfig fields for the 'default' learner")
    parser.add_argument("--out", type=Path, default=Path("out/offline-learning.json"))
    parser.add_argument("--png", type=Path, default=None, help="default: --out with .png")
    parser.add_argument("--jobs", type=int, default=1, help="runs in parallel (worker processes)")
    parser.add_argument(
        "--include",
        type=Path,
        action="append",
        default=[],
        help="an earlier --out file whose runs join this table and PNG (e.g. baselines measured once)",
    )
    args = parser.parse_args(argv)
    presets = args.presets.split(",")
    learners = args.learners.split(",")
    for name in learners:
        if name not in LEARNERS:
            parser.error(f"unknown learner {name!r}; choose from {', '.join(LEARNERS)}")
    for name in presets:
        if name not in PRESETS:
            parser.error(f"unknown preset {name!r}; choose from {', '.join(PRESETS)}")
    variant = json.loads(args.variant)
    CoreConfig.model_validate(variant)  # fail before any run
    runs: list[dict[str, Any]] = []
    for earlier in args.include:
        runs.extend(json.loads(earlier.read_text())["runs"])
    started = time.perf_counter()
    todo = [(preset, learner, seed) for preset in presets for learner in learners for seed in _seeds(args.seeds)]

    def report(result: dict[str, Any]) -> None:
        runs.append(result)
        print(
            f"{result['preset']:<9} {result['learner']:<8} seed {result['seed']:>3}: meta {result['meta']:6.3f}"
            f"  sizing {result['sizing']:6.3f}  ({result['seconds']:.1f} s)",
            flush=True,
        )

    if args.jobs > 1:
        with ProcessPoolExecutor(args.jobs) as pool:
            futures = [pool.submit(run_one, *item, args, variant) for item in todo]
            for future in futures:
                report(future.result())
    else:
        for item in todo:
            report(run_one(*item, args, variant))
    order = {(p, lr): i for i, (p, lr) in enumerate((p, lr) for p in PRESETS for lr in LEARNERS)}
    runs.sort(key=lambda r: (order[(r["preset"], r["learner"])], r["seed"]))
    table = summarise(runs)
    print_table(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    default_config = CoreConfig.model_validate(variant).model_dump(mode="json")
    args.out.write_text(
        json.dumps(
            {
                "positions": args.positions,
                "window": args.window,
                "in_flight": args.in_flight,
                "seeds": sorted({r["seed"] for r in runs}),
                "linucb_alpha": args.linucb_alpha,
                "default_config": default_config,
                "seed_config": CoreConfig(profile="seed").model_dump(mode="json"),
                "table": table,
                "runs": runs,
                "seconds": time.perf_counter() - started,
            },
            indent=1,
        )
    )
    png = args.png or args.out.with_suffix(".png")
    plot(runs, png)
    print(f"\nwrote {args.out} and {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
