"""Control records of the learning log: decoding, a hyperparameter change and a reset, applied by the replica."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
from pydantic import ValidationError

from rl_worker.core.config import CoreConfig, LearningRules, MetaBins
from rl_worker.core.control import (
    AgentHyperparameters,
    Hyperparameters,
    HyperparametersRecord,
    ResetRecord,
    decode_log_record,
)
from rl_worker.core.exceptions import ConfigError
from rl_worker.core.market import MarketFeatures
from rl_worker.core.outcome import Outcome
from rl_worker.core.replica import ModelReplica
from rl_worker.core.snapshot import decode_replica, encode_replica

from .conftest import make_outcomes

TREND = MarketFeatures(regime="TREND", volatility=0.2, trend_strength=0.8, market_pressure=0.5)


def agent(**overrides: float) -> AgentHyperparameters:
    values = {"alpha": 0.01, "gamma": 0.99, "epsilon_start": 0.1, "epsilon_min": 0.01, "epsilon_decay": 0.9997}
    return AgentHyperparameters(**(values | overrides))


def tables_bytes(replica: ModelReplica) -> tuple[bytes, ...]:
    meta_q, meta_visits = replica.meta_table.used()
    sizing_q, sizing_visits = replica.sizing_table.used()
    return meta_q.tobytes(), meta_visits.tobytes(), sizing_q.tobytes(), sizing_visits.tobytes()


@pytest.fixture
def records(config: CoreConfig) -> list[Outcome]:
    return make_outcomes(np.random.default_rng(21), config, 60)


class TestDecoding:
    def test_three_kinds(self, records: list[Outcome]) -> None:
        tuning = HyperparametersRecord(
            hyperparameters=Hyperparameters(meta=agent(alpha=0.05), sizing=agent(gamma=0.5)), issued_at_ms=1
        )
        reset = ResetRecord(app_id="backfill-1", checkpoint_offset=41, sha256="ab" * 32, issued_at_ms=2)
        for record in (records[0], tuning, reset):
            assert decode_log_record(record.model_dump_json().encode()) == record

    def test_an_outcome_without_kind_is_an_outcome(self, records: list[Outcome]) -> None:
        legacy = json.loads(records[0].model_dump_json())
        del legacy["kind"]
        assert decode_log_record(json.dumps(legacy).encode()) == records[0]

    @pytest.mark.parametrize(
        "meta",
        [
            {"alpha": 0.0},
            {"alpha": 1.5},
            {"gamma": -0.1},
            {"epsilon_start": 0.001, "epsilon_min": 0.01},
            {"epsilon_decay": 0.0},
            {"alpha": "fast"},
            {"alpha": float("nan")},
        ],
    )
    def test_invalid_hyperparameters(self, meta: dict[str, object]) -> None:
        body = {"meta": agent().model_dump() | meta, "sizing": agent().model_dump()}
        value = json.dumps({"kind": "hyperparameters", "hyperparameters": body, "issued_at_ms": 0}).encode()
        with pytest.raises(ValidationError):
            decode_log_record(value)

    @pytest.mark.parametrize(
        "value",
        [
            b'{"kind": "reset", "app_id": "x", "checkpoint_offset": 3, "sha256": "nothex", "issued_at_ms": 0}',
            b'{"kind": "shutdown"}',
            b'{"kind": "hyperparameters", "hyperparameters": {"meta": {}}, "issued_at_ms": 0}',
            b"not json",
        ],
    )
    def test_unreadable(self, value: bytes) -> None:
        with pytest.raises(ValidationError):
            decode_log_record(value)


class TestHyperparameters:
    def test_from_config(self) -> None:
        config = CoreConfig(meta=agent(alpha=0.2, gamma=0.5), sizing=agent(alpha=0.3))
        hp = Hyperparameters.from_config(config)
        assert (hp.meta.alpha, hp.meta.gamma, hp.sizing.alpha) == (0.2, 0.5, 0.3)
        assert ModelReplica(config).hyperparameters == hp and ModelReplica(config).hyperparameters_offset is None

    def test_changed(self) -> None:
        before = Hyperparameters(meta=agent(), sizing=agent())
        after = Hyperparameters(meta=agent(alpha=0.05), sizing=agent(epsilon_min=0.0))
        assert before.changed(after) == {"meta.alpha": (0.01, 0.05), "sizing.epsilon_min": (0.01, 0.0)}

    def test_fingerprint_ignores_them_and_keeps_the_model(self) -> None:
        base = CoreConfig()
        tuned = CoreConfig(meta=agent(alpha=0.3, gamma=0.2, epsilon_start=0.5, epsilon_decay=0.9))
        assert tuned.fingerprint() == base.fingerprint()
        assert CoreConfig(dedupe_window=10).fingerprint() == base.fingerprint()
        assert CoreConfig(meta_bins=MetaBins(volatility=(0.5,))).fingerprint() != base.fingerprint()
        assert CoreConfig(learning=LearningRules(episode_length=7)).fingerprint() != base.fingerprint()
        assert CoreConfig(profile="seed").fingerprint() != base.fingerprint()  # other learning rules

    def test_a_record_at_the_start_equals_configuring_them(self, records: list[Outcome]) -> None:
        """alpha/gamma/epsilon from a record at offset 0 learn exactly as the same values configured."""
        tuned = AgentHyperparameters(alpha=0.2, gamma=0.7, epsilon_start=0.3, epsilon_min=0.05, epsilon_decay=0.95)
        configured = ModelReplica(CoreConfig(seed=7, meta=tuned, sizing=tuned))
        for record in records:
            configured.apply(record)
        logged = ModelReplica(CoreConfig(seed=7))
        assert logged.apply_hyperparameters(Hyperparameters(meta=tuned, sizing=tuned), 0)
        for offset, record in enumerate(records, start=1):
            logged.apply(record, offset)
        assert tables_bytes(logged) == tables_bytes(configured)
        assert logged.meta_epsilon == configured.meta_epsilon
        assert logged.decide_meta(TREND, 0.7, "d").selection == configured.decide_meta(TREND, 0.7, "d").selection

    def test_per_agent(self, records: list[Outcome]) -> None:
        """Changing only the sizing agent's alpha leaves the meta table exactly as it was."""
        plain, tuned = ModelReplica(CoreConfig(seed=7)), ModelReplica(CoreConfig(seed=7))
        configured = plain.hyperparameters
        tuned.apply_hyperparameters(
            Hyperparameters(meta=configured.meta, sizing=configured.sizing.model_copy(update={"alpha": 0.5})), 0
        )
        for offset, record in enumerate(records, start=1):
            plain.apply(record, offset)
            tuned.apply(record, offset)
        assert tables_bytes(tuned)[:2] == tables_bytes(plain)[:2]
        assert tables_bytes(tuned)[2] != tables_bytes(plain)[2]

    def test_epsilon_restarts_where_it_takes_effect(self, records: list[Outcome]) -> None:
        replica = ModelReplica(CoreConfig(seed=7))
        for record in records[:30]:
            replica.apply(record)
        assert replica.apply_hyperparameters(
            Hyperparameters(meta=agent(epsilon_start=0.05, epsilon_decay=0.5), sizing=agent(epsilon_start=0.2)), 30
        )
        assert (replica.meta_epsilon, replica.sizing_epsilon) == (0.05, 0.2)
        assert (replica.hyperparameters_offset, replica.epsilon_origin) == (30, 30)
        replica.apply(records[30], 31)
        assert replica.meta_epsilon == 0.025 and replica.sizing_epsilon == 0.2 * 0.9997
        decision = replica.decide_sizing(0.5, 0.5, 0.5, "s")
        assert decision.epsilon == replica.sizing_epsilon

    def test_old_offset_is_ignored(self) -> None:
        replica = ModelReplica(CoreConfig())
        assert replica.apply_hyperparameters(Hyperparameters(meta=agent(alpha=0.5), sizing=agent()), 4)
        assert not replica.apply_hyperparameters(Hyperparameters(meta=agent(alpha=0.9), sizing=agent()), 4)
        assert replica.hyperparameters.meta.alpha == 0.5 and replica.log_offset == 4

    def test_snapshot_keeps_them_and_a_restore_continues_identically(self, records: list[Outcome]) -> None:
        live = ModelReplica(CoreConfig(seed=7))
        for offset, record in enumerate(records[:20]):
            live.apply(record, offset)
        live.apply_hyperparameters(Hyperparameters(meta=agent(alpha=0.3, epsilon_start=0.4), sizing=agent()), 20)
        for offset, record in enumerate(records[20:30], start=21):
            live.apply(record, offset)
        restored = decode_replica(encode_replica(live), CoreConfig(seed=7))
        assert restored.hyperparameters == live.hyperparameters
        assert (restored.hyperparameters_offset, restored.epsilon_origin) == (20, 20)
        for offset, record in enumerate(records[30:], start=31):
            live.apply(record, offset)
            restored.apply(record, offset)
        assert encode_replica(restored) == encode_replica(live)


