"""The main job in one command: services, two workers, the synthetic stack, live progress, a PNG.

With nothing configured it starts the embedded broker and uses the Redis on 127.0.0.1:6379
(starting a private redis-server when none answers); with RL_KAFKA_BOOTSTRAP / RL_REDIS_URL
set it uses those. Demo topics carry a per-run prefix, so a demo never writes into a real
trading stack's topics. Everything it started is stopped at the end.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import SecretStr
from rich.console import Console
from rich.live import Live
from rich.table import Table

from rl_worker.core.config import CoreConfig
from rl_worker.ops.services import EmbeddedBroker, LocalRedis, WorkerProcess, redis_answers, settings_env, stop_workers
from rl_worker.ops.simulate import SimulationProgress, run_simulation
from rl_worker.settings import CheckpointSettings, KafkaSecurity, RedisSecurity, Settings, TopicNames

__all__ = ["DemoResult", "run_demo"]

console = Console()


@dataclass
class DemoResult:
    progress: SimulationProgress
    png: Path
    redis_url: str
    namespace: str
    checkpoint_offset: int | None
    health: list[dict[str, Any]] = field(default_factory=list)
    ab_verdict: str | None = None  # with a control share: the A/B report's verdict line


@contextmanager
def demo_services(configured: Settings, workdir: Path, broker: str = "tansu") -> Iterator[tuple[str, str]]:
    """(bootstrap, redis url): the ones set in the environment, else started here (and stopped on exit).

    `broker` is what is started when RL_KAFKA_BOOTSTRAP is not set: `tansu` (embedded, no Java) or
    `apache-kafka` (the tests' single-node KRaft broker, from scripts/kafka/fetch.sh's jars).
    """
    started: list[Any] = []
    try:
        bootstrap = configured.kafka_bootstrap if "kafka_bootstrap" in configured.model_fields_set else None
        if not bootstrap and broker == "apache-kafka":
            from rl_worker.ops.kafka_broker import KafkaBroker, kafka_version

            console.print(f"starting Apache Kafka {kafka_version()} (KRaft, one node) ...")
            kafka = KafkaBroker(workdir / "kafka")
            started.append(kafka)
            kafka.start()
            bootstrap = kafka.bootstrap
            console.print(f"Apache Kafka on {bootstrap}")
        elif not bootstrap:
            embedded = EmbeddedBroker(workdir / "broker.log")
            started.append(embedded)
            bootstrap = embedded.bootstrap
            console.print(f"embedded broker (tansu) on {bootstrap}")
        redis_url = configured.redis_url.get_secret_value() if "redis_url" in configured.model_fields_set else None
        if not redis_url:
            redis_url = "redis://127.0.0.1:6379/0"
            if not redis_answers(redis_url):
                local = LocalRedis()
                local.start()
                started.append(local)
                redis_url = local.url
                console.print(f"started redis-server on {redis_url}")
        yield bootstrap, redis_url
    finally:
        for service in reversed(started):
            service.stop()


class WorkerProcesses:
    """The demo's workers: one consumer group, each with its own data directory and log."""

    def __init__(self, settings: Settings, count: int, workdir: Path) -> None:
        env = settings_env(settings) | {"RL_LOG_LEVEL": "WARNING"}  # the workers get ours only
        self.workers = [
            WorkerProcess(
                env | {"RL_DATA_DIR": str(workdir / f"data-{i}")}, workdir, workdir / f"worker-{i}.log", "warn"
            )
            for i in range(count)
        ]

    def health(self, i: int) -> dict[str, Any] | None:
        try:
            return self.workers[i].health(timeout_s=2)
        except OSError:
            return None

    def wait_ready(self, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        for worker in self.workers:
            worker.wait_ready(max(0.0, deadline - time.monotonic()))

    def stop(self) -> None:
        stop_workers(self.workers)


def _live_table(progress: SimulationProgress, health: dict[str, Any] | None) -> Table:
    snap = progress.report.snapshot()
    table = Table(title="rl_worker demo: two workers learning from a synthetic trading stack", show_header=False)
    table.add_column(style="bold cyan")
    table.add_column()
    rate = progress.decisions / progress.elapsed_s if progress.elapsed_s > 0 else 0.0
    table.add_row("positions closed", f"{progress.closed} / {progress.target}")
    table.add_row("decisions / s", f"{rate:,.0f}")
    fallbacks = progress.fallbacks
    if fallbacks["meta"] or fallbacks["sizing"]:  # the stack traded its own choice: a decision missed its deadline
        table.add_row("fallbacks (deadline missed)", f"meta {fallbacks['meta']}, sizing {fallbacks['sizing']}")
    if health:
        table.add_row("epsilon", f"{health['epsilon']:.4f}")
        table.add_row("Q-table states", f"meta {health['q_states']['meta']}, sizing {health['q_states']['sizing']}")
        table.add_row("model version", str(health["model_version"]))
    table.add_row(f"rolling reward ({progress.report.window})", f"{snap.mean_reward:+.3f}")
    table.add_row(
        "share of best reward above random",
        f"{snap.fraction:.1%}  (meta {snap.meta_fraction:.1%}, sizing {snap.sizing_fraction:.1%})",
    )
    per_regime = ", ".join(f"{r}: {s}" for r, s in sorted(snap.most_chosen_strategy.items()))
    table.add_row("most-chosen strategy per regime", per_regime or "-")
    return table


def plot_learning(progress: SimulationProgress, health_log: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(16, 4.8))
    xs = [c["positions"] for c in progress.curve]
    ax = axes[0]
    ax.plot(xs, [c["fraction"] for c in progress.curve], label="both agents", linewidth=2)
    ax.plot(xs, [c["meta_fraction"] for c in progress.curve], label="meta agent", alpha=0.7)
    ax.plot(xs, [c["sizing_fraction"] for c in progress.curve], label="sizing agent", alpha=0.7)
    ax.axhline(0.0, color="grey", linewidth=0.8, linestyle=":")
    ax.axhline(0.5, color="green", linewidth=0.8, linestyle="--", label="50 % target")
    ax.set(title="Share of the best expected reward above random", xlabel="positions closed", ylabel="fraction")
    ax.legend(loc="lower right")
    ax = axes[1]
    ax.plot(xs, [c["mean_reward"] for c in progress.curve], color="tab:purple")
    ax.set(title=f"Rolling mean expected reward ({progress.report.window} positions)", xlabel="positions closed")
    ax = axes[2]
    hx = [h["closed"] for h in health_log]
    ax.plot(hx, [h["q_states"]["meta"] for h in health_log], label="meta states")
    ax.plot(hx, [h["q_states"]["sizing"] for h in health_log], label="sizing states")
    ax.set(title="Q-table growth and epsilon", xlabel="positions closed", ylabel="states")
    ax.legend(loc="upper left")
    twin = ax.twinx()
    twin.plot(hx, [h["epsilon"] for h in health_log], color="tab:red", linestyle="--", label="epsilon")
    twin.set_ylabel("epsilon", color="tab:red")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


async def run_demo(
    configured: Settings,
    positions: int,
    seed: int,
    workers: int,
    out_dir: Path,
    live: bool = True,
    broker: str = "tansu",
    core: CoreConfig | None = None,
    window: int = 500,
    control_share: float = 0.0,
) -> DemoResult:
    """`core`: the workers' core config (default: the configured one)."""
    run = time.strftime("%Y%m%d-%H%M%S")
    workdir = (out_dir / f"demo-{run}").resolve()  # the workers run in it: no relative paths
    workdir.mkdir(parents=True, exist_ok=True)
    with demo_services(configured, workdir, broker) as (bootstrap, redis_url):
        prefix = f"demo-{run}"
        # Derived from the settings the command was started with (the one Settings of the entry point).
        settings = configured.model_copy(
            update={
                "kafka_bootstrap": bootstrap,
                "redis_url": SecretStr(redis_url),
                # credentials configured belong to the services configured, not to those started here
                "kafka": configured.kafka if "kafka_bootstrap" in configured.model_fields_set else KafkaSecurity(),
                "redis": configured.redis if "redis_url" in configured.model_fields_set else RedisSecurity(),
                "app_id": f"rl-{prefix}",
                "topics": TopicNames(
                    **{field: f"{prefix}.{name}" for field, name in TopicNames().model_dump().items()}
                ),
                "core": configured.core if core is None else core,
                "checkpoint": CheckpointSettings(every_outcomes=500, interval_s=5.0),
                "ab": configured.ab.model_copy(update={"control_share": control_share}),
            }
        )
        from rl_worker.stream.topics import ensure_topics

        await ensure_topics(settings)
        procs = WorkerProcesses(settings, workers, workdir)
        try:
            await asyncio.to_thread(procs.wait_ready)
            console.print(f"{workers} workers ready (app id {settings.app_id}); simulating {positions} positions")
            health_log: list[dict[str, Any]] = []
            latest: dict[str, Any] = {"health": None, "polled": 0.0}

            def on_progress(progress: SimulationProgress) -> None:
                now = time.monotonic()
                if now - latest["polled"] >= 0.5 or progress.closed == progress.target:
                    latest["polled"] = now
                    health = procs.health(0)
                    if health:
                        latest["health"] = health
                        health_log.append(health | {"closed": progress.closed})
                if display is not None:
                    display.update(_live_table(progress, latest["health"]))

            display: Live | None = None
            if live:
                display = Live(console=console, refresh_per_second=4, transient=False)
                display.start()
            try:
                progress = await run_simulation(settings, positions, seed=seed, window=window, on_progress=on_progress)
            finally:
                if display is not None:
                    display.stop()
            final = await asyncio.to_thread(_wait_applied, procs, positions)
            health_log.append(final | {"closed": progress.closed})
            ab_verdict = await _ab_verdict(settings, workdir) if control_share > 0 else None
            png = workdir / "learning.png"
            plot_learning(progress, health_log, png)
        finally:
            procs.stop()
        from rl_worker.stream.checkpoints import RedisCheckpointStore

        store = RedisCheckpointStore.from_settings(settings)
        try:
            checkpoint = await store.latest_offset()
        finally:
            await store.close()
        if not live:
            console.print(_live_table(progress, final))
        return DemoResult(progress, png, redis_url, settings.redis_namespace, checkpoint, health_log, ab_verdict)


async def _ab_verdict(settings: Settings, workdir: Path) -> str:
    """The A/B report over the demo's learning log: its verdict lines (the full report goes to ab-report.txt)."""
    from rl_worker.analysis.learning_log import LogTally
    from rl_worker.ops.abtest import AbTestError, build_report, format_report
    from rl_worker.ops.log_replay import replay_learning_log

    tally = LogTally(settings.core, settings.policy)
    result = await replay_learning_log(settings, tally)
    try:
        report = build_report(settings, result, None)
    except AbTestError as exc:
        return f"A/B: {exc}"
    (workdir / "ab-report.txt").write_text(format_report(report) + "\n")
    arms = report["arms"]
    comparison = report["comparison"]
    return (
        f"A/B ({arms['rl']['positions']} RL / {arms['control']['positions']} control positions): "
        f"{comparison['verdict']}; go-live criteria: {report['verdict']} (report: {workdir / 'ab-report.txt'})"
    )


def _wait_applied(procs: WorkerProcesses, positions: int, timeout_s: float = 30.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    health: dict[str, Any] = {}
    while time.monotonic() < deadline:
        health = procs.health(0) or health
        if health and health["outcomes_applied"] >= positions:
            break
        time.sleep(0.2)
    return health
