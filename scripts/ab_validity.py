"""Statistical validity of `ab-test report` and `evaluate` on the synthetic market, offline (no Kafka).

Three figures over N seeds (default 20), each seed a fresh market and a fresh replica
(`rl_worker.sim.ab.run_offline_ab`, 5,000 positions, the production default core config --
`--core demo` for the demo's coarse bins):

1. A/A: one RL policy behind both arms (control share 0.5). The share of seeds whose report
   finds no significant difference in mean pnl at 5 % (Welch) -- aim >= 90 %. Also shown:
   the share with no significant difference in any of the report's tests.
2. A/B (control share 0.5), in two set-ups: RL against a control without choices of its own (the
   fixed baseline: dual_momentum / xgb / 0.5, 0.6 x 3, whatever the regime), and RL against the
   simulated stack's own choices (the detected regime's native strategy, 0.6 x 3). The oracle's
   expected pnl (and reward) of both arms' choices over all positions says which arm is better;
   among the seeds where it says RL, the share whose report finds RL better with p < 0.05 after
   the 5,000 positions -- aim >= 80 %.
3. evaluate: the replica's checkpoint taken half-way through the baseline A/B run is evaluated on
   the RL-arm decisions logged after it; the truth is the oracle's expected reward of the
   candidate's greedy choice on those logged contexts (the other agent's logged action held
   fixed; the choice as the candidate's own decisions read its tables: backoff levels, strategy
   rows). Per agent and estimator: in how many seeds evaluate gave an interval, how many of those
   cover the truth (aim >= 90 %), and the intervals' median width; evaluate gives none when some of
   the candidate's choices were hardly tried even over all states (`rl_worker.analysis.off_policy`).
   Headline: the seeds where no DR interval (of either agent) misses the truth. `--uniform-logs`:
   the same on the logs of both arms of a run whose control arm draws uniformly (`--control-share`,
   default 0.5; 1 is apprentice mode with a uniform baseline). `--extra`: also a replica trained on
   another market.

    .venv/bin/python scripts/ab_validity.py [--seeds 20] [--core default|demo] [--jobs 1] [--out out/ab_validity.json]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from rl_worker.analysis.comparison import compare_arms
from rl_worker.analysis.off_policy import (
    ESTIMATORS,
    candidate_greedy_actions,
    estimate_off_policy,
    logged_decisions_for_candidate,
)
from rl_worker.core import CoreConfig
from rl_worker.core.arms import CONTROL_ARM, RL_ARM, BaselinePolicy
from rl_worker.core.replica import ModelReplica
from rl_worker.core.snapshot import decode_replica
from rl_worker.sim.ab import AgentLog, run_offline_ab
from rl_worker.sim.demo_config import demo_core_config
from rl_worker.sim.offline import run_offline_learning


def true_value(log: AgentLog, candidate: ModelReplica, agent: str) -> float:
    """Mean over the logged decisions of the oracle's expected reward of the candidate's greedy choice
    (ties: the mean over the tied actions), the choice read as the candidate's own decisions read it."""
    greedy = candidate_greedy_actions(candidate, agent, log)
    return float(np.mean([np.mean(expected[list(g)]) for g, expected in zip(greedy, log.expected, strict=True)]))


def any_significant(comparison: Any, alpha: float) -> bool:
    tests = [comparison.pnl, comparison.meta_reward, comparison.size_reward, comparison.win_rate]
    if any(t is not None and t.p_value < alpha for t in tests):
        return True
    intervals = [comparison.sharpe_difference, comparison.max_drawdown_difference]
    return any(i is not None and i.excludes_zero for i in intervals)


def evaluate_candidate(log: AgentLog, candidate: ModelReplica, agent: str, seed: int, resamples: int) -> dict[str, Any]:
    logged = logged_decisions_for_candidate(agent, candidate, log)
    report = estimate_off_policy(logged, np.random.default_rng(seed), n_resamples=resamples)
    truth = true_value(log, candidate, agent)
    return {
        "truth": truth,
        # no estimate (the logs do not support the candidate): None, neither covered nor missed
        "covered": {name: report.estimates[name].covers(truth) if report.estimated else None for name in ESTIMATORS},
        "width": {
            name: report.estimates[name].ci_high - report.estimates[name].ci_low if report.estimated else None
            for name in ESTIMATORS
        },
        "report": report.as_dict(),
    }


