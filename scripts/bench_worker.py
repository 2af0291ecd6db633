"""End-to-end benchmark of the stream worker on ONE embedded broker (tansu) it starts itself.

    .venv/bin/python scripts/bench_worker.py             # 3 runs, full sizes
    .venv/bin/python scripts/bench_worker.py --quick     # 1 run, small sizes (a smoke run)
    .venv/bin/python scripts/bench_worker.py --runs 5 --profile /tmp/prof   # + py-spy of the worker in (b)
    .venv/bin/python scripts/bench_worker.py --parts b --worker-env RL_FETCH_MAX_WAIT_MS=5   # a setting

Each run measures, on fresh topics of the same broker:

(a) the ceiling: raw aiokafka consume -> json parse + dict update -> json encode -> produce of a
    pre-produced backlog of ~200-byte JSON records on 4 partitions (first record consumed to
    the last one acknowledged by the broker);
(b) the worker (`python -m rl_worker worker`, ONE process): a backlog of valid SIGNAL_GENERATED
    records is pre-produced, the worker is started, and the rate is measured from the first to
    the N-th decision as received by a consumer of the decisions topic (consumer wall clock);
    the time from launching the worker process to the first decision received is reported too,
    and, during (b), the worker's CPU per decision and how much of the time its main thread ran
    on a CPU or waited for one (a busy machine shows as waiting, not as a slower worker);
(c) latency at a steady rate (default 200 signals/s for 20 s) against the same, now idle, worker:
    "end to end" = our consumer receiving the decision minus our producer's send() call for the
    signal (includes both of our own client hops, the worker's fetch wait and its producer
    linger); "broker timestamps" = the decision record's CreateTime (stamped by the worker's
    producer when it queued the send) minus the signal record's CreateTime (stamped by our
    producer at send()), 1 ms resolution, excludes the decision's way back to us; the first
    second is not counted, and this process's GC is off while it measures;
(d) outcomes applied per second by a replica from the log: valid Outcome records (made by the
    worker's own PositionJoiner from synthetic events, deciding with a replica) are pre-produced to a
    one-partition topic, then the worker's own OutcomesFollower (rl_worker.stream.follower) on a
    fresh runtime applies all of them, with the checkpoint writer task writing to Redis, timed
    from the first fetch to the last record applied;
(d0) the ceiling of (d), in the same run and on the same topic: a bare aiokafka consumer with the
    follower's settings reading the same outcome log and `json.loads`-ing every record (first
    fetch to last record parsed).

`--json PATH` writes every figure with its same-run ceiling and the ratio to it, in the one
result format of rl_worker.ops.perf_table: the README's table and docs/VERIFICATION_REPORT.md are
rendered from docs/bench/bench_worker.json.

Figures are medians over the runs. Everything talks to 127.0.0.1 only (the broker, the worker
and its web port, Redis); every process started here is stopped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import gc
import json
import os
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from rl_worker.ops.services import EmbeddedBroker, WorkerProcess
from rl_worker.settings import TopicNames
from rl_worker.sim import events as factories

LOOPBACK = "127.0.0.1"
PARTITIONS = 4
AIM_RATIO = 0.33
GOAL_RATIO = 0.5
AIM_P99_MS = 20.0
AIM_APPLY_PER_S = 50_000
AIM_APPLY_RATIO = 0.5
AIM_FAUST_RATIO = 0.8


@dataclass
class Sizes:
    passthrough: int
    signals: int
    steady_rate: float
    steady_s: float
    outcomes: int
    latency_rates: tuple[float, ...] = (200.0, 2000.0)
    group_signals: int = 4000  # (e) the backlog on 8 partitions per group size


# sized so that the three README commands finish in < 10 minutes on an idle 2-core machine
FULL = Sizes(passthrough=30_000, signals=10_000, steady_rate=200.0, steady_s=8.0, outcomes=20_000)
QUICK = Sizes(passthrough=10_000, signals=5_000, steady_rate=200.0, steady_s=4.0, outcomes=10_000, group_signals=2000)


@dataclass
class RunResult:
    passthrough_per_s: float = float("nan")
    worker_per_s: float = float("nan")
    first_decision_s: float = float("nan")
    e2e_p50_ms: float = float("nan")
    e2e_p99_ms: float = float("nan")
    ts_p50_ms: float = float("nan")
    ts_p99_ms: float = float("nan")
    steady_sent: int = 0
    steady_received: int = 0
    outcomes_per_s: float = float("nan")
    outcomes_raw_per_s: float = float("nan")  # (d0): aiokafka consume + json.loads of the same log
    idle_cpu: float = float("nan")  # cores the worker uses with nothing to do
    worker_cpu: float = float("nan")  # cores used by the worker process during (b)
    broker_cpu: float = float("nan")  # cores used by the broker during (b)
    worker_cpu_us: float = float("nan")  # worker CPU time per decision in (b)
    main_on_cpu: float = float("nan")  # share of (b) the worker's main thread ran on a CPU
    main_cpu_wait: float = float("nan")  # ... was runnable but waited for a CPU (other load)
    bare_faust_per_s: float = float("nan")  # (b0): a bare Faust agent, consume + one send per event
    bare_faust_cpu_us: float = float("nan")
    worker_rss_mib: float = float("nan")  # the worker's RSS at the end of (b), holding the backlog's open positions
    latency: dict[str, float] = field(default_factory=dict)  # (c)/(c0) per broker and rate: "<broker> <what> <rate>"
    scale: dict[str, float] = field(default_factory=dict)  # (e): "<n> workers ..." figures
    notes: list[str] = field(default_factory=list)


# ---- processes -----------------------------------------------------------------------------------


class Processes:
    """Everything started here, so that an exit path (also Ctrl-C) stops all of it."""

    def __init__(self) -> None:
        self.broker: EmbeddedBroker | None = None
        self.kafka: Any = None  # rl_worker.ops.kafka_broker.KafkaBroker, for (c) on Apache Kafka
        self.workers: list[WorkerProcess] = []
        self.profilers: list[subprocess.Popen[bytes]] = []

    def stop_worker(self, worker: WorkerProcess, timeout_s: float = 15.0) -> None:
        worker.stop(timeout_s=timeout_s)
        if worker in self.workers:
            self.workers.remove(worker)

    def stop_all(self) -> None:
        for proc in list(self.profilers):
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(20)
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
        self.profilers.clear()
        for worker in list(self.workers):
            self.stop_worker(worker, 10.0)
        if self.broker is not None:
            self.broker.stop()
            self.broker = None
        if self.kafka is not None:
            self.kafka.stop()
            self.kafka = None


# ---- Kafka helpers -------------------------------------------------------------------------------


async def create_topics(bootstrap: str, topics: dict[str, int]) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10000)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, parts, 1) for name, parts in topics.items()])
    finally:
        await admin.close()


def fast_producer(bootstrap: str, **kw: Any) -> AIOKafkaProducer:
    options: dict[str, Any] = {"linger_ms": 5, "max_batch_size": 65536, "acks": 1}
    return AIOKafkaProducer(bootstrap_servers=bootstrap, **(options | kw))


async def produce_backlog(bootstrap: str, topic: str, records: list[tuple[bytes, bytes]], partitions: int) -> None:
    """Pre-produce `records` (key, value); keys decide the partition unless there is only one."""
    producer = fast_producer(bootstrap)
    await producer.start()
    try:
        for key, value in records:
            if partitions == 1:
                await producer.send(topic, key=key, value=value, partition=0)
            else:
                await producer.send(topic, key=key, value=value)
        await producer.flush()
    finally:
        await producer.stop()


async def assigned_consumer(bootstrap: str, topic: str, partitions: int, **kw: Any) -> AIOKafkaConsumer:
    options: dict[str, Any] = {
        "enable_auto_commit": False,
        "fetch_max_wait_ms": 10,
        "max_partition_fetch_bytes": 4 * 1024 * 1024,
    }
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, **(options | kw))
    await consumer.start()
    tps = [TopicPartition(topic, p) for p in range(partitions)]
    consumer.assign(tps)
    await consumer.seek_to_beginning(*tps)
    return consumer


# ---- (a) the ceiling -----------------------------------------------------------------------------


def passthrough_records(n: int) -> list[tuple[bytes, bytes]]:
    rng = np.random.default_rng(1)
    out = []
    for i in range(n):
        body = {
            "event_id": f"e-{i}",
            "event_type": "SIGNAL_GENERATED",
            "position_id": f"p-{i}",
            "symbol": "BTCUSDT",
            "timestamp": 1_795_000_000_000 + i,
            "side": "LONG",
            "confidence": round(float(rng.random()), 4),
            "prices": [round(float(x), 4) for x in 100 + rng.random(4)],
        }
        value = json.dumps(body).encode()
        out.append((f"p-{i}".encode(), value))
    return out


async def measure_passthrough(bootstrap: str, records: list[tuple[bytes, bytes]], uid: str) -> float:
    src, dst = f"bench{uid}.pass-in", f"bench{uid}.pass-out"
    await create_topics(bootstrap, {src: PARTITIONS, dst: PARTITIONS})
    await produce_backlog(bootstrap, src, records, PARTITIONS)
    consumer = await assigned_consumer(bootstrap, src, PARTITIONS, fetch_max_wait_ms=100)
    producer = fast_producer(bootstrap)
    await producer.start()
    state: dict[str, int] = {}
    n, done = len(records), 0
    started: float | None = None
    try:
        while done < n:
            batch = await consumer.getmany(timeout_ms=1000, max_records=5000)
            if started is None and batch:
                started = time.perf_counter()
            for tp, recs in batch.items():
                for r in recs:
                    event = json.loads(r.value)
                    state[event["position_id"]] = state.get(event["position_id"], 0) + 1
                    event["seen"] = state[event["position_id"]]
                    await producer.send(dst, key=r.key, value=json.dumps(event).encode(), partition=tp.partition)
                    done += 1
        await producer.flush()
        assert started is not None
        return n / (time.perf_counter() - started)
    finally:
        await producer.stop()
        await consumer.stop()


# ---- (b) + (c) the worker ------------------------------------------------------------------------


def signal_records(n: int, prefix: str, seed: int) -> list[tuple[bytes, bytes]]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        pid = f"{prefix}-{i}"
        out.append((pid.encode(), factories.encode(factories.signal(pid, rng))))
    return out


@dataclass
class WorkerTopics:
    uid: str

    def name(self, what: str) -> str:
        return f"bench{self.uid}.{what}"

    def env(self) -> dict[str, str]:
        return {f"RL_TOPICS__{field.upper()}": self.name(field.replace("_", "-")) for field in TopicNames.model_fields}


def start_worker(
    procs: Processes, bootstrap: str, redis_url: str, app_id: str, topics: WorkerTopics, workdir: Path,
    extra_env: dict[str, str],
) -> WorkerProcess:
    env = {
        "RL_KAFKA_BOOTSTRAP": bootstrap,
        "RL_REDIS_URL": redis_url,
        "RL_APP_ID": app_id,
        "RL_WEB_HOST": LOOPBACK,
        "RL_DATA_DIR": str(workdir / f"data-{app_id}"),
        "RL_PARTITIONS": str(PARTITIONS),
    } | topics.env() | extra_env
    worker = WorkerProcess(env, workdir, workdir / f"{app_id}.log")
    procs.workers.append(worker)
    return worker


def start_profiler(procs: Processes, pid: int, out: Path) -> subprocess.Popen[bytes] | None:
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(py_spy).exists():
        print("py-spy not found: pip install py-spy (profile skipped)")
        return None
    proc = subprocess.Popen(
        [py_spy, "record", "--pid", str(pid), "--rate", "250", "--format", "raw", "--output", str(out),
         "--nonblocking"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    procs.profilers.append(proc)
    return proc


def stop_profiler(procs: Processes, proc: subprocess.Popen[bytes] | None) -> None:
    if proc is None:
        return
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(30)
    if proc.poll() is None:
        proc.kill()
        proc.wait(10)
    procs.profilers.remove(proc)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc; NaN elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main_thread_sched(pid: int) -> tuple[float, float]:
    """(seconds on a CPU, seconds runnable but waiting for a CPU) of a process's main thread (Linux)."""
    try:
        run, wait, _ = Path(f"/proc/{pid}/task/{pid}/schedstat").read_text().split()
    except (OSError, ValueError):
        return float("nan"), float("nan")
    return int(run) / 1e9, int(wait) / 1e9


