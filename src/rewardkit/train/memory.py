"""The memory plan of a training run: GiB per GPU under FSDP2 with bf16 mixed precision, computed
from the model's shapes (not measured), and the ``auto`` activation-checkpointing choice made
from it.

A run's peak is its sharded state (fp32 master weights, gradients, AdamW moments; LoRA's frozen
base in bf16) plus the largest of three moments:

1. the start of backward: every block's kept activations (see `activation_bytes`) plus FSDP's
   working set (the root gathered, two blocks gathered, one block's gradients in flight);
2. the end of backward: the embedding's gradient, in bf16 and its fp32 copy for the
   reduce-scatter (full fine-tuning);
3. the optimizer step: ``foreach`` AdamW allocates one fp32 temporary the size of the sharded
   trainable weights; ``fused`` AdamW (the CUDA default) none.

With the AdamW moments on the host between steps (``offload_optimizer``,
`rewardkit.train.offload`), they count only at the end of backward and in the step, not beside
the activations.

The micro-batch is the larger of the token budget and the longest pair (a longer pair gets a
micro-batch of its own).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from rewardkit.train.activation_checkpointing import ACMode
from rewardkit.train.lora import DEFAULT_TARGET_MODULES

log = logging.getLogger(__name__)

GIB = 2**30
# Left free on every card for the CUDA context, NCCL buffers and allocator slack.
RESERVE_GIB = 4.0
# Cards by usable memory in GiB (what ``total_memory`` reports), less `RESERVE_GIB`.
CARDS = {"H100 80GB": 79.6 - RESERVE_GIB, "H200 141GB": 139.8 - RESERVE_GIB}
# Recompute cost of ``selective-op`` relative to recomputing a whole block: elementwise work only
# (norms, rotary, SiLU, products). An estimate used to rank the modes, not a measurement.
ELEMENTWISE_RECOMPUTE = 0.05
# What recomputing every block adds to a compiled step (the partitioner fuses the recompute):
# 7B on 2 H200s, 16,384-token micro-batches, one call: `full` 45.1% MFU, `selective-op` 54.2%.
BLOCK_RECOMPUTE = 0.2
# What one micro-batch costs besides its tokens, in tokens of compute: FSDP's weight gathers and
# gradient reduce-scatter, and the GEMMs they slow. 7B on 2 NVLink-connected H200s, selective-op
# compiled, one call: 13,321 tokens/s per GPU with 16,384-token micro-batches, 11,665 with 6,744
# (~1,800; another call ~1,500). It scales with the weights' bytes over the link's bandwidth
# against the GPU's FLOP/s: an estimate to rank configurations, not a measurement of other machines.
MICRO_BATCH_OVERHEAD_TOKENS = 1600
# What keeping the AdamW moments on the host adds to a step: the copies compute does not hide
# (the embedding's and the last block's moments back before the step, the first forward's wait
# for the copies out). 7B on 2 H200s (PCIe 5), 64 pairs per step, selective-op compiled at 15,746
# tokens, one call: 6.33 s per step against 6.08 with the moments on the GPU (+4%). An estimate
# to rank configurations: it shrinks with longer steps and grows with slower links.
HOST_MOMENTS_COST = 0.04


@dataclass(frozen=True, kw_only=True)
class Shapes:
    """What the plan needs of a decoder model.

    Args:
        hidden: hidden size h.
        intermediate: MLP intermediate size i.
        layers: decoder blocks L.
        heads: attention heads H.
        kv: width of the key (= value) projection, ``kv_heads · head_dim``.
        q: width of the query projection, ``heads · head_dim``.
        params: all parameters of the reward model.
        layer: parameters of one decoder block.
        embedding: parameters of the input embedding.
        adapters: LoRA adapter parameters (0 for full fine-tuning).
        lora_rank: LoRA rank r (0 for full fine-tuning).
    """

    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv: int
    q: int
    params: int
    layer: int
    embedding: int
    adapters: int = 0
    lora_rank: int = 0

    @property
    def trainable(self) -> int:
        """Trained parameters: all (full fine-tuning) or the adapters and the 1-output head."""
        return self.adapters + self.hidden if self.lora_rank else self.params

    @classmethod
    def of(
        cls,
        model: nn.Module,
        *,
        lora_rank: int = 0,
        lora_targets: Sequence[str] = DEFAULT_TARGET_MODULES,
    ) -> Shapes:
        """Shapes of a HF ``*ForSequenceClassification`` (real or on the meta device), before LoRA
        is applied; ``lora_rank`` adds the adapters that LoRA would."""
        from rewardkit.train.parallelize import decoder_blocks

        cfg = model.config
        blocks = decoder_blocks(model)
        head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        kv_heads = getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads
        adapters = 0
        if lora_rank:
            for name, m in blocks[0].named_modules():
                if isinstance(m, nn.Linear) and name.rpartition(".")[2] in lora_targets:
                    adapters += lora_rank * (m.in_features + m.out_features)
        emb = model.get_input_embeddings()
        return cls(
            hidden=cfg.hidden_size,
            intermediate=cfg.intermediate_size,
            layers=len(blocks),
            heads=cfg.num_attention_heads,
            kv=kv_heads * head_dim,
            q=cfg.num_attention_heads * head_dim,
            params=sum(p.numel() for p in model.parameters()),
            layer=sum(p.numel() for p in blocks[0].parameters()),
            embedding=emb.weight.numel() if emb is not None else 0,
            adapters=adapters * len(blocks),
            lora_rank=lora_rank,
        )


def activation_bytes(s: Shapes, kind: str, *, compiled: bool) -> int:
    """Bytes per token that one decoder block keeps from its forward until its backward (bf16
    activations; flash/varlen attention keeps no s² scores, only a 4-byte log-sum-exp per head).

    - ``none``, eager: two RMSNorms (fp32 input and bf16 normalised input, 6h each, and the bf16
      output the projections read, 2h each), q and the attention output (2q each), k and v
      (2kv each), the log-sum-exp (4H), the MLP's gate, SiLU, up and product (2i each), and
      LoRA's ``A`` outputs (2r for each of 7 projections).
    - ``none``, compiled: the partitioner recomputes the fp32 casts and the SiLU, keeping each
      norm's bf16 input and output (4 × 2h), q, k, v, the attention output and log-sum-exp, and
      the MLP's gate, up and product (3 × 2i).
    - ``selective-op``: the block's input (2h), the matmul outputs q, k, v, o (2q + 4kv + 2h),
      attention output and log-sum-exp, gate and up (2 × 2i), LoRA's ``A`` outputs.
    - checkpointed (``full``, and the checkpointed blocks of ``selective-layer``): the input, 2h.
    """
    h, i, q, kv, heads = s.hidden, s.intermediate, s.q, s.kv, s.heads
    lora = 7 * 2 * s.lora_rank
    if kind == "full":
        return 2 * h
    if kind == "selective-op":
        return 2 * h + 2 * q + 4 * kv + 2 * q + 4 * heads + 2 * h + 4 * i + lora
    if compiled:
        return 4 * 2 * h + 2 * q + 4 * kv + 2 * q + 4 * heads + 3 * 2 * i + lora
    return 2 * (6 * h + 2 * h) + 2 * q + 4 * kv + 2 * q + 4 * heads + 4 * 2 * i + lora


@dataclass(frozen=True, kw_only=True)
class MemoryPlan:
    """GiB per GPU of one configuration (computed, not measured)."""

    frozen: float  # LoRA's frozen base in bf16
    master: float  # fp32 trainable weights
    grads: float  # fp32 gradients
    adamw: float  # two fp32 moments
    fsdp_working: float  # gathered weights and gradients in flight at the activation peak
    activations: float  # kept activations at the start of backward, plus one block's recompute
    end_of_backward: float  # the embedding's gradient (bf16 + fp32) with the root gathered
    optimizer_step: float  # foreach AdamW's temporary
    host_moments: bool = False  # the AdamW moments are on the host until the step

    @property
    def total(self) -> float:
        resident = self.frozen + self.master + self.grads
        forward = self.fsdp_working + self.activations
        step = max(self.end_of_backward, self.optimizer_step)
        if self.host_moments:
            return resident + max(forward, self.adamw + step)
        return resident + self.adamw + max(forward, step)

    def to_dict(self) -> dict[str, Any]:
        """``planned_gib`` (the total) and ``plan_gib`` (its parts), rounded, for JSON."""
        return {
            "planned_gib": round(self.total, 2),
            "plan_gib": {k: round(v, 2) for k, v in self.columns().items()},
            "adamw_on_host": self.host_moments,
        }

    def columns(self) -> dict[str, float]:
        """The plan's parts and total, in GiB, by the names `docs/training.md` uses."""
        return {
            "bf16 frozen": self.frozen,
            "fp32 master": self.master,
            "fp32 grads": self.grads,
            "fp32 AdamW": self.adamw,
            "FSDP working": self.fsdp_working,
            "activations": self.activations,
            "optimizer step": self.optimizer_step,
            "total": self.total,
        }


