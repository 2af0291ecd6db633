"""`rl-worker tune`: advice on each agent's alpha, gamma and epsilon from the model's own statistics,
and `--apply`, which appends a hyperparameter record to the learning log (the workers switch
when they reach it, without a restart).

The statistics are the replica's: it is rebuilt from the newest checkpoint that leaves the last
`--window` records of the log to replay, and those records are observed (see core.tuning).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import TypeAdapter, ValidationError
from rich.console import Console
from rich.table import Table

from rl_worker.core.control import AgentHyperparameters, Hyperparameters, HyperparametersRecord
from rl_worker.core.tuning import AgentStats, Recommendation, agent_stats, apply_recommendations, recommend
from rl_worker.ops.exceptions import CommandError
from rl_worker.ops.learning_log import LearningLog
from rl_worker.settings import Settings

__all__ = ["TUNABLE_FLAGS", "TuneReport", "apply_hyperparameters", "tune_report"]

# flag suffix -> AgentHyperparameters field; `--meta-epsilon` restarts the schedule at that value
TUNABLE_FLAGS = {
    "alpha": "alpha",
    "gamma": "gamma",
    "epsilon": "epsilon_start",
    "epsilon_min": "epsilon_min",
    "epsilon_decay": "epsilon_decay",
}


@dataclass
class TuneReport:
    app_id: str
    learning_log: str
    log_end: int
    hyperparameters: Hyperparameters
    in_force_since_offset: int | None
    stats: dict[str, AgentStats]
    advice: list[Recommendation]

    def apply_command(self) -> str | None:
        tuned = apply_recommendations(self.hyperparameters, self.advice)
        if tuned == self.hyperparameters:
            return None
        return "rl-worker tune --apply " + " ".join(
            f"--{agent}-{flag.replace('_', '-')} {getattr(getattr(tuned, agent), field)}"
            for agent in ("meta", "sizing")
            for flag, field in TUNABLE_FLAGS.items()
            if flag in ("alpha", "gamma", "epsilon")
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "app_id": self.app_id,
            "learning_log": self.learning_log,
            "log_end": self.log_end,
            "hyperparameters": self.hyperparameters.model_dump(mode="json"),
            "in_force_since_offset": self.in_force_since_offset,
            "stats": {agent: s.as_dict() for agent, s in self.stats.items()},
            "recommendations": [r.as_dict() for r in self.advice],
            "apply_command": self.apply_command(),
        }

    def print(self, console: Console) -> None:
        since = "the configuration" if self.in_force_since_offset is None else f"offset {self.in_force_since_offset}"
        console.print(
            f"model {self.app_id}: learning log {self.learning_log}, {self.log_end} records; "
            f"hyperparameters in force since {since}"
        )
        table = Table(title="statistics per agent")
        table.add_column("")
        for agent in self.stats:
            table.add_column(agent, justify="right")
        rows = [
            ("outcomes applied", "n_updates", "{}"), ("alpha / gamma", None, ""), ("epsilon now", "epsilon", "{:.4f}"),
            ("states", "states", "{}"), ("cells visited", "cells_visited", "{}"),
            ("cells visited < 3 times", "cells_visited_under_3", "{}"), ("Q-value std", "q_std", "{:.4g}"),
            ("window (outcomes)", "window", "{}"), ("reward mean", "reward_mean", "{:+.4g}"),
            ("reward std", "reward_std", "{:.4g}"), ("reward trend", "reward_trend", "{:+.4g}"),
            ("|TD error| first half", "td_abs_first_half", "{:.4g}"),
            ("|TD error| second half", "td_abs_second_half", "{:.4g}"),
            ("decisions in unseen states", "unseen_share", "{:.1%}"), ("random decisions", "random_share", "{:.1%}"),
        ]
        for label, name, fmt in rows:
            if name is None:
                cells = [
                    f"{getattr(self.hyperparameters, a).alpha:g} / {getattr(self.hyperparameters, a).gamma:g}"
                    for a in self.stats
                ]
            else:
                cells = [fmt.format(s.as_dict()[name]) for s in self.stats.values()]
            table.add_row(label, *cells)
        console.print(table)
        for rec in self.advice:
            change = "" if rec.suggested is None else f" {rec.current:g} -> {rec.suggested:g}"
            console.print(f"[bold]{rec.agent}[/bold] {rec.parameter}{change}: {rec.reason}")
        command = self.apply_command()
        console.print(f"to apply: {command}" if command else "nothing to apply")


async def tune_report(settings: Settings, window: int = 500) -> TuneReport:
    if window < 2:
        raise CommandError("--window must be at least 2")
    async with LearningLog(settings) as learning_log:
        observer = await learning_log.catch_up(window)
        replica = learning_log.runtime.replica
        stats = agent_stats(replica, observer)
        return TuneReport(
            settings.app_id, learning_log.topic, learning_log.end, replica.hyperparameters,
            replica.hyperparameters_offset, stats, recommend(stats, replica.hyperparameters),
        )


def tuned_hyperparameters(current: Hyperparameters, values: dict[str, dict[str, float]]) -> Hyperparameters:
    """`current` with the given `{agent: {flag: value}}` changes, validated (CommandError if not valid)."""
    agents = {agent: getattr(current, agent).model_dump() for agent in ("meta", "sizing")}
    for agent, flags in values.items():
        for flag, value in flags.items():
            agents[agent][TUNABLE_FLAGS[flag]] = value
    try:
        return Hyperparameters(**{agent: AgentHyperparameters(**fields) for agent, fields in agents.items()})
    except ValidationError as exc:
        problems = "; ".join(
            f"--{'-'.join(str(p) for p in e['loc'])}: {e['msg']}" if e["loc"] else e["msg"] for e in exc.errors()
        )
        raise CommandError(f"invalid hyperparameters, nothing written: {problems}") from None


async def apply_hyperparameters(
    settings: Settings, values: dict[str, dict[str, float]], reason: str, console: Console, as_json: bool = False
) -> int | None:
    """Append a hyperparameter record with `values` over the ones in force; returns its offset
    (None when nothing changes: nothing is written)."""
    if not any(values.values()):
        raise CommandError("--apply needs at least one of --meta-alpha, --meta-gamma, --meta-epsilon, "
                           "--sizing-alpha, --sizing-gamma, --sizing-epsilon (and -epsilon-min/-decay)")
    # each value on its own first (range, type): a bad value is refused before any I/O; how the
    # values fit together (epsilon_min <= epsilon_start) is checked against the ones in force
    for agent, flags in values.items():
        for flag, value in flags.items():
            field = AgentHyperparameters.model_fields[TUNABLE_FLAGS[flag]]
            try:
                TypeAdapter(Annotated[float, *field.metadata]).validate_python(value, strict=False)
                if not math.isfinite(value):
                    raise ValueError("not a finite number")
            except (ValidationError, ValueError) as exc:
                message = exc.errors()[0]["msg"] if isinstance(exc, ValidationError) else str(exc)
                raise CommandError(
                    f"invalid --{agent}-{flag.replace('_', '-')} {value}: {message} ({field.description}); "
                    "nothing written"
                ) from None
    async with LearningLog(settings) as learning_log:
        await learning_log.catch_up()
        current = learning_log.runtime.replica.hyperparameters
        tuned = tuned_hyperparameters(current, values)
        changes = current.changed(tuned)
        if not changes:
            message = "the hyperparameters in force already have these values: nothing written"
            console.print_json(json.dumps({"written": False, "reason": message})) if as_json else console.print(
                message
            )
            return None
        record = HyperparametersRecord(
            hyperparameters=tuned, issued_at_ms=time.time_ns() // 1_000_000, issued_by="rl-worker tune",
            reason=reason,
        )
        offset = await learning_log.append(record)
    if as_json:
        console.print_json(json.dumps({
            "written": True, "offset": offset, "learning_log": learning_log.topic,
            "hyperparameters": tuned.model_dump(mode="json"),
            "changed": {k: {"from": a, "to": b} for k, (a, b) in changes.items()},
        }))
    else:
        console.print(f"hyperparameter record written to {learning_log.topic} at offset {offset}; "
                      "every worker switches when it reaches it:")
        for name, (before, after) in changes.items():
            console.print(f"  {name}: {before:g} -> {after:g}")
    return offset