def rss_mib(pid: int) -> float:
    """Resident set size of a process (Linux /proc; NaN elsewhere)."""
    try:
        pages = int(Path(f"/proc/{pid}/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return float("nan")
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    return float(np.percentile(np.asarray(values), q))


async def measure_worker(
    procs: Processes, bootstrap: str, redis_url: str, workdir: Path, backlog: list[tuple[bytes, bytes]],
    sizes: Sizes, uid: str, profile_dir: Path | None, run_index: int, extra_env: dict[str, str],
) -> RunResult:
    result = RunResult()
    topics = WorkerTopics(uid)
    app_id = f"bench-{uid}"
    await create_topics(bootstrap, {
        topics.name("signals"): PARTITIONS,
        topics.name("executions"): PARTITIONS,
        topics.name("closes"): PARTITIONS,
        topics.name("decisions"): PARTITIONS,
        topics.name("dead-letter"): PARTITIONS,
        topics.name("outcomes"): 1,
    })
    await produce_backlog(bootstrap, topics.name("signals"), backlog, PARTITIONS)
    consumer = await assigned_consumer(bootstrap, topics.name("decisions"), PARTITIONS, fetch_max_wait_ms=2)
    n = len(backlog)
    received: dict[bytes, tuple[float, int]] = {}  # decision key -> (wall time received, record CreateTime)
    duplicates = 0
    dead_consumer = await assigned_consumer(bootstrap, topics.name("dead-letter"), PARTITIONS)

    async def drain_until(predicate: Any, timeout_s: float) -> None:
        nonlocal duplicates
        deadline = time.monotonic() + timeout_s
        while not predicate():
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(received)} decisions after {timeout_s:.0f} s")
            if worker.process.poll() is not None:
                raise RuntimeError(f"worker exited with {worker.process.returncode}; see {worker.log_path}")
            batch = await consumer.getmany(timeout_ms=50)
            now = time.time()
            for recs in batch.values():
                for r in recs:
                    if r.key in received:
                        duplicates += 1
                    else:
                        received[r.key] = (now, r.timestamp)

    launched = time.time()
    worker = start_worker(procs, bootstrap, redis_url, app_id, topics, workdir, extra_env)
    pid = worker.process.pid
    profiler = None
    try:
        # (b) the backlog
        await drain_until(lambda: len(received) >= 1, 120.0)
        broker_pid = procs.broker.process.pid if procs.broker else 0
        cpu0 = (time.monotonic(), cpu_seconds(pid), cpu_seconds(broker_pid))
        sched0 = main_thread_sched(pid)
        if profile_dir is not None:
            profiler = start_profiler(procs, pid, profile_dir / f"worker-run{run_index}.txt")
        await drain_until(lambda: len(received) >= n, 120.0 + n / 500)
        wall = time.monotonic() - cpu0[0]
        result.worker_cpu = (cpu_seconds(pid) - cpu0[1]) / wall
        result.broker_cpu = (cpu_seconds(broker_pid) - cpu0[2]) / wall
        result.worker_cpu_us = result.worker_cpu * wall / (n - 1) * 1e6
        sched1 = main_thread_sched(pid)
        result.main_on_cpu = (sched1[0] - sched0[0]) / wall
        result.main_cpu_wait = (sched1[1] - sched0[1]) / wall
        stop_profiler(procs, profiler)
        profiler = None
        times = sorted(t for t, _ in received.values())
        result.first_decision_s = times[0] - launched
        result.worker_per_s = (n - 1) / (times[n - 1] - times[0])
        if duplicates:
            result.notes.append(f"{duplicates} duplicate decisions in (b)")

        result.worker_rss_mib = rss_mib(pid)

        # (c) steady rates, fresh position ids, the worker already warm and idle; (c0) beside it
        await asyncio.sleep(1.0)
        result.latency = await measure_latency(procs, "tansu", bootstrap, redis_url, workdir, uid, sizes, extra_env,
                                               worker, topics)
        result.e2e_p50_ms, result.e2e_p99_ms = result.latency["tansu 200 e2e p50"], result.latency["tansu 200 e2e p99"]
        result.ts_p50_ms, result.ts_p99_ms = result.latency["tansu 200 ts p50"], result.latency["tansu 200 ts p99"]
        for key, value in result.latency.items():
            if key.endswith("missing") and value:
                result.notes.append(f"(c) {key.removesuffix(' missing')}/s: {value:.0f} signals without decision")
        # what the idle worker costs (its fetch loop polls the broker every few ms)
        await asyncio.sleep(1.0)
        idle0 = (time.monotonic(), cpu_seconds(pid))
        await asyncio.sleep(3.0)
        result.idle_cpu = (cpu_seconds(pid) - idle0[1]) / (time.monotonic() - idle0[0])
        dead = await dead_consumer.getmany(timeout_ms=200)
        n_dead = sum(len(v) for v in dead.values())
        if n_dead:
            result.notes.append(f"{n_dead} dead letters (unexpected)")
    finally:
        stop_profiler(procs, profiler)
        await consumer.stop()
        await dead_consumer.stop()
        procs.stop_worker(worker)
    return result


# ---- (b0) a bare Faust agent ---------------------------------------------------------------------


async def measure_bare_faust(
    procs: Processes, bootstrap: str, workdir: Path, backlog: list[tuple[bytes, bytes]], uid: str
) -> tuple[float, float]:
    """(events/s, CPU us per event) of scripts/bench_faust_agent.py over the same backlog as (b)."""
    src, dst = f"bench{uid}.bare-in", f"bench{uid}.bare-out"
    await create_topics(bootstrap, {src: PARTITIONS, dst: PARTITIONS})
    await produce_backlog(bootstrap, src, backlog, PARTITIONS)
    consumer = await assigned_consumer(bootstrap, dst, PARTITIONS, fetch_max_wait_ms=2)
    from rl_worker.ops.services import free_port

    env = {k: v for k, v in os.environ.items() if not k.startswith("RL_")} | {
        "BENCH_BOOTSTRAP": bootstrap, "BENCH_IN": src, "BENCH_OUT": dst, "BENCH_APP_ID": f"bench-bare-{uid}",
        "BENCH_WEB_PORT": str(free_port()), "BENCH_PARTITIONS": str(PARTITIONS), "PYTHONUNBUFFERED": "1",
    }
    script = Path(__file__).with_name("bench_faust_agent.py")
    with open(workdir / f"bare-{uid}.log", "ab") as log:
        proc = subprocess.Popen([sys.executable, str(script), "worker", "-l", "warn"], cwd=workdir, env=env,
                                stdout=log, stderr=subprocess.STDOUT)
    n, seen, timed = len(backlog), 0, 0
    first: tuple[float, float] | None = None
    try:
        deadline = time.monotonic() + 120.0 + n / 200
        while seen < n:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError(f"bare Faust agent: {seen} of {n} records (see {workdir}/bare-{uid}.log)")
            batch = await consumer.getmany(timeout_ms=50)
            got = sum(len(v) for v in batch.values())
            if got and first is None:
                first = (time.monotonic(), cpu_seconds(proc.pid))  # timed from the first batch out
            elif got:
                timed += got
            seen += got
        assert first is not None
        wall = time.monotonic() - first[0]
        cpu = cpu_seconds(proc.pid) - first[1]
        return timed / wall, cpu / timed * 1e6
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        await consumer.stop()


# ---- (c) latency at steady rates, and (c0) the broker's own round trip ---------------------------------


async def steady_latency(
    bootstrap: str, topic: str, consumer: AIOKafkaConsumer, records: list[tuple[bytes, bytes]], rate: float,
) -> tuple[list[float], list[float], int]:
    """Send `records` to `topic` at `rate`/s (linger 0) while `consumer` reads the replies (the
    record with the same key); (end-to-end ms, CreateTime difference ms, records without reply),
    the first second left out. GC is off while it measures."""
    sent: dict[bytes, tuple[float, int]] = {}
    received: dict[bytes, tuple[float, int]] = {}
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=0, acks=1)
    await producer.start()
    stop = asyncio.Event()

    async def read() -> None:
        while not stop.is_set():
            batch = await consumer.getmany(timeout_ms=20)
            now = time.time()
            for recs in batch.values():
                for r in recs:
                    received.setdefault(r.key, (now, r.timestamp))

    reader = asyncio.create_task(read())
    gc.disable()
    try:
        period = 1.0 / rate
        start = time.monotonic() + 0.05
        for i, (key, value) in enumerate(records):
            delay = start + i * period - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            at = time.time()
            fut = await producer.send(topic, key=key, value=value)
            sent[key] = (at, 0)
            fut.add_done_callback(
                lambda f, key=key, at=at: sent.__setitem__(key, (at, f.result().timestamp))
                if not f.exception() else None
            )
        await producer.flush()
        deadline = time.monotonic() + 10.0
        while time.monotonic() < deadline and not all(k in received for k in sent):
            await asyncio.sleep(0.05)
    finally:
        gc.enable()
        stop.set()
        await reader
        await producer.stop()
    warmup = int(rate)
    keys = list(sent)[warmup:] if len(sent) > 2 * warmup else list(sent)
    e2e = [(received[k][0] - sent[k][0]) * 1000 for k in keys if k in received]
    ts = [float(received[k][1] - sent[k][1]) for k in keys if k in received and sent[k][1]]
    return e2e, ts, sum(1 for k in sent if k not in received)


