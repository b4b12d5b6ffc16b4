"""`parallelize`: LoRA → activation checkpointing → compile → FSDP2 → weights, on one CPU rank."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import CheckpointWrapper
from torch.distributed.fsdp import FSDPModule
from transformers import AutoModelForSequenceClassification

from rewardkit.distributed import join, leave
from rewardkit.errors import ModelError
from rewardkit.models.tiny import tiny_config
from rewardkit.train.activation_checkpointing import parse_ac, unwrap
from rewardkit.train.lora import LoraSettings
from rewardkit.train.parallelize import decoder_blocks, parallelize


@pytest.fixture(scope="module", autouse=True)
def world_of_one() -> Iterator[None]:
    env = join("cpu")
    yield
    leave(env)


def tiny(layers: int = 4) -> torch.nn.Module:
    torch.manual_seed(0)
    cfg = tiny_config(vocab_size=300, pad_token_id=0, num_labels=1, layers=layers)
    return AutoModelForSequenceClassification.from_config(cfg, dtype=torch.float32)


def test_blocks_are_checkpointed_sharded_and_keep_their_names() -> None:
    model = tiny()
    names = set(model.state_dict())
    layer = type(decoder_blocks(model)[0])
    root = parallelize(model, device=torch.device("cpu"), ac=parse_ac("selective-layer:2"))
    blocks = decoder_blocks(model)
    assert [isinstance(b, CheckpointWrapper) for b in blocks] == [False, True, False, True]
    assert all(isinstance(b, FSDPModule) for b in blocks) and isinstance(root, FSDPModule)
    assert all(isinstance(unwrap(b), layer) for b in blocks)
    # Checkpoints and exports see the HF names, not the wrapper's.
    assert {k.removeprefix("model.") for k in root.state_dict()} == names


def test_lora_is_applied_before_checkpointing_and_sharding() -> None:
    pytest.importorskip("peft")
    model = tiny(layers=2)
    root = parallelize(
        model,
        device=torch.device("cpu"),
        ac=parse_ac("full"),
        lora=LoraSettings(rank=4, target_modules=("q_proj",)),
    )
    trainable = sorted(
        n.replace("_checkpoint_wrapped_module.", "") for n, p in root.named_parameters() if p.requires_grad
    )
    assert trainable == [
        "model.model.layers.0.self_attn.q_proj.lora_A.default.weight",
        "model.model.layers.0.self_attn.q_proj.lora_B.default.weight",
        "model.model.layers.1.self_attn.q_proj.lora_A.default.weight",
        "model.model.layers.1.self_attn.q_proj.lora_B.default.weight",
        "model.score.weight",
    ]
    assert all(isinstance(b, CheckpointWrapper) and isinstance(b, FSDPModule) for b in decoder_blocks(model))


def test_raises_when_nothing_would_be_sharded() -> None:
    model = tiny(layers=2)
    model._no_split_modules = ["NoSuchLayer"]
    with pytest.raises(ModelError, match="found no decoder layers to shard"):
        parallelize(model, device=torch.device("cpu"), ac=parse_ac("none"))
