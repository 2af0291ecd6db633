"""Settings: one learning log per app id by default, an explicit name when configured, valid app ids."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from rl_worker.settings import Settings, TopicNames, learning_log_name


def test_learning_log_follows_the_app_id() -> None:
    assert Settings(app_id="live").topics.outcomes == "rl.outcomes.live" == learning_log_name("live")
    assert Settings(app_id="backfill-1").topics.outcomes != Settings(app_id="live").topics.outcomes


def test_configured_learning_log_is_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RL_TOPICS__OUTCOMES", "rl.outcomes")  # an existing log, kept (see README: migrating)
    assert Settings(app_id="live").topics.outcomes == "rl.outcomes"
    assert Settings(topics=TopicNames(outcomes="x.log")).topics.outcomes == "x.log"


@pytest.mark.parametrize("app_id", ["", "a b", "a/b", "x" * 201, "é"])
def test_app_id_must_name_topics(app_id: str) -> None:
    with pytest.raises(ValidationError, match="app_id"):
        Settings(app_id=app_id)