async def measure_round_trip(bootstrap: str, uid: str, rate: float, seconds: float) -> tuple[float, float]:
    """(c0): p50/p99 ms of a raw aiokafka produce (linger 0) -> consume (fetch wait 2 ms) of the same
    signals on a fresh 4-partition topic: what the broker and the clients cost, without the worker."""
    topic = f"bench{uid}.rt{int(rate)}"
    await create_topics(bootstrap, {topic: PARTITIONS})
    consumer = await assigned_consumer(bootstrap, topic, PARTITIONS, fetch_max_wait_ms=2)
    try:
        records = signal_records(int(rate * seconds), f"rt{uid}-{int(rate)}", seed=7)
        e2e, _, _ = await steady_latency(bootstrap, topic, consumer, records, rate)
        return percentile(e2e, 50), percentile(e2e, 99)
    finally:
        await consumer.stop()


async def measure_latency(
    procs: Processes, broker: str, bootstrap: str, redis_url: str, workdir: Path, uid: str, sizes: Sizes,
    extra_env: dict[str, str], worker: WorkerProcess | None = None, topics: WorkerTopics | None = None,
) -> dict[str, float]:
    """(c) and (c0) on one broker at each steady rate: the worker's p50/p99 end to end (signal sent ->
    decision received by a consumer of the decisions topic) beside the raw round trip, same broker,
    same run. Starts a worker of its own unless a warm one is given."""
    out: dict[str, float] = {}
    own = worker is None
    if worker is None or topics is None:
        topics = WorkerTopics(f"{uid}l")
        await create_topics(bootstrap, {topics.name(t): PARTITIONS for t in (
            "signals", "executions", "closes", "decisions", "dead-letter")} | {topics.name("outcomes"): 1})
        worker = start_worker(procs, bootstrap, redis_url, f"bench-{uid}l", topics, workdir, extra_env)
    consumer = await assigned_consumer(bootstrap, topics.name("decisions"), PARTITIONS, fetch_max_wait_ms=2)
    await consumer.seek_to_end()  # only the decisions of the signals sent here
    try:
        if own:  # warm: one decision through before measuring
            warm = signal_records(1, f"warm{uid}", seed=3)
            await produce_backlog(bootstrap, topics.name("signals"), warm, PARTITIONS)
            deadline = time.monotonic() + 120
            while not any((await consumer.getmany(timeout_ms=200)).values()):
                if time.monotonic() > deadline or worker.process.poll() is not None:
                    raise RuntimeError(f"no decision from the worker on {broker}; see {worker.log_path}")
            await asyncio.sleep(1.0)
        for rate in sizes.latency_rates:
            seconds = sizes.steady_s if rate <= 200 else max(2.0, sizes.steady_s / 2)
            raw50, raw99 = await measure_round_trip(bootstrap, uid, rate, seconds)
            records = signal_records(int(rate * seconds), f"lat{uid}-{broker}-{int(rate)}", seed=100)
            e2e, ts, missing = await steady_latency(bootstrap, topics.name("signals"), consumer, records, rate)
            key = f"{broker} {int(rate)}"
            out |= {f"{key} e2e p50": percentile(e2e, 50), f"{key} e2e p99": percentile(e2e, 99),
                    f"{key} ts p50": percentile(ts, 50), f"{key} ts p99": percentile(ts, 99),
                    f"{key} raw p50": raw50, f"{key} raw p99": raw99, f"{key} missing": float(missing)}
            await asyncio.sleep(1.0)
    finally:
        await consumer.stop()
        if own:
            procs.stop_worker(worker)
    return out


