"""Shared fixtures of the core's unit tests: configurations and a seeded factory of valid outcomes."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, settings

from rl_worker.core.config import CoreConfig
from rl_worker.core.outcome import Outcome
from rl_worker.sim.events import make_outcome, make_outcomes

# The core is fast but some properties build replicas; no example should depend on wall time.
settings.register_profile("core", deadline=None, max_examples=60, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("core")

OutcomeFactory = Callable[..., Outcome]

@pytest.fixture(scope="session")
def outcome_factory() -> OutcomeFactory:
    """`outcome_factory(rng, config, index, **overrides)`: see `make_outcome`."""
    return make_outcome


@pytest.fixture(scope="session")
def outcomes_factory() -> Callable[..., list[Outcome]]:
    """`outcomes_factory(rng, config, n, start=0)`: see `make_outcomes`."""
    return make_outcomes


@pytest.fixture(scope="session")
def config() -> CoreConfig:
    """The seed profile: the hand-computed updates of the tests are the seed's TD rule."""
    return CoreConfig(seed=7, profile="seed")


@pytest.fixture(scope="session")
def short_episode_config() -> CoreConfig:
    """Episodes of 5 positions and a fast epsilon decay, so terminals and decay show up quickly."""
    return with_learning(CoreConfig(seed=11, profile="seed", learning={"episode_length": 5}), epsilon_decay=0.9)


def with_learning(config: CoreConfig, **fields: object) -> CoreConfig:
    """`config` with the same hyperparameter fields set for both agents."""
    return config.model_copy(
        update={"meta": config.meta.model_copy(update=fields), "sizing": config.sizing.model_copy(update=fields)}
    )
