"""`rl-worker evaluate`: off-policy estimates of what a candidate model would have earned on the logged decisions.

The candidate is a checkpoint: `OFFSET` (a checkpoint of this app id), `APP_ID` (the latest
checkpoint of that namespace, e.g. a backfilled one) or `APP_ID@OFFSET`. The logged data are
the decisions of both arms in this app id's learning log (`--since` limits them by close time)
that were traded as published and carry a propensity, each with its own policy's propensity (a
uniform control share is what lets a candidate be judged beyond what the RL arm tried). Per agent: IPS, SNIPS and DR
(`rl_worker.analysis.off_policy`: the candidate's greedy policy; DR's reward model is fit on the
logged decisions, per state and action, pooled towards coarser states) with bootstrap
intervals, the effective sample size and warnings about the importance weights; beside them,
what the logged decisions earned. A (state, action) the logs hardly tried is pooled with its
coarser states and its interval widened by how much states differ (`pooled_share` says how much of
the candidate's choices rest on such cells). No estimate at all for an agent when some of the
candidate's choices are on actions hardly ever tried even over all states: the report says how
much of the candidate's choices that is, instead of an interval the data cannot back.

Exit status: 0 with estimates; 3 when an agent's logs do not support an estimate; 1 when the
candidate is unknown or unreadable, or nothing was logged to evaluate on; 2 on a usage error.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from rl_worker.analysis.learning_log import AgentColumns
from rl_worker.analysis.off_policy import OffPolicyReport, estimate_off_policy, logged_decisions_for_candidate
from rl_worker.core.exceptions import SnapshotError
from rl_worker.core.replica import ModelReplica
from rl_worker.core.snapshot import decode_replica
from rl_worker.errors import RlWorkerError
from rl_worker.ops.checkpoints import load_checkpoint
from rl_worker.ops.exceptions import CommandError
from rl_worker.ops.learning_log import open_store
from rl_worker.settings import Settings, redis_namespace

__all__ = ["EvaluateError", "evaluate_candidate", "format_evaluation", "load_candidate", "parse_candidate"]


class EvaluateError(RlWorkerError):
    """Unknown candidate, or nothing logged to evaluate on."""


def parse_candidate(text: str, app_id: str) -> tuple[str, int | None]:
    """`OFFSET` -> (this app id, offset); `APP_ID` -> (it, latest); `APP_ID@OFFSET` -> (it, offset)."""
    text = text.strip()
    if not text:
        raise EvaluateError("--candidate is empty: give OFFSET, APP_ID or APP_ID@OFFSET")
    if text.lstrip("-").isdigit():
        return app_id, int(text)
    name, at, offset = text.rpartition("@")
    if at and offset.lstrip("-").isdigit() and name:
        return name, int(offset)
    return text, None


async def load_candidate(settings: Settings, candidate: str) -> tuple[ModelReplica, str]:
    """The candidate's replica from Redis, and a name for it; EvaluateError when it is not there."""
    app_id, offset = parse_candidate(candidate, settings.app_id)
    store = open_store(settings, redis_namespace(app_id))
    try:
        offset, data = await load_checkpoint(store, offset, f"app id {app_id!r}")
    except CommandError as exc:
        if exc.exit_code != 2:  # Redis did not answer: not the candidate's fault
            raise
        raise EvaluateError(f"unknown candidate {candidate!r}: {exc}") from None
    finally:
        await store.close()
    try:
        replica = decode_replica(data, settings.core)
    except SnapshotError as exc:
        raise EvaluateError(f"candidate {app_id}@{offset} does not load under this configuration: {exc}") from None
    return replica, f"{app_id}@{offset}"


def evaluate_candidate(
    candidate: ModelReplica, columns: dict[str, AgentColumns], settings: Settings, seed: int = 0
) -> dict[str, OffPolicyReport]:
    """Both agents' estimates; EvaluateError when neither agent has logged decisions."""
    if all(len(c) == 0 for c in columns.values()):
        raise EvaluateError(
            "no logged decisions to evaluate on (none in the window, all overridden, or logged "
            "before propensities were recorded)"
        )
    reports = {}
    for agent in ("meta", "sizing"):
        logged = columns[agent]
        if not len(logged):
            continue
        decisions = logged_decisions_for_candidate(agent, candidate, logged)
        reports[agent] = estimate_off_policy(
            decisions, np.random.default_rng(seed), n_resamples=settings.ab.bootstrap_resamples
        )
    return reports


def _num(value: Any) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{value:+.4f}"


def format_evaluation(name: str, reports: dict[str, OffPolicyReport]) -> str:
    lines = [f"off-policy evaluation of {name} (its greedy policy) on the logged decisions"]
    for agent, report in reports.items():
        lines += [
            "",
            f"{agent}: {report.decisions} decisions, logged policy earned {_num(report.logged_value)} per decision; "
            f"effective sample size {report.effective_sample_size:.1f}, candidate agrees on {report.agreement:.0%}",
        ]
        if report.refusal is not None:
            lines.append(f"  {report.refusal}")
        else:
            spread = ", ".join("?" if not math.isfinite(sd) else f"{sd:.2f}" for sd in report.between_state_sd)
            lines.append(
                f"  {report.pooled_share:.0%} of the candidate's choices rest on (state, action) pairs with an "
                "effective sample size below 5, valued from their coarser states (spread of the true values "
                f"between levels, finest first: {spread})"
            )
        for estimate in report.estimates.values():
            lines.append(
                f"  {estimate.estimator:<6} {_num(estimate.value)}  {report.confidence:.0%} CI "
                f"[{_num(estimate.ci_low)}, {_num(estimate.ci_high)}]"
            )
        for warning in report.warnings:
            lines.append(f"  warning: {warning}")
        if report.trustworthy:
            lines.append("  the logged propensities support these estimates")
        elif report.estimated:
            lines.append("  the candidate's choices are supported: read DR (IPS / SNIPS as warned)")
    return "\n".join(lines)
