"""One optimizer step of `PairStep` inside the trainer."""

from __future__ import annotations

import torch

from rewardkit.train import TrainConfig, Trainer


def test_every_trainable_parameter_changes(base_config: dict) -> None:
    t = Trainer(TrainConfig(**{**base_config, "weight_decay": 0.0}))  # no decay: only gradients move
    try:
        t.setup()
        before = {n: p.full_tensor().detach().clone() for n, p in t.root.named_parameters()}
        t.train_step()
        after = {n: p.full_tensor().detach() for n, p in t.root.named_parameters()}
    finally:
        t.close()
    assert len(before) > 20 and any(n.endswith("score.weight") for n in before)
    unchanged = [n for n in before if torch.equal(before[n], after[n])]
    assert unchanged == []
