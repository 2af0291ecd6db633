"""Snapshot codec: exact round trips, and every damaged or foreign snapshot refused."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from rl_worker import __version__
from rl_worker.core.config import CoreConfig, MetaBins
from rl_worker.core.exceptions import SnapshotError
from rl_worker.core.market import MarketFeatures
from rl_worker.core.outcome import Outcome
from rl_worker.core.replica import ModelReplica
from rl_worker.core.snapshot import SCHEMA_VERSION, decode_replica, encode_replica, read_snapshot_info
from rl_worker.sim.events import make_outcomes


def with_learning(config: CoreConfig, **fields: float) -> CoreConfig:
    """`config` with the same hyperparameter fields set for both agents."""
    return config.model_copy(
        update={"meta": config.meta.model_copy(update=fields), "sizing": config.sizing.model_copy(update=fields)}
    )


MARKET = MarketFeatures(regime="RANGE", volatility=0.1, trend_strength=0.1, market_pressure=-0.2)


def fed(config: CoreConfig, records: list[Outcome]) -> ModelReplica:
    replica = ModelReplica(config)
    for offset, record in enumerate(records):
        replica.apply(record, offset * 2)  # gaps, as with compacted or filtered offsets
    return replica


def reseal(envelope: dict[str, Any]) -> bytes:
    """Re-encode an edited envelope with a valid checksum, so only the edit is wrong."""
    envelope.pop("sha256", None)
    sealed = json.dumps(envelope, sort_keys=True, separators=(",", ":")).encode()
    envelope["sha256"] = hashlib.sha256(sealed).hexdigest()
    return json.dumps(envelope, sort_keys=True, separators=(",", ":")).encode()


@pytest.fixture(scope="module")
def snapshot(short_episode_config: CoreConfig) -> bytes:
    return encode_replica(fed(short_episode_config, make_outcomes(np.random.default_rng(9), short_episode_config, 37)))


class TestRoundTrip:
    @given(seed=st.integers(0, 2**32 - 1), n=st.integers(0, 80))
    def test_exact(self, seed: int, n: int, short_episode_config: CoreConfig) -> None:
        records = make_outcomes(np.random.default_rng(seed), short_episode_config, n + 20)
        original = fed(short_episode_config, records[:n])
        data = encode_replica(original)
        restored = decode_replica(data, short_episode_config)
        assert encode_replica(restored) == data
        assert restored.meta_table.used()[0].tobytes() == original.meta_table.used()[0].tobytes()
        assert restored.sizing_table.used()[1].tobytes() == original.sizing_table.used()[1].tobytes()
        assert (restored.log_offset, restored.n_updates, restored.epsilon) == (
            original.log_offset,
            original.n_updates,
            original.epsilon,
        )
        # The restored replica decides and learns exactly like the original.
        assert restored.decide_meta(MARKET, 0.6, "d") == original.decide_meta(MARKET, 0.6, "d")
        assert restored.decide_sizing(0.6, 0.2, 0.1, "d") == original.decide_sizing(0.6, 0.2, 0.1, "d")
        for offset, record in enumerate(records[n:], start=original.log_offset + 1):
            original.apply(record, offset)
            restored.apply(record, offset)
        assert encode_replica(restored) == encode_replica(original)

    def test_empty_replica(self, config: CoreConfig) -> None:
        data = encode_replica(ModelReplica(config))
        restored = decode_replica(data)
        assert encode_replica(restored) == data
        assert len(restored.meta_table) == 0
        assert restored.model_version == 0

    def test_info(self, snapshot: bytes, short_episode_config: CoreConfig) -> None:
        info = read_snapshot_info(snapshot)
        assert info.schema_version == SCHEMA_VERSION
        assert info.library_version == __version__
        assert info.outcomes_offset == 72  # 37 records at offsets 0, 2, ..., 72
        assert info.n_updates == 37
        assert info.config_fingerprint == short_episode_config.fingerprint()
        assert info.meta_states > 0
        assert info.sizing_states > 0
        assert info.as_dict()["n_updates"] == 37

    def test_no_pickle(self, snapshot: bytes) -> None:
        envelope = json.loads(snapshot)
        assert envelope["format"] == "rl_worker.replica"
        assert b"pickle" not in snapshot


class TestRefused:
    @given(data=st.data())
    def test_truncated(self, snapshot: bytes, data: st.DataObject) -> None:
        cut = data.draw(st.integers(0, len(snapshot) - 1))
        with pytest.raises(SnapshotError):
            decode_replica(snapshot[:cut])
        with pytest.raises(SnapshotError):
            read_snapshot_info(snapshot[:cut])

    @given(data=st.data())
    def test_any_damaged_byte_is_refused_or_harmless(self, snapshot: bytes, data: st.DataObject) -> None:
        position = data.draw(st.integers(0, len(snapshot) - 1))
        damaged = bytearray(snapshot)
        damaged[position] ^= data.draw(st.integers(1, 255))
        try:
            info = read_snapshot_info(bytes(damaged)).as_dict()
        except SnapshotError:
            pass
        else:  # the checksum covers the whole envelope: only harmless damage can pass
            assert info == read_snapshot_info(snapshot).as_dict()
        try:
            restored = decode_replica(bytes(damaged))
        except SnapshotError:
            return
        # Decoding may only succeed when the damage changed nothing that is decoded
        # (e.g. a float spelt differently but equal): the replica must be the same.
        assert encode_replica(restored) == snapshot

    def test_damaged_array_data(self, snapshot: bytes) -> None:
        envelope = json.loads(snapshot)
        q_values = envelope["body"]["meta_table"]["q_values"]
        raw = bytearray(base64.b64decode(q_values["data"]))
        raw[3] ^= 0x10
        q_values["data"] = base64.b64encode(raw).decode()
        damaged = json.dumps(envelope, sort_keys=True, separators=(",", ":")).encode()
        with pytest.raises(SnapshotError, match="checksum"):
            decode_replica(damaged)

    @pytest.mark.parametrize("data", [b"", b"not json", b"[]", b"{}", b"\xff\xfe", b'{"format": 1}'])
    def test_not_a_snapshot(self, data: bytes) -> None:
        with pytest.raises(SnapshotError):
            decode_replica(data)
        with pytest.raises(SnapshotError):
            read_snapshot_info(data)

    @pytest.mark.parametrize("version", [0, 2, "1", None])
    def test_wrong_schema_version(self, snapshot: bytes, version: object) -> None:
        envelope = json.loads(snapshot)
        envelope["schema_version"] = version
        with pytest.raises(SnapshotError, match="schema"):
            decode_replica(reseal(envelope))

    def test_wrong_format(self, snapshot: bytes) -> None:
        envelope = json.loads(snapshot)
        envelope["format"] = "someone.else"
        with pytest.raises(SnapshotError):
            decode_replica(reseal(envelope))

    def test_other_config(self, snapshot: bytes, short_episode_config: CoreConfig) -> None:
        assert decode_replica(snapshot, short_episode_config).n_updates == 37
        other = short_episode_config.model_copy(update={"seed": short_episode_config.seed + 1})
        with pytest.raises(SnapshotError, match="differs"):
            decode_replica(snapshot, other)
        other = short_episode_config.model_copy(update={"meta_bins": MetaBins(volatility=(0.5,))})
        with pytest.raises(SnapshotError, match="differs"):
            decode_replica(snapshot, other)

    def test_tuned_config_still_restores(self, snapshot: bytes, short_episode_config: CoreConfig) -> None:
        """Hyperparameters are not part of the fingerprint: the snapshot's own stay in force."""
        q = short_episode_config.meta
        tuned = with_learning(short_episode_config, alpha=0.3, gamma=0.5, epsilon_start=0.5)
        restored = decode_replica(snapshot, tuned)
        assert restored.hyperparameters.meta.alpha == q.alpha and restored.hyperparameters.sizing.gamma == q.gamma
        assert restored.config is tuned

    @pytest.mark.parametrize(
        "edit",
        [
            lambda body: body.pop("meta_table"),
            lambda body: body.pop("config"),
            lambda body: body.update(config={"seed": -1}),
            lambda body: body.update(n_updates="many"),
            lambda body: body.update(winrate=7),
            lambda body: body.update(episodes=[]),
            lambda body: body["meta_table"]["keys"].append("extra"),
            lambda body: body["sizing_table"]["keys"].__setitem__(1, body["sizing_table"]["keys"][0]),
            lambda body: body["meta_table"]["q_values"].update(dtype="<f4"),
            lambda body: body["meta_table"]["q_values"].update(shape=[3, 3]),
            lambda body: body["meta_table"]["visits"].update(data="###"),
            lambda body: body["sizing_table"].update(q_values="zeros"),
        ],
    )
    def test_malformed_body_with_a_valid_checksum(
        self, snapshot: bytes, edit: Callable[[dict[str, Any]], object]
    ) -> None:
        envelope = json.loads(snapshot)
        edit(envelope["body"])
        with pytest.raises(SnapshotError):
            decode_replica(reseal(envelope))

    def test_info_of_a_malformed_envelope(self, snapshot: bytes) -> None:
        envelope = json.loads(snapshot)
        del envelope["library_version"]
        envelope["body"].pop("meta_table")
        with pytest.raises(SnapshotError):
            read_snapshot_info(reseal(envelope))
