"""The synthetic trading stack: a regime-switching market that emits the three input events and knows
the expected reward of every action, an accumulator of how much of the achievable reward a policy
earns, and the offline learning loop that drives a pure `ModelReplica` with it."""

from rl_worker.sim.market import OpenedPosition, ScoredChoice, SimConfig, SyntheticMarket
from rl_worker.sim.report import LearningReport

__all__ = ["LearningReport", "OpenedPosition", "ScoredChoice", "SimConfig", "SyntheticMarket"]
