"""Kill/restart soak: one of two workers is SIGKILLed mid-stream and restarted, N times in a row.

Starts its own broker (the embedded tansu, or the Apache Kafka broker the tests use), uses
the Redis on 127.0.0.1:6379 (or starts a private one), and two worker processes in one group.
Each cycle produces a fresh batch of whole positions (signal, execution, close) at a fixed rate
over all input partitions, SIGKILLs one worker while they flow, restarts it after a pause, and
then reads what the group published. Per cycle it prints:

  repeated   decision ids published more than once
  divergent  decision ids published with more than one action
  missing    decisions never published (valid signal / execution without a decision)
  outcomes   outcome problems: positions without an outcome, or whose first outcome (the one
             every replica applies) credits an action other than the one first published
  recover_s  seconds from the kill until every partition again has a decision for a record
             produced after the kill

    .venv/bin/python scripts/soak.py --kills 20 [--broker tansu|apache-kafka] [--positions 400] [--rate 1000]

Exit status 0 only when every cycle shows 0 repeated, 0 divergent, 0 missing, 0 outcome problems.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rl_worker.ops.services import LocalRedis, WorkerProcess, redis_answers  # noqa: E402
from tests.integration.brokers import KNOWN_BROKERS, running_broker  # noqa: E402
from tests.integration.harness import Stack  # noqa: E402
from tests.integration.kill_cycles import HEADER, CycleResult, kill_cycles  # noqa: E402


async def soak(args: argparse.Namespace) -> int:
    workdir = Path(tempfile.mkdtemp(prefix="rl-soak-"))
    (workdir / "broker").mkdir()
    with running_broker(args.broker, workdir / "broker") as broker:
        return await soak_on(args, workdir, broker.bootstrap)


async def soak_on(args: argparse.Namespace, workdir: Path, bootstrap: str) -> int:
    own_redis = None
    redis_url = "redis://127.0.0.1:6379/0"
    if not redis_answers(redis_url):
        own_redis = LocalRedis()
        own_redis.start()
        redis_url = own_redis.url
    stack = Stack(bootstrap, redis_url, workdir, extra_env={"RL_PARTITIONS": str(args.partitions)})
    stack.extra_env |= dict(kv.split("=", 1) for kv in args.env)
    print(f"soak: broker {args.broker} at {bootstrap}, redis {redis_url}, logs in {workdir}", flush=True)
    results: list[CycleResult] = []
    try:
        workers: list[WorkerProcess] = [stack.start_worker(), stack.start_worker()]
        for w in workers:
            await asyncio.to_thread(w.wait_ready, 90.0)
        print(HEADER, flush=True)
        async for result in kill_cycles(
            stack, workers, args.kills, args.partitions, positions=args.positions, rate=args.rate,
            kill_at=args.kill_at, restart_after=args.restart_after, timeout=args.timeout, settle=args.settle,
            seed=args.seed,
        ):
            results.append(result)
            print(result.line(), flush=True)
            for example in result.examples:
                print(f"      {example}", flush=True)
    finally:
        stack.stop_all()
        if own_redis is not None:
            own_redis.stop()
    bad = [r for r in results if r.repeated or r.divergent or r.missing or r.outcome_problems]
    recovers = [r.recover_s for r in results if r.recover_s is not None]
    print(
        f"summary: {len(results)} cycles, {len(bad)} with a problem; repeated {sum(r.repeated for r in results)}, "
        f"divergent {sum(r.divergent for r in results)}, missing {sum(r.missing for r in results)}, "
        f"outcome problems {sum(r.outcome_problems for r in results)}; recover_s "
        + (f"median {float(np.median(recovers)):.1f}, max {max(recovers):.1f}" if recovers else "n/a"),
        flush=True,
    )
    return 0 if not bad and len(results) == args.kills else 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kills", type=int, default=20, help="kill/restart cycles")
    parser.add_argument("--broker", default="tansu", choices=KNOWN_BROKERS, help="which broker to start")
    parser.add_argument("--positions", type=int, default=400, help="positions per cycle (3 records each)")
    parser.add_argument("--rate", type=float, default=1000.0, help="input records per second")
    parser.add_argument("--partitions", type=int, default=8)
    parser.add_argument("--kill-at", type=float, default=0.4, help="share of a cycle's records sent before the kill")
    parser.add_argument("--restart-after", type=float, default=2.0, help="seconds between kill and restart")
    parser.add_argument("--timeout", type=float, default=90.0, help="seconds a cycle may take to complete")
    parser.add_argument("--settle", type=float, default=1.0, help="seconds to wait for late repeats")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--env", action="append", default=[], help="KEY=VALUE for the workers (repeatable)")
    sys.exit(asyncio.run(soak(parser.parse_args())))


if __name__ == "__main__":
    main()