def ab_figures(run: Any, seed: int, resamples: int) -> dict[str, Any]:
    comparison = compare_arms(
        run.trades[CONTROL_ARM], run.trades[RL_ARM], np.random.default_rng(seed), n_resamples=resamples
    )
    pnl, meta, size = comparison.pnl, comparison.meta_reward, comparison.size_reward
    assert pnl is not None and meta is not None and size is not None
    return {
        "positions": {arm: len(t) for arm, t in run.trades.items()},
        "oracle_expected_pnl": run.oracle_pnl,
        "oracle_expected_reward": run.oracle_reward,
        "oracle_says_rl_better": run.oracle_pnl[RL_ARM] > run.oracle_pnl[CONTROL_ARM],
        "oracle_says_rl_better_reward": run.oracle_reward[RL_ARM] > run.oracle_reward[CONTROL_ARM],
        "pnl_difference": pnl.difference,
        "pnl_p_value": pnl.p_value,
        "detected_rl_better": pnl.p_value < 0.05 and pnl.difference > 0,
        "reward_p_values": {"meta": meta.p_value, "size": size.p_value},
        "detected_rl_better_reward": all(t.p_value < 0.05 and t.difference > 0 for t in (meta, size)),
        "any_test_significant": any_significant(comparison, 0.05),
        "verdict": comparison.verdict,
    }


def core_config(core: str, seed: int) -> CoreConfig:
    """`default`: the production defaults (what a worker runs unconfigured), seeded; `demo`: the demo's coarse bins."""
    return demo_core_config(seed) if core == "demo" else CoreConfig(seed=seed)


def run_seed(
    seed: int,
    positions: int,
    candidate_positions: int,
    resamples: int,
    extra: bool,
    uniform: bool = False,
    core: str = "default",
    control_share: float = 0.5,
) -> dict[str, Any]:
    config = core_config(core, seed)
    started = time.perf_counter()
    half = positions // 2
    evaluation: dict[str, Any] = {}
    if uniform:
        # evaluate on logs that explore: the control arm draws uniformly among the allowed actions
        # (propensity 1/|A|); the candidate is the replica's half-way checkpoint, the logged decisions
        # are both arms' after it (as `evaluate` reads them); control share 1: apprentice mode
        explored = run_offline_ab(
            positions,
            seed + 9_000,
            config,
            control_share,
            policies={RL_ARM: "rl", CONTROL_ARM: "baseline"},
            baseline=BaselinePolicy(kind="uniform"),
            snapshot_at=half,
            log_arm=None,
        )
        assert explored.snapshot is not None
        uniform_candidate = decode_replica(explored.snapshot, config)
        evaluation["uniform_logs"] = {}
        for agent, log in (("meta", explored.meta.since(half)), ("sizing", explored.sizing.since(half))):
            evaluation["uniform_logs"][agent] = evaluate_candidate(log, uniform_candidate, agent, seed, resamples)
        return {"seed": seed, "evaluate": evaluation, "seconds": time.perf_counter() - started}
    aa = run_offline_ab(
        positions, seed, config, 0.5, policies={RL_ARM: "rl", CONTROL_ARM: "rl"}, keep_log=False, score=False
    )
    # RL against a stack without choices: the fixed baseline (dual_momentum / xgb / 0.5, 0.6 x 3)
    baseline = run_offline_ab(
        positions, seed + 7_000, config, 0.5, policies={RL_ARM: "rl", CONTROL_ARM: "baseline"}, snapshot_at=half
    )
    assert baseline.snapshot is not None
    # evaluate: the checkpoint taken half-way, on the RL-arm decisions logged after it; and a
    # replica trained on another market, on the same decisions
    candidates = {"checkpoint": decode_replica(baseline.snapshot, config)}
    if extra:
        foreign = run_offline_learning(candidate_positions, seed + 10_000, core_config(core, seed + 10_000)).replica
        assert foreign is not None
        candidates["foreign"] = foreign
    evaluation |= {name: {} for name in candidates}
    for agent, log in (("meta", baseline.meta.since(half)), ("sizing", baseline.sizing.since(half))):
        for name, candidate in candidates.items():
            evaluation[name][agent] = evaluate_candidate(log, candidate, agent, seed, resamples)
    aa_figures = ab_figures(aa, seed, resamples)
    row = {
        "seed": seed,
        "aa": aa_figures | {"significant": aa_figures["pnl_p_value"] < 0.05},
        "ab_baseline": ab_figures(baseline, seed, resamples),
        "evaluate": evaluation,
    }
    if extra:
        # RL against the simulated stack's own choices (the regime's native strategy, 0.6 x 3)
        stack = run_offline_ab(positions, seed + 5_000, config, 0.5, keep_log=False)
        row["ab_stack"] = ab_figures(stack, seed, resamples)
    row["seconds"] = time.perf_counter() - started
    return row


