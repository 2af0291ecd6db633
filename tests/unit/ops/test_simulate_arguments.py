"""`simulate` refuses bad arguments before it creates a topic or sends a record."""

from __future__ import annotations

import asyncio

import pytest

from rl_worker.ops.exceptions import CommandError
from rl_worker.ops.simulate import run_simulation
from rl_worker.settings import Settings


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"positions": 0}, "--positions"),
        ({"positions": 10, "in_flight": 0}, "--in-flight"),
        ({"positions": 10, "deadline_s": 0.0}, "--deadline"),
        ({"positions": 10, "deadline_s": -1.0}, "--deadline"),
    ],
)
def test_bad_arguments_are_refused_before_any_connection(kwargs: dict[str, float], named: str) -> None:
    # port 9 on loopback answers nothing: reaching the broker would fail differently, and later
    settings = Settings(kafka_bootstrap="127.0.0.1:9")
    with pytest.raises(CommandError, match=named) as raised:
        asyncio.run(run_simulation(settings, **kwargs))  # type: ignore[arg-type]
    assert raised.value.exit_code == 2
