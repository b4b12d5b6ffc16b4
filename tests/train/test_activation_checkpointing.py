"""Activation checkpointing modes: parsing, the selective-op policy, and training results equal to
the plain path (no checkpointing, not compiled)."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import CheckpointWrapper
from torch.utils.checkpoint import CheckpointPolicy

from rewardkit.errors import ConfigError
from rewardkit.train import TrainConfig, Trainer
from rewardkit.train.activation_checkpointing import ACMode, normalize_ac, parse_ac, save_policy
from rewardkit.train.data import collate
from rewardkit.train.parallelize import decoder_blocks

WRAPPED = "_checkpoint_wrapped_module."


@pytest.mark.parametrize(
    ("value", "canonical"),
    [
        (None, "auto"),
        (True, "full"),
        (False, "none"),
        ("Selective-Op", "selective-op"),
        ("selective-layer:3", "selective-layer:3"),
        ("selective-layer:1", "full"),
    ],
)
def test_spellings(value: object, canonical: str) -> None:
    assert normalize_ac(value) == canonical


def test_bad_modes_are_config_errors_naming_the_option() -> None:
    for bad in ("sometimes", "selective-layer:0", "selective-layer", 3):
        with pytest.raises(
            ConfigError, match=r"activation_checkpointing \(--activation-checkpointing\): must be"
        ):
            TrainConfig(model="m", data="d", output="o", activation_checkpointing=bad)  # type: ignore[arg-type]
    assert (
        TrainConfig(model="m", data="d", output="o", activation_checkpointing=True).activation_checkpointing
        == "full"
    )


def test_selective_layer_checkpoints_every_nth_block() -> None:
    assert parse_ac("selective-layer:2").checkpointed(5) == [False, True, False, True, False]
    assert parse_ac("full").checkpointed(3) == [True] * 3
    assert parse_ac("none").checkpointed(3) == [False] * 3
    assert str(ACMode("selective-layer", 4)) == "selective-layer:4"
    with pytest.raises(ValueError, match="resolved"):
        parse_ac("auto")


def test_selective_op_policy_keeps_matmuls_and_attention_recomputes_the_rest() -> None:
    h, i, t = 64, 128, 5
    policy = save_policy(hidden_size=h, intermediate_size=i)
    aten = torch.ops.aten
    x, bias = torch.zeros(t, h), torch.zeros(h)

    def decide(func, *args):
        return policy(None, func, *args)

    assert decide(aten.addmm.default, bias, x, torch.zeros(h, h)) == CheckpointPolicy.MUST_SAVE  # q/k/v
    assert decide(aten.mm.default, x, torch.zeros(h, i)) == CheckpointPolicy.MUST_SAVE  # gate/up
    down = decide(aten.mm.default, torch.zeros(t, i), torch.zeros(i, h))
    assert down == CheckpointPolicy.PREFER_RECOMPUTE  # only feeds the residual add
    lora_b = decide(aten.mm.default, torch.zeros(t, 4), torch.zeros(4, h))
    assert lora_b == CheckpointPolicy.PREFER_RECOMPUTE
    sdpa = aten._scaled_dot_product_flash_attention_for_cpu.default
    assert decide(sdpa, x, x, x) == CheckpointPolicy.MUST_SAVE
    for op in (aten.silu.default, aten.mul.Tensor, aten.rsqrt.default, aten.add.Tensor):
        assert decide(op, x) == CheckpointPolicy.PREFER_RECOMPUTE


def test_compiled_checkpointed_block_is_one_graph_with_the_plain_gradients() -> None:
    """A decoder block compiled together with its checkpoint (and the selective policy): dynamo
    captures it whole, and its output and gradients equal the plain block's. (HF's SDPA attention
    stands in for the trainer's varlen attention, whose CPU path loops over segments.)"""
    from torch._dynamo.utils import counters
    from transformers.models.qwen2.modeling_qwen2 import Qwen2DecoderLayer, Qwen2RotaryEmbedding

    from rewardkit.models.tiny import tiny_config
    from rewardkit.train.activation_checkpointing import apply_ac

    torch.manual_seed(0)
    cfg = tiny_config(vocab_size=300, pad_token_id=0)
    cfg._attn_implementation = "sdpa"
    plain = Qwen2DecoderLayer(cfg, layer_idx=0)
    x = torch.randn(1, 12, cfg.hidden_size, requires_grad=True)
    pos = torch.arange(12)[None]
    rope = Qwen2RotaryEmbedding(cfg)(x, pos)
    weights = torch.linspace(-1, 1, x.numel()).view_as(x)

    def grads(block: torch.nn.Module) -> dict[str, torch.Tensor]:
        x.grad = None
        out = block(x, position_embeddings=rope, position_ids=pos, attention_mask=None)
        ((out[0] if isinstance(out, tuple) else out) * weights).sum().backward()
        named = {n.replace(WRAPPED, ""): p.grad.clone() for n, p in block.named_parameters()}
        return {"input": x.grad.clone(), **named}

    expected = grads(plain)
    policy = save_policy(hidden_size=cfg.hidden_size, intermediate_size=cfg.intermediate_size)
    block = apply_ac([copy.deepcopy(plain)], parse_ac("selective-op"), policy=policy)[0]
    assert isinstance(block, CheckpointWrapper)
    torch._dynamo.reset()
    counters.clear()
    block.compile(dynamic=True, backend="aot_eager")  # the partitioner without code generation
    got = grads(block)
    assert counters["stats"]["unique_graphs"] == 1 and not counters["graph_break"]
    for name, g in expected.items():
        torch.testing.assert_close(got[name], g, rtol=1e-6, atol=1e-7, msg=name)
    torch._dynamo.reset()


