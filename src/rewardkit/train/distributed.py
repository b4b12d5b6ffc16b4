"""FSDP2 sharding of a ``*ForSequenceClassification`` reward model for training (the process
group itself is joined through `rewardkit.distributed`)."""

from __future__ import annotations

import logging

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

from rewardkit.engine.batching import PackedBatch
from rewardkit.engine.engine import packed_rewards
from rewardkit.errors import ModelError

log = logging.getLogger(__name__)


class PairRewards(nn.Module):
    """The training forward: a packed stream → one reward per sequence, through the engine's
    `packed_rewards` (the path scoring uses). FSDP2's root is this module, so its hooks gather the
    embedding, final norm and head that `packed_rewards` reads directly."""

    def __init__(self, model: nn.Module, *, output_index: int = 0) -> None:
        super().__init__()
        self.model = model
        self.output_index = output_index

    def forward(self, batch: PackedBatch) -> torch.Tensor:
        r = packed_rewards(self.model, batch, output_index=self.output_index, head_dtype=torch.float32)
        return r.clone()  # (B,) fp32; a fresh tensor, not a view, for FSDP's backward hook


def decoder_layers(model: nn.Module) -> list[nn.Module]:
    """The repeated blocks of a HF model: modules whose class HF lists in ``_no_split_modules``."""
    names = set(getattr(model, "_no_split_modules", None) or ())
    return [m for m in model.modules() if type(m).__name__ in names]


def shard_model(
    root: nn.Module,
    model: nn.Module,
    *,
    device: torch.device,
    param_dtype: torch.dtype | None = None,
    reduce_dtype: torch.dtype = torch.float32,
) -> int:
    """Applies FSDP2 ``fully_shard`` to every decoder layer of ``model``, then to ``root``.

    Each layer becomes one all-gather/reduce-scatter unit, so only one layer's full weights live on
    a device at a time (plus the root's: embedding, final norm, head); parameters, gradients and
    optimizer state are sharded over all ranks. Gradients are averaged over ranks.

    Args:
        root: the module whose forward training calls (`PairRewards`), holding ``model``.
        model: the HF ``*ForSequenceClassification`` inside ``root``.
        device: where this rank computes (CPU with gloo, or its GPU); parameters move there.
        param_dtype: compute dtype of gathered weights (``torch.bfloat16`` for mixed precision;
            ``None`` computes in the stored dtype).
        reduce_dtype: dtype of the gradient reduce-scatter.

    Returns:
        The number of decoder layers sharded.

    Raises:
        ModelError: no decoder layer was found, so nothing would be sharded per layer.
    """
    mesh = init_device_mesh(device.type, (dist.get_world_size(),))
    mp = MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=reduce_dtype)
    layers = decoder_layers(model)
    if not layers:
        raise ModelError(
            f"{type(model).__name__}: found no decoder layers to shard (none of the classes in its "
            f"_no_split_modules={getattr(model, '_no_split_modules', None)!r})"
        )
    for layer in layers:
        fully_shard(layer, mesh=mesh, mp_policy=mp)
    # The root keeps its parameters gathered after forward: backward needs them at once.
    fully_shard(root, mesh=mesh, mp_policy=mp, reshard_after_forward=False)
    log.info("FSDP2: sharded %d decoder layers + root over %d rank(s)", len(layers), dist.get_world_size())
    return len(layers)


def broadcast_buffers(module: nn.Module) -> None:
    """Copies rank 0's buffers (e.g. rotary ``inv_freq``, not in any state dict) to every rank."""
    for buf in module.buffers():
        dist.broadcast(buf, src=0)
