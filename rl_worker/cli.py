"""Extra commands of the `rl-worker` command line (besides Faust's own `worker`)."""

from __future__ import annotations

import faust

from rl_worker.settings import Settings

__all__ = ["register_commands"]


def register_commands(app: faust.App, settings: Settings) -> None:
    """Attach the operator commands to the app."""