def plan_memory(
    s: Shapes,
    *,
    world_size: int,
    tokens: int,
    ac: ACMode,
    compiled: bool = False,
    fused_optimizer: bool = True,
    host_moments: bool = False,
) -> MemoryPlan:
    """The memory plan of one configuration.

    Args:
        s: the model's shapes (`Shapes.of`).
        world_size: GPUs the state is sharded over.
        tokens: tokens of the largest micro-batch.
        ac: the activation-checkpointing mode.
        compiled: decoder blocks compiled (the partitioner keeps fewer activations).
        fused_optimizer: fused AdamW (no full-size temporary) rather than ``foreach``.
        host_moments: the AdamW moments are on the host between steps.
    """
    t = s.trainable
    full_ft = not s.lora_rank
    gathered_root = 2 * (s.embedding + 2 * s.hidden)  # bf16 embedding, final norm, head
    layer_grads = (2 + 4) * s.layer if full_ft else (2 + 4) * s.adapters // max(s.layers, 1)
    working = gathered_root + 2 * 2 * s.layer + layer_grads
    kept = activation_bytes(s, "none", compiled=compiled)
    per_block = []
    for wrapped in ac.checkpointed(s.layers):
        per_block.append(activation_bytes(s, ac.kind if wrapped else "none", compiled=compiled))
    # One checkpointed block at a time is recomputed to its full activations during backward; and
    # one block's MLP and hidden-state gradients are in flight.
    recompute = kept - min(per_block) if any(ac.checkpointed(s.layers)) else 0
    in_flight = 2 * 2 * s.intermediate + 8 * s.hidden
    act = tokens * (sum(per_block) + recompute + in_flight)
    return MemoryPlan(
        frozen=2 * (s.params - s.hidden) / world_size / GIB if s.lora_rank else 0.0,
        master=4 * t / world_size / GIB,
        grads=4 * t / world_size / GIB,
        adamw=8 * t / world_size / GIB,
        fsdp_working=working / GIB,
        activations=act / GIB,
        end_of_backward=(gathered_root + ((2 + 4) * s.embedding if full_ft else 0)) / GIB,
        optimizer_step=0.0 if fused_optimizer else 4 * t / world_size / GIB,
        host_moments=host_moments,
    )


