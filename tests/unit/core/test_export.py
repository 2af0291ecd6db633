"""The readable export: exact round trip through the checkpoint, readable rows, bad documents refused."""

from __future__ import annotations

import json

import numpy as np
import pytest

from rl_worker.core.config import CoreConfig, MetaBins
from rl_worker.core.control import AgentHyperparameters, Hyperparameters
from rl_worker.core.exceptions import SnapshotError
from rl_worker.core.export import export_document, import_document
from rl_worker.core.replica import ModelReplica
from rl_worker.core.snapshot import encode_replica

from .conftest import make_outcomes


@pytest.fixture(scope="module")
def replica() -> ModelReplica:
    config = CoreConfig(seed=3)
    replica = ModelReplica(config)
    records = make_outcomes(np.random.default_rng(5), config, 80)
    for offset, record in enumerate(records[:40]):
        replica.apply(record, offset)
    agent = AgentHyperparameters(alpha=0.1, gamma=0.5, epsilon_start=0.2, epsilon_min=0.01, epsilon_decay=0.99)
    replica.apply_hyperparameters(Hyperparameters(meta=agent, sizing=agent), 40)
    for offset, record in enumerate(records[40:], start=41):
        replica.apply(record, offset)
    return replica


def test_round_trip_is_the_same_checkpoint(replica: ModelReplica) -> None:
    text = export_document(replica)
    restored = import_document(text, CoreConfig(seed=3))
    assert encode_replica(restored) == encode_replica(replica)
    assert export_document(restored) == text


def test_readable(replica: ModelReplica) -> None:
    text = export_document(replica)
    document = json.loads(text)
    key = replica.meta_table.keys[0]
    assert document["meta"]["q_values"][key] == replica.meta_table.row(key).tolist()  # type: ignore[union-attr]
    assert len(document["meta"]["actions"]) == 60 and len(document["sizing"]["actions"]) == 40
    assert document["meta"]["actions"][0] == {"strategy": "dual_momentum", "model": "xgb", "weight": 0.3}
    assert document["hyperparameters"]["meta"]["alpha"] == 0.1 and document["hyperparameters_offset"] == 40
    assert document["outcomes_offset"] == 80 and document["n_updates"] == 80
    assert f'"{key}": [' in text  # one line per state
    assert sum(1 for line in text.splitlines() if line.strip().startswith(f'"{key}"')) == 2  # q_values, visits


def test_other_model_is_refused(replica: ModelReplica) -> None:
    with pytest.raises(SnapshotError, match="differs"):
        import_document(export_document(replica), CoreConfig(seed=3, meta_bins=MetaBins(volatility=(0.5,))))


def edit(replica: ModelReplica, change: object) -> str:
    document = json.loads(export_document(replica))
    change(document)  # type: ignore[operator]
    return json.dumps(document)


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (lambda d: d.update(format="other"), "not an rl_worker export"),
        (lambda d: d.update(version=9), "version"),
        (lambda d: d.pop("trackers"), "incomplete"),
        (lambda d: d["meta"]["actions"].pop(), "action spaces"),
        (lambda d: next(iter(d["meta"]["q_values"].values())).pop(), "numbers per state"),
        (lambda d: d["sizing"]["visits"].popitem(), "same states"),
        (lambda d: d["meta"]["q_values"].__setitem__(next(iter(d["meta"]["q_values"])), ["x"] * 60), "numbers"),
        (lambda d: d["hyperparameters"]["meta"].update(alpha=7), "malformed"),
        (lambda d: d.update(model_fingerprint="0" * 16), "fingerprint"),
        (lambda d: d["config"].update(seed=4), "fingerprint"),
    ],
)
def test_bad_documents(replica: ModelReplica, change: object, match: str) -> None:
    with pytest.raises(SnapshotError, match=match):
        import_document(edit(replica, change))


def test_not_json() -> None:
    with pytest.raises(SnapshotError, match="not JSON"):
        import_document(b"\xff{")
