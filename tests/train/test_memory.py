"""The memory plan against the peaks measured on GPUs (docs/performance.md, docs/training.md), and
the ``auto`` checkpointing choice made from it."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForSequenceClassification, Qwen2Config

from rewardkit.train.activation_checkpointing import ACMode, parse_ac
from rewardkit.train.memory import (
    Shapes,
    activation_bytes,
    candidates,
    choose_ac,
    largest_fitting,
    plan_memory,
    step_cost,
)

# Qwen2.5 shapes (hidden, intermediate, layers, heads, kv heads, vocabulary).
QWEN = {"7b": (3584, 18944, 28, 28, 4, 152064), "32b": (5120, 27648, 64, 40, 8, 152064)}


def shapes(size: str, lora_rank: int = 0) -> Shapes:
    h, i, n, heads, kv, v = QWEN[size]
    cfg = Qwen2Config(
        hidden_size=h,
        intermediate_size=i,
        num_hidden_layers=n,
        num_attention_heads=heads,
        num_key_value_heads=kv,
        vocab_size=v,
        num_labels=1,
        tie_word_embeddings=False,
    )
    with torch.device("meta"):
        model = AutoModelForSequenceClassification.from_config(cfg)
    return Shapes.of(model, lora_rank=lora_rank)


@pytest.fixture(scope="module")
def qwen7b() -> Shapes:
    return shapes("7b")


def test_shapes_count_the_reward_model(qwen7b: Shapes) -> None:
    # Qwen2.5-7B-Instruct has 7.62B parameters; its 0.545B LM head becomes a 3584-weight head.
    assert qwen7b.params == 7_615_616_512 - 544_997_376 + 3584
    assert qwen7b.embedding == 544_997_376 and qwen7b.layers == 28
    assert qwen7b.layer == 233_057_792
    assert qwen7b.trainable == qwen7b.params


# Peaks measured on H200s (max_memory_allocated, 16,384-token micro-batches, foreach AdamW), from
# docs/performance.md and docs/training.md: (size, GPUs, LoRA rank, mode, compiled, GiB).
MEASURED = [
    ("7b", 2, 0, "full", False, 66.1),
    ("7b", 2, 0, "full", True, 66.1),
    ("7b", 2, 0, "none", True, 123.2),
    ("7b", 4, 0, "none", True, 94.1),
    ("32b", 4, 16, "full", False, 34.7),
]


@pytest.mark.parametrize(("size", "world", "rank", "mode", "compiled", "measured"), MEASURED)
def test_plan_predicts_the_measured_peaks(
    size: str, world: int, rank: int, mode: str, compiled: bool, measured: float
) -> None:
    plan = plan_memory(
        shapes(size, rank),
        world_size=world,
        tokens=16384,
        ac=parse_ac(mode),
        compiled=compiled,
        fused_optimizer=False,
    )
    # ``auto`` relies on the plan not falling short; a plan far above wastes speed.
    assert measured * 0.98 <= plan.total <= measured * 1.08, plan.columns()


def test_fused_adamw_removes_the_optimizer_peak(qwen7b: Shapes) -> None:
    kw = {"world_size": 2, "tokens": 16384, "ac": ACMode("full")}
    foreach, fused = plan_memory(qwen7b, fused_optimizer=False, **kw), plan_memory(qwen7b, **kw)
    assert foreach.optimizer_step == pytest.approx(4 * qwen7b.params / 2 / 2**30)
    assert fused.optimizer_step == 0 and fused.total < foreach.total - 1


def test_activations_order_the_modes(qwen7b: Shapes) -> None:
    kept = {m: activation_bytes(qwen7b, m, compiled=False) for m in ("none", "selective-op", "full")}
    assert kept["none"] > kept["selective-op"] > kept["full"] == 2 * 3584
    assert activation_bytes(qwen7b, "none", compiled=True) < kept["none"]
    by_layers = [
        plan_memory(qwen7b, world_size=2, tokens=8192, ac=ACMode("selective-layer", n)).activations
        for n in (2, 4, 14)
    ]
    assert by_layers == sorted(by_layers)  # fewer checkpointed blocks, more memory


def test_candidates_cheapest_recompute_first() -> None:
    modes = [str(m) for m in candidates(28)]
    assert modes[0] == "none" and modes[-1] == "full"
    assert modes.index("selective-op") < modes.index("selective-layer:4") < modes.index("selective-layer:2")
    assert len(modes) == len(set(modes))


@pytest.mark.parametrize(
    ("budget", "tokens", "compiled", "expected", "fits"),
    [
        (135.8, 16384, True, "none", True),  # an H200: no checkpointing fits compiled
        (135.8, 16384, False, "selective-op", True),  # eager keeps more: per-op selective
        (75.6, 16384, True, "full", True),  # an 80 GB card: only full checkpointing
        (75.6, 6144, True, "selective-op", True),  # ... unless micro-batches are smaller
        (40.0, 16384, True, "full", False),  # nothing fits: full, flagged
    ],
)
def test_auto_chooses_the_fastest_mode_that_fits(
    qwen7b: Shapes, budget: float, tokens: int, compiled: bool, expected: str, fits: bool
) -> None:
    choice = choose_ac(qwen7b, world_size=2, tokens=tokens, budget_gib=budget, compiled=compiled)
    assert (str(choice.mode), choice.fits) == (expected, fits)
    assert (choice.plan.total <= budget) == fits
    assert choice.to_dict()["activation_checkpointing"] == expected


def test_auto_lowers_the_micro_batch_when_less_recompute_is_faster(qwen7b: Shapes) -> None:
    """On an 80 GB card, 7B on 2 GPUs: per-op selective checkpointing fits only with micro-batches
    of ~6.7k tokens; with the per-micro-batch cost counted, that beats full checkpointing at 16k
    (measured: 46.6% against 43.7% MFU, docs/training.md). The choice is the largest micro-batch
    that fits, never shorter than the longest pair, and the run records both sizes."""
    kw = {"world_size": 2, "budget_gib": 75.6, "compiled": True}
    choice = choose_ac(qwen7b, tokens=16384, longest=6035, **kw)
    assert str(choice.mode) == "selective-op" and choice.fits
    assert 6035 <= choice.tokens < 16384
    assert choice.plan.total <= 75.6
    over = plan_memory(qwen7b, world_size=2, tokens=choice.tokens + 1, ac=choice.mode, compiled=True)
    assert over.total > 75.6  # the largest that fits
    full = ACMode("full")
    assert step_cost(choice.mode, 28, choice.tokens) < step_cost(full, 28, 16384)
    recorded = choice.to_dict()
    assert (recorded["micro_batch_tokens"], recorded["token_budget"]) == (choice.tokens, 16384)
    # Pairs longer than that: nothing with less recompute fits at the longest pair, so full at 16k.
    assert str(choose_ac(qwen7b, tokens=16384, longest=12000, **kw).mode) == "full"
    # A 141 GB card keeps the budget asked for: nothing to trade.
    h200 = choose_ac(qwen7b, tokens=16384, longest=6035, world_size=2, budget_gib=135.8, compiled=True)
    assert (str(h200.mode), h200.tokens) == ("none", 16384)
    # Without the longest pair the micro-batch is not lowered (the plan is for the budget asked for).
    assert choose_ac(qwen7b, tokens=16384, **kw).tokens == 16384


def test_largest_fitting() -> None:
    assert largest_fitting(lambda n: n <= 700, 100, 1000) == 700
    assert largest_fitting(lambda n: n <= 5000, 100, 1000) == 1000
    assert largest_fitting(lambda n: n <= 50, 100, 1000) is None
    assert largest_fitting(lambda n: True, 7, 7) == 7


def test_auto_keeps_adamw_moments_on_the_host_where_that_fits_larger_micro_batches(qwen7b: Shapes) -> None:
    """On an 80 GB card, 7B on 2 GPUs: with the moments (26.3 GiB) on the host between steps,
    selective-op fits 15,746-token micro-batches instead of 6,744 (measured in one call: 50.9% MFU
    at 74.5 GiB against 47.2% at 74.7, docs/training.md). The moments count at the step only; a
    141 GB card has nothing to gain and keeps them on the GPU."""
    kw = {"world_size": 2, "budget_gib": 75.6, "compiled": True, "longest": 6035, "tokens": 16384}
    auto = choose_ac(qwen7b, host_moments=None, **kw)
    on_gpu = choose_ac(qwen7b, host_moments=False, **kw)
    assert (str(auto.mode), auto.tokens, auto.plan.host_moments) == ("selective-op", 15746, True)
    assert (str(on_gpu.mode), on_gpu.tokens, on_gpu.plan.host_moments) == ("selective-op", 6744, False)
    assert step_cost(auto.mode, 28, auto.tokens, host_moments=True) < step_cost(
        on_gpu.mode, 28, on_gpu.tokens
    )
    p = auto.plan
    step = p.adamw + max(p.end_of_backward, p.optimizer_step)
    assert p.total == pytest.approx(p.master + p.grads + max(p.fsdp_working + p.activations, step))
    assert p.total <= 75.6
    over = plan_memory(
        qwen7b, world_size=2, tokens=auto.tokens + 1, ac=auto.mode, compiled=True, host_moments=True
    )
    assert over.total > 75.6
    recorded = auto.to_dict()
    assert recorded["offload_optimizer"] is True and recorded["adamw_on_host"] is True
    h200 = choose_ac(qwen7b, **{**kw, "budget_gib": 135.8}, host_moments=None)
    assert (str(h200.mode), h200.tokens, h200.plan.host_moments) == ("none", 16384, False)
    # Asked for: the moments stay where the option puts them.
    assert choose_ac(qwen7b, **{**kw, "budget_gib": 135.8}, host_moments=True).plan.host_moments


def test_auto_offloads_only_where_the_host_has_the_memory(
    qwen7b: Shapes, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every local rank's moments (26.3 GiB each, 7B on 2 GPUs) must fit in half the memory the
    host has available; where that is not known, they stay on the GPU."""
    from rewardkit.train import build

    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    for available, room in ((100.0, False), (120.0, True), (None, False)):
        monkeypatch.setattr(build, "host_available_gib", lambda a=available: a)
        assert build.host_has_room(qwen7b, 2) is room
