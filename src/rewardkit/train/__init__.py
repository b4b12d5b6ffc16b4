"""Reward-model training: Bradley-Terry / Scaled-BT on preference pairs, FSDP2 via torchrun.

Example:
    >>> from rewardkit.train import train
    >>> export_dir = train({"model": "Qwen/Qwen2.5-0.5B-Instruct", "data": "nvidia/HelpSteer3",
    ...                     "output": "runs/rm"})  # doctest: +SKIP
"""

from rewardkit.train.config import TrainConfig, load_config
from rewardkit.train.loss import bt, margin_bt, pair_losses, scaled_bt
from rewardkit.train.trainer import Trainer, train

__all__ = ["TrainConfig", "Trainer", "bt", "load_config", "margin_bt", "pair_losses", "scaled_bt", "train"]