def _run(base_config: dict, output: Path, mode: str, compile: bool) -> tuple[dict, list[dict]]:
    """Gradients of one micro-batch, then the metrics of 3 optimizer steps."""
    cfg = {**base_config, "output": str(output), "max_pairs": 32, "max_steps": 3, "export": False}
    t = Trainer(TrainConfig(**cfg, activation_checkpointing=mode, compile=compile))
    try:
        t.setup()
        assert t.cfg.activation_checkpointing == mode and t.cfg.compile is compile  # recorded as run
        blocks = decoder_blocks(t.model)
        assert [isinstance(b, CheckpointWrapper) for b in blocks] == parse_ac(mode).checkpointed(len(blocks))
        assert all((b._compiled_call_impl is not None) is compile for b in blocks)
        mb = collate(t.train_data, list(range(6)), 1.0, t.pad_token_id)
        loss, _ = t.stepper.forward(mb)
        loss.backward()
        grads = {n.replace(WRAPPED, ""): p.grad.full_tensor().clone() for n, p in t.root.named_parameters()}
        t.optimizer.zero_grad(set_to_none=True)
        rows = []
        for _ in range(3):
            rows.append(t.train_step())
            t.step += 1
    finally:
        t.close()
    return grads, rows


def test_checkpointing_and_compile_train_like_the_plain_path(base_config: dict, tmp_path: Path) -> None:
    plain_grads, plain_rows = _run(base_config, tmp_path / "plain", "none", False)
    for mode, compile in (
        ("full", False),
        ("selective-op", False),
        ("selective-layer:2", False),
        ("selective-op", True),
    ):
        grads, rows = _run(base_config, tmp_path / f"{mode}-{compile}", mode, compile)
        assert grads.keys() == plain_grads.keys()
        # Recompute repeats the same fp32 ops. (On CPU the checkpointed block is not captured by
        # the compiler: the varlen attention's CPU path loops over segments, so dynamo runs the
        # checkpoint eagerly; the compiled policy is tested on a block above.)
        for name, g in plain_grads.items():
            torch.testing.assert_close(grads[name], g, rtol=1e-5, atol=1e-7, msg=f"{mode} {compile}: {name}")
        assert [r["loss"] for r in rows] == pytest.approx([r["loss"] for r in plain_rows], rel=1e-5, abs=1e-7)
        assert [r["grad_norm"] for r in rows] == pytest.approx([r["grad_norm"] for r in plain_rows], rel=1e-5)
