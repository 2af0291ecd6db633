"""Errors of the operator commands: what went wrong, said plainly, with nothing written."""

from __future__ import annotations

from rl_worker.errors import RlWorkerError

__all__ = ["CommandError"]


class CommandError(RlWorkerError):
    """An operator command that cannot do what was asked. It has written nothing; the command
    prints the message and exits with `exit_code` (2: bad input, 1: a service failed)."""

    def __init__(self, message: str, exit_code: int = 2) -> None:
        super().__init__(message)
        self.exit_code = exit_code
