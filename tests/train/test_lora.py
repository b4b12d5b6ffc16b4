"""LoRA training (CPU, one process under FSDP2): learning, what trains, resume, merged export."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import torch.distributed.checkpoint as dcp
from safetensors.torch import load_file
from transformers import AutoModelForSequenceClassification

from rewardkit.api import RewardModel
from rewardkit.data.conversation import Conversation
from rewardkit.engine.batching import pack
from rewardkit.errors import ConfigError
from rewardkit.train import TrainConfig, Trainer, train
from rewardkit.train.config import load_config
from rewardkit.train.data import collate
from rewardkit.train.lora import LoraSettings, merge_state_dict
from rewardkit.train.metrics import read_metrics

pytest.importorskip("peft")

PROBES = [
    Conversation.from_prompt("q5000", "abcdeab"),
    Conversation.from_prompt("q5000", "vwxyzvw"),
    Conversation.from_prompt("another prompt", "ccc"),
]
LORA = {"lora_rank": 4, "lora_alpha": 8.0, "lr": 1e-2}


def is_adapter_or_head(name: str) -> bool:
    return ".lora_A.default." in name or ".lora_B.default." in name or name.startswith("model.score.")


@dataclass
class LoraRun:
    export: Path
    output: Path
    probe_rewards: list[float]
    params: dict[str, torch.Tensor]  # final weights, by name in the trainer's root module
    requires_grad: dict[str, bool]
    with_state: set[str]  # parameters that have AdamW state
    with_grad: set[str]  # parameters that got a gradient from one more backward
    plain: list[str]  # parameters FSDP2 did not shard


def full(p: torch.Tensor) -> torch.Tensor:
    return (p.full_tensor() if hasattr(p, "full_tensor") else p).detach().clone()


@pytest.fixture(scope="module")
def lora_run(fast_config, task: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> LoraRun:
    out = tmp_path_factory.mktemp("lora")
    cfg = TrainConfig(
        **fast_config(
            out,
            val_data=str(task["val"]),
            global_batch_size=16,
            max_steps=8,
            token_budget=512,
            weight_decay=0.0,
            **LORA,
        )
    )
    t = Trainer(cfg)
    try:
        t.setup()
        export = t.fit()
        params = {n: full(p) for n, p in t.root.named_parameters()}
        plain = [n for n, p in t.root.named_parameters() if not hasattr(p, "full_tensor")]
        names = {id(p): n for n, p in t.root.named_parameters()}
        with_state = {names[id(p)] for p in t.optimizer.state}
        mb = collate(t.train_data, [0, 1, 2], 1.0, t.pad_token_id)
        loss, _ = t.stepper.forward(mb)
        loss.backward()
        with_grad = {n for n, p in t.root.named_parameters() if p.grad is not None}
        t.optimizer.zero_grad(set_to_none=True)
        with torch.no_grad():
            ids = [t.chat.encode_one(c).ids for c in PROBES]
            rewards = t.root(pack(ids, t.pad_token_id)).tolist()
        requires_grad = {n: p.requires_grad for n, p in t.root.named_parameters()}
    finally:
        t.close()
    return LoraRun(
        export=export,
        output=out,
        probe_rewards=rewards,
        params=params,
        requires_grad=requires_grad,
        with_state=with_state,
        plain=plain,
        with_grad=with_grad,
    )


def test_lora_learns_the_task_held_out(lora_run: LoraRun) -> None:
    rows = read_metrics(lora_run.output)
    val = [r for r in rows if "val_accuracy" in r]
    assert val[-1]["step"] == 8 and val[-1]["val_pairs"] == 64
    assert val[-1]["val_accuracy"] >= 0.9
    losses = [r["loss"] for r in rows if "loss" in r]
    assert losses[-1] < losses[0]
    assert lora_run.probe_rewards[0] > lora_run.probe_rewards[1]


def test_only_adapters_and_head_train(lora_run: LoraRun) -> None:
    assert lora_run.plain == []  # every weight, frozen or not, is sharded by FSDP2
    trainable = {n for n, rg in lora_run.requires_grad.items() if rg}
    # 2 layers x 7 projections x (A, B) + head weight
    assert len(trainable) == 2 * 7 * 2 + 1
    assert trainable == {n for n in lora_run.params if is_adapter_or_head(n)}
    assert lora_run.with_state == trainable
    assert lora_run.with_grad == trainable


def test_base_weights_unchanged_and_adapters_moved(lora_run: LoraRun, tiny_lm_dir: Path) -> None:
    source = load_file(str(tiny_lm_dir / "model.safetensors"))
    frozen = {n: w for n, w in lora_run.params.items() if not is_adapter_or_head(n)}
    assert len(frozen) > 20
    for name, w in frozen.items():
        key = name.removeprefix("model.").replace(".base_layer.", ".")
        assert torch.equal(w, source[key]), name
    lora_b = [w for n, w in lora_run.params.items() if ".lora_B." in n]
    assert all(w.abs().max() > 0 for w in lora_b)  # peft initialises B to 0; training moved it


def test_export_is_merged_and_gives_the_trained_rewards(lora_run: LoraRun) -> None:
    saved = load_file(str(lora_run.export / "model.safetensors"))
    assert not any("lora_" in k or "base_layer" in k for k in saved)
    _, info = AutoModelForSequenceClassification.from_pretrained(lora_run.export, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    # The merge is W + (alpha / rank) * B @ A, as worked out here from the trained weights.
    p = lora_run.params
    pre = "model.model.layers.1.mlp.down_proj."
    want = (
        p[pre + "base_layer.weight"]
        + 2.0 * p[pre + "lora_B.default.weight"] @ p[pre + "lora_A.default.weight"]
    )
    assert torch.allclose(saved["model.layers.1.mlp.down_proj.weight"], want, atol=1e-6)
    rm = RewardModel.load(lora_run.export, device="cpu")
    assert rm.score(PROBES) == pytest.approx(lora_run.probe_rewards, abs=1e-5)


def test_merge_state_dict_by_hand() -> None:
    a = torch.tensor([[1.0, 2.0]])  # rank 1, in 2
    b = torch.tensor([[3.0], [-1.0]])  # out 2
    sd = {
        "l.q_proj.base_layer.weight": torch.eye(2),
        "l.q_proj.base_layer.bias": torch.tensor([5.0, 6.0]),
        "l.q_proj.lora_A.default.weight": a,
        "l.q_proj.lora_B.default.weight": b,
        "norm.weight": torch.ones(2),
    }
    out = merge_state_dict(sd, scaling=0.5)
    assert sorted(out) == ["l.q_proj.bias", "l.q_proj.weight", "norm.weight"]
    assert out["l.q_proj.weight"].tolist() == [[1 + 1.5, 3.0], [-0.5, 1 - 1.0]]
    assert out["l.q_proj.bias"].tolist() == [5.0, 6.0]
    assert LoraSettings(rank=8).scaling == 2.0 and LoraSettings(rank=8, alpha=4).scaling == 0.5


def test_lora_resume_continues_the_same_loss_curve(base_config: dict, cut_and_resumed) -> None:
    common = {**base_config, **LORA, "max_pairs": 32, "save_every": 2, "export": False}
    cut = cut_and_resumed(common)
    # The checkpoint holds the adapters, the head and their optimizer state, not the frozen base.
    meta = dcp.FileSystemReader(str(cut / "checkpoints" / "step-000002")).read_metadata()
    model_keys = [k.removeprefix("model.") for k in meta.state_dict_metadata if k.startswith("model.")]
    assert len(model_keys) == 2 * 7 * 2 + 1 and all(is_adapter_or_head(k) for k in model_keys)
    with pytest.raises(ConfigError, match=r"other LoRA settings \(lora_rank: checkpoint 4, now 8\)"):
        train({**common, "output": str(cut), "max_steps": 6, "resume": "latest", "lora_rank": 8})


def test_lora_options_are_validated(base_config: dict) -> None:
    c = load_config(
        flags={"model": "m", "data": "d", "output": "o"}, sets=["lora_target_modules=[q_proj,v_proj]"]
    )
    assert c.lora_target_modules == ("q_proj", "v_proj") and c.lora_rank == 0
    with pytest.raises(ConfigError) as e:
        TrainConfig.from_dict(
            {
                "model": "m",
                "data": "d",
                "output": "o",
                "lora_rank": -1,
                "lora_dropout": 1.0,
                "lora_target_modules": "q",
            }
        )
    msg = str(e.value)
    assert "lora_rank (--set lora_rank=...): must be 0 (full fine-tuning) or more, got -1" in msg
    assert "lora_dropout (--set lora_dropout=...): must be in [0, 1), got 1.0" in msg
    assert "lora_target_modules (--set lora_target_modules=...): must be a list of strings, got 'q'" in msg
    with pytest.raises(
        ConfigError, match=r"lora_target_modules .*has no linear layer named qkv_proj \(its linear"
    ):
        train({**base_config, "lora_rank": 2, "lora_target_modules": ["q_proj", "qkv_proj"], "max_steps": 1})


def test_lora_two_processes_match_one(base_config: dict, tmp_path: Path, train_one_and_two) -> None:
    """Under torchrun, rank 1 builds the model and its adapters on the meta device and receives its
    shards from rank 0; the run must equal one process's."""
    opts = {
        **base_config,
        **LORA,
        "max_pairs": 32,
        "max_steps": 2,
        "token_budget": 128,
        "save_every": 1,
    }
    one, two_out = train_one_and_two(opts)
    m1, m2 = read_metrics(tmp_path / "one"), read_metrics(two_out)
    assert [r["loss"] for r in m2] == pytest.approx([r["loss"] for r in m1], rel=1e-6, abs=1e-7)
    w1 = load_file(str(one / "model.safetensors"))
    w2 = load_file(str(two_out / "final" / "model.safetensors"))
    assert w1.keys() == w2.keys() and not any("lora_" in k for k in w2)
    assert max((w1[k] - w2[k]).abs().max().item() for k in w1) < 1e-5


@pytest.mark.gpu
def test_lora_learns_on_gpu_in_bf16(base_config: dict, task: dict[str, Path]) -> None:
    """The CUDA path: bf16 frozen base and fp32 adapters in the same FSDP2 groups, checkpointing."""
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    export = train(
        {
            **base_config,
            **LORA,
            "device": "cuda",
            "val_data": str(task["val"]),
            "global_batch_size": 16,
            "max_steps": 8,
        }
    )
    assert read_metrics(Path(base_config["output"]))[-1]["val_accuracy"] >= 0.9
    saved = load_file(str(export / "model.safetensors"))
    assert saved["score.weight"].dtype == torch.bfloat16 and not any("lora_" in k for k in saved)
