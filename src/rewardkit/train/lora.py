"""LoRA fine-tuning of a reward model: low-rank adapters (peft) on the decoder's projections, a
fully trainable reward head, frozen base weights.

The adapters are injected into the ``*ForSequenceClassification`` in place (its class and module
names stay those of the HF model, so the engine's `packed_rewards` runs it unchanged) before FSDP2
shards it. Only the adapters and the head require gradients, so only they get gradients,
optimizer state and checkpoint entries; the frozen base is re-read from the model source on
resume. The export merges each adapter into its weight, ``W + (alpha / rank) · B·A``, and writes
a plain reward model.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import ModuleType

import torch
from torch import nn

from rewardkit.errors import ConfigError

log = logging.getLogger(__name__)

# The attention and MLP projections of Llama/Qwen/Mistral-style decoders.
DEFAULT_TARGET_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
HEAD = "score"
_ADAPTER = "default"
_LORA_KEY = re.compile(rf"^(?P<module>.+)\.lora_(?P<ab>[AB])\.{_ADAPTER}\.weight$")


@dataclass(frozen=True, kw_only=True)
class LoraSettings:
    """The adapter's shape (see `rewardkit.train.TrainConfig`'s ``lora_*`` options).

    Args:
        rank: rank ``r`` of each adapter (``B·A`` with ``A``: r × in, ``B``: out × r).
        alpha: the adapter's output is scaled by ``alpha / rank``; default ``2 · rank``.
        dropout: dropout on the adapter's input.
        target_modules: names (last component) of the linear layers that get adapters.
    """

    rank: int
    alpha: float | None = None
    dropout: float = 0.0
    target_modules: Sequence[str] = DEFAULT_TARGET_MODULES

    @property
    def scaling(self) -> float:
        return (self.alpha if self.alpha is not None else 2.0 * self.rank) / self.rank


def _import_peft() -> ModuleType:
    try:
        import peft
    except ImportError as e:
        raise ConfigError(
            "lora_rank (--set lora_rank=...): LoRA needs peft; pip install 'rewardkit[train]' (or peft)"
        ) from e
    return peft


def apply_lora(model: nn.Module, settings: LoraSettings, *, frozen_dtype: torch.dtype | None = None) -> int:
    """Injects LoRA adapters into ``model`` in place and freezes everything but them and the head.

    Call it before sharding. On a model built on the meta device, call it under
    ``torch.device("meta")``: the adapters are then filled from rank 0 like the other weights.

    Args:
        model: a HF ``*ForSequenceClassification`` with a linear ``score`` head.
        settings: rank, alpha, dropout and target modules.
        frozen_dtype: store the frozen base weights in this dtype (``torch.bfloat16`` under bf16
            mixed precision: they are never updated, so an fp32 master copy would only cost memory).

    Returns:
        The number of trainable parameters (adapters + head).

    Raises:
        ConfigError: none of ``target_modules`` is a linear layer of the model.
    """
    peft = _import_peft()
    targets = list(settings.target_modules)
    linear = {n.rpartition(".")[2] for n, m in model.named_modules() if isinstance(m, nn.Linear)}
    missing = [t for t in targets if t not in linear]
    if missing:
        raise ConfigError(
            f"lora_target_modules (--set lora_target_modules=[...]): {type(model).__name__} has no linear "
            f"layer named {', '.join(missing)} (its linear layers: {', '.join(sorted(linear))})"
        )
    if HEAD in targets:
        raise ConfigError(
            "lora_target_modules (--set lora_target_modules=[...]): the reward head 'score' is always "
            "fully trained; remove it from the list"
        )
    config = peft.LoraConfig(
        r=settings.rank,
        lora_alpha=settings.alpha if settings.alpha is not None else 2.0 * settings.rank,
        lora_dropout=settings.dropout,
        target_modules=targets,
        bias="none",
    )
    peft.inject_adapter_in_model(config, model, adapter_name=_ADAPTER)
    trainable = 0
    for name, p in model.named_parameters():
        train = is_trainable_name(name)
        p.requires_grad_(train)
        if train:
            trainable += p.numel()
        elif frozen_dtype is not None and p.dtype != frozen_dtype:
            p.data = p.data.to(frozen_dtype)
    total = sum(p.numel() for p in model.parameters())
    log.info(
        "LoRA rank %d (alpha/rank %.3g) on %s: %s trainable parameters of %s (%.2f%%)",
        settings.rank,
        settings.scaling,
        ",".join(targets),
        f"{trainable:,}",
        f"{total:,}",
        100 * trainable / total,
    )
    return trainable


def is_trainable_name(name: str) -> bool:
    """Adapter weights and the reward head train; everything else is frozen."""
    return ".lora_A." in name or ".lora_B." in name or name.split(".")[0] == HEAD


def trainable_parameters(module: nn.Module) -> list[nn.Parameter]:
    return [p for p in module.parameters() if p.requires_grad]


def merge_state_dict(state: Mapping[str, torch.Tensor], scaling: float) -> dict[str, torch.Tensor]:
    """A plain model's state dict from a LoRA model's: ``m.base_layer.weight`` + ``scaling ·
    m.lora_B @ m.lora_A`` (computed in fp32) becomes ``m.weight``; ``m.base_layer.bias`` becomes
    ``m.bias``; the adapter entries disappear."""
    adapters: dict[str, dict[str, torch.Tensor]] = {}
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if m := _LORA_KEY.match(key):
            adapters.setdefault(m.group("module"), {})[m.group("ab")] = value
        else:
            out[key.replace(".base_layer.", ".")] = value
    for module, ab in adapters.items():
        key = f"{module}.weight"
        w = out[key]
        delta = ab["B"].float() @ ab["A"].float()
        out[key] = (w.float() + scaling * delta).to(w.dtype)
    return out


def flop_params(model: nn.Module, matmul_params: int) -> float:
    """``N`` for `rewardkit.train.metrics.FlopCounter`'s ``6·N`` per token under LoRA: frozen
    weights take no weight gradient (forward 2 + input gradient 2 = 4 FLOPs per parameter and
    token), trainable ones the full 6; so ``N = (4·N_frozen + 6·N_trainable) / 6``."""
    emb = model.get_input_embeddings()
    skip = {id(p) for p in emb.parameters()} if emb is not None else set()
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad and id(p) not in skip)
    frozen = matmul_params - trainable
    return (4 * frozen + 6 * trainable) / 6
