"""Benchmarks with their official rules: RM-Bench, JudgeBench, HelpSteer3, RewardBench, and your
own preference pairs.

Scoring goes through `rewardkit.api.RewardModel` (see `rewardkit.eval.run.evaluate`); metrics
are pure functions of score rows (`rewardkit.eval.metrics`); `rewardkit.eval.run.recompute`
recomputes them from a score file. Names load on first use, so that ``rewardkit --help`` (which
imports `rewardkit.eval.command`) stays light.
"""

from __future__ import annotations

from rewardkit._lazy import lazy_exports

_EXPORTS = {
    "BenchResult": "rewardkit.eval.metrics",
    "Benchmark": "rewardkit.eval.base",
    "EvalOptions": "rewardkit.eval.base",
    "EvalRun": "rewardkit.eval.run",
    "Item": "rewardkit.eval.base",
    "evaluate": "rewardkit.eval.run",
    "get_benchmark": "rewardkit.eval.run",
    "helpsteer3_metrics": "rewardkit.eval.metrics",
    "judgebench_metrics": "rewardkit.eval.metrics",
    "pairs_metrics": "rewardkit.eval.pairs",
    "recompute": "rewardkit.eval.run",
    "rewardbench_metrics": "rewardkit.eval.metrics",
    "rm_bench_metrics": "rewardkit.eval.metrics",
}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
