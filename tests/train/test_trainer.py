"""End-to-end training on CPU (one process): learning, parameter updates, resume, export."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoConfig

from rewardkit import cli
from rewardkit.api import RewardModel
from rewardkit.data.conversation import Conversation
from rewardkit.engine.batching import pack
from rewardkit.train import TrainConfig, Trainer, train
from rewardkit.train.metrics import peak_tflops, read_metrics

PROBES = [
    Conversation.from_prompt("q5000", "abcdeab"),
    Conversation.from_prompt("q5000", "vwxyzvw"),
    Conversation.from_prompt("another prompt", "ccc"),
]


@dataclass
class Trained:
    export: Path
    output: Path
    probe_rewards: list[float]


@pytest.fixture(scope="module")
def trained(fast_config, task: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Trained:
    """A causal LM trained on the generated task; rewards of PROBES from the live (sharded) model."""
    out = tmp_path_factory.mktemp("trained")
    cfg = TrainConfig(
        **fast_config(
            out,
            val_data=str(task["val"]),
            global_batch_size=16,
            max_steps=6,
            token_budget=512,
            eval_every=3,
        )
    )
    t = Trainer(cfg)
    try:
        t.setup()
        export = t.fit()
        with torch.no_grad():
            ids = [t.chat.encode_one(c).ids for c in PROBES]
            rewards = t.root(pack(ids, t.pad_token_id)).tolist()
    finally:
        t.close()
    return Trained(export=export, output=out, probe_rewards=rewards)


def test_learns_the_task_held_out(trained: Trained) -> None:
    rows = read_metrics(trained.output)
    val = [r for r in rows if "val_accuracy" in r]
    assert [r["step"] for r in val] == [3, 6]
    assert val[-1]["val_pairs"] == 64
    assert val[-1]["val_accuracy"] >= 0.95
    train_rows = [r for r in rows if "loss" in r]
    assert [r["step"] for r in train_rows] == list(range(1, 7))
    assert train_rows[-1]["loss"] < train_rows[0]["loss"]
    assert all(r["pairs"] == 16 and r["tokens"] > 0 and r["tokens_per_s_per_gpu"] > 0 for r in train_rows)
    assert "mfu" not in train_rows[0]  # no known peak FLOP/s on a CPU
    assert "peak_memory_gib" not in train_rows[0]  # GPU memory only


def test_export_is_a_reward_model_with_the_same_rewards(trained: Trained) -> None:
    config = AutoConfig.from_pretrained(trained.export)
    assert config.num_labels == 1 and config.architectures == ["Qwen2ForSequenceClassification"]
    assert (trained.export / "model.safetensors").is_file()
    rm = RewardModel.load(trained.export, device="cpu")
    assert rm.tokenizer.chat_template  # the template travels with the model
    # fp32 throughout; packed varlen vs the loader's path differ only by float summation order.
    assert rm.score(PROBES) == pytest.approx(trained.probe_rewards, abs=1e-5)
    assert trained.probe_rewards[0] > trained.probe_rewards[1]  # it learned a-e over v-z


def test_rewardkit_score_reads_the_export(trained: Trained, capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main(
        [
            "score",
            "--model",
            str(trained.export),
            "--device",
            "cpu",
            "--prompt",
            "q5000",
            "--response",
            "abcdeab",
            "--response",
            "vwxyzvw",
        ]
    )
    assert code == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["reward"] for r in rows] == pytest.approx(trained.probe_rewards[:2], abs=1e-5)


def test_tensorboard_required_but_missing(base_config: dict) -> None:
    import importlib.util

    from rewardkit.errors import ConfigError

    if importlib.util.find_spec("tensorboard") is not None:
        pytest.skip("tensorboard is installed")
    with pytest.raises(
        ConfigError, match=r"tensorboard \(--set tensorboard=...\): TensorBoard is not installed"
    ):
        train({**base_config, "tensorboard": True, "max_steps": 1})


@pytest.mark.gpu
def test_learns_on_gpu_in_bf16(base_config: dict, task: dict[str, Path]) -> None:
    """The CUDA path: NCCL world of one, bf16 mixed precision, activation checkpointing, varlen_attn."""
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    out = Path(base_config["output"])
    export = train(
        {
            **base_config,
            "device": "cuda",
            "val_data": str(task["val"]),
            "global_batch_size": 16,
            "max_steps": 6,
        }
    )
    rows = read_metrics(out)
    assert rows[-1]["val_accuracy"] >= 0.95
    if peak_tflops(torch.device("cuda")) is not None:  # a card in the peak table
        assert 0 < rows[0]["mfu"] < 1
    peak_bytes = rows[0]["peak_memory_gib"] * 2**30  # the most any rank had allocated in the step
    assert 0 < peak_bytes <= torch.cuda.get_device_properties(0).total_memory
    assert load_file(str(export / "model.safetensors"))["score.weight"].dtype == torch.bfloat16