def recompute_cost(ac: ACMode, layers: int) -> float:
    """Estimated recompute, as a fraction of recomputing every block (ranks the modes)."""
    checkpointed = sum(ac.checkpointed(layers)) / max(layers, 1)
    return ELEMENTWISE_RECOMPUTE if ac.kind == "selective-op" else checkpointed


def candidates(layers: int) -> list[ACMode]:
    """Every mode ``auto`` considers, cheapest recompute first (ties: least memory first)."""
    modes = [ACMode("none"), ACMode("selective-op"), ACMode("full")]
    seen = set()
    for every in range(layers, 1, -1):  # selective-layer:N with a distinct number of blocks
        n = layers // every
        if n and n not in seen:
            seen.add(n)
            modes.append(ACMode("selective-layer", every))
    return sorted(modes, key=lambda m: (recompute_cost(m, layers), -sum(m.checkpointed(layers))))


@dataclass(frozen=True, kw_only=True)
class ACChoice:
    """What ``auto`` chose and why (recorded in the run's ``run.json``): the mode, the micro-batch
    it runs with (``tokens``; at most the token budget asked for, ``requested``), where the AdamW
    moments live between steps (``plan.host_moments``), and its plan."""

    mode: ACMode
    plan: MemoryPlan
    budget_gib: float
    tokens: int
    requested: int
    fits: bool

    def to_dict(self) -> dict[str, Any]:
        return {
            "activation_checkpointing": str(self.mode),
            "budget_gib": round(self.budget_gib, 2),
            "micro_batch_tokens": self.tokens,
            "token_budget": self.requested,
            "fits": self.fits,
            "offload_optimizer": self.plan.host_moments,
            **self.plan.to_dict(),
        }


