"""One optimizer step of `PairStep` inside the trainer."""

from __future__ import annotations

import pytest
import torch

from rewardkit.train import TrainConfig, Trainer
from rewardkit.train.data import plan_micro_batches


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


def test_the_micro_batch_size_does_not_change_training(base_config: dict, tmp_path) -> None:
    """``auto`` may lower the micro-batch to fit a mode with less recompute, and micro-batches are
    packed best fit: how a global batch is cut into forwards must not change what a step computes.
    Three steps with one forward per step against many small ones: the same losses, gradient
    norms and weights, up to float rounding of the sums."""

    def run(token_budget: int) -> tuple[list[dict], dict[str, torch.Tensor], int]:
        cfg = {**base_config, "output": str(tmp_path / str(token_budget)), "max_pairs": 32, "export": False}
        t = Trainer(TrainConfig(**{**cfg, "token_budget": token_budget}))
        try:
            t.setup()
            batch = list(range(cfg["global_batch_size"]))
            forwards = len(
                plan_micro_batches(
                    batch, t.train_data.lengths, rank=0, world_size=1, token_budget=token_budget
                )
            )
            rows = []
            for _ in range(3):
                rows.append(t.train_step())
                t.step += 1
            weights = {n: p.full_tensor().detach().clone() for n, p in t.root.named_parameters()}
        finally:
            t.close()
        return rows, weights, forwards

    one, w_one, n_one = run(1 << 16)
    many, w_many, n_many = run(160)
    assert n_one == 1 and n_many >= 4  # the same pairs, cut differently
    for key in ("loss", "accuracy", "grad_norm", "tokens"):
        assert [r[key] for r in many] == pytest.approx([r[key] for r in one], rel=1e-5, abs=1e-7), key
    # Adam divides by the gradient's running magnitude, so a near-zero gradient whose rounding
    # differs moves its weight by up to ~lr (1e-3 here) differently: 1% of a step is allowed.
    for name, w in w_one.items():
        torch.testing.assert_close(
            w_many[name], w, rtol=1e-5, atol=1e-5, msg=lambda m, name=name: f"{name}: {m}"
        )
