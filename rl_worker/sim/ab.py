"""Offline A/B runs: the synthetic market served by two arms, one replica learning from both.

Positions go to the control arm by the worker's stable hash of the position id
(`rl_worker.core.arms`). Each arm trades with its policy: `rl` (the replica's published
decisions) or `stack` (the control decision of `rl_worker.core.control`: the simulated stack's
own choice, clipped to the limits) or `baseline` (the control decision of an event that carries no
choice: the configured baseline policy). The replica applies every completed position with the
actions that were traded, whichever arm traded them (Q-learning is off-policy).

For every position the market's oracle also gives the expected pnl of both arms' choices, so
a run knows which arm is truly better; for the RL arm's positions it keeps what off-policy
evaluation needs (state key, mask, action, propensity, reward) with the oracle's expected
reward of every action, to score an estimate against the truth.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from rl_worker.analysis.learning_log import AgentColumns
from rl_worker.analysis.performance import ArmTrades
from rl_worker.core import CoreConfig, ModelReplica, Outcome
from rl_worker.core.actions import SIZING_ACTIONS, meta_action_mask, sizing_action_mask
from rl_worker.core.arms import CONTROL_ARM, RL_ARM, BaselinePolicy, assign_arm, control_meta, control_sizing
from rl_worker.core.qlearning import DecisionRandom
from rl_worker.core.snapshot import encode_replica
from rl_worker.core.state import MetaState, SizingState
from rl_worker.core.types import FloatArray
from rl_worker.positions import PositionJoiner
from rl_worker.sim.market import SimConfig, SyntheticMarket
from rl_worker.sim.offline import join_events

__all__ = ["AgentLog", "OfflineAB", "run_offline_ab"]

ArmPolicy = Literal["rl", "stack", "baseline"]


@dataclass
class AgentLog(AgentColumns):
    """One agent's logged decisions in one arm (the columns `evaluate` reads), with the oracle's
    expected reward of every action."""

    expected: list[FloatArray] = field(default_factory=list)
    positions: list[int] = field(default_factory=list)  # the position index of each decision

    def since(self, position: int) -> AgentLog:
        """The decisions of positions `position` and later."""
        keep = [i for i, p in enumerate(self.positions) if p >= position]
        return AgentLog(**{name: [getattr(self, name)[i] for i in keep] for name in self.__dataclass_fields__})


@dataclass
class OfflineAB:
    """What an offline A/B run leaves."""

    trades: dict[str, ArmTrades]
    oracle_pnl: dict[str, float]  # mean expected pnl of each arm's policy's choice over *all* positions
    oracle_reward: dict[str, float]  # ... and of its meta + size reward
    meta: AgentLog
    sizing: AgentLog
    replica: ModelReplica
    snapshot: bytes | None = None  # the replica before position `snapshot_at`, as checkpoint bytes


def _exposure(sizing_index: int) -> float:
    action = SIZING_ACTIONS[sizing_index]
    return action.size_multiplier * action.leverage


def run_offline_ab(
    n_positions: int,
    seed: int,
    core_config: CoreConfig,
    control_share: float,
    policies: dict[str, ArmPolicy] | None = None,
    sim_config: SimConfig | None = None,
    baseline: BaselinePolicy | None = None,
    keep_log: bool = True,
    snapshot_at: int | None = None,
    score: bool = True,
    log_arm: str | None = RL_ARM,
) -> OfflineAB:
    """Run `n_positions` positions; `policies` maps each arm to its policy (default rl / stack;
    {"rl": "rl", "control": "rl"} is an A/A run: one policy behind both arms). `score=False` skips the
    oracle's expected pnl and reward of the arms (then 0). `log_arm` is the arm whose decisions the
    off-policy logs keep (None: both, as `evaluate` reads them), with the propensities of the policy that
    traded them."""
    policies = policies or {RL_ARM: "rl", CONTROL_ARM: "stack"}
    baseline = baseline or BaselinePolicy()
    sim_config = (sim_config or SimConfig()).model_copy(update={"core": core_config})
    market = SyntheticMarket(seed, sim_config)
    replica = ModelReplica(core_config)
    joiner = PositionJoiner(replica, RL_ARM, lambda: 0)
    control_random = DecisionRandom(seed + 1)
    columns: dict[str, dict[str, list[float]]] = {
        arm: {"pnl": [], "meta": [], "size": []} for arm in (RL_ARM, CONTROL_ARM)
    }
    oracle_sum = {RL_ARM: 0.0, CONTROL_ARM: 0.0}
    oracle_reward_sum = {RL_ARM: 0.0, CONTROL_ARM: 0.0}
    meta_log, sizing_log = AgentLog(), AgentLog()
    snapshot = None
    for i in range(n_positions):
        if i == snapshot_at:
            snapshot = encode_replica(replica)
        opened = market.open_position()
        arm = assign_arm(opened.position_id, control_share)
        row, decided = join_events(joiner, None, [("signals", opened.signal), ("executions", opened.execution)], i)
        meta_record, sizing_record = decided["meta"], decided["sizing"]
        meta_mask = meta_action_mask(meta_record["state"]["regime"], core_config)
        limits = (sizing_record["limits"]["max_size_multiplier"], sizing_record["limits"]["max_leverage"])
        sizing_mask = sizing_action_mask(*limits)
        signal, execution = opened.signal, opened.execution
        choices = {"rl": (meta_record["action_index"], sizing_record["action_index"])}
        propensities = {"rl": (meta_record["propensity"], sizing_record["propensity"])}
        for name, meta_choice, sizing_choice in (
            (
                "stack",
                (signal.get("strategy"), signal.get("model"), signal.get("weight")),
                (execution.get("size_multiplier"), execution.get("leverage")),
            ),
            ("baseline", (None, None, None), (None, None)),
        ):
            if name in policies.values():
                meta_control = control_meta(
                    meta_choice, baseline, meta_mask, control_random.stream(f"{opened.position_id}:meta")
                )
                sizing_control = control_sizing(
                    sizing_choice, baseline, limits, sizing_mask, control_random.stream(f"{opened.position_id}:sizing")
                )
                choices[name] = (meta_control.action, sizing_control.action)
                propensities[name] = (meta_control.propensity, sizing_control.propensity)
        for name in (RL_ARM, CONTROL_ARM) if score else ():
            m, s = choices[policies[name]]
            oracle_sum[name] += _exposure(s) * market.expected_return(opened, m)
            oracle_reward_sum[name] += float(
                market.expected_meta_rewards(opened, s)[m] + market.expected_size_rewards(opened, m)[s]
            )
        traded_meta, traded_sizing = choices[policies[arm]]
        logged = keep_log and log_arm in (arm, None)
        if logged:
            expected_meta = market.expected_meta_rewards(opened, traded_sizing)
            expected_size = market.expected_size_rewards(opened, traded_meta)
        close = market.close_position(opened, traded_meta, traded_sizing)
        _, emitted = join_events(joiner, row, [("closes", close)], i)
        outcome = Outcome.model_validate(emitted["outcome"])
        if (traded_meta, traded_sizing) != (outcome.meta.action_index, outcome.sizing.action_index):
            outcome = outcome.model_copy(
                update={
                    "meta": outcome.meta.model_copy(update={"action_index": traded_meta}),
                    "sizing": outcome.sizing.model_copy(update={"action_index": traded_sizing}),
                    "policy": arm,
                }
            )
        applied = replica.apply(outcome)
        assert applied is not None
        columns[arm]["pnl"].append(close["pnl_pct"])
        columns[arm]["meta"].append(applied.meta_reward)
        columns[arm]["size"].append(applied.size_reward)
        if logged:
            meta_p, sizing_p = propensities[policies[arm]]
            meta_state = MetaState(**meta_record["state"])
            for log, record, mask, reward, expected, action, propensity, state, context, other in (
                (meta_log, meta_record, meta_mask, applied.meta_reward, expected_meta, traded_meta, meta_p,
                 meta_state, None, traded_sizing),
                (sizing_log, sizing_record, sizing_mask, applied.size_reward, expected_size, traded_sizing, sizing_p,
                 SizingState(**sizing_record["state"]), (meta_state.regime, traded_meta), traded_meta),
            ):
                log.states.append(state)
                log.contexts.append(context)
                log.arms.append(arm)
                log.other_actions.append(other)
                log.state_keys.append(record["state_key"])
                log.masks.append(mask)
                log.actions.append(action)
                log.propensities.append(propensity)
                log.rewards.append(reward)
                log.expected.append(expected)
                log.positions.append(i)
    trades = {
        arm: ArmTrades(arm, np.array(c["pnl"]), np.array(c["meta"]), np.array(c["size"])) for arm, c in columns.items()
    }
    oracle = {arm: total / max(1, n_positions) for arm, total in oracle_sum.items()}
    oracle_reward = {arm: total / max(1, n_positions) for arm, total in oracle_reward_sum.items()}
    return OfflineAB(trades, oracle, oracle_reward, meta_log, sizing_log, replica, snapshot)