class TestReset:
    def test_continues_from_the_checkpoint(self, records: list[Outcome]) -> None:
        config = CoreConfig(seed=7)
        live = ModelReplica(config)
        for offset, record in enumerate(records[:20]):
            live.apply(record, offset)
        live.apply_hyperparameters(Hyperparameters(meta=agent(alpha=0.2), sizing=agent(gamma=0.3)), 20)
        checkpoint = encode_replica(live)
        for offset, record in enumerate(records[20:40], start=21):
            live.apply(record, offset)
        live.apply_hyperparameters(Hyperparameters(meta=agent(alpha=0.9), sizing=agent()), 41)

        assert live.reset_to(decode_replica(checkpoint, config), 42)
        assert live.log_offset == 42 and live.hyperparameters_offset == 42
        assert live.hyperparameters.meta.alpha == 0.2 and live.hyperparameters.sizing.gamma == 0.3
        # the model is the checkpoint's again, and learns on exactly as the checkpoint would
        twin = decode_replica(checkpoint, config)
        assert tables_bytes(live) == tables_bytes(twin) and live.n_updates == twin.n_updates == 20
        for offset, record in enumerate(records[40:], start=43):
            live.apply(record, offset)
            twin.apply(record, offset)
        assert tables_bytes(live) == tables_bytes(twin)
        assert live.meta_epsilon == twin.meta_epsilon and live.winrate.winrate == twin.winrate.winrate
        assert live.decide_meta(TREND, 0.7, "d").selection == twin.decide_meta(TREND, 0.7, "d").selection

    def test_redeliveries_of_this_log_stay_ignored(self, records: list[Outcome]) -> None:
        live = ModelReplica(CoreConfig(seed=7))
        empty = ModelReplica(CoreConfig(seed=7))
        for offset, record in enumerate(records[:10]):
            live.apply(record, offset)
        live.reset_to(empty, 10)
        assert live.apply(records[9], 11) is None  # already applied on this log
        assert live.n_updates == 0

    def test_incompatible_checkpoint_is_refused(self) -> None:
        live = ModelReplica(CoreConfig(seed=7))
        other = ModelReplica(CoreConfig(seed=7, meta_bins=MetaBins(volatility=(0.5,))))
        with pytest.raises(ConfigError, match="not this model"):
            live.reset_to(other, 0)
        assert live.log_offset == -1

    def test_old_offset_is_ignored(self) -> None:
        live = ModelReplica(CoreConfig())
        live.log_offset = 9
        assert not live.reset_to(ModelReplica(CoreConfig()), 9)

    def test_reset_record_names_the_bytes(self) -> None:
        data = encode_replica(ModelReplica(CoreConfig()))
        record = ResetRecord(
            app_id="a", checkpoint_offset=-1, sha256=hashlib.sha256(data).hexdigest(), issued_at_ms=0
        )
        assert record.sha256 == hashlib.sha256(data).hexdigest()
