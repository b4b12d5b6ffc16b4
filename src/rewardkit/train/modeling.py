"""The model to train: a reward model to continue, or a causal LM given a fresh 1-output head."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import torch
from transformers import AutoConfig, AutoModelForSequenceClassification, PretrainedConfig

from rewardkit.engine.attention import VARLEN
from rewardkit.errors import ConfigError, ModelError

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class ModelSource:
    """Where weights come from (see `TrainConfig`)."""

    name: str
    revision: str | None = None
    trust_remote_code: bool = False


def reward_config(src: ModelSource, pad_token_id: int | None) -> PretrainedConfig:
    """The checkpoint's config as a 1-output ``*ForSequenceClassification`` config."""
    try:
        config = AutoConfig.from_pretrained(
            src.name, revision=src.revision, trust_remote_code=src.trust_remote_code
        )
    except (OSError, ValueError) as e:
        raise ModelError(f"cannot read the config of {src.name!r}: {e}") from e
    is_rm = any(a.endswith("ForSequenceClassification") for a in config.architectures or [])
    if is_rm and config.num_labels != 1:
        raise ConfigError(
            f"model (--model): {src.name!r} has a head with {config.num_labels} outputs; "
            "training continues only 1-output reward models (start from its causal LM instead)"
        )
    config.num_labels = 1
    if pad_token_id is not None:
        config.pad_token_id = pad_token_id
    return config


def init_head(head: torch.nn.Linear, hidden_size: int, seed: int) -> None:
    """Small random head, std 1/√D: initial rewards are O(1) whatever the width, so early BT
    gradients are neither saturated nor vanishing."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        head.weight.copy_(torch.randn(head.weight.shape, generator=g) / math.sqrt(hidden_size))
        if head.bias is not None:
            head.bias.zero_()


def load_reward_model(
    src: ModelSource, config: PretrainedConfig, *, materialize: bool, seed: int = 0
) -> torch.nn.Module:
    """Builds the ``*ForSequenceClassification`` in fp32 (the master weights).

    Args:
        src: where the weights are.
        config: from `reward_config`.
        materialize: load the weights (rank 0), or build on the meta device (other ranks, whose
            shards are filled from rank 0 after sharding: one copy of the model in host memory).
        seed: seed of a new head's initialisation.
    """
    if not materialize:
        with torch.device("meta"):
            model = AutoModelForSequenceClassification.from_config(
                config, dtype=torch.float32, trust_remote_code=src.trust_remote_code
            )
    else:
        try:
            model, info = AutoModelForSequenceClassification.from_pretrained(
                src.name,
                config=config,
                revision=src.revision,
                dtype=torch.float32,
                use_safetensors=True,
                trust_remote_code=src.trust_remote_code,
                output_loading_info=True,
            )
        except (OSError, ValueError) as e:
            raise ModelError(f"cannot load {src.name!r} (safetensors weights only): {e}") from e
        if not isinstance(getattr(model, "score", None), torch.nn.Linear):
            raise ModelError(f"{type(model).__name__} has no linear 'score' head")
        if any(k.split(".")[0] == "score" for k in info.get("missing_keys", ())):
            log.info("%s: new reward head (std 1/sqrt(%d))", src.name, config.hidden_size)
            init_head(model.score, config.hidden_size, seed)
    # Training always runs the packed varlen path; set it on the config so that activation
    # checkpointing recomputes a block with the same attention function as its forward.
    model.config._attn_implementation = VARLEN
    return model


def matmul_params(model: torch.nn.Module) -> int:
    """Parameters that take part in matmuls (everything but the input embedding): the ``N`` of
    the ``6·N`` training FLOPs per token."""
    emb = model.get_input_embeddings()
    skip = {id(p) for p in emb.parameters()} if emb is not None else set()
    return sum(p.numel() for p in model.parameters() if id(p) not in skip)