# ---- (e) 1, 2, 4 workers on 8 partitions ------------------------------------------------------------


async def measure_group(
    procs: Processes, bootstrap: str, redis_url: str, workdir: Path, uid: str, n_workers: int, signals: int,
    extra_env: dict[str, str],
) -> dict[str, float]:
    """N workers of one group on 8-partition topics with a pre-produced backlog: the group's
    decisions/s (first to last decision received) and each worker's CPU per decision it made
    (CPU seconds of the process during the drain / decisions on its partitions)."""
    partitions = 8
    topics = WorkerTopics(f"{uid}g{n_workers}")
    await create_topics(bootstrap, {topics.name(t): partitions for t in (
        "signals", "executions", "closes", "decisions", "dead-letter")} | {topics.name("outcomes"): 1})
    env = extra_env | {"RL_PARTITIONS": str(partitions)}
    app_id = f"bench-{uid}g{n_workers}"
    workers = []
    for i in range(n_workers):
        home = workdir / f"g{uid}-{n_workers}-{i}"
        home.mkdir(exist_ok=True)
        workers.append(start_worker(procs, bootstrap, redis_url, app_id, topics, home, env))
    consumer = await assigned_consumer(bootstrap, topics.name("decisions"), partitions, fetch_max_wait_ms=2)
    try:
        for w in workers:
            await asyncio.to_thread(w.wait_ready, 120.0)
        await asyncio.sleep(2.0)  # the group settles on its assignment
        cpu0 = [cpu_seconds(w.process.pid) for w in workers]
        backlog = signal_records(signals, f"g{uid}-{n_workers}", seed=21)
        await produce_backlog(bootstrap, topics.name("signals"), backlog, partitions)
        by_partition: dict[int, int] = {}
        times: list[float] = []
        deadline = time.monotonic() + 60 + signals / 100
        while len(times) < signals:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{n_workers} workers: {len(times)} of {signals} decisions")
            batch = await consumer.getmany(timeout_ms=50)
            now = time.monotonic()
            for tp, recs in batch.items():
                by_partition[tp.partition] = by_partition.get(tp.partition, 0) + len(recs)
                times += [now] * len(recs)
        cpu = [cpu_seconds(w.process.pid) - c for w, c in zip(workers, cpu0, strict=True)]
        rate = (len(times) - 1) / (times[-1] - times[0]) if times[-1] > times[0] else float("nan")
        per_decision = [c / (signals / n_workers) * 1e6 for c in cpu]  # assignment is even: 8 / n partitions each
        return {f"{n_workers} workers per_s": rate, f"{n_workers} workers cpu_us": statistics.median(per_decision),
                f"{n_workers} workers cpu_us max": max(per_decision)}
    finally:
        await consumer.stop()
        for w in workers:
            procs.stop_worker(w)


