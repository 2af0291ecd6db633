"""The core configuration of the demo: the agents visibly learn the synthetic market in a few thousand positions.

Tuned with `scripts/offline_learning.py` against `rl_worker.sim.SyntheticMarket` (figures in
that script's docstring). Everything not set here is the production default; in particular the
reward weights and the risk limits are untouched, so the demo learns the same rewards, inside
the same limits, as a production worker.
"""

from __future__ import annotations

from rl_worker.core.config import CoreConfig, MetaBins, QLearningConfig, SizingBins

__all__ = ["demo_core_config"]


def demo_core_config(seed: int = 0) -> CoreConfig:
    """The demo's CoreConfig; see the comments for why each value differs from the default."""
    return CoreConfig(
        seed=seed,
        qlearning=QLearningConfig(
            # 3x the default learning rate: each state-action pair is visited tens of times in a
            # demo, not thousands; 0.05 and above let a few big pnl draws swap the greedy action
            # back and forth, 0.01 (the default) is still learning after 5,000 positions.
            alpha=0.05,
            # The default discount: the market's next state does not depend on the action, so
            # the bootstrap term shifts all actions of a state alike; 0.0 measured the same.
            gamma=0.99,
            # Explore half the time at first: Q-values start at zero and a step of 0.03 moves
            # them slowly, so an action needs dozens of tries before its value shows.
            epsilon_start=0.5,
            # 0.5 * 0.999**n reaches the floor after ~3,200 positions: mostly greedy in the
            # second half of a 5,000-position demo, where the learning fraction is read.
            epsilon_decay=0.999,
            epsilon_min=0.02,
        ),
        # The synthetic market's strategy edges depend on the regime alone (confidence and the
        # regime's strength scale every strategy alike; win rate, account health, pressure and
        # volatility change no ranking), so the meta state is the regime: 4 states x 40 allowed
        # actions instead of 648 x 40, and every position teaches one of four rows.
        meta_bins=MetaBins(volatility=(), market_pressure=(), confidence=(), previous_winrate=(), account_health=()),
        # The best exposure falls with volatility and barely depends on anything else the sizing
        # agent sees, so volatility alone, in quarters (calm, normal, agitated, wild): 4 states
        # instead of the default 108.
        sizing_bins=SizingBins(
            signal_confidence=(),
            portfolio_exposure=(),
            recent_winrate=(),
            volatility=(0.25, 0.5, 0.75),
            equity_curve_slope=(),
        ),
    )
