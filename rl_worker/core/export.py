"""The readable export of a replica: a JSON document an operator can open, diff and keep as a backup.

    {"format": "rl_worker.export", "version": 1, "library_version": "...",
     "model_fingerprint": "...", "outcomes_offset": n, "n_updates": n,
     "hyperparameters": {"meta": {...}, "sizing": {...}}, "hyperparameters_offset": n | null,
     "epsilon_origin": n,
     "meta":   {"actions": [{"strategy":..., "model":..., "weight":...}, ...],
                "q_values": {"<state key>": [one value per action], ...},
                "visits":   {"<state key>": [one count per action], ...}},
     "sizing": {... the same with {"size_multiplier":..., "leverage":...} actions ...},
     "trackers": {"winrate": [...], "equity_points": [...], "equity_peak": x, "recent_pnl": [...],
                  "episodes": {...}, "meta_reward_total": x, "size_reward_total": x},
     "applied": [position ids, oldest first], "config": {...}}

It is a different spelling of the checkpoint (core.snapshot), converted both ways through the
snapshot body, so an import restores exactly what the checkpoint held: floats are written as
their shortest round-trip repr, and state keys keep the tables' row order.
"""

from __future__ import annotations

import base64
import json
import re
from typing import Any

import numpy as np

from rl_worker import __version__
from rl_worker.core.actions import META_ACTIONS, SIZING_ACTIONS
from rl_worker.core.config import CoreConfig
from rl_worker.core.exceptions import SnapshotError
from rl_worker.core.replica import ModelReplica
from rl_worker.core.snapshot import decode_replica, encode_replica, seal_body, unseal_body

__all__ = ["EXPORT_FORMAT", "export_document", "import_document"]

EXPORT_FORMAT = "rl_worker.export"
EXPORT_VERSION = 1
_TRACKERS = ("winrate", "equity_points", "equity_peak", "recent_pnl", "episodes", "meta_reward_total",
             "size_reward_total")
_NUMBER_LIST = re.compile(r"\[\s+([-+0-9.eE,\s]*?)\s+\]")


def _table_to_rows(table: dict[str, Any], n_actions: int) -> tuple[dict[str, list[float]], dict[str, list[int]]]:
    keys = table["keys"]
    q_values = np.frombuffer(base64.b64decode(table["q_values"]["data"]), dtype="<f8").reshape(len(keys), n_actions)
    visits = np.frombuffer(base64.b64decode(table["visits"]["data"]), dtype="<i8").reshape(len(keys), n_actions)
    return (
        {key: [float(v) for v in row] for key, row in zip(keys, q_values, strict=True)},
        {key: [int(v) for v in row] for key, row in zip(keys, visits, strict=True)},
    )


def _rows_to_table(section: Any, n_actions: int) -> dict[str, Any]:
    if not isinstance(section, dict) or not isinstance(section.get("q_values"), dict):
        raise SnapshotError("export has no table section with q_values")
    q_rows, visit_rows = section["q_values"], section.get("visits")
    if not isinstance(visit_rows, dict) or list(visit_rows) != list(q_rows):
        raise SnapshotError("export's visits do not name the same states as its q_values")
    keys = list(q_rows)
    try:
        q_values = np.array([q_rows[k] for k in keys], dtype="<f8").reshape(len(keys), n_actions)
        visits = np.array([visit_rows[k] for k in keys], dtype="<i8").reshape(len(keys), n_actions)
    except (ValueError, TypeError) as exc:
        raise SnapshotError(f"export table is not {n_actions} numbers per state: {exc}") from exc
    if not np.isfinite(q_values).all() or (visits < 0).any():
        raise SnapshotError("export table holds a non-finite Q-value or a negative visit count")

    def array(values: np.ndarray) -> dict[str, Any]:
        return {"dtype": values.dtype.str, "shape": list(values.shape),
                "data": base64.b64encode(values.tobytes()).decode("ascii")}

    return {"keys": keys, "q_values": array(q_values), "visits": array(visits)}


def export_document(replica: ModelReplica) -> str:
    """The replica as the readable JSON document (one line per Q-table row)."""
    body = unseal_body(encode_replica(replica))
    meta_q, meta_visits = _table_to_rows(body["meta_table"], len(META_ACTIONS))
    sizing_q, sizing_visits = _table_to_rows(body["sizing_table"], len(SIZING_ACTIONS))
    document = {
        "format": EXPORT_FORMAT,
        "version": EXPORT_VERSION,
        "library_version": __version__,
        "model_fingerprint": body["config_fingerprint"],
        "outcomes_offset": body["outcomes_offset"],
        "n_updates": body["n_updates"],
        "hyperparameters": body["hyperparameters"],
        "hyperparameters_offset": body["hyperparameters_offset"],
        "epsilon_origin": body["epsilon_origin"],
        "meta": {"actions": [a.as_dict() for a in META_ACTIONS], "q_values": meta_q, "visits": meta_visits},
        "sizing": {"actions": [a.as_dict() for a in SIZING_ACTIONS], "q_values": sizing_q, "visits": sizing_visits},
        "trackers": {name: body[name] for name in _TRACKERS},
        "applied": body["applied"],
        "config": body["config"],
    }
    text = json.dumps(document, indent=2, allow_nan=False)
    # rows of numbers on one line each: a table stays readable (and diffable) state by state
    return _NUMBER_LIST.sub(lambda m: "[" + " ".join(m.group(1).split()) + "]", text) + "\n"


def import_document(text: str | bytes, config: CoreConfig | None = None) -> ModelReplica:
    """The replica an export describes; with `config`, refuse one of another model (fingerprint).

    Raises SnapshotError naming what is wrong with the document."""
    try:
        document = json.loads(text)
    except (ValueError, UnicodeDecodeError) as exc:
        raise SnapshotError(f"export is not JSON: {exc}") from exc
    if not isinstance(document, dict) or document.get("format") != EXPORT_FORMAT:
        raise SnapshotError("not an rl_worker export (format is not rl_worker.export)")
    if document.get("version") != EXPORT_VERSION:
        raise SnapshotError(f"export version {document.get('version')} is not the supported {EXPORT_VERSION}")
    try:
        if [a for a in document["meta"]["actions"]] != [a.as_dict() for a in META_ACTIONS] or [
            a for a in document["sizing"]["actions"]
        ] != [a.as_dict() for a in SIZING_ACTIONS]:
            raise SnapshotError("export's action spaces are not this version's")
        body = {
            "config": document["config"],
            "config_fingerprint": document["model_fingerprint"],
            "outcomes_offset": document["outcomes_offset"],
            "n_updates": document["n_updates"],
            "meta_table": _rows_to_table(document["meta"], len(META_ACTIONS)),
            "sizing_table": _rows_to_table(document["sizing"], len(SIZING_ACTIONS)),
            "applied": document["applied"],
            "hyperparameters": document["hyperparameters"],
            "hyperparameters_offset": document["hyperparameters_offset"],
            "epsilon_origin": document["epsilon_origin"],
        } | {name: document["trackers"][name] for name in _TRACKERS}
    except (KeyError, TypeError) as exc:
        raise SnapshotError(f"export is incomplete: {exc!r}") from exc
    replica = decode_replica(seal_body(body), config)
    if replica.config.fingerprint() != body["config_fingerprint"]:
        raise SnapshotError("export's model_fingerprint does not match its config (edited by hand?)")
    return replica