# ---- (d) outcomes applied by a replica -----------------------------------------------------------


def outcome_records(n: int, seed: int = 5) -> list[tuple[bytes, bytes]]:
    """Outcomes as the worker builds them: the worker's own PositionJoiner joins synthetic signal,
    execution and close events, deciding with a replica that learns from each outcome as it goes."""
    from rl_worker.contract import decode_event
    from rl_worker.core.config import CoreConfig
    from rl_worker.core.outcome import Outcome
    from rl_worker.core.replica import ModelReplica
    from rl_worker.positions import PositionJoiner

    replica = ModelReplica(CoreConfig())
    joiner = PositionJoiner(replica, "rl", lambda: 0)
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        pid = f"pos-{i}"
        row = None
        value = b""
        for topic, event in (
            ("signals", factories.signal(pid, rng)),
            ("executions", factories.execution(pid, rng)),
            ("closes", factories.close(pid, rng)),
        ):
            result = joiner.handle(row, decode_event(factories.encode(event)), (topic, 0, i))
            row = result.row
            value = next((e.value for e in result.emits if e.kind == "outcome"), value)
        replica.apply(Outcome.model_validate_json(value), i)
        out.append((pid.encode(), value))
    return out


async def measure_outcomes(bootstrap: str, redis_url: str, topic: str, n: int, uid: str) -> float:
    """The worker's own OutcomesFollower on a fresh runtime, with its checkpoint writer writing to Redis."""
    from rl_worker.settings import Settings
    from rl_worker.stream.checkpoints import RedisCheckpointStore
    from rl_worker.stream.follower import OutcomesFollower
    from rl_worker.stream.runtime import WorkerRuntime

    settings = Settings(app_id=f"bench-apply-{uid}", kafka_bootstrap=bootstrap, redis_url=redis_url)
    store = RedisCheckpointStore(redis_url, settings.redis_namespace, settings.checkpoint.retention)
    runtime = WorkerRuntime(settings, store)
    follower = OutcomesFollower(settings, runtime, topic)
    stopping = False
    writer = asyncio.create_task(runtime.checkpointer.write_pending(lambda: stopping))
    await follower.connect()
    follower.seek_to_replica()
    try:
        started = time.perf_counter()
        while runtime.replica.log_offset + 1 < n:
            await follower.apply_batch(500)
        elapsed = time.perf_counter() - started
        if runtime.replica.n_updates != n:
            raise RuntimeError(f"applied {runtime.replica.n_updates} of {n} outcomes")
        return n / elapsed
    finally:
        stopping = True
        await follower.stop()
        await writer
        await store.close()


