"""topics/ is generated from the models and must not drift; its examples must (in)validate as labelled."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rl_worker.contract import INPUT_EVENT_TYPES, InvalidEventError, decode_event
from rl_worker.schemas import EXAMPLES, render_topics

TOPICS = Path(__file__).resolve().parents[2] / "topics"
EXPECTED_TYPE = INPUT_EVENT_TYPES


def test_topics_folder_matches_the_models() -> None:
    rendered = render_topics()
    on_disk = {str(p.relative_to(TOPICS)): p.read_text() for p in TOPICS.rglob("*.json")}
    assert set(on_disk) == set(rendered), "run `python -m rl_worker.schemas` to regenerate topics/"
    for path, text in rendered.items():
        assert on_disk[path] == text, f"topics/{path} drifted; run `python -m rl_worker.schemas`"


@pytest.mark.parametrize(("name", "kind", "valid"), [(n, k, v) for n, k, _, v in EXAMPLES])
def test_examples_validate_as_labelled(name: str, kind: str, valid: bool) -> None:
    folder = "valid" if valid else "invalid"
    raw = (TOPICS / "examples" / folder / f"{name}.json").read_bytes()
    if valid:
        event = decode_event(raw, EXPECTED_TYPE[kind])
        assert event.position_id == json.loads(raw)["position_id"]
    else:
        with pytest.raises(InvalidEventError):
            decode_event(raw, EXPECTED_TYPE[kind])


def test_schemas_name_the_contract_fields() -> None:
    rendered = render_topics()
    decision = json.loads(rendered["decision.schema.json"])
    for field in ("decision_id", "position_id", "agent", "action_index", "action", "state", "state_key",
                  "explored", "epsilon", "propensity", "policy", "model_version", "timestamp", "source"):
        assert field in decision["required"]
    signal = json.loads(rendered["signal_generated.schema.json"])
    assert {"event_id", "position_id", "confidence", "prices", "side"} <= set(signal["required"])
