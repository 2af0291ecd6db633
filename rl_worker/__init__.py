"""rl_worker: an online reinforcement-learning decision worker for trading stacks."""

__version__ = "0.1.0"
__all__ = ["__version__"]
