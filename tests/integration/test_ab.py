"""A/B arms on a real broker and Redis: stable arms, control decisions inside the limits, propensities,
`ab-test report` (and its history), `evaluate`, override crediting, and the client's fallback."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from typing import Any

import numpy as np
import pytest

from rl_worker.client import DecisionClient
from rl_worker.contract import DecisionRecord
from rl_worker.core import CoreConfig, Outcome
from rl_worker.core.actions import META_ACTIONS, SIZING_ACTIONS, sizing_action_mask
from rl_worker.core.arms import assign_arm
from rl_worker.settings import TopicNames
from rl_worker.sim import events as f
from rl_worker.sim.market import SimConfig, SyntheticMarket
from tests.integration.harness import produce, read_topic, run

pytestmark = pytest.mark.integration

SHARE = 0.4


def topics_of(stack: Any) -> TopicNames:
    return TopicNames(
        signals=stack.signals, executions=stack.executions, closes=stack.closes, decisions=stack.decisions,
        dead_letter=stack.dead_letter, outcomes=stack.outcomes,
    )


async def trade(stack: Any, market: SyntheticMarket, n: int, in_flight: int = 16) -> list[tuple[str, str]]:
    """Trade n positions of the market through the workers with the client; returns (position id, arm)."""
    traded: list[tuple[str, str]] = []
    gate = asyncio.Semaphore(in_flight)
    async with DecisionClient(stack.bootstrap, topics_of(stack)) as client:

        async def one() -> None:
            async with gate:
                opened = market.open_position()
                meta = await client.decide_meta(opened.signal, deadline_s=30)
                sizing = await client.decide_sizing(opened.execution, deadline_s=30)
                assert not meta.fallback and not sizing.fallback
                assert meta.policy == sizing.policy
                close = market.close_position(
                    opened, meta.decision["action_index"], sizing.decision["action_index"]  # type: ignore[index]
                )
                await client.report_close(close)
                traded.append((opened.position_id, meta.policy))

        # the market is sequential per position (the sharpe spread follows the closes), the client is not
        await asyncio.gather(*(one() for _ in range(n)))
    return traded


def cli(stack: Any, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RL_")} | stack.env()
    return subprocess.run(
        [sys.executable, "-m", "rl_worker", *args], env=env, capture_output=True, text=True, timeout=timeout,
        check=False,
    )


@pytest.mark.timeout(900)
def test_arms_report_history_and_evaluate(stack_factory: Any) -> None:
    stack = stack_factory(RL_AB__CONTROL_SHARE=str(SHARE), RL_AB__MIN_POSITIONS="20")
    first, second = stack.start_worker(), stack.start_worker()
    first.wait_ready()
    second.wait_ready()
    market = SyntheticMarket(5, SimConfig(run_id=f"{stack.uid}-a"))
    traded = run(trade(stack, market, 120))
    # a restart: the arms stay where the hash put them
    first.stop(signal.SIGKILL)
    third = stack.start_worker()
    third.wait_ready()
    traded += run(trade(stack, SyntheticMarket(6, SimConfig(run_id=f"{stack.uid}-b")), 60))
    n = len(traded)

    # redelivered after the SIGKILL: the same decision again (same id); keep one of each
    decisions = list({
        d.decision_id: d
        for d in (
            DecisionRecord.model_validate_json(r.value)
            for r in run(read_topic(stack.bootstrap, stack.decisions, expect=2 * n, timeout_s=60))
        )
    }.values())
    by_position: dict[str, list[DecisionRecord]] = {}
    for d in decisions:
        by_position.setdefault(d.position_id, []).append(d)
    assert len(by_position) == n
    for position_id, arm in traded:
        expected = "control" if assign_arm(position_id, SHARE) == "control" else "rl"
        assert arm == expected
        assert {d.policy for d in by_position[position_id]} == {expected}
    control = [d for d in decisions if d.policy == "control"]
    rl = [d for d in decisions if d.policy == "rl"]
    assert control and rl
    for d in control:
        record = d.model_dump()
        assert d.propensity == 1.0 and not d.explored and record["control_source"] == "stack"
        if d.agent == "sizing":
            action = SIZING_ACTIONS[d.action_index]
            limits = record["limits"]
            assert action.size_multiplier <= limits["max_size_multiplier"]
            assert action.leverage <= limits["max_leverage"]
    assert all(0.0 < d.propensity <= 1.0 for d in rl)
    assert any(d.propensity < 1.0 for d in rl)

    outcomes = run(read_topic(stack.bootstrap, stack.outcomes, expect=n, timeout_s=60))
    assert len({Outcome.model_validate_json(o.value).position_id for o in outcomes}) == n
    second.stop()
    third.stop()

    report = cli(stack, "ab-test", "report", "--json", "--png", str(stack.workdir / "ab.png"))
    assert report.returncode == 0, report.stderr[-3000:]
    data = json.loads(report.stdout[report.stdout.index("{"):])
    n_control = sum(arm == "control" for _, arm in traded)
    assert data["arms"]["control"]["positions"] == n_control
    assert data["arms"]["rl"]["positions"] == n - n_control
    assert data["comparison"]["welch"]["pnl_pct"]["p_value"] is not None
    assert {c["name"] for c in data["criteria"]} >= {"win rate >= v1", "Sharpe >= v1", "max drawdown <= v1"}
    assert data["verdict"] in ("pass", "fail", "not enough data")
    assert (stack.workdir / "ab.png").stat().st_size > 10_000

    text = cli(stack, "ab-test", "report", "--since", "2020-01-01T00:00:00Z")  # every position closed since
    assert text.returncode == 0, text.stderr[-3000:]
    assert "go-live criteria" in text.stdout and "Welch" in text.stdout
    history = cli(stack, "ab-test", "report", "--history")
    assert history.returncode == 0
    assert history.stdout.count(" model ") == 2 and "trend" in history.stdout

    # ~90 RL decisions over the default bins' hundreds of states: most (state, action) pairs the
    # candidate would take were tried a few times at most -- no estimate, exit 3, and why
    evaluated = cli(stack, "evaluate", "--candidate", stack.app_id, "--json")
    assert evaluated.returncode == 3, evaluated.stderr[-3000:]
    estimates = json.loads(evaluated.stdout[evaluated.stdout.index("{"):])
    assert estimates["candidate"].startswith(f"{stack.app_id}@")
    for agent in ("meta", "sizing"):
        agent_report = estimates["agents"][agent]
        assert agent_report["decisions"] == sum(d.agent == agent for d in decisions)  # both arms
        assert agent_report["effective_sample_size"] > 0
        if agent_report["estimated"]:
            assert set(agent_report["estimates"]) == {"IPS", "SNIPS", "DR"}
        else:
            assert agent_report["estimates"] == {} and agent_report["unsupported_share"] > 0
            assert agent_report["refusal"].startswith("no estimate: ")
    assert not all(estimates["agents"][agent]["estimated"] for agent in ("meta", "sizing"))
    text = cli(stack, "evaluate", "--candidate", stack.app_id)
    assert text.returncode == 3 and "no estimate: " in text.stdout

    # bad input: a clear message and a non-zero exit, nothing stored
    unknown = cli(stack, "evaluate", "--candidate", f"{stack.app_id}-nothing-here")
    assert unknown.returncode == 1 and "unknown candidate" in unknown.stderr
    bad_since = cli(stack, "ab-test", "report", "--since", "yesterday-ish")
    assert bad_since.returncode == 2 and "--since" in bad_since.stderr


@pytest.mark.timeout(600)
def test_no_log_and_one_empty_arm(stack_factory: Any) -> None:
    empty = stack_factory()
    nothing = cli(empty, "ab-test", "report")
    assert nothing.returncode == 1 and "no learning log" in nothing.stderr
    stack = stack_factory()  # control share 0: every position is the RL arm's
    worker = stack.start_worker()
    worker.wait_ready()
    run(trade(stack, SyntheticMarket(9, SimConfig(run_id=stack.uid)), 30))
    run(read_topic(stack.bootstrap, stack.outcomes, expect=30, timeout_s=60))
    worker.stop()
    one_arm = cli(stack, "ab-test", "report")
    assert one_arm.returncode == 1
    assert "control arm has no positions" in one_arm.stderr and "RL_AB__CONTROL_SHARE" in one_arm.stderr
    assert " 30 " in one_arm.stdout  # the RL arm's figures are still shown
    assert cli(stack, "ab-test", "report", "--history").stdout.startswith("no stored A/B reports")
    nothing_logged = cli(empty, "evaluate", "--candidate", stack.app_id)
    assert nothing_logged.returncode == 1 and "learning log" in nothing_logged.stderr


def test_outcome_credits_the_traded_actions_and_counts_overrides(stack_factory: Any) -> None:
    stack = stack_factory()
    worker = stack.start_worker()
    worker.wait_ready()
    market = SyntheticMarket(3, SimConfig(run_id=stack.uid))
    opened = market.open_position()
    pid = opened.position_id

    async def scenario() -> tuple[dict[str, Any], dict[str, Any]]:
        async with DecisionClient(stack.bootstrap, topics_of(stack)) as client:
            meta = await client.decide_meta(opened.signal, deadline_s=30)
            strategy = "breakout" if meta.action["strategy"] != "breakout" else "mean_reversion"
            traded_meta = {"strategy": strategy, "model": "nhits", "weight": 0.7}
            sizing = await client.decide_sizing(opened.execution, deadline_s=30, traded_meta=traded_meta)
            leverage = 1.0 if sizing.action["leverage"] != 1 else 3.0  # a risk manager cut it
            close = market.close_position(opened, 0, 0)
            await client.report_close(close, traded_sizing={"size_multiplier": 0.2, "leverage": leverage})
            return traded_meta, {"size_multiplier": 0.2, "leverage": leverage}

    traded_meta, traded_sizing = run(scenario())
    outcome = Outcome.model_validate_json(run(read_topic(stack.bootstrap, stack.outcomes, expect=1))[0].value)
    assert outcome.position_id == pid and outcome.overridden
    assert META_ACTIONS[outcome.meta.action_index].as_dict() == traded_meta
    assert SIZING_ACTIONS[outcome.sizing.action_index].as_dict() == traded_sizing
    assert outcome.meta.decided_action_index is not None and outcome.sizing.decided_action_index is not None
    worker.wait_model_version(1)
    metrics = worker.get("/metrics").decode()
    assert 'rl_overrides_total{agent="meta",arm="rl"} 1.0' in metrics
    assert 'rl_overrides_total{agent="sizing",arm="rl"} 1.0' in metrics
    health = worker.health()
    assert health["trading"]["arms"]["rl"]["overrides"] == {"meta": 1, "sizing": 1}
    assert health["trading"]["arms"]["rl"]["positions"] == 1
    worker.stop()


def test_client_falls_back_when_no_worker_answers(stack_factory: Any) -> None:
    stack = stack_factory()
    worker = stack.start_worker()
    worker.wait_ready()
    worker.stop()  # the topics exist; nobody decides now
    market = SyntheticMarket(4, SimConfig(run_id=stack.uid))
    opened = market.open_position()

    async def scenario() -> tuple[Any, Any, int]:
        async with DecisionClient(stack.bootstrap, topics_of(stack)) as client:
            meta = await client.decide_meta(opened.signal, deadline_s=1.0)
            sizing = await client.decide_sizing(opened.execution, deadline_s=1.0)
            await client.report_close(market.close_position(opened, 0, 0))
            return meta, sizing, client.late_decisions

    meta, sizing, _ = run(scenario())
    assert meta.fallback and meta.policy == "fallback"
    assert meta.action == {k: opened.signal[k] for k in ("strategy", "model", "weight")}
    assert sizing.fallback
    assert sizing.action == {k: opened.execution[k] for k in ("size_multiplier", "leverage")}
    execution = run(read_topic(stack.bootstrap, stack.executions, expect=1))[0].json()
    close = run(read_topic(stack.bootstrap, stack.closes, expect=1))[0].json()
    assert execution["meta_fallback"] is True and execution["strategy"] == opened.signal["strategy"]
    assert close["sizing_fallback"] is True and close["leverage"] == opened.execution["leverage"]

    # when a worker is back it decides late; the outcome credits what the stack traded
    again = stack.start_worker()
    again.wait_ready()
    late = run(read_topic(stack.bootstrap, stack.outcomes, expect=1, timeout_s=60))
    outcome = Outcome.model_validate_json(late[0].value)
    assert META_ACTIONS[outcome.meta.action_index].strategy == opened.signal["strategy"]
    traded = SIZING_ACTIONS[outcome.sizing.action_index]
    assert traded.leverage <= opened.execution["leverage"]
    again.stop()


def test_simulator_trades_the_stacks_choice_when_no_worker_answers(stack_factory: Any) -> None:
    """`rl-worker simulate` goes through the client: with no worker, every decision misses its deadline,
    the positions trade the stack's own choices and report the fallbacks; many in a row end it (exit 1)."""
    stack = stack_factory()  # no worker: simulate creates the topics, nobody decides
    done = cli(stack, "simulate", "--positions", "6", "--in-flight", "3", "--deadline", "0.5")
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "6/6 closed" in done.stdout and "fallbacks meta 6 sizing 6" in done.stdout
    executions = [r.json() for r in run(read_topic(stack.bootstrap, stack.executions, expect=6))]
    closes = [r.json() for r in run(read_topic(stack.bootstrap, stack.closes, expect=6))]
    assert len(executions) == len(closes) == 6
    assert all(e["meta_fallback"] is True and e["strategy"] and e["model"] for e in executions)
    assert all(c["sizing_fallback"] is True and c["leverage"] >= 1 for c in closes)
    gone = cli(stack, "simulate", "--positions", "20", "--in-flight", "1", "--deadline", "0.3")
    assert gone.returncode == 1
    assert "no decision within 0.3 s for 4 positions in a row" in gone.stderr