async def measure_outcomes_raw(bootstrap: str, topic: str, n: int) -> float:
    """(d0): the same log read by a bare aiokafka consumer (the follower's settings), every record json-parsed."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=10,
        max_partition_fetch_bytes=4 * 1024 * 1024, auto_offset_reset="none",
    )
    await consumer.start()
    tp = TopicPartition(topic, 0)
    consumer.assign([tp])
    consumer.seek(tp, 0)
    loads = json.loads
    try:
        done, last = 0, -1
        started = time.perf_counter()
        while last + 1 < n:
            batch = await consumer.getmany(tp, timeout_ms=500, max_records=5000)
            for record in batch.get(tp, ()):
                loads(record.value)
                last = record.offset
                done += 1
        elapsed = time.perf_counter() - started
        if done != n:
            raise RuntimeError(f"read {done} of {n} outcomes")
        return n / elapsed
    finally:
        await consumer.stop()


async def clean_redis(redis_url: str, prefix: str) -> None:
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(redis_url, socket_connect_timeout=2)
    try:
        async for key in client.scan_iter(f"rl_worker:{prefix}*"):
            await client.delete(key)
    finally:
        await client.aclose()


# ---- the run -------------------------------------------------------------------------------------


def check_loopback(url_or_hostport: str) -> None:
    host = url_or_hostport.split("://")[-1].split("/")[0].rsplit("@", 1)[-1].rsplit(":", 1)[0]
    if host != LOOPBACK:
        raise SystemExit(f"refusing to talk to {host}: this benchmark only uses {LOOPBACK}")


async def bench(args: argparse.Namespace, procs: Processes, workdir: Path, sizes: Sizes) -> list[RunResult]:
    redis_url = args.redis_url
    check_loopback(redis_url)
    if "k" in args.parts:  # before minutes of work, not after
        from rl_worker.ops.kafka_broker import KafkaNotFetchedError, kafka_libs

        try:
            kafka_libs()
        except KafkaNotFetchedError as exc:
            raise SystemExit(f"part k (Apache Kafka): {exc}; or leave it out with --parts abde") from None
    procs.broker = EmbeddedBroker(workdir / "broker.log")
    bootstrap = procs.broker.bootstrap
    check_loopback(bootstrap)
    print(f"broker: tansu on {bootstrap}; Redis {redis_url}; workdir {workdir}")
    t0 = time.perf_counter()
    parts = set(args.parts)
    passthrough = passthrough_records(sizes.passthrough) if "a" in parts else []
    backlog = signal_records(sizes.signals, "pos", seed=11) if "b" in parts else []
    outcomes = outcome_records(sizes.outcomes) if "d" in parts else []
    outcomes_topic = f"bench{uuid.uuid4().hex[:8]}.outcomes"
    if outcomes:
        await create_topics(bootstrap, {outcomes_topic: 1})
        await produce_backlog(bootstrap, outcomes_topic, outcomes, 1)

    # The measuring side must not pause either: its inputs (tens of thousands of records) leave
    # the cyclic GC's view, and the GC is off while latencies are taken (see measure_worker).
    gc.collect()
    gc.freeze()

    def size(records: list[tuple[bytes, bytes]]) -> str:
        return f"{len(records):,} (~{statistics.mean(len(v) for _, v in records[:1000]):.0f} B)" if records else "0"

    print(
        f"inputs ready in {time.perf_counter() - t0:.1f} s: pass-through records {size(passthrough)}, "
        f"signals {size(backlog)}, outcomes {size(outcomes)}"
    )
    extra_env = dict(kv.split("=", 1) for kv in args.worker_env)
    profile_dir = Path(args.profile) if args.profile else None
    if profile_dir is not None:
        profile_dir.mkdir(parents=True, exist_ok=True)
    results = []
    uids = []
    try:
        for i in range(args.runs):
            uid = uuid.uuid4().hex[:8]
            uids.append(uid)
            result = RunResult()
            if passthrough:
                result.passthrough_per_s = await measure_passthrough(bootstrap, passthrough, uid)
            if backlog:
                worker = await measure_worker(
                    procs, bootstrap, redis_url, workdir, backlog, sizes, uid, profile_dir, i, extra_env
                )
                worker.passthrough_per_s = result.passthrough_per_s
                result = worker
                # (b0) Faust's floor: a bare agent over the same backlog, same broker, same run
                result.bare_faust_per_s, result.bare_faust_cpu_us = await measure_bare_faust(
                    procs, bootstrap, workdir, backlog, uid
                )
            if "k" in parts:
                if procs.kafka is None:
                    from rl_worker.ops.kafka_broker import KafkaBroker

                    procs.kafka = KafkaBroker(workdir / "kafka")
                    await asyncio.to_thread(procs.kafka.start)
                    print(f"Apache Kafka on {procs.kafka.bootstrap}", flush=True)
                result.latency |= await measure_latency(
                    procs, "kafka", procs.kafka.bootstrap, redis_url, workdir, uid, sizes, extra_env
                )
            if "e" in parts and i == 0:  # once: three group sizes, each with its own start-up
                for n_workers in (1, 2, 4):
                    result.scale |= await measure_group(
                        procs, bootstrap, redis_url, workdir, uid, n_workers, sizes.group_signals, extra_env
                    )
            if outcomes:
                # ceiling and replica back to back, alternating which goes first
                if i % 2 == 0:
                    result.outcomes_raw_per_s = await measure_outcomes_raw(bootstrap, outcomes_topic, len(outcomes))
                result.outcomes_per_s = await measure_outcomes(
                    bootstrap, redis_url, outcomes_topic, len(outcomes), uid
                )
                if i % 2 == 1:
                    result.outcomes_raw_per_s = await measure_outcomes_raw(bootstrap, outcomes_topic, len(outcomes))
            results.append(result)
            print(
                f"run {i + 1}/{args.runs}: (a) {result.passthrough_per_s:,.0f}/s  (b) {result.worker_per_s:,.0f}/s "
                f"(worker {result.worker_cpu:.2f} cores, {result.worker_cpu_us:.0f} us CPU/decision, main thread "
                f"on CPU {result.main_on_cpu:.0%}, waiting for CPU {result.main_cpu_wait:.0%}), first "
                f"decision {result.first_decision_s:.2f} s  (c) p50 {result.e2e_p50_ms:.1f} ms p99 "
                f"{result.e2e_p99_ms:.1f} ms  (d) {result.outcomes_per_s:,.0f}/s "
                f"(d0) {result.outcomes_raw_per_s:,.0f}/s  (b0) bare Faust {result.bare_faust_per_s:,.0f}/s "
                f"({result.bare_faust_cpu_us:.0f} us CPU/event), worker RSS {result.worker_rss_mib:.0f} MiB  "
                + "  ".join(f"{k} {v:.1f}" for k, v in result.latency.items() if not k.endswith("missing"))
                + "  " + "  ".join(f"({k}) {v:,.1f}" for k, v in result.scale.items())
                + (f"  [{'; '.join(result.notes)}]" if result.notes else ""),
                flush=True,
            )
    finally:
        for uid in uids:
            with contextlib.suppress(Exception):
                await clean_redis(redis_url, f"bench-{uid}")
                await clean_redis(redis_url, f"bench-apply-{uid}")
    return results


def report(results: list[RunResult], sizes: Sizes) -> None:
    from rich.console import Console
    from rich.table import Table

    def med(attr: str) -> float:
        values = [getattr(r, attr) for r in results if getattr(r, attr) == getattr(r, attr)]
        return statistics.median(values) if values else float("nan")

    def spread(attr: str, fmt: str) -> str:
        values = sorted(getattr(r, attr) for r in results)
        return " / ".join(format(v, fmt) for v in values)

    a, b = med("passthrough_per_s"), med("worker_per_s")
    ratio = b / a
    table = Table(title=f"rl_worker stream benchmark, one tansu broker, medians of {len(results)} run(s)")
    table.add_column("measure")
    table.add_column("median", justify="right")
    table.add_column("all runs", justify="right")
    table.add_column("aim", justify="right")
    table.add_row(
        f"(a) aiokafka consume -> json -> produce ({sizes.passthrough:,} records, {PARTITIONS} partitions)",
        f"{a:,.0f}/s", spread("passthrough_per_s", ",.0f"), "ceiling",
    )
    table.add_row(
        f"(b) worker signal -> decision, 1 process ({sizes.signals:,} backlog)",
        f"{b:,.0f}/s", spread("worker_per_s", ",.0f"), "",
    )
    table.add_row("    CPU during (b): worker / broker (cores)", f"{med('worker_cpu'):.2f} / {med('broker_cpu'):.2f}",
                  "", "")
    table.add_row("    worker main thread: on a CPU / waiting for a CPU (share of (b))",
                  f"{med('main_on_cpu'):.0%} / {med('main_cpu_wait'):.0%}",
                  spread("main_cpu_wait", ".0%"), "")
    table.add_row("    worker CPU per decision", f"{med('worker_cpu_us'):.0f} us", spread("worker_cpu_us", ".0f"), "")
    table.add_row("(b)/(a)", f"{ratio:.2f}", "", f">= {AIM_RATIO} (goal {GOAL_RATIO})")
    table.add_row("worker process start -> first decision", f"{med('first_decision_s'):.2f} s",
                  spread("first_decision_s", ".2f"), "")
    label = f"{sizes.steady_rate:g} signals/s for {sizes.steady_s:g} s"
    table.add_row(f"(c) p50 end to end, {label}", f"{med('e2e_p50_ms'):.1f} ms", spread("e2e_p50_ms", ".1f"), "")
    table.add_row(f"(c) p99 end to end, {label}", f"{med('e2e_p99_ms'):.1f} ms", spread("e2e_p99_ms", ".1f"),
                  f"< {AIM_P99_MS:g} ms")
    table.add_row("(c) p50 broker timestamps (decision - signal CreateTime)", f"{med('ts_p50_ms'):.1f} ms",
                  spread("ts_p50_ms", ".1f"), "")
    table.add_row("(c) p99 broker timestamps", f"{med('ts_p99_ms'):.1f} ms", spread("ts_p99_ms", ".1f"), "")
    table.add_row("worker CPU when idle (cores)", f"{med('idle_cpu'):.3f}", spread("idle_cpu", ".3f"), "")
    table.add_row(f"(d) outcomes applied by a replica from the log ({sizes.outcomes:,})",
                  f"{med('outcomes_per_s'):,.0f}/s", spread("outcomes_per_s", ",.0f"), f">= {AIM_APPLY_PER_S:,}/s")
    table.add_row("(d0) ceiling: aiokafka consume + json.loads of the same log", f"{med('outcomes_raw_per_s'):,.0f}/s",
                  spread("outcomes_raw_per_s", ",.0f"), "ceiling")
    table.add_row("(d)/(d0)", f"{med('outcomes_per_s') / med('outcomes_raw_per_s'):.2f}", "",
                  f">= {AIM_APPLY_RATIO}")
    Console(width=max(120, shutil.get_terminal_size().columns)).print(table)
    notes = [f"run {i + 1}: {n}" for i, r in enumerate(results) for n in r.notes]
    for note in notes:
        print("note:", note)
    print(
        f"summary: ratio {ratio:.2f} ({'ok' if ratio >= AIM_RATIO else 'BELOW AIM'}), "
        f"p99 {med('e2e_p99_ms'):.1f} ms ({'ok' if med('e2e_p99_ms') < AIM_P99_MS else 'ABOVE AIM'}), "
        f"outcomes {med('outcomes_per_s'):,.0f}/s "
        f"({'ok' if med('outcomes_per_s') >= AIM_APPLY_PER_S else 'BELOW AIM'})"
    )


def result_document(results: list[RunResult], sizes: Sizes, command: str) -> dict[str, Any]:
    """The JSON result file: medians, every run, and the ratios to the same-run ceilings."""
    from rl_worker.ops.perf_table import figure, result_document

    def fig(attr: str, label: str, unit: str, **kw: Any) -> dict[str, Any]:
        values = [getattr(r, attr) for r in results if getattr(r, attr) == getattr(r, attr)]
        value = statistics.median(values) if values else float("nan")
        return figure(label, value, unit, runs=[getattr(r, attr) for r in results], **kw)

    figures = {
        "passthrough_per_s": fig("passthrough_per_s", f"(a) raw aiokafka consume → JSON → produce "
                                 f"({sizes.passthrough:,} records, {PARTITIONS} partitions; ceiling of (b))", "/s"),
        "worker_per_s": fig("worker_per_s", f"(b) worker signal → decision, one process ({sizes.signals:,} backlog)",
                            "/s", ceiling="passthrough_per_s", aim=f">= {AIM_RATIO} of (a)"),
        "worker_cpu_us": fig("worker_cpu_us", "(b) worker CPU per decision", "us"),
        "first_decision_s": fig("first_decision_s", "worker process start → first decision", "s"),
        "outcomes_raw_per_s": fig("outcomes_raw_per_s", "(d0) aiokafka consume + json.loads of the learning log "
                                  "(ceiling of (d))", "/s"),
        "outcomes_per_s": fig("outcomes_per_s", f"(d) outcomes applied by a replica from the log "
                              f"({sizes.outcomes:,}, checkpoints to Redis)", "/s", ceiling="outcomes_raw_per_s",
                              aim=f">= {AIM_APPLY_RATIO} of (d0)"),
    }
    figures |= {
        "bare_faust_per_s": fig("bare_faust_per_s", "(b0) a bare Faust agent over the same backlog: consume + one "
                                "send per event (Faust's topic send) (Faust's floor for (b))", "/s"),
        "bare_faust_cpu_us": fig("bare_faust_cpu_us", "(b0) bare Faust agent CPU per event", "us"),
        "worker_vs_faust": fig("worker_per_s", "(b) worker signal → decision, beside the bare Faust agent", "/s",
                               ceiling="bare_faust_per_s", aim=f">= {AIM_FAUST_RATIO} of (b0)"),
        "worker_rss_mib": fig("worker_rss_mib", f"(b) worker RSS after the backlog, holding {sizes.signals:,} open "
                              "positions", "MiB"),
    }

    def dict_fig(attr: str, key: str, label: str, unit: str, **kw: Any) -> dict[str, Any]:
        runs = [getattr(r, attr).get(key, float("nan")) for r in results]
        values = [v for v in runs if v == v]
        return figure(label, statistics.median(values) if values else float("nan"), unit, runs=runs, **kw)

    for broker, name in (("tansu", "tansu"), ("kafka", "Apache Kafka")):
        for rate in sizes.latency_rates:
            key = f"{broker} {int(rate)}"
            if not any(f"{key} e2e p50" in r.latency for r in results):
                continue
            aim = {("kafka", 200): "< 20 ms", ("kafka", 2000): "< 50 ms"}.get((broker, int(rate)), "")
            for q in ("50", "99"):
                figures[f"lat_{broker}_{int(rate)}_raw_p{q}"] = dict_fig(
                    "latency", f"{key} raw p{q}", f"(c0) {name}, {rate:,.0f}/s: raw aiokafka produce → consume, p{q}",
                    "ms")
                figures[f"lat_{broker}_{int(rate)}_p{q}"] = dict_fig(
                    "latency", f"{key} e2e p{q}", f"(c) {name}, {rate:,.0f}/s: signal sent → decision received, p{q}",
                    "ms", ceiling=f"lat_{broker}_{int(rate)}_raw_p{q}", aim=aim if q == "99" else "")
            figures[f"lat_{broker}_{int(rate)}_ts_p99"] = dict_fig(
                "latency", f"{key} ts p99", f"(c) {name}, {rate:,.0f}/s: broker timestamps (decision - signal "
                "CreateTime), p99", "ms")
    for n_workers in (1, 2, 4):
        if any(f"{n_workers} workers per_s" in r.scale for r in results):
            figures[f"group_{n_workers}_per_s"] = dict_fig(
                "scale", f"{n_workers} workers per_s", f"(e) {n_workers} worker(s), one group, 8 partitions: "
                f"decisions/s ({sizes.group_signals:,} backlog)", "/s")
            figures[f"group_{n_workers}_cpu_us"] = dict_fig(
                "scale", f"{n_workers} workers cpu_us", f"(e) {n_workers} worker(s): CPU per decision per worker "
                "(median of the workers)", "us")
    # parts not run: every run NaN; then also what compares with them
    unmeasured = {k for k, f in figures.items() if all(v != v for v in f["all_runs"])}
    unmeasured |= {k for k, f in figures.items() if f.get("ceiling") in unmeasured}
    figures = {k: f for k, f in figures.items() if k not in unmeasured}
    return result_document("bench_worker", command, figures, runs=len(results), broker="tansu (embedded)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 run, small sizes (a smoke run)")
    parser.add_argument("--runs", type=int, default=None, help="runs to take medians over (default 3; quick 1)")
    parser.add_argument("--signals", type=int, default=None, help="backlog size for (b)")
    parser.add_argument("--steady-s", type=float, default=None, help="duration of (c) in seconds")
    parser.add_argument("--parts", default="abdke",
                        help="which parts to run: a, b (with b0 and c on tansu), d (with d0), k (c on Apache Kafka), "
                             "e (1/2/4 workers on 8 partitions, first run only); default abdke")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0", help="a loopback Redis")
    parser.add_argument("--profile", default=None, metavar="DIR", help="py-spy the worker during (b) into DIR")
    parser.add_argument("--worker-env", action="append", default=[], metavar="RL_X=V",
                        help="extra environment of the worker (repeatable)")
    parser.add_argument("--json", default=None, metavar="PATH",
                        help="write the figures with their same-run ceilings (docs/bench/bench_worker.json: the README "
                             "table and docs/VERIFICATION_REPORT.md are made from it)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs)")
    args = parser.parse_args(argv)
    args.runs = args.runs or (1 if args.quick else 3)
    sizes = dataclasses.replace(QUICK if args.quick else FULL)
    if args.signals:
        sizes.signals = args.signals
    if args.steady_s is not None:
        sizes.steady_s = args.steady_s
    procs = Processes()
    workdir = Path(tempfile.mkdtemp(prefix="rl-bench-"))

    def on_signal(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    try:
        results = asyncio.run(bench(args, procs, workdir, sizes))
    except KeyboardInterrupt:
        print("interrupted: stopping the broker and the workers", file=sys.stderr)
        return 130
    finally:
        procs.stop_all()
        if args.keep:
            print(f"logs kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    report(results, sizes)
    if args.json:
        from rl_worker.ops.perf_table import write_result

        command = shlex.join(["python", "scripts/bench_worker.py", *(argv if argv is not None else sys.argv[1:])])
        write_result(args.json, result_document(results, sizes, command))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
