"""`rl-worker status`: one look at the health and metrics of running workers, with an exit code.

A worker is healthy when its `/health` answers with status `ok` and its `/metrics` answers.
`starting` (still replaying the learning log), `degraded` (checkpoints failing: Redis) and
unreachable are unhealthy. Exit code 0 when every worker is healthy, 1 otherwise: what
`scripts/deploy.sh --monitor-only` and a cron job need.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

__all__ = ["WorkerStatus", "format_statuses", "read_status"]


@dataclass
class WorkerStatus:
    """What one worker says about itself; `problems` is empty when it is healthy."""

    url: str
    status: str = "unreachable"
    model_version: int | None = None
    outcomes_applied: int | None = None
    epsilon: float | None = None
    partitions: list[int] = field(default_factory=list)
    checkpoint_offset: int | None = None
    decisions: float | None = None
    dead_letters: float | None = None
    redis_up: float | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def healthy(self) -> bool:
        return not self.problems


def _get(url: str, timeout_s: float) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout_s) as response:  # noqa: S310 - operator-given URL
        return bytes(response.read())


def sample_totals(metrics_text: str) -> dict[str, float]:
    """Sum of every sample per sample name (labels summed away): `rl_decisions_total` -> 1234."""
    totals: dict[str, float] = {}
    for family in text_string_to_metric_families(metrics_text):
        for sample in family.samples:
            totals[sample.name] = totals.get(sample.name, 0.0) + sample.value
    return totals


def read_status(url: str, timeout_s: float = 3.0) -> WorkerStatus:
    base = url.rstrip("/")
    result = WorkerStatus(url=base)
    try:
        health: dict[str, Any] = json.loads(_get(f"{base}/health", timeout_s))
    except (OSError, ValueError, urllib.error.URLError) as exc:
        result.problems.append(f"/health: {exc}")
        return result
    result.status = str(health.get("status"))
    result.model_version = health.get("model_version")
    result.outcomes_applied = health.get("outcomes_applied")
    result.epsilon = health.get("epsilon")
    result.partitions = list(health.get("assigned_partitions") or [])
    checkpoint = health.get("checkpoint") or {}
    result.checkpoint_offset = checkpoint.get("offset")
    if result.status != "ok":
        reason = checkpoint.get("store_error") or ("replaying the learning log" if result.status == "starting" else "")
        result.problems.append(f"status {result.status}" + (f": {reason}" if reason else ""))
    try:
        totals = sample_totals(_get(f"{base}/metrics", timeout_s).decode())
    except (OSError, ValueError, urllib.error.URLError) as exc:
        result.problems.append(f"/metrics: {exc}")
        return result
    result.decisions = totals.get("rl_decisions_total", 0.0)
    result.dead_letters = totals.get("rl_dead_letters_total", 0.0)
    result.redis_up = totals.get("rl_redis_up")
    if totals.get("rl_send_failures_total", 0.0) > 0:
        result.problems.append("sends failed (rl_send_failures_total > 0): the worker stops")
    return result


def format_statuses(statuses: list[WorkerStatus], as_json: bool = False) -> str:
    healthy = all(s.healthy for s in statuses)
    if as_json:
        rows = [asdict(s) | {"healthy": s.healthy} for s in statuses]
        return json.dumps({"healthy": healthy, "workers": rows}, indent=2)
    lines = []
    for s in statuses:
        def show(value: Any) -> str:
            return "-" if value is None else (f"{value:g}" if isinstance(value, float) else str(value))

        lines.append(
            f"{'ok  ' if s.healthy else 'FAIL'} {s.url}  status={s.status} model_version={show(s.model_version)} "
            f"outcomes_applied={show(s.outcomes_applied)} epsilon={show(s.epsilon)} "
            f"partitions={s.partitions} checkpoint={show(s.checkpoint_offset)} decisions={show(s.decisions)} "
            f"dead_letters={show(s.dead_letters)} redis_up={show(s.redis_up)}"
        )
        lines.extend(f"     problem: {p}" for p in s.problems)
    versions = [s.model_version for s in statuses if s.model_version is not None]
    if len(versions) > 1:
        spread = max(versions) - min(versions)
        lines.append(
            f"model versions: all at {versions[0]}" if not spread
            else f"model versions differ by {spread} learning-log records across the workers"
        )
    lines.append(
        f"{len(statuses)} worker(s): all healthy" if healthy
        else f"{sum(not s.healthy for s in statuses)} of {len(statuses)} worker(s) unhealthy"
    )
    return "\n".join(lines)
