"""The core configuration of the demo: tuned so the agents visibly learn within a few thousand positions.

Measured with `scripts/offline_learning.py` against `rl_worker.sim.SyntheticMarket`; the
figures are in that script's docstring.
"""

from __future__ import annotations

from rl_worker.core.config import CoreConfig, MetaBins, QLearningConfig, SizingBins

__all__ = ["demo_core_config"]


def demo_core_config(seed: int = 0) -> CoreConfig:
    """A CoreConfig for the demo (provisional: being tuned)."""
    return CoreConfig(
        seed=seed,
        qlearning=QLearningConfig(alpha=0.02, gamma=0.0, epsilon_start=0.5, epsilon_min=0.02, epsilon_decay=0.999),
        meta_bins=MetaBins(volatility=(), market_pressure=(), confidence=(), previous_winrate=(), account_health=()),
        sizing_bins=SizingBins(
            signal_confidence=(),
            portfolio_exposure=(),
            recent_winrate=(),
            volatility=(0.25, 0.5, 0.75),
            equity_curve_slope=(),
        ),
    )
