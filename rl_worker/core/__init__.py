"""The pure RL core: state building, action spaces, rewards, Q-learning, the model replica.

No Kafka, Redis or asyncio here: numpy, pydantic and the standard library only, and
every random draw comes from an explicit, seeded `numpy.random.Generator`.
"""

from rl_worker.core.config import CoreConfig
from rl_worker.core.outcome import Outcome
from rl_worker.core.replica import Decision, ModelReplica

__all__ = ["CoreConfig", "Decision", "ModelReplica", "Outcome"]
