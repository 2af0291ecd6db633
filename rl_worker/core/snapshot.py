"""Snapshot codec: a whole replica to bytes and back, JSON + raw little-endian arrays, never pickle.

    {"format": "rl_worker.replica", "schema_version": 1, "library_version": "...",
     "sha256": <hash of the canonical envelope without this field>, "body": {... "outcomes_offset": n ...}}

Floats go through JSON as their shortest repr and arrays as base64 of their exact bytes,
so decode(encode(r)) is bit-identical to r. Anything else is rejected with SnapshotError.
"""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

import numpy as np

from rl_worker import __version__
from rl_worker.core.config import CoreConfig
from rl_worker.core.control import Hyperparameters
from rl_worker.core.episodes import EpisodeTracker
from rl_worker.core.exact import PnlWindow
from rl_worker.core.exceptions import SnapshotError
from rl_worker.core.market import EquityCurve, WinRateTracker
from rl_worker.core.qlearning import QTable
from rl_worker.core.replica import ModelReplica, ReplicaState

__all__ = [
    "SCHEMA_VERSION",
    "SnapshotInfo",
    "decode_replica",
    "encode_replica",
    "read_snapshot_info",
    "seal_body",
    "unseal_body",
]

SCHEMA_VERSION = 1
FORMAT = "rl_worker.replica"


def _encode_array(array: np.ndarray) -> dict[str, Any]:
    little = array.astype(array.dtype.newbyteorder("<"), copy=False)
    return {
        "dtype": little.dtype.str,
        "shape": list(array.shape),
        "data": base64.b64encode(np.ascontiguousarray(little).tobytes()).decode("ascii"),
    }


def _decode_array(data: dict[str, Any], dtype: str) -> np.ndarray:
    if data["dtype"] != dtype:
        raise SnapshotError(f"array dtype {data['dtype']} where {dtype} was expected")
    raw = base64.b64decode(data["data"], validate=True)
    array = np.frombuffer(raw, dtype=np.dtype(dtype)).reshape(data["shape"])
    return array.astype(array.dtype.newbyteorder("="))


def _encode_table(table: QTable) -> dict[str, Any]:
    q_values, visits = table.used()
    return {"keys": list(table.keys), "q_values": _encode_array(q_values), "visits": _encode_array(visits)}


def _decode_table(data: dict[str, Any], n_actions: int) -> QTable:
    q_values = _decode_array(data["q_values"], "<f8")
    visits = _decode_array(data["visits"], "<i8")
    keys = [str(k) for k in data["keys"]]
    if q_values.shape != (len(keys), n_actions) or visits.shape != q_values.shape:
        raise SnapshotError(f"table shape {q_values.shape} does not match {len(keys)} keys x {n_actions}")
    if len(set(keys)) != len(keys):
        raise SnapshotError("duplicate state keys in a table")
    return QTable.from_arrays(keys, q_values, visits)


