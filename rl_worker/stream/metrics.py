"""Prometheus metrics of one worker (own registry, so several apps can live in one process)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["WorkerMetrics"]


class WorkerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.events = Counter("rl_events_total", "input events by topic and status", ["topic", "status"], registry=r)
        self.dead_letters = Counter(
            "rl_dead_letters_total", "records sent to the dead-letter topic", ["topic", "error"], registry=r
        )
        self.decisions = Counter("rl_decisions_total", "decisions published", ["agent", "explored"], registry=r)
        self.outcomes_published = Counter(
            "rl_outcomes_published_total", "completed positions published to the outcomes log", registry=r
        )
        self.outcomes_applied = Counter(
            "rl_outcomes_applied_total", "outcome records applied by this replica", registry=r
        )
        self.outcomes_ignored = Counter(
            "rl_outcomes_ignored_total",
            "outcome records skipped (already applied or unreadable)",
            ["reason"],
            registry=r,
        )
        self.positions_expired = Counter(
            "rl_positions_expired_total", "positions removed by expiry", ["stage"], registry=r
        )
        self.model_version = Gauge("rl_model_version", "outcomes-log records consumed", registry=r)
        self.epsilon = Gauge("rl_epsilon", "current exploration rate of the meta agent", registry=r)
        self.agent_epsilon = Gauge("rl_agent_epsilon", "current exploration rate per agent", ["agent"], registry=r)
        self.hyperparameter = Gauge(
            "rl_hyperparameter", "hyperparameters in force per agent (alpha, gamma, epsilon schedule)",
            ["agent", "name"], registry=r,
        )
        self.hyperparameters_offset = Gauge(
            "rl_hyperparameters_offset",
            "learning-log offset at which the hyperparameters in force took effect (-1: the configuration's)",
            registry=r,
        )
        self.control_records = Counter(
            "rl_control_records_total", "learning-log control records by kind and result", ["kind", "result"],
            registry=r,
        )
        self.q_states = Gauge("rl_q_states", "states in each Q-table", ["agent"], registry=r)
        self.mean_reward = Gauge("rl_reward_mean", "mean reward over all applied outcomes", ["agent"], registry=r)
        self.checkpoint_offset = Gauge("rl_checkpoint_offset", "outcomes offset of the last checkpoint", registry=r)
        self.checkpoint_writes = Counter("rl_checkpoint_writes_total", "checkpoints written", registry=r)
        self.checkpoint_failures = Counter(
            "rl_checkpoint_failures_total", "failed checkpoint writes (retried)", registry=r
        )
        self.send_failures = Counter(
            "rl_send_failures_total", "sends that failed after the producer's retries (the worker stops)", registry=r
        )
        self.partitions_stalled = Gauge(
            "rl_partitions_stalled", "assigned input partitions with waiting records and no commit progress", registry=r
        )
        self.hole_seeks = Counter(
            "rl_hole_seeks_total",
            "input partitions sought back to their committed offset because a record there was not delivered",
            registry=r,
        )
        self.decisions_read_back = Counter(
            "rl_decisions_read_back_total", "decision records read back from the decisions topic on assignment",
            registry=r,
        )
        self.redis_up = Gauge("rl_redis_up", "1 when the last checkpoint store call succeeded", registry=r)
        # Trading performance from the applied log, per A/B arm (labels: the RL arm, the control arm,
        # "other"; agents; 3 strategies; 8 leverage levels: bounded whatever the log holds).
        self.decisions_by_arm = Counter(
            "rl_decisions_by_arm_total", "decisions published, by arm", ["agent", "arm"], registry=r
        )
        self.explored_share = Gauge(
            "rl_explored_share", "share of this worker's RL-arm decisions that explored", ["agent"], registry=r
        )
        self.arm_positions = Gauge("rl_arm_positions", "completed positions applied, by arm", ["arm"], registry=r)
        self.arm_win_rate = Gauge("rl_arm_win_rate", "share of positions with pnl > 0", ["arm"], registry=r)
        self.arm_rolling_win_rate = Gauge(
            "rl_arm_rolling_win_rate", "win rate over the arm's last 100 positions", ["arm"], registry=r
        )
        self.arm_sharpe = Gauge("rl_arm_sharpe_per_trade", "mean / std of pnl_pct", ["arm"], registry=r)
        self.arm_max_drawdown = Gauge(
            "rl_arm_max_drawdown_pct", "max drawdown of the arm's cumulative pnl_pct", ["arm"], registry=r
        )
        self.arm_pnl_total = Gauge("rl_arm_pnl_pct_total", "sum of pnl_pct", ["arm"], registry=r)
        self.actions = Counter(
            "rl_actions_total",
            "traded actions: strategy (meta) or leverage (sizing), by arm",
            ["agent", "action", "arm"],
            registry=r,
        )
        self.overrides = Counter(
            "rl_overrides_total",
            "positions whose traded action differs from the published decision",
            ["agent", "arm"],
            registry=r,
        )
        self.winrate = Gauge("rl_winrate", "the replica's rolling win rate (the state feature)", registry=r)
        self.account_health = Gauge("rl_account_health", "the replica's account health [0, 1]", registry=r)
        self.episodes = Gauge("rl_episodes_total", "episodes ended", registry=r)
        self.episode_reward = Gauge("rl_episode_last_total_reward", "total meta reward of the last episode", registry=r)
        self.episode_steps = Gauge("rl_episode_last_steps", "steps of the last episode", registry=r)
        self.episode_duration = Gauge(
            "rl_episode_last_duration_seconds", "close-time span of the last episode", registry=r
        )
        self.latency = Histogram(
            "rl_event_to_decision_seconds",
            "from the input record's timestamp to the decision being sent",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
            registry=r,
        )
