"""Benchmarks with their official rules: RM-Bench, JudgeBench, HelpSteer3, RewardBench.

Scoring goes through `rewardkit.api.RewardModel` (see `rewardkit.eval.run.score_items`);
metrics are pure functions of score rows (`rewardkit.eval.metrics`).
"""

from rewardkit.eval.base import Benchmark, EvalOptions, Item
from rewardkit.eval.metrics import (
    BenchResult,
    helpsteer3_metrics,
    judgebench_metrics,
    rewardbench_metrics,
    rmbench_metrics,
)

__all__ = [
    "BenchResult",
    "Benchmark",
    "EvalOptions",
    "Item",
    "helpsteer3_metrics",
    "judgebench_metrics",
    "rewardbench_metrics",
    "rmbench_metrics",
]
