"""Operator tools: one module per `rl-worker` command, all registered in `commands.py`."""
