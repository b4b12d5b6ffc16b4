"""Scoring on a Ray cluster with Ray Data (``pip install 'rewardkit[ray]'``): the two
``Dataset.map_batches`` stages (`RewardTokenizer`, `RewardScorer`) for Ray Data pipelines of your
own, and `score_file_ray`, what ``rewardkit score --ray`` runs. See docs/scaling.md."""

from __future__ import annotations

from rewardkit._lazy import lazy_exports

_EXPORTS = {
    "RewardScorer": "rewardkit.ray.stages",
    "RewardTokenizer": "rewardkit.ray.stages",
    "score_file_ray": "rewardkit.ray.job",
}
__all__ = sorted(_EXPORTS)

__getattr__ = lazy_exports(__name__, _EXPORTS)
