"""One optimizer step over a global batch of pairs, and one validation pass: the hot loop that the
trainer and ``bench/train_bench.py`` share."""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from rewardkit.distributed import all_reduce_sum
from rewardkit.engine.batching import to_device
from rewardkit.train.data import MicroBatch, TokenPairs, collate, plan_micro_batches
from rewardkit.train.loss import LossName, pair_losses
from rewardkit.train.memory import GIB
from rewardkit.train.metrics import FlopCounter
from rewardkit.train.offload import HostMoments


def make_optimizer(
    params: Iterable[nn.Parameter],
    *,
    lr: float,
    betas: tuple[float, float],
    eps: float,
    weight_decay: float,
    warmup_steps: int,
    fused: bool = False,
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW (decoupled weight decay on every parameter) and a linear warmup to ``lr``, then
    constant: the HelpSteer3 recipe's schedule.

    ``fused`` runs each update as one kernel per parameter group. The default (``foreach``)
    allocates a temporary the size of all trainable weights during the step (13 GiB per GPU for
    7B on 2 GPUs), which can be the run's peak; the fused kernel allocates none. Both compute the
    same update (up to float rounding).
    """
    kind = {"fused": True} if fused else {"foreach": None}
    opt = torch.optim.AdamW(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, **kind)
    warm = warmup_steps
    return opt, torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warm) if warm else 1.0)


@dataclass(frozen=True, kw_only=True)
class StepStats:
    """Totals over all ranks of one step (fillers excluded)."""

    loss: float  # mean per-pair loss of the global batch
    accuracy: float  # share of pairs with r_chosen > r_rejected
    pairs: int
    tokens: int
    flops: float
    grad_norm: float
    lr: float
    seconds: float
    peak_memory_gib: float | None = None  # the most GPU memory any rank had allocated (None on CPU)


class PairStep:
    """Runs forward/backward over this rank's micro-batches, then clips and steps the optimizer.

    Args:
        root: the sharded `PairRewards` module.
        optimizer: over ``root``'s parameters.
        scheduler: stepped once per optimizer step.
        device: this rank's device.
        rank: this rank; world_size: the number of ranks.
        loss_name: ``bt``, ``scaled_bt`` or ``margin_bt``.
        reward_centering: λ of the centring term.
        token_budget: tokens per packed micro-batch.
        pad_token_id: where the head reads (see `rewardkit.engine.batching.pool_index`).
        flops: FLOPs of a micro-batch, for MFU.
        grad_clip: global gradient-norm limit (0: none).
        host_moments: keeps the optimizer's moments on the host between steps (built over
            ``optimizer``), or None.
    """

    def __init__(
        self,
        root: nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LRScheduler,
        *,
        device: torch.device,
        rank: int,
        world_size: int,
        loss_name: LossName,
        reward_centering: float,
        token_budget: int,
        pad_token_id: int | None,
        flops: FlopCounter,
        grad_clip: float,
        host_moments: HostMoments | None = None,
    ) -> None:
        self.root, self.optimizer, self.scheduler = root, optimizer, scheduler
        self.host_moments = host_moments
        self.device, self.rank, self.world_size = device, rank, world_size
        self.loss_name, self.reward_centering = loss_name, reward_centering
        self.token_budget, self.pad_token_id = token_budget, pad_token_id
        self.flops, self.grad_clip = flops, grad_clip

    def forward(self, mb: MicroBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """Σ loss and Σ correct of one micro-batch (0-d tensors on the device; no host sync)."""
        rewards = self.root(mb.packed.to(self.device)).view(-1, 2)  # (P, 2): chosen, rejected
        chosen, rejected = rewards[:, 0], rewards[:, 1]
        # Asynchronous, like the packed stream: a plain copy would wait for the forward to finish
        # on the GPU, which then idles while the backward is launched.
        strength = to_device(mb.strength, self.device)
        losses = pair_losses(self.loss_name, chosen, rejected, strength, center_coef=self.reward_centering)
        return losses.sum(), (chosen > rejected).sum().to(losses.dtype).detach()

    def stream(self) -> contextlib.AbstractContextManager[None]:
        """Where a step runs: its own CUDA stream with the moments on the host (see
        `rewardkit.train.offload`), else the current one."""
        return self.host_moments.stream() if self.host_moments is not None else contextlib.nullcontext()

    def train(self, data: TokenPairs, batch: Sequence[int]) -> StepStats:
        """One optimizer step on the global batch ``batch`` (pair indices into ``data``)."""
        with self.stream():
            return self._train(data, batch)

    def _train(self, data: TokenPairs, batch: Sequence[int]) -> StepStats:
        t0 = time.perf_counter()
        cuda = self.device.type == "cuda"
        if cuda:
            torch.cuda.reset_peak_memory_stats(self.device)
        plan = plan_micro_batches(
            batch, data.lengths, rank=self.rank, world_size=self.world_size, token_budget=self.token_budget
        )
        # Each rank's loss is its share of Σ loss / |batch|; FSDP divides gradients by the world
        # size when it averages them, hence the factor.
        scale = self.world_size / len(batch)
        sums = torch.zeros(2, dtype=torch.float64, device=self.device)  # Σ loss, Σ correct
        pairs = tokens = 0
        flops = 0.0
        for k, (indices, weight) in enumerate(plan):
            mb = collate(data, indices, weight, self.pad_token_id)
            if self.host_moments is not None:
                self.host_moments.micro_batch(last=k == len(plan) - 1)
            loss_sum, correct = self.forward(mb)
            (loss_sum * (weight * scale)).backward()
            sums += torch.stack([loss_sum.detach(), correct]).double() * weight
            if weight:
                pairs += mb.num_pairs
                tokens += mb.packed.num_tokens
                flops += self.flops(mb.packed.cu_seqlens.diff().tolist())
        clip = self.grad_clip if self.grad_clip > 0 else math.inf
        grad_norm = nn.utils.clip_grad_norm_(self.root.parameters(), clip)
        if hasattr(grad_norm, "full_tensor"):  # a DTensor under FSDP
            grad_norm = grad_norm.full_tensor()
        lr = self.scheduler.get_last_lr()[0]
        if self.host_moments is not None:
            self.host_moments.before_step()
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        # Each rank's peak in its own slot: the same collective gives the largest.
        peaks = [0.0] * self.world_size
        if cuda:
            peaks[self.rank] = torch.cuda.max_memory_allocated(self.device) / GIB
        loss, correct, pairs, tokens, flops, *peaks = all_reduce_sum(
            [*sums.tolist(), pairs, tokens, flops, *peaks], self.device
        )
        grad_norm = float(grad_norm)
        if self.host_moments is not None:
            # After the step's last read from the GPU: a copy engine serves copies in the order
            # they were queued, so a read queued behind the moments would wait for all of them.
            self.host_moments.after_step()
        return StepStats(
            loss=loss / pairs,
            accuracy=correct / pairs,
            pairs=int(pairs),
            tokens=int(tokens),
            flops=flops,
            grad_norm=grad_norm,
            lr=lr,
            seconds=time.perf_counter() - t0,
            peak_memory_gib=max(peaks) if cuda else None,
        )

    @torch.no_grad()
    def evaluate(self, data: TokenPairs) -> tuple[float, float, int]:
        """(mean loss, accuracy, pairs) over all of ``data``, shared among the ranks."""
        with self.stream():
            return self._evaluate(data)

    def _evaluate(self, data: TokenPairs) -> tuple[float, float, int]:
        plan = plan_micro_batches(
            list(range(len(data))),
            data.lengths,
            rank=self.rank,
            world_size=self.world_size,
            token_budget=self.token_budget,
        )
        sums = torch.zeros(2, dtype=torch.float64, device=self.device)
        pairs = 0
        for indices, weight in plan:
            mb = collate(data, indices, weight, self.pad_token_id)
            loss_sum, correct = self.forward(mb)
            sums += torch.stack([loss_sum, correct]).double() * weight
            pairs += mb.num_pairs if weight else 0
        loss, correct, total = all_reduce_sum([*sums.tolist(), pairs], self.device)
        return loss / total, correct / total, int(total)