def _canonical(body: dict[str, Any]) -> bytes:
    return json.dumps(body, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()


def encode_replica(replica: ModelReplica) -> bytes:
    """The whole replica as bytes; the outcomes offset it includes is `replica.log_offset`."""
    state = replica.export_state()
    body = {
        "config": replica.config.model_dump(mode="json"),
        "config_fingerprint": replica.config.fingerprint(),
        "outcomes_offset": state.log_offset,
        "n_updates": state.n_updates,
        "meta_table": _encode_table(state.meta_table),
        "sizing_table": _encode_table(state.sizing_table),
        "winrate": state.winrate.to_list(),
        "equity_points": state.equity.to_list(),
        "equity_peak": state.equity.peak,
        "recent_pnl": list(state.recent_pnl),
        "episodes": state.episodes.to_dict(),
        "applied": list(state.applied),  # oldest first: the order decides what is forgotten next
        "meta_reward_total": state.meta_reward_total,
        "size_reward_total": state.size_reward_total,
        "hyperparameters": state.hyperparameters.model_dump(mode="json"),
        "hyperparameters_offset": state.hyperparameters_offset,
        "epsilon_origin": state.epsilon_origin,
    }
    return seal_body(body)


def seal_body(body: dict[str, Any]) -> bytes:
    """A snapshot body in its envelope (format, schema, library version, checksum), as bytes."""
    envelope: dict[str, Any] = {
        "format": FORMAT,
        "schema_version": SCHEMA_VERSION,
        "library_version": __version__,
        "body": body,
    }
    envelope["sha256"] = hashlib.sha256(_canonical(envelope)).hexdigest()
    return _canonical(envelope)


def unseal_body(data: bytes) -> dict[str, Any]:
    """The body of valid snapshot bytes (checked: format, schema, checksum), undecoded."""
    body: dict[str, Any] = _load_envelope(data)["body"]
    return body


class SnapshotInfo:
    """The envelope of a snapshot, without decoding the tables."""

    def __init__(self, envelope: dict[str, Any]) -> None:
        body = envelope["body"]
        try:
            self.schema_version = int(envelope["schema_version"])
            self.library_version = str(envelope["library_version"])
            self.outcomes_offset = int(body["outcomes_offset"])
            self.n_updates = int(body["n_updates"])
            self.config_fingerprint = str(body["config_fingerprint"])
            self.meta_states = len(body["meta_table"]["keys"])
            self.sizing_states = len(body["sizing_table"]["keys"])
        except (KeyError, TypeError, ValueError) as exc:
            raise SnapshotError(f"snapshot envelope is incomplete or malformed: {exc!r}") from exc

    def as_dict(self) -> dict[str, Any]:
        return dict(vars(self))


def _load_envelope(data: bytes) -> dict[str, Any]:
    try:
        envelope = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise SnapshotError(f"snapshot is not JSON: {exc}") from exc
    if not isinstance(envelope, dict) or envelope.get("format") != FORMAT:
        raise SnapshotError("not an rl_worker replica snapshot")
    if envelope.get("schema_version") != SCHEMA_VERSION:
        raise SnapshotError(f"snapshot schema {envelope.get('schema_version')} is not the supported {SCHEMA_VERSION}")
    sealed = {k: v for k, v in envelope.items() if k != "sha256"}
    if not isinstance(envelope.get("body"), dict) or hashlib.sha256(_canonical(sealed)).hexdigest() != envelope.get(
        "sha256"
    ):
        raise SnapshotError("snapshot checksum mismatch: the bytes are corrupt")
    return envelope


def read_snapshot_info(data: bytes) -> SnapshotInfo:
    return SnapshotInfo(_load_envelope(data))


def decode_replica(data: bytes, config: CoreConfig | None = None) -> ModelReplica:
    """Rebuild a replica. With `config`, refuse a snapshot of an incompatible model (another
    fingerprint: action spaces, bins, rewards) and run it under `config`; the hyperparameters in
    force are the snapshot's either way (the learning log may have tuned them)."""
    body = _load_envelope(data)["body"]
    try:
        stored = CoreConfig.model_validate(body["config"])
        if config is not None and stored.fingerprint() != config.fingerprint():
            raise SnapshotError(
                f"snapshot config {stored.fingerprint()} differs from the running config {config.fingerprint()}"
                " (action spaces, bins or reward definitions)"
            )
        replica = ModelReplica(stored if config is None else config)
        if "hyperparameters" in body:  # snapshots of 0.x before control records: the config's
            hyperparameters = Hyperparameters.model_validate(body["hyperparameters"])
        else:
            hyperparameters = Hyperparameters.from_config(stored)
        offset = body.get("hyperparameters_offset")
        replica.import_state(ReplicaState(
            meta_table=_decode_table(body["meta_table"], replica.meta_table.n_actions),
            sizing_table=_decode_table(body["sizing_table"], replica.sizing_table.n_actions),
            winrate=WinRateTracker(stored.market.winrate_window, [bool(w) for w in body["winrate"]]),
            equity=EquityCurve(stored.market, [float(p) for p in body["equity_points"]], float(body["equity_peak"])),
            recent_pnl=PnlWindow(stored.reward.sharpe_window, (float(p) for p in body["recent_pnl"])),
            episodes=EpisodeTracker.from_dict(body["episodes"], stored.learning.episode_gamma),
            applied=dict.fromkeys(str(p) for p in body["applied"]),
            n_updates=int(body["n_updates"]),
            log_offset=int(body["outcomes_offset"]),
            meta_reward_total=float(body["meta_reward_total"]),
            size_reward_total=float(body["size_reward_total"]),
            hyperparameters=hyperparameters,
            hyperparameters_offset=None if offset is None else int(offset),
            epsilon_origin=int(body.get("epsilon_origin", 0)),
        ))
    except SnapshotError:
        raise
    except (KeyError, TypeError, ValueError) as exc:  # pydantic's ValidationError is a ValueError
        raise SnapshotError(f"snapshot body is incomplete or malformed: {exc!r}") from exc
    return replica
