"""deploy/grafana/rl_worker.json: every PromQL expression names only metrics (and labels) that the
worker's own registry exports, so a renamed metric breaks this test, not a dashboard in production."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from prometheus_client.metrics import MetricWrapperBase

from rl_worker.stream.metrics import WorkerMetrics

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "rl_worker.json"

# PromQL words that are not metric names
KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless", "offset"}
# labels Prometheus itself attaches to every scraped series
TARGET_LABELS = {"instance", "job", "pod", "namespace"}


def exported() -> dict[str, set[str]]:
    """Sample name -> label names, for every metric of WorkerMetrics (read from the registry's collectors)."""
    metrics = WorkerMetrics()
    names: dict[str, set[str]] = {}
    for metric in vars(metrics).values():
        if not isinstance(metric, MetricWrapperBase):
            continue
        labels = set(metric._labelnames)  # the declared label names (public API has no getter)
        family = metric.describe()[0]
        suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"], "gauge": [""]}[family.type]
        for suffix in suffixes:
            names[family.name + suffix] = labels | ({"le"} if suffix == "_bucket" else set())
    registered = {name for collector in metrics.registry._collector_to_names for name in
                  metrics.registry._collector_to_names[collector]}
    assert set(names) <= registered, "every metric read here is registered in the worker's registry"
    return names


def expressions(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("expr", "definition") and isinstance(value, str):
                yield value
            elif key == "query" and isinstance(value, str) and "(" in value:
                yield value
            else:
                yield from expressions(value)
    elif isinstance(node, list):
        for item in node:
            yield from expressions(item)


def metric_names(expr: str) -> set[str]:
    text = re.sub(r'"[^"]*"', '""', expr)  # string literals
    text = re.sub(r"\{[^}]*\}", "", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", "", text)  # range selectors
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", text)
    text = re.sub(r"\$\w+", "", text)  # dashboard variables
    names = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", text):
        rest = text[match.end():].lstrip()
        word = match.group()
        if rest.startswith("(") or word in KEYWORDS:
            continue  # a function or an operator
        names.add(word)
    if expr.startswith("label_values("):  # label_values(metric, label): a template variable's query
        names = {expr[len("label_values("):-1].split(",")[0].strip()}
    return names


def label_names(expr: str) -> set[str]:
    if expr.startswith("label_values("):
        return {expr[len("label_values("):-1].split(",")[1].strip()}
    labels = set()
    for matchers in re.findall(r"\{([^}]*)\}", expr):
        labels |= {m.group(1) for m in re.finditer(r"(\w+)\s*(?:=~|!~|!=|=)", matchers)}
    for clause in re.findall(r"\b(?:by|without)\s*\(([^)]*)\)", expr):
        labels |= {part.strip() for part in clause.split(",") if part.strip()}
    return labels


def dashboard() -> dict[str, Any]:
    return dict(json.loads(DASHBOARD.read_text()))


def test_every_expression_names_exported_metrics_and_their_labels() -> None:
    known = exported()
    exprs = list(expressions(dashboard()))
    assert len(exprs) >= 15
    for expr in exprs:
        names = metric_names(expr)
        assert names, f"no metric in {expr!r}"
        unknown = names - set(known)
        assert not unknown, f"{expr!r} names {unknown}, which the worker does not export"
        allowed = set().union(*(known[n] for n in names)) | TARGET_LABELS
        assert label_names(expr) <= allowed, f"{expr!r} uses labels {label_names(expr) - allowed}"


def test_the_parser_rejects_what_it_should() -> None:
    known = exported()
    assert "rl_decisions_total" in known and "rl_event_to_decision_seconds_bucket" in known
    assert "rl_decisions" not in known  # a counter is exported with its _total suffix
    assert metric_names('sum by (agent) (rate(rl_decisions_totl{explored="true"}[5m]))') == {"rl_decisions_totl"}
    assert metric_names("histogram_quantile(0.99, sum by (le) (rate(rl_event_to_decision_seconds_bucket[5m])))") == {
        "rl_event_to_decision_seconds_bucket"
    }
    assert label_names('sum by (arm) (rate(rl_decisions_total{agent="meta"}[$__rate_interval]))') == {"arm", "agent"}


def test_the_dashboard_covers_the_issue_sections() -> None:
    d = dashboard()
    rows = [p["title"] for p in d["panels"] if p["type"] == "row"]
    assert rows == ["Decisions", "Input and dead letters", "Learning", "Trading performance per A/B arm",
                    "Checkpoints and Redis"]
    text = json.dumps(d)
    for metric in ("rl_decisions_total", "rl_event_to_decision_seconds_bucket", "rl_dead_letters_total",
                   "rl_model_version", "rl_agent_epsilon", "rl_hyperparameter", "rl_reward_mean", "rl_q_states",
                   "rl_redis_up",
                   "rl_checkpoint_offset", "rl_arm_rolling_win_rate", "rl_arm_sharpe_per_trade",
                   "rl_arm_max_drawdown_pct"):
        assert metric in text, metric
    ids = [p["id"] for p in d["panels"]]
    assert len(ids) == len(set(ids))
    assert {v["name"] for v in d["templating"]["list"]} == {"datasource", "instance"}
