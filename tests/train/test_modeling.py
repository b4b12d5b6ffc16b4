"""The model to train: a causal LM gets a small new head, a reward model keeps its own."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from rewardkit.train import TrainConfig, Trainer


def test_new_head_is_small_and_reward_model_head_is_kept(
    tiny_lm_dir: Path, tiny_model_dir: Path, base_config: dict
) -> None:
    for model, check in ((tiny_lm_dir, "new"), (tiny_model_dir, "kept")):
        t = Trainer(TrainConfig(**{**base_config, "model": str(model)}))
        try:
            t.setup()
            w = t.model.score.weight.full_tensor().detach()
        finally:
            t.close()
        if check == "new":
            assert w.std().item() == pytest.approx(1 / math.sqrt(64), rel=0.25)
        else:
            saved = load_file(str(tiny_model_dir / "model.safetensors"))["score.weight"]
            assert torch.equal(w, saved)
