"""Activation checkpointing (AC): which activations a training forward keeps for backward and which
it recomputes there, trading compute for memory.

Modes (the ``activation_checkpointing`` option):

- ``none``: keep everything (fastest, most memory).
- ``full``: keep only each decoder block's input; backward recomputes the whole block.
- ``selective-op``: per-operator selective checkpointing. Every block keeps the outputs of its
  matmuls and of attention (expensive to recompute) and recomputes the cheap elementwise ops in
  between (norms, rotary embedding, SiLU, products, residual adds) — see `save_policy`.
- ``selective-layer:N``: full checkpointing of every N-th block (blocks N-1, 2N-1, ...), the
  others keep everything; ``selective-layer:1`` is ``full``.
- ``auto``: the fastest of these that the memory plan fits on the device, each with the largest
  micro-batch that fits (`rewardkit.train.memory.choose_ac`), resolved when the run starts.

``true``/``false`` are accepted for ``full``/``none`` (the option was a boolean before).

Each checkpointed block is wrapped with torch's ``checkpoint_wrapper`` (non-reentrant
``torch.utils.checkpoint``), before it is compiled and sharded: compiling the wrapper puts the
checkpoint inside the compiled region, so the compiler's partitioner applies the policy, and FSDP2's
hooks sit outside it (`rewardkit.train.parallelize.parallelize`). The wrapper's state-dict hooks
strip its ``_checkpoint_wrapped_module.`` prefix, so checkpoints and exports keep the HF names.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn
from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import (
    CheckpointWrapper,
    checkpoint_wrapper,
)
from torch.utils.checkpoint import CheckpointPolicy, create_selective_checkpoint_contexts

log = logging.getLogger(__name__)

ACKind = Literal["none", "full", "selective-op", "selective-layer"]
MODES_HELP = "none, full, selective-op, selective-layer:N (N >= 1) or auto"
_LAYER = re.compile(r"^selective-layer:(\d+)$")


@dataclass(frozen=True)
class ACMode:
    """A resolved activation-checkpointing mode (``auto`` is resolved before one is built).

    Args:
        kind: ``none``, ``full``, ``selective-op`` or ``selective-layer``.
        every: for ``selective-layer``, checkpoint every ``every``-th block.
    """

    kind: ACKind
    every: int = 1

    def __str__(self) -> str:
        return f"selective-layer:{self.every}" if self.kind == "selective-layer" else self.kind

    def checkpointed(self, num_blocks: int) -> list[bool]:
        """Which of ``num_blocks`` blocks are wrapped (all for ``full`` and ``selective-op``)."""
        if self.kind == "none":
            return [False] * num_blocks
        if self.kind == "selective-layer":
            return [(i + 1) % self.every == 0 for i in range(num_blocks)]
        return [True] * num_blocks


def normalize_ac(value: object) -> str:
    """The canonical spelling of an ``activation_checkpointing`` value.

    ``None`` → ``auto``, ``True`` → ``full``, ``False`` → ``none``; ``selective-layer:1`` →
    ``full``; strings are lower-cased and stripped.

    Raises:
        ValueError: not one of `MODES_HELP`.
    """
    if value is None:
        return "auto"
    if isinstance(value, bool):
        return "full" if value else "none"
    if not isinstance(value, str):
        raise ValueError(f"must be one of {MODES_HELP}")
    s = value.strip().lower()
    if s in ("auto", "none", "full", "selective-op"):
        return s
    m = _LAYER.match(s)
    if m and int(m.group(1)) >= 1:
        return "full" if int(m.group(1)) == 1 else s
    raise ValueError(f"must be one of {MODES_HELP}")


def parse_ac(value: object) -> ACMode:
    """An `ACMode` from an option value (``auto`` is not a mode: resolve it first)."""
    s = normalize_ac(value)
    if s == "auto":
        raise ValueError("'auto' must be resolved from the memory plan before it is applied")
    m = _LAYER.match(s)
    return ACMode("selective-layer", int(m.group(1))) if m else ACMode(s)  # type: ignore[arg-type]


# Operators whose outputs `save_policy` keeps: attention kernels (a custom op for varlen flash
# attention on CUDA; SDPA's variants elsewhere). Matmuls are decided by shape (see the policy).
_ATTENTION_OPS = (
    "aten._scaled_dot_product_flash_attention",
    "aten._scaled_dot_product_flash_attention_for_cpu",
    "aten._scaled_dot_product_efficient_attention",
    "aten._scaled_dot_product_cudnn_attention",
    "aten._flash_attention_forward",
    "aten._efficient_attention_forward",
    "torch_attn._varlen_attn",
)
_MATMUL_OPS = ("aten.mm", "aten.addmm", "aten.linear")


def _resolve(names: tuple[str, ...]) -> set[Any]:
    """The ``.default`` overloads of the operators this torch build has."""
    found = set()
    for name in names:
        ns, op = name.split(".")
        packet = getattr(getattr(torch.ops, ns), op, None) if hasattr(torch.ops, ns) else None
        if packet is not None:
            found.add(packet.default)
    return found


PolicyFn = Callable[..., CheckpointPolicy]


def save_policy(*, hidden_size: int, intermediate_size: int) -> PolicyFn:
    """The ``selective-op`` policy: which operator outputs a checkpointed block keeps.

    Kept (``MUST_SAVE``): attention outputs, and matmul outputs, except

    - a matmul that reads the MLP's intermediate activation (the down projection and its LoRA
      ``A``): its output only feeds the residual add, so backward never needs it, and
      recomputation stops before reaching it;
    - a matmul whose inner dimension is under ``hidden_size / 8`` (LoRA's ``B``): it is cheap to
      recompute and its output is as large as the projection it adapts.

    Everything else (norms, rotary embedding, SiLU, products, residual adds, casts, views) is
    recomputed in backward: cheap elementwise work, whose outputs would otherwise cost as much
    memory as the matmuls'.

    Args:
        hidden_size: the model's hidden size.
        intermediate_size: the MLP's intermediate size.
    """
    attention = _resolve(_ATTENTION_OPS)
    matmul = _resolve(_MATMUL_OPS)
    addmm = _resolve(("aten.addmm",))
    min_inner = hidden_size // 8
    # Where the two sizes are equal the down projection cannot be told apart by shape: keep it.
    mlp_inner = intermediate_size if intermediate_size != hidden_size else None

    def policy(ctx: Any, func: Any, *args: Any, **kwargs: Any) -> CheckpointPolicy:
        if func in attention:
            return CheckpointPolicy.MUST_SAVE
        if func in matmul:
            # mm(x, w), addmm(bias, x, w), linear(x, w, bias): x is (..., K), K the inner dimension.
            inner = (args[1] if func in addmm else args[0]).shape[-1]
            if inner == mlp_inner or inner < min_inner:
                return CheckpointPolicy.PREFER_RECOMPUTE
            return CheckpointPolicy.MUST_SAVE
        return CheckpointPolicy.PREFER_RECOMPUTE

    return policy


def apply_ac(blocks: list[nn.Module], mode: ACMode, *, policy: PolicyFn | None = None) -> list[nn.Module]:
    """Wraps the blocks that ``mode`` checkpoints; returns the blocks as they now are.

    Call it before compiling and sharding the blocks; replace each block in its parent with the
    returned module (`rewardkit.train.parallelize.parallelize` does).

    Args:
        blocks: the model's decoder blocks, in order.
        mode: the checkpointing mode.
        policy: the ``selective-op`` policy (`save_policy`); required for that mode.
    """
    if mode.kind == "selective-op" and policy is None:
        raise ValueError("selective-op needs a save policy")
    out: list[nn.Module] = []
    for block, wrap in zip(blocks, mode.checkpointed(len(blocks)), strict=True):
        if not wrap:
            out.append(block)
        elif mode.kind == "selective-op":
            assert policy is not None
            out.append(
                checkpoint_wrapper(block, context_fn=lambda: create_selective_checkpoint_contexts(policy))
            )
        else:
            out.append(checkpoint_wrapper(block))
    n = sum(isinstance(b, CheckpointWrapper) for b in out)
    log.info("activation checkpointing %s: %d of %d decoder blocks checkpointed", mode, n, len(blocks))
    return out


def unwrap(block: nn.Module) -> nn.Module:
    """The decoder layer inside a checkpointed block (the block itself otherwise)."""
    return block._checkpoint_wrapped_module if isinstance(block, CheckpointWrapper) else block