def _share(rows: list[dict[str, Any]], test: Any) -> tuple[int, int]:
    return sum(bool(test(r)) for r in rows), len(rows)


def _excludes(estimate: dict[str, Any], value: float) -> bool:
    """An interval that leaves `value` out (none: no interval)."""
    low, high = estimate["ci_low"], estimate["ci_high"]
    return low is not None and high is not None and not low <= value <= high


def _fraction(text: str) -> float:
    """argparse type: a share in [0, 1] (a bad one is a usage error, exit 2, before any run)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must lie in [0, 1], got {value}")
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--positions", type=int, default=5000)
    parser.add_argument("--candidate-positions", type=int, default=1000)
    parser.add_argument("--resamples", type=int, default=2000)
    parser.add_argument(
        "--uniform-logs",
        action="store_true",
        help="only the evaluate figure, on the logs of both arms with a control arm that draws uniformly "
        "(propensity 1/|A|)",
    )
    parser.add_argument(
        "--control-share",
        type=_fraction,
        default=0.5,
        help="with --uniform-logs: the uniform control arm's share (1: apprentice mode with a uniform baseline)",
    )
    parser.add_argument(
        "--core",
        choices=("default", "demo"),
        default="default",
        help="the replica's core config: the production defaults, or the demo's coarse bins (sim.demo_config)",
    )
    parser.add_argument("--jobs", type=int, default=1, help="seeds run in parallel processes")
    parser.add_argument(
        "--extra",
        action="store_true",
        help="also RL against the simulated stack's own choices, and a candidate trained on another market",
    )
    parser.add_argument("--out", type=Path, default=Path("out/ab_validity.json"))
    args = parser.parse_args(argv)

    seeds = list(range(args.first_seed, args.first_seed + args.seeds))
    work = [
        (
            seed,
            args.positions,
            args.candidate_positions,
            args.resamples,
            args.extra,
            args.uniform_logs,
            args.core,
            args.control_share,
        )
        for seed in seeds
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    partial = args.out.with_suffix(".seeds.jsonl")  # one line per finished seed, as they finish
    partial.write_text("")
    rows: list[dict[str, Any]] = []
    with multiprocessing.get_context("spawn").Pool(max(1, args.jobs)) as pool:
        for row in pool.imap(_run_seed_star, work):
            rows.append(row)
            with partial.open("a") as out:
                out.write(json.dumps(row) + "\n")
            if args.uniform_logs:
                ev = row["evaluate"]["uniform_logs"]
                print(
                    f"seed {row['seed']:3d}: evaluate on uniform logs, covered: "
                    + "; ".join(f"{a} " + ", ".join(f"{k} {v}" for k, v in ev[a]["covered"].items()) for a in ev)
                    + f" ({row['seconds']:.0f} s)",
                    flush=True,
                )
                continue
            ev = row["evaluate"]["checkpoint"]
            ab_base = row["ab_baseline"]
            print(
                f"seed {row['seed']:3d}: A/A p={row['aa']['pnl_p_value']:.3f} | A/B baseline: oracle pnl rl "
                f"{ab_base['oracle_expected_pnl'][RL_ARM]:+.3f} vs {ab_base['oracle_expected_pnl'][CONTROL_ARM]:+.3f}"
                f" p={ab_base['pnl_p_value']:.2g}"
                f" | evaluate DR covered meta {ev['meta']['covered']['DR']} sizing {ev['sizing']['covered']['DR']}"
                f" ({row['seconds']:.0f} s)",
                flush=True,
            )
    n = len(rows)
    summary: dict[str, Any] = {
        "seeds": n,
        "positions": args.positions,
        "core": args.core,
        "control_share": args.control_share if args.uniform_logs else 0.5,
        "targets": {"aa": 0.9, "ab": 0.8, "evaluate": 0.9},
    }
    lines = []
    if not args.uniform_logs:
        aa_ok = _share(rows, lambda r: not r["aa"]["significant"])
        aa_all_ok = _share(rows, lambda r: not r["aa"]["any_test_significant"])
        summary["aa_no_significant_pnl_difference"] = aa_ok
        summary["aa_no_significant_difference_in_any_test"] = aa_all_ok
        lines.append(
            f"A/A: no significant pnl difference at 5 % in {aa_ok[0]}/{n} seeds ({aa_ok[0] / n:.0%}); "
            f"none of the report's tests significant in {aa_all_ok[0]}/{n}"
        )
    scenarios = () if args.uniform_logs else ("ab_baseline", "ab_stack") if args.extra else ("ab_baseline",)
    for scenario in scenarios:
        better = [r for r in rows if r[scenario]["oracle_says_rl_better"]]
        detected = _share(better, lambda r, s=scenario: r[s]["detected_rl_better"])
        better_reward = [r for r in rows if r[scenario]["oracle_says_rl_better_reward"]]
        detected_reward = _share(better_reward, lambda r, s=scenario: r[s]["detected_rl_better_reward"])
        summary[scenario] = {
            "oracle_says_rl_better_pnl": len(better),
            "detected_pnl": detected,
            "oracle_says_rl_better_reward": len(better_reward),
            "detected_both_rewards": detected_reward,
        }
        share = f" ({detected[0] / detected[1]:.0%})" if detected[1] else ""
        lines.append(
            f"{scenario}: oracle says RL has the higher expected pnl in {len(better)}/{n} seeds; RL detected "
            f"(p < 0.05) in {detected[0]}/{detected[1]}{share}. Higher expected reward in {len(better_reward)}/{n}; "
            f"both rewards detected in {detected_reward[0]}/{detected_reward[1]}"
        )
    candidates = (
        ("uniform_logs",) if args.uniform_logs else ("checkpoint", "foreign") if args.extra else ("checkpoint",)
    )
    for candidate in candidates:
        pairs = {agent: [r["evaluate"][candidate][agent] for r in rows] for agent in ("meta", "sizing")}
        # per agent and estimator: (seeds with an interval, of them covering the truth)
        coverage = {
            agent: {
                name: (sum(p["covered"][name] is not None for p in ps), sum(p["covered"][name] is True for p in ps))
                for name in ESTIMATORS
            }
            for agent, ps in pairs.items()
        }
        # a seed is wrong when evaluate gave an interval (either agent) that misses the truth
        no_wrong = _share(
            rows,
            lambda r, c=candidate: all(r["evaluate"][c][a]["covered"]["DR"] is not False for a in ("meta", "sizing")),
        )
        both = _share(
            rows,
            lambda r, c=candidate: all(r["evaluate"][c][a]["covered"]["DR"] is True for a in ("meta", "sizing")),
        )
        ess = {
            agent: float(np.median([p["report"]["effective_sample_size"] for p in ps])) for agent, ps in pairs.items()
        }
        # how informative the intervals are: median width per agent and estimator over the seeds with one,
        # and the share of the candidate's choices resting on pooled cells (median over estimated seeds)
        widths = {
            agent: {
                name: float(np.median(w)) if (w := [p["width"][name] for p in ps if p["width"][name] is not None])
                else None
                for name in ESTIMATORS
            }
            for agent, ps in pairs.items()
        }
        # bias: the mean error (estimate - truth) over the seeds with an estimate; discrimination: of the seeds
        # where the candidate's true value is 0.3 or more away from the logging policy's value (the mean logged
        # reward), those whose interval excludes the logged value (and of the others, the same)
        bias = {
            agent: {
                name: float(np.mean(e)) if (e := [p["report"]["estimates"][name]["value"] - p["truth"] for p in ps
                                                  if p["report"]["estimated"]]) else None
                for name in ESTIMATORS
            }
            for agent, ps in pairs.items()
        }
        excludes = {
            agent: {
                name: {
                    far: _share(
                        [p for p in ps if p["report"]["estimated"] and (abs(p["truth"] - p["report"]["logged_value"])
                                                                        >= 0.3) == far],
                        lambda p, k=name: _excludes(p["report"]["estimates"][k], p["report"]["logged_value"]),
                    )
                    for far in (True, False)
                }
                for name in ESTIMATORS
            }
            for agent, ps in pairs.items()
        }
        pooled = {
            agent: float(np.median(x)) if (x := [p["report"]["pooled_share"] for p in ps if p["report"]["estimated"]])
            else None
            for agent, ps in pairs.items()
        }
        unsupported = {
            agent: float(np.median([p["report"]["unsupported_share"] for p in ps])) for agent, ps in pairs.items()
        }
        summary[f"evaluate_{candidate}"] = {
            "coverage_estimated_covered": coverage,
            "seeds_without_a_wrong_dr_interval": no_wrong,
            "dr_both_agents_estimated_and_covered": both,
            "median_ess": ess,
            "median_width": widths,
            "bias": bias,
            "excludes_logged_value": {
                agent: {name: {"truth_differs_by_0.3_or_more": v[True], "less": v[False]} for name, v in e.items()}
                for agent, e in excludes.items()
            },
            "median_pooled_share_when_estimated": pooled,
            "median_unsupported_share": unsupported,
            "refusals": {
                agent: [p["report"]["refusal"] for p in ps if p["report"]["refusal"]] for agent, ps in pairs.items()
            },
        }
        lines.append(
            f"evaluate ({candidate}): seeds where no DR 95 % interval misses the truth: {no_wrong[0]}/{n} "
            f"({no_wrong[0] / n:.0%}); both agents estimated and covered in {both[0]}/{n}; "
            + "; ".join(
                f"{agent}: estimated in {cov['DR'][0]}/{n}, covered "
                + ", ".join(f"{k} {c}/{e}" for k, (e, c) in cov.items())
                for agent, cov in coverage.items()
            )
            + f"; median ESS meta {ess['meta']:.0f}, sizing {ess['sizing']:.0f}"
        )
        lines.append(
            f"evaluate ({candidate}): median 95 % interval width "
            + "; ".join(
                f"{agent} " + ", ".join(f"{k} {'-' if v is None else f'{v:.3f}'}" for k, v in w.items())
                for agent, w in widths.items()
            )
            + "; candidate's choices on pooled cells (median, estimated seeds) "
            + ", ".join(f"{a} {'-' if v is None else f'{v:.0%}'}" for a, v in pooled.items())
            + "; unsupported (median, all seeds) "
            + ", ".join(f"{a} {v:.0%}" for a, v in unsupported.items())
        )
        lines.append(
            f"evaluate ({candidate}): bias (mean estimate - truth) "
            + "; ".join(
                f"{agent} " + ", ".join(f"{k} {'-' if v is None else f'{v:+.3f}'}" for k, v in b.items())
                for agent, b in bias.items()
            )
            + "; the interval excludes the logged policy's value where the truth differs from it by >= 0.3: "
            + "; ".join(
                f"{agent} " + ", ".join(f"{k} {v[True][0]}/{v[True][1]}" for k, v in e.items())
                for agent, e in excludes.items()
            )
            + " (where it differs by less: "
            + "; ".join(
                f"{agent} " + ", ".join(f"{k} {v[False][0]}/{v[False][1]}" for k, v in e.items())
                for agent, e in excludes.items()
            )
            + ")"
        )
    print()
    for line in lines:
        print(line)
    summary["lines"] = lines
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"summary": summary, "seeds": rows}, indent=2))
    print(f"wrote {args.out}")
    return 0


def _run_seed_star(work: tuple[int, int, int, int, bool, bool, str, float]) -> dict[str, Any]:
    return run_seed(*work)


if __name__ == "__main__":
    sys.exit(main())
