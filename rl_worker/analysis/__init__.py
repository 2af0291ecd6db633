"""Statistics over what the learning log recorded: A/B arms, their comparison, the go-live criteria,
and off-policy estimates of a candidate policy.

Pure: numpy and scipy over plain arrays and records; no Kafka, Redis or asyncio. The commands
in `rl_worker.ops` read the log and hand these functions the columns.
"""

from rl_worker.analysis.comparison import ArmComparison, WelchTest, compare_arms
from rl_worker.analysis.criteria import Criterion, Verdict, evaluate_criteria
from rl_worker.analysis.off_policy import (
    LoggedDecisions,
    OffPolicyEstimate,
    OffPolicyReport,
    estimate_off_policy,
)
from rl_worker.analysis.performance import ArmStatistics, ArmTrades, summarize_arm

__all__ = [
    "ArmComparison",
    "ArmStatistics",
    "ArmTrades",
    "Criterion",
    "LoggedDecisions",
    "OffPolicyEstimate",
    "OffPolicyReport",
    "Verdict",
    "WelchTest",
    "compare_arms",
    "estimate_off_policy",
    "evaluate_criteria",
    "summarize_arm",
]