def test_decisions_via_raw_events_keep_arms_on_a_second_worker(stack_factory: Any) -> None:
    """Two workers of one group decide events of the same position ids; each position has one arm."""
    stack = stack_factory(RL_AB__CONTROL_SHARE="0.5", RL_AB__BASELINE__KIND="uniform")
    workers = [stack.start_worker(), stack.start_worker()]
    for worker in workers:
        worker.wait_ready()
    rng = np.random.default_rng(2)
    records = []
    for i in range(60):
        pid = f"{stack.uid}-raw-{i}"
        records.append((stack.signals, pid.encode(), f.encode(f.signal(pid, rng))))  # no stack choice
        records.append((stack.executions, pid.encode(), f.encode(f.execution(pid, rng))))
    run(produce(stack.bootstrap, records))
    decisions = [
        DecisionRecord.model_validate_json(r.value)
        for r in run(read_topic(stack.bootstrap, stack.decisions, expect=120, timeout_s=60))
    ]
    assert len(decisions) == 120
    config = CoreConfig()
    for d in decisions:
        arm = "control" if assign_arm(d.position_id, 0.5) == "control" else "rl"
        assert d.policy == arm
        if arm == "control":
            record = d.model_dump()
            assert record["control_source"] == "baseline"
            if d.agent == "sizing":  # uniform over what the limits allow (one action: propensity 1)
                allowed = sizing_action_mask(record["limits"]["max_size_multiplier"], record["limits"]["max_leverage"])
                assert d.propensity == pytest.approx(1 / len(allowed)) and d.action_index in allowed.allowed
            if d.agent == "meta":
                allowed = config.regime_strategies[d.state["regime"]]
                assert META_ACTIONS[d.action_index].strategy in allowed
                assert d.propensity == pytest.approx(1 / (20 * len(allowed)))
    for worker in workers:
        worker.stop()
