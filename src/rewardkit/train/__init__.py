"""Reward-model training: Bradley-Terry / Scaled-BT on preference pairs, FSDP2 via torchrun.

Example:
    >>> from rewardkit.train import train
    >>> export_dir = train({"model": "Qwen/Qwen2.5-0.5B-Instruct", "data": "nvidia/HelpSteer3",
    ...                     "output": "runs/rm"})  # doctest: +SKIP

Names load lazily, so registering ``rewardkit train`` does not import torch.
"""

from __future__ import annotations

from rewardkit._lazy import lazy_exports

_EXPORTS = {
    "TrainConfig": "rewardkit.train.config",
    "load_config": "rewardkit.train.config",
    "bt": "rewardkit.train.loss",
    "margin_bt": "rewardkit.train.loss",
    "pair_losses": "rewardkit.train.loss",
    "scaled_bt": "rewardkit.train.loss",
    "Trainer": "rewardkit.train.trainer",
    "train": "rewardkit.train.trainer",
}
__all__ = ["TrainConfig", "Trainer", "bt", "load_config", "margin_bt", "pair_losses", "scaled_bt", "train"]


__getattr__ = lazy_exports(__name__, _EXPORTS)
