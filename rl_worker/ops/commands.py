"""The one place that registers the operator commands of `rl-worker` (besides Faust's own `worker`);
each command's work lives in its own module of `rl_worker/ops/`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import faust
from faust.cli import argument, option

from rl_worker.settings import Settings

__all__ = ["register_commands"]


def click_choice(*choices: str) -> Any:
    import click

    return click.Choice(choices)


def register_commands(app: faust.App, settings: Settings) -> None:
    """Attach the operator commands to the app."""

    @app.command(
        option("--positions", type=int, default=5000, show_default=True, help="positions to trade"),
        option("--seed", type=int, default=7, show_default=True, help="market seed"),
        option("--in-flight", type=int, default=32, show_default=True, help="positions open at once"),
    )
    async def simulate(self: Any, positions: int, seed: int, in_flight: int) -> None:
        """Run the synthetic trading stack against the workers on the configured topics."""
        from rl_worker.ops.simulate import run_simulation

        def report(progress: Any) -> None:
            if progress.closed % 500 == 0 or progress.closed == progress.target:
                snap = progress.report.snapshot()
                self.say(
                    f"{progress.closed}/{progress.target} closed, fraction {snap.fraction:.1%}, "
                    f"reward {snap.mean_reward:+.3f}, strategies {snap.most_chosen_strategy}"
                )

        await run_simulation(settings, positions, seed=seed, in_flight=in_flight, on_progress=report)

    @app.command(
        option("--positions", type=int, default=5000, show_default=True, help="positions to trade"),
        option("--seed", type=int, default=7, show_default=True, help="market seed"),
        option("--workers", type=int, default=2, show_default=True, help="worker processes in the group"),
        option("--out", type=str, default="out", show_default=True, help="folder for the PNG and logs"),
        option("--no-live", is_flag=True, default=False, help="print a summary instead of a live table"),
        option(
            "--broker",
            type=click_choice("tansu", "apache-kafka"),
            default="tansu",
            show_default=True,
            help="broker started when RL_KAFKA_BOOTSTRAP is not set (apache-kafka: scripts/kafka/fetch.sh's jars)",
        ),
        option(
            "--control-share",
            type=float,
            default=0.0,
            show_default=True,
            help="share of positions the stack's own choices decide (control arm); the summary adds the A/B verdict",
        ),
    )
    async def demo(
        self: Any, positions: int, seed: int, workers: int, out: str, no_live: bool, broker: str, control_share: float
    ) -> None:
        """The main job: broker, Redis, workers and the synthetic stack; live progress; a PNG."""
        from rl_worker.ops.demo import run_demo

        if not 0.0 <= control_share <= 1.0:
            raise SystemExit("--control-share must lie in [0, 1]")
        result = await run_demo(
            settings, positions, seed, workers, Path(out), live=not no_live, broker=broker, control_share=control_share
        )
        snap = result.progress.report.snapshot()
        self.say(
            f"done: {result.progress.closed} positions in {result.progress.elapsed_s:.1f} s; "
            f"share of the best reward above random over the last "
            f"{min(result.progress.report.window, result.progress.closed)}: "
            f"{snap.fraction:.1%}"
        )
        self.say(f"learning curves: {result.png.resolve()}")
        self.say(
            f"checkpoint: {result.redis_url} key {result.namespace}:ckpt:{result.checkpoint_offset} "
            f"(latest pointer {result.namespace}:ckpt:latest)"
        )
        if result.ab_verdict is not None:
            self.say(result.ab_verdict)

    @app.command(
        argument("action", type=click_choice("list", "show")),
        argument("offset", type=int, required=False),
    )
    async def checkpoint(self: Any, action: str, offset: int | None) -> None:
        """List the checkpoints of this app id (RL_APP_ID) in Redis, or show one."""
        from rich.console import Console

        from rl_worker.ops.checkpoints import describe_checkpoints

        table = await describe_checkpoints(settings, offset if action == "show" else None)
        Console().print(table)

    @app.command(
        option("--url", "urls", multiple=True, help="worker base URL (repeatable); default this app's web port"),
        option("--continuous", is_flag=True, default=False, help="keep polling until interrupted"),
        option("--interval", type=float, default=5.0, show_default=True, help="seconds between samples"),
        option("--samples", type=int, default=None, help="stop after this many samples"),
        option("--png", type=str, default=None, help="plot the samples to this PNG at the end"),
    )
    async def monitor(
        self: Any, urls: tuple[str, ...], continuous: bool, interval: float, samples: int | None, png: str | None
    ) -> None:
        """Q-table growth, updates, epsilon and reward of running workers (from their /health)."""
        from rl_worker.ops.monitor import run_monitor

        targets = list(urls) or [f"http://{settings.web_host}:{settings.web_port}"]
        await run_monitor(targets, continuous, interval, samples, Path(png) if png else None)

    @app.command(
        option(
            "--first-deploy",
            is_flag=True,
            default=False,
            help="accept missing input topics and learning log (the first worker creates them)",
        ),
        option("--timeout", type=float, default=10.0, show_default=True, help="seconds per broker / Redis call"),
        option("--json", "as_json", is_flag=True, default=False, help="print the checks as JSON"),
    )
    async def preflight(self: Any, first_deploy: bool, timeout: float, as_json: bool) -> None:
        """Check the broker, Redis, the input topics and the learning log before a deploy.

        Prints one line per check (`ok` or `FAIL`, the check, what was seen): broker reachable, Redis
        reachable (and the namespace's checkpoints), input topics present, input topics co-partitioned,
        learning log present with one partition. Creates and writes nothing.

        Exit status: 0 when every check passes; 1 when one fails; 2 on a usage error.
        """
        from rl_worker.ops.preflight import format_checks, run_preflight

        checks = await run_preflight(settings, first_deploy=first_deploy, timeout_s=timeout)
        self.say(format_checks(checks, as_json))
        if not all(c.ok for c in checks):
            raise SystemExit(1)

    @app.command(
        option("--url", "urls", multiple=True, help="worker base URL (repeatable); default this app's web port"),
        option("--timeout", type=float, default=3.0, show_default=True, help="seconds per HTTP request"),
        option("--json", "as_json", is_flag=True, default=False, help="print the statuses as JSON"),
    )
    async def status(self: Any, urls: tuple[str, ...], timeout: float, as_json: bool) -> None:
        """Health and metrics of running workers, one line each, from their /health and /metrics.

        Prints per worker: status, model version, outcomes applied, epsilon, assigned partitions, checkpoint
        offset, decisions, dead letters, Redis up; the problems of an unhealthy one; whether the replicas'
        model versions agree. A worker is healthy when /health says `ok` and /metrics answers.

        Exit status: 0 when every worker is healthy; 1 when one is starting, degraded or unreachable;
        2 on a usage error.
        """
        import asyncio

        from rl_worker.ops.status import format_statuses, read_status

        targets = list(urls) or [f"http://{settings.web_host}:{settings.web_port}"]
        statuses = await asyncio.gather(*(asyncio.to_thread(read_status, url, timeout) for url in targets))
        self.say(format_statuses(list(statuses), as_json))
        if not all(s.healthy for s in statuses):
            raise SystemExit(1)

    @app.command(
        argument("action", type=click_choice("report")),
        option("--since", type=str, default=None, help="positions closed since: ISO-8601, epoch ms, or 24h / 7d ago"),
        option("--json", "as_json", is_flag=True, default=False, help="print the report as JSON"),
        option("--png", type=str, default=None, help="plot cumulative pnl and rolling win rate per arm to this PNG"),
        option("--history", is_flag=True, default=False, help="list the stored reports and the trend of the verdicts"),
    )
    async def ab_test(self: Any, action: str, since: str | None, as_json: bool, png: str | None, history: bool) -> None:
        """The A/B arms of RL_APP_ID side by side: per-arm figures, tests, the seed's go-live criteria.

        Replays the learning log; per arm: positions, win rate, mean / total pnl, Sharpe (per trade and
        annualised), max drawdown of the arm's own equity curve, mean rewards; between the arms: Welch
        tests, the two-proportion test, bootstrap intervals of the Sharpe and max-drawdown differences,
        the positions needed; then each criterion as pass / fail / not enough data. Every report is
        stored in Redis; `--history` lists them, newest first.

        Exit status: 0 for a report; 1 when there is nothing to compare (no positions, an empty arm)
        or the log cannot be read; 2 on a usage error.
        """
        import json
        import sys

        from rl_worker.analysis.learning_log import LogTally
        from rl_worker.ops.abtest import (
            AbTestError,
            ReportHistory,
            build_report,
            format_history,
            format_report,
            parse_since,
            plot_report,
        )
        from rl_worker.ops.learning_log import LearningLogError, replay_learning_log

        if history:
            store = ReportHistory(settings)
            try:
                entries = await store.entries()
            finally:
                await store.close()
            self.say(json.dumps(entries, indent=2) if as_json else format_history(settings.app_id, entries))
            return
        try:
            since_ms = parse_since(since)
        except AbTestError as exc:
            print(f"error: {exc}", file=sys.stderr)
            raise SystemExit(2) from None
        tally = LogTally(settings.core, settings.policy, since_ms)
        try:
            result = await replay_learning_log(settings, tally)
        except LearningLogError as exc:
            print(f"error: {exc}", file=sys.stderr)
            raise SystemExit(1) from None
        try:
            report = build_report(settings, result, since_ms)
        except AbTestError as exc:
            if exc.report is not None and exc.report["log"]["positions"]:
                self.say(json.dumps(exc.report, indent=2) if as_json else format_report(exc.report))
            print(f"error: {exc}", file=sys.stderr)
            raise SystemExit(1) from None
        store = ReportHistory(settings)
        try:
            await store.push(report)
        finally:
            await store.close()
        self.say(json.dumps(report, indent=2) if as_json else format_report(report))
        if png:
            arms = [settings.policy, settings.ab.control_policy]
            path = plot_report(tally, arms, Path(png))
            if not as_json:
                self.say(f"plot: {path.resolve()}")

    @app.command(
        option(
            "--candidate", type=str, required=True, help="OFFSET (a checkpoint of RL_APP_ID), APP_ID or APP_ID@OFFSET"
        ),
        option("--since", type=str, default=None, help="decisions of positions closed since (as ab-test --since)"),
        option("--json", "as_json", is_flag=True, default=False, help="print the estimates as JSON"),
    )
    async def evaluate(self: Any, candidate: str, since: str | None, as_json: bool) -> None:
        """Off-policy estimates (IPS, SNIPS, DR) of a candidate checkpoint on RL_APP_ID's logged decisions.

        What the candidate's greedy policy would have earned per decision, per agent, with bootstrap
        intervals and the effective sample size, and a warning when the logged propensities are too
        small to trust the estimate. Judge a backfilled or re-tuned candidate with it before a promote.

        Exit status: 0 with estimates; 1 for an unknown candidate, an unreadable log or nothing logged
        to evaluate on; 2 on a usage error.
        """
        import json
        import sys

        from rl_worker.analysis.learning_log import LogTally
        from rl_worker.ops.abtest import AbTestError, parse_since
        from rl_worker.ops.evaluate import EvaluateError, evaluate_candidate, format_evaluation, load_candidate
        from rl_worker.ops.learning_log import LearningLogError, replay_learning_log

        try:
            since_ms = parse_since(since)
        except AbTestError as exc:
            print(f"error: {exc}", file=sys.stderr)
            raise SystemExit(2) from None
        try:
            replica, name = await load_candidate(settings, candidate)
            tally = LogTally(settings.core, settings.policy, since_ms)
            await replay_learning_log(settings, tally)
            reports = evaluate_candidate(replica, {"meta": tally.meta, "sizing": tally.sizing}, settings)
        except (EvaluateError, LearningLogError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            raise SystemExit(1) from None
        if as_json:
            self.say(json.dumps({"candidate": name, "agents": {a: r.as_dict() for a, r in reports.items()}}, indent=2))
        else:
            self.say(format_evaluation(name, reports))