def step_cost(ac: ACMode, layers: int, tokens: int, *, host_moments: bool = False) -> float:
    """Estimated time per trained token, relative to no recompute and no per-micro-batch cost.

    ``(1 + BLOCK_RECOMPUTE · recompute_cost) · (1 + MICRO_BATCH_OVERHEAD_TOKENS / tokens)``: the
    recompute, and what every micro-batch costs besides its tokens (FSDP gathers the weights for
    its forward and again for its backward, and reduce-scatters its gradients); times
    ``1 + HOST_MOMENTS_COST`` with the moments on the host. Ranks a mode with little recompute at
    small micro-batches against one with more recompute at large ones.
    """
    cost = (1 + BLOCK_RECOMPUTE * recompute_cost(ac, layers)) * (1 + MICRO_BATCH_OVERHEAD_TOKENS / tokens)
    return cost * (1 + HOST_MOMENTS_COST) if host_moments else cost


def largest_fitting(fits: Callable[[int], bool], low: int, high: int) -> int | None:
    """The largest ``t`` in ``[low, high]`` with ``fits(t)`` (``fits`` monotone: true up to some
    point), or None if ``fits(low)`` is false."""
    if not fits(low):
        return None
    while low < high:
        mid = (low + high + 1) // 2
        low, high = (mid, high) if fits(mid) else (low, mid - 1)
    return low


def choose_ac(
    s: Shapes,
    *,
    world_size: int,
    tokens: int,
    budget_gib: float,
    compiled: bool,
    fused_optimizer: bool = True,
    longest: int | None = None,
    host_moments: bool | None = False,
) -> ACChoice:
    """The fastest (mode, micro-batch, where the AdamW moments live) whose plan fits
    ``budget_gib``; ``full`` at ``tokens`` when none does (the plan then says by how much the run
    may not fit).

    Each mode (`candidates`) runs with the largest micro-batch that fits, at most ``tokens`` and
    at least ``longest`` (the longest pair, which gets a micro-batch of its own; ``tokens`` when
    not given); of those that fit, `step_cost` picks. The micro-batch changes how a step is cut
    into forwards, not what it computes: every pair of the global batch still contributes once.
    ``host_moments``: the moments on the host (True), on the device (False), or whichever is
    faster (None); keeping them on the host only moves them.
    """
    longest = longest or 0
    low = min(longest, tokens) if longest else tokens  # without the longest pair: ``tokens`` only

    def plan(mode: ACMode, n: int, host: bool) -> MemoryPlan:  # largest micro-batch: n or the longest pair
        return plan_memory(
            s, world_size=world_size, tokens=max(n, longest), ac=mode, compiled=compiled,
            fused_optimizer=fused_optimizer, host_moments=host,
        )  # fmt: skip

    def choice(mode: ACMode, n: int, host: bool, fits: bool) -> ACChoice:
        p = plan(mode, n, host)
        return ACChoice(mode=mode, plan=p, budget_gib=budget_gib, tokens=n, requested=tokens, fits=fits)

    def cost(c: ACChoice) -> float:
        return step_cost(c.mode, s.layers, c.tokens, host_moments=c.plan.host_moments)

    places = (False, True) if host_moments is None else (host_moments,)
    best: ACChoice | None = None
    for mode in candidates(s.layers):
        for host in places:
            t = largest_fitting(lambda n, m=mode, h=host: plan(m, n, h).total <= budget_gib, low, tokens)
            c = choice(mode, t, host, True) if t is not None else None
            if c is not None and (best is None or cost(c) < cost(best)):
                best = c
    return best or choice(ACMode("full"), tokens, places[0], False)


def host_moments_gib(s: Shapes, *, world_size: int) -> float:
    """Host memory for one rank's AdamW moments kept on the host."""
    return 8 * s.trainable / world_size / GIB


def host_available_gib() -> float | None:
    """Memory the host can still give (``MemAvailable``), or None where it is not known."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) / 2**20  # kB
    except OSError:
        pass
    return None


def device_budget_gib(device: torch.device) -> float | None:
    """GiB a run may plan for on ``device``: its memory less `RESERVE_GIB` (None on CPU)."""
    if device.type != "cuda":
        return None
    return torch.cuda.get_device_properties(device).total_memory / GIB - RESERVE_GIB
