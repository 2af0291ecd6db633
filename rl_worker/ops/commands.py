"""The one place that registers the operator commands of `rl-worker` (besides Faust's own `worker`);
each command's work lives in its own module of `rl_worker/ops/`."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import faust
from faust.cli import argument, option

from rl_worker.ops.exceptions import CommandError
from rl_worker.settings import Settings
from rl_worker.stream.exceptions import CheckpointStoreError, InfrastructureError

__all__ = ["register_commands"]


def click_choice(*choices: str) -> Any:
    import click

    return click.Choice(choices)


async def run_command(work: Coroutine[Any, Any, None]) -> None:
    """Run an operator command: a CommandError is printed as one line and ends the process with its
    exit code (the command has written nothing); infrastructure errors likewise, with code 1."""
    try:
        await work
    except CommandError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(exc.exit_code) from None
    except (CheckpointStoreError, InfrastructureError) as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(1) from None


def reported(command: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., Coroutine[Any, Any, None]]:
    """A command whose refused connections and infrastructure errors end it as `run_command` does:
    one line naming the cause, exit status 1, no traceback (a secret is never part of the message)."""

    @functools.wraps(command)
    async def guarded(*args: Any, **kwargs: Any) -> None:
        await run_command(command(*args, **kwargs))

    return guarded


def register_commands(app: faust.App, settings: Settings) -> None:
    """Attach the operator commands to the app."""

    @app.command(
        option("--positions", type=int, default=5000, show_default=True, help="positions to trade"),
        option("--seed", type=int, default=7, show_default=True, help="market seed"),
        option("--in-flight", type=int, default=32, show_default=True, help="positions open at once"),
        option(
            "--deadline",
            type=float,
            default=5.0,
            show_default=True,
            help="seconds to wait for each decision before trading the stack's own choice",
        ),
    )
    async def simulate(self: Any, positions: int, seed: int, in_flight: int, deadline: float) -> None:
        """Run the synthetic trading stack against the workers on the configured topics.

        Each position goes through `rl_worker.client`: a decision that misses its deadline is
        replaced by the stack's own choice, reported on the execution (meta) or the close (sizing).
        Exit status 1 when the workers stop answering (4 x in-flight positions in a row fell back).
        """
        from rl_worker.ops.simulate import run_simulation

        def report(progress: Any) -> None:
            if progress.closed % 500 == 0 or progress.closed == progress.target:
                snap = progress.report.snapshot()
                self.say(
                    f"{progress.closed}/{progress.target} closed, fraction {snap.fraction:.1%}, "
                    f"reward {snap.mean_reward:+.3f}, strategies {snap.most_chosen_strategy}, "
                    f"fallbacks meta {progress.fallbacks['meta']} sizing {progress.fallbacks['sizing']}"
                )

        async def run() -> None:  # a refused connection ends it with the cause, exit status 1
            await run_simulation(
                settings, positions, seed=seed, in_flight=in_flight, on_progress=report, deadline_s=deadline
            )

        await run_command(run())

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
            "--core",
            type=click_choice("configured", "demo"),
            default="configured",
            show_default=True,
            help="the workers' core: the configured one (RL_CORE__*, else the defaults) or the demo's coarse bins",
        ),
        option("--window", type=int, default=500, show_default=True, help="positions the learning figures cover"),
        option(
            "--control-share",
            type=float,
            default=0.0,
            show_default=True,
            help="share of positions the stack's own choices decide (control arm); the summary adds the A/B verdict",
        ),
    )
    @reported
    async def demo(
        self: Any,
        positions: int,
        seed: int,
        workers: int,
        out: str,
        no_live: bool,
        broker: str,
        core: str,
        window: int,
        control_share: float,
    ) -> None:
        """The main job: broker, Redis, workers and the synthetic stack; live progress; a PNG."""
        from rl_worker.ops.demo import run_demo
        from rl_worker.sim.demo_config import demo_core_config

        if not 0.0 <= control_share <= 1.0:
            raise SystemExit("--control-share must lie in [0, 1]")
        core_config = settings.core if core == "configured" else demo_core_config()
        result = await run_demo(
            settings,
            positions,
            seed,
            workers,
            Path(out),
            live=not no_live,
            broker=broker,
            core=core_config,
            window=window,
            control_share=control_share,
        )
        snap = result.progress.report.snapshot()
        self.say(
            f"done: {result.progress.closed} positions in {result.progress.elapsed_s:.1f} s; "
            f"share of the best reward above random over the last "
            f"{min(result.progress.report.window, result.progress.closed)}: "
            f"{snap.fraction:.1%} (meta {snap.meta_fraction:.1%}, sizing {snap.sizing_fraction:.1%})"
        )
        self.say(f"learning curves: {result.png.resolve()}")
        self.say(
            f"checkpoint: {result.redis_url} key {result.namespace}:ckpt:{result.checkpoint_offset} "
            f"(latest pointer {result.namespace}:ckpt:latest)"
        )
        if result.ab_verdict is not None:
            self.say(result.ab_verdict)

    @app.command(
        argument(
            "action",
            type=click_choice("list", "show", "export", "import", "restore", "promote", "pin", "unpin"),
        ),
        argument("target", required=False),
        option("--out", type=str, default=None, help="export: the JSON file to write"),
        option("--app-id", "into_app_id", type=str, default=None, help="import: into this app id (default RL_APP_ID)"),
        option("--from-app-id", type=str, default=None, help="promote: the namespace whose checkpoint goes live"),
        option("--offset", "source_offset", type=int, default=None, help="promote: that checkpoint (default latest)"),
        option("--yes", is_flag=True, default=False, help="restore/promote: do not ask for confirmation"),
    )
    async def checkpoint(
        self: Any,
        action: str,
        target: str | None,
        out: str | None,
        into_app_id: str | None,
        from_app_id: str | None,
        source_offset: int | None,
        yes: bool,
    ) -> None:
        """Checkpoints of this app id (RL_APP_ID): list | show OFFSET | export OFFSET|latest --out FILE |
        import FILE [--app-id NEW] | restore OFFSET | promote --from-app-id SRC [--offset N] | pin/unpin OFFSET."""
        from rich.console import Console

        from rl_worker.ops import checkpoints as ops

        console = Console()

        def offset_argument(allow_latest: bool = False) -> int | None:
            if target is None:
                raise CommandError(f"checkpoint {action} needs an OFFSET" + (" or latest" if allow_latest else ""))
            if allow_latest and target == "latest":
                return None
            try:
                return int(target)
            except ValueError:
                raise CommandError(f"{target!r} is not an offset") from None

        async def run() -> None:
            if action in ("list", "show"):
                shown = offset_argument() if action == "show" else None
                console.print(await ops.describe_checkpoints(settings, shown))
            elif action == "export":
                if out is None:
                    raise CommandError("checkpoint export needs --out FILE")
                await ops.export_checkpoint(settings, offset_argument(allow_latest=True), Path(out), console)
            elif action == "import":
                if target is None:
                    raise CommandError("checkpoint import needs the FILE to import")
                await ops.import_checkpoint(settings, Path(target), into_app_id, console)
            elif action == "restore":
                offset = offset_argument()
                await ops.reset_live_model(settings, settings.app_id, offset, yes, "restore", console)
            elif action == "promote":
                if from_app_id is None:
                    raise CommandError("checkpoint promote needs --from-app-id SRC")
                await ops.reset_live_model(settings, from_app_id, source_offset, yes, "promote", console)
            else:
                offset = offset_argument()
                assert offset is not None
                await ops.pin_checkpoint(settings, offset, action == "pin", console)

        await run_command(run())

    @app.command(
        option("--window", type=int, default=500, show_default=True, help="recent outcomes the advice reads"),
        option("--json", "as_json", is_flag=True, default=False, help="machine-readable output"),
        option(
            "--apply",
            "apply_values",
            is_flag=True,
            default=False,
            help="append a hyperparameter record with the values given (the others stay as they are)",
        ),
        *[
            option(
                f"--{agent}-{flag.replace('_', '-')}",
                f"{agent}_{flag}",
                type=float,
                default=None,
                help=f"{agent} agent's {flag.replace('_', ' ')}"
                + (" (the schedule restarts at this value)" if flag == "epsilon" else ""),
            )
            for agent in ("meta", "sizing")
            for flag in ("alpha", "gamma", "epsilon", "epsilon_min", "epsilon_decay")
        ],
        option("--reason", type=str, default="", help="--apply: why (kept in the record, for the audit trail)"),
    )
    async def tune(
        self: Any, window: int, as_json: bool, apply_values: bool, reason: str, **values: float | None
    ) -> None:
        """Per-agent advice on alpha, gamma and epsilon from the model's statistics; --apply changes them live."""
        import json

        from rich.console import Console

        from rl_worker.ops.tune import apply_hyperparameters, tune_report

        console = Console()
        given = {
            agent: {
                flag: value
                for flag in ("alpha", "gamma", "epsilon", "epsilon_min", "epsilon_decay")
                if (value := values[f"{agent}_{flag}"]) is not None
            }
            for agent in ("meta", "sizing")
        }

        async def run() -> None:
            if apply_values:
                await apply_hyperparameters(settings, given, reason, console, as_json)
                return
            if any(given.values()):
                raise CommandError("hyperparameter values are only written with --apply")
            report = await tune_report(settings, window)
            if as_json:
                print(json.dumps(report.as_dict(), indent=2))
            else:
                report.print(console)

        await run_command(run())

    @app.command(
        option(
            "--from",
            "start",
            type=str,
            default="earliest",
            show_default=True,
            help="earliest | ISO-8601 time | topic:partition:offset[,...] of the input topics",
        ),
        option("--to", "end", type=str, default="latest", show_default=True, help="latest | ISO-8601 time"),
        option("--target-app-id", type=str, required=True, help="the new model namespace to write"),
        option("--target-log", type=str, default=None, help="its learning log (default rl.outcomes.<target>)"),
        option(
            "--actions",
            type=click_choice("decisions", "events", "both"),
            default="both",
            show_default=True,
            help="published decisions, the events' own actions, or decisions first then events",
        ),
    )
    async def backfill(
        self: Any, start: str, end: str, target_app_id: str, target_log: str | None, actions: str
    ) -> None:
        """Learn a new model namespace from a bounded range of the input topics and the published decisions."""
        from rl_worker.ops.backfill import run_backfill

        async def run() -> None:
            result = await run_backfill(
                settings, start, end, target_app_id, actions, target_log  # type: ignore[arg-type]
            )
            print(result.summary())
            print(
                f"target {target_app_id}: learning log {result.target_log} (offsets 0-{result.checkpoint_offset}), "
                f"checkpoint {result.checkpoint_offset} sha256 {result.checkpoint_sha256}; actions from decisions "
                f"{result.from_decisions}, from events {result.from_events}; {result.counts.invalid} invalid events"
            )

        await run_command(run())

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
    @reported
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
        from rl_worker.ops.log_replay import LearningLogError, replay_learning_log

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
    @reported
    async def evaluate(self: Any, candidate: str, since: str | None, as_json: bool) -> None:
        """Off-policy estimates (IPS, SNIPS, DR) of a candidate checkpoint on RL_APP_ID's logged decisions.

        What the candidate's greedy policy would have earned per decision, per agent, with 95 % intervals
        and the effective sample size. DR's reward model pools a (state, action) the logs hardly tried
        with its coarser states (the agents' backoff levels, then the action over all states), and its
        interval carries how much states differ; the report gives the share of the candidate's choices
        resting on such pooled cells. No estimate for an agent when some of the candidate's choices are
        on actions hardly ever tried even over all states (the report says so): keep exploring traffic
        (a uniform control share) to judge candidates. Judge a backfilled or re-tuned candidate with it
        before a promote.

        Exit status: 0 with estimates for every agent that has logged decisions; 3 when the logs do not
        support an estimate for one of them (the report says which and why); 1 for an unknown
        candidate, an unreadable log or nothing logged to evaluate on; 2 on a usage error.
        """
        import json
        import sys

        from rl_worker.analysis.learning_log import LogTally
        from rl_worker.ops.abtest import AbTestError, parse_since
        from rl_worker.ops.evaluate import EvaluateError, evaluate_candidate, format_evaluation, load_candidate
        from rl_worker.ops.log_replay import LearningLogError, replay_learning_log

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
        if not all(report.estimated for report in reports.values()):
            raise SystemExit(3)
