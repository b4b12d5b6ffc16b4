"""How a reward model is made ready for training on one or many ranks: `parallelize` applies LoRA,
activation checkpointing, ``torch.compile`` and FSDP2 to the decoder blocks, in that order, then
fills the shards with rank 0's weights. The process group itself is joined through
`rewardkit.distributed`.
"""

from __future__ import annotations

import contextlib
import itertools
import logging

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

from rewardkit.engine.batching import PackedBatch
from rewardkit.engine.engine import packed_rewards, set_compiled
from rewardkit.errors import ModelError
from rewardkit.train.activation_checkpointing import ACMode, apply_ac, save_policy, unwrap
from rewardkit.train.checkpoint import load_full_weights
from rewardkit.train.lora import LoraSettings, apply_lora

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


def _block_slots(model: nn.Module) -> list[tuple[nn.Module, str]]:
    """(parent, attribute) of each decoder block: where a wrapper replaces it."""
    names = set(getattr(model, "_no_split_modules", None) or ())
    modules = dict(model.named_modules())
    slots = []
    for qualified, m in modules.items():
        parent_name, _, attr = qualified.rpartition(".")
        parent = modules[parent_name]
        # By class, or a class it derives from: FSDP2 subclasses each module it shards.
        is_block = any(c.__name__ in names for c in type(unwrap(m)).__mro__)
        if qualified and is_block and unwrap(parent) is parent:
            slots.append((parent, attr))
    return slots


def decoder_blocks(model: nn.Module) -> list[nn.Module]:
    """The repeated blocks of a HF model as they sit in it: each decoder layer (a module whose
    class HF lists in ``_no_split_modules``), or the activation-checkpointing wrapper around it."""
    return [getattr(parent, attr) for parent, attr in _block_slots(model)]


def shard_model(
    root: nn.Module,
    model: nn.Module,
    *,
    device: torch.device,
    param_dtype: torch.dtype | None = None,
    reduce_dtype: torch.dtype = torch.float32,
) -> int:
    """Applies FSDP2 ``fully_shard`` to every decoder block of ``model``, then to ``root``.

    Each block becomes one all-gather/reduce-scatter unit, so only about one block's full weights
    live on a device at a time (plus the root's: embedding, final norm, head); parameters,
    gradients and optimizer state are sharded over all ranks. Gradients are averaged over ranks.

    Communication overlaps compute: each block's forward starts gathering the next block's
    weights (and the root the first block's), and backward gathers the previous block's while it
    computes (FSDP2's implicit prefetch). The last block and the root keep their weights gathered
    after forward, since backward needs them first.

    Args:
        root: the module whose forward training calls (`PairRewards`), holding ``model``.
        model: the HF ``*ForSequenceClassification`` inside ``root``.
        device: where this rank computes (CPU with gloo, or its GPU); parameters move there.
        param_dtype: compute dtype of gathered weights (``torch.bfloat16`` for mixed precision;
            ``None`` computes in the stored dtype).
        reduce_dtype: dtype of the gradient reduce-scatter.

    Returns:
        The number of decoder blocks sharded.

    Raises:
        ModelError: no decoder block was found, so nothing would be sharded per block.
    """
    mesh = init_device_mesh(device.type, (dist.get_world_size(),))
    mp = MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=reduce_dtype)
    blocks = decoder_blocks(model)
    if not blocks:
        raise ModelError(
            f"{type(model).__name__}: found no decoder layers to shard (none of the classes in its "
            f"_no_split_modules={getattr(model, '_no_split_modules', None)!r})"
        )
    for k, block in enumerate(blocks):
        fully_shard(block, mesh=mesh, mp_policy=mp, reshard_after_forward=k < len(blocks) - 1)
    fully_shard(root, mesh=mesh, mp_policy=mp, reshard_after_forward=False)
    for before, after in itertools.pairwise([root, *blocks]):  # all FSDPModules now
        before.set_modules_to_forward_prefetch([after])  # type: ignore[operator]
    log.info("FSDP2: sharded %d decoder blocks + root over %d rank(s)", len(blocks), dist.get_world_size())
    return len(blocks)


def parallelize(
    model: nn.Module,
    *,
    device: torch.device,
    ac: ACMode,
    compile: bool = False,
    lora: LoraSettings | None = None,
    param_dtype: torch.dtype | None = None,
    reduce_dtype: torch.dtype = torch.float32,
) -> PairRewards:
    """Makes ``model`` ready to train on this rank; returns the module training calls.

    Steps, in order (each needs the one before):

    1. LoRA (``lora``): adapters injected into the decoder's projections, the base frozen (in
       ``param_dtype`` when given), so that FSDP2 sees which weights train.
    2. Activation checkpointing (``ac``, `rewardkit.train.activation_checkpointing`): the
       checkpointed blocks are wrapped.
    3. ``torch.compile`` of each block (``compile``), wrapper included, so the compiled region
       holds the checkpoint and its recompute policy.
    4. FSDP2 (`shard_model`): each block, then the root (`PairRewards`).
    5. Weights: the ranks that built ``model`` on the meta device allocate their shards; when
       rank 0 holds real weights, every rank receives its shards of them (and rank 0's buffers).
       Models built on the meta device everywhere are left allocated but unfilled.

    Args:
        model: a HF ``*ForSequenceClassification``, with real weights on rank 0 (or on every rank
            of a world of one), or on the meta device.
        device: this rank's device.
        ac: the resolved activation-checkpointing mode.
        compile: compile each decoder block.
        lora: train LoRA adapters (and the head) instead of every weight.
        param_dtype: compute dtype of gathered weights (bf16 mixed precision) or None.
        reduce_dtype: dtype of the gradient reduce-scatter (fp32; bf16 halves its traffic but
            rounds every micro-batch's summed gradient to bf16).

    Raises:
        ModelError: nothing was sharded (no decoder blocks found).
    """
    rank, world = dist.get_rank(), dist.get_world_size()
    on_meta = any(p.is_meta for p in model.parameters())
    # 1. LoRA, before anything wraps or shards the projections.
    if lora is not None:
        with torch.device("meta") if on_meta else contextlib.nullcontext():
            apply_lora(model, lora, frozen_dtype=param_dtype)
    # 2. Activation checkpointing.
    slots = _block_slots(model)
    policy = save_policy(
        hidden_size=model.config.hidden_size, intermediate_size=model.config.intermediate_size
    )
    wrapped = apply_ac([getattr(p, a) for p, a in slots], ac, policy=policy)
    for (parent, attr), block in zip(slots, wrapped, strict=True):
        parent.register_module(attr, block)
    # 3. Compile each block, checkpoint wrapper included.
    if compile:
        set_compiled(model, True)
    # 4. FSDP2.
    root = PairRewards(model)
    full = root.state_dict() if world > 1 and rank == 0 and not on_meta else None
    shard_model(
        root,
        model,
        device=device,
        param_dtype=param_dtype,
        reduce_dtype=reduce_dtype,
    )
    # 5. Weights.
    if on_meta:
        root.to_empty(device=device)
    if world > 1:
        real = torch.tensor([0 if on_meta else 1], device=device)
        dist.broadcast(real, src=0)
        if real.item():
            load_full_weights(root, full)
            broadcast_buffers(root)
    return root


def broadcast_buffers(module: nn.Module) -> None:
    """Copies rank 0's buffers (e.g. rotary ``inv_freq``, not in any state dict) to every rank."""
    for buf in module.buffers():
        dist.broadcast(buf, src=0)
