"""AdamW's moments in host memory between optimizer steps (``offload_optimizer``).

The two fp32 moments are half of a full fine-tuning run's sharded state (26 GiB per GPU for 7B on
2 GPUs), yet only the optimizer step reads them. `HostMoments` keeps them in pinned host memory
and moves them over PCIe while the GPU computes, so that the memory they held goes to larger
micro-batches:

- after ``optimizer.step()``, the moments are copied to the host on a side stream; the next
  forward frees them block by block, as fast as its activations grow, and the first backward frees
  the rest as fast as its gradients arrive (the gradients were freed by ``zero_grad``, so at no
  point are more bytes held than without offloading: moments + activations ≤ gradients +
  activations);
- the last micro-batch's backward copies each block's moments back once that block's backward is
  done (its activations freed); the step waits only for the last copies.

Only copies are added: the optimizer runs the same kernels on the same values, so training is
unchanged bit for bit. The copies are ordered by CUDA events (the compute stream never waits on
the host); on the CPU they are plain copies, which keeps the bookkeeping testable there.

A copy waits for the copies queued before it in its direction (measured on H200s: always from
the GPU to the host, and from the host on the legacy default stream, and behind a block's
moments even on another stream). Hence three orderings: the moments go to the host only after
the step's last read of a result (`PairStep.train`); the step runs on a stream of its own
(`HostMoments.stream`); and a block's moments are queued back only after FSDP has queued its
small host→GPU copies for the previous block's weight gather (the hook sits on the previous
block's output, after FSDP's), which would otherwise wait ~17 ms behind them at 7B.
"""

from __future__ import annotations

import contextlib
import enum
import functools
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

log = logging.getLogger(__name__)

MOMENTS = ("exp_avg", "exp_avg_sq")  # AdamW's state that moves; ``step`` stays on the device


class Where(enum.Enum):
    DEVICE = "device"  # on the device; the host copy is stale (or not yet made)
    WRITING = "writing"  # on the device, being copied to the host (``event`` marks the end)
    BOTH = "both"  # on the device, and the host copy equals it
    LOADING = "loading"  # being copied to the device (``event`` marks the end)
    HOST = "host"  # only on the host; the device storage is freed


@dataclass(eq=False)
class Chunk:
    """The moments of one FSDP unit's parameters (a decoder block, or the root's own)."""

    params: list[nn.Parameter]
    keys: list[tuple[nn.Parameter, str]] = field(default_factory=list)  # the moments that move
    where: Where = Where.DEVICE
    event: torch.cuda.Event | None = None
    host: list[torch.Tensor] = field(default_factory=list)
    nbytes: int = 0


def local(t: torch.Tensor) -> torch.Tensor:
    """This rank's tensor of a DTensor (sharing its storage), or ``t``."""
    return t.to_local() if hasattr(t, "to_local") else t


def movable(t: torch.Tensor) -> bool:
    """Whether ``t`` owns its whole storage, so that freeing the storage frees exactly ``t``."""
    s = t.untyped_storage()
    return t.numel() > 0 and t.is_contiguous() and t.storage_offset() == 0 and s.nbytes() == t.nbytes


class HostMoments:
    """Keeps ``optimizer``'s AdamW moments on the host between steps (see the module docstring).

    Args:
        optimizer: AdamW over the sharded parameters.
        blocks: the decoder blocks, in forward order (FSDP units); their forward-pre hooks free and
            load the moments. Parameters outside them (embedding, final norm, head) form one more
            chunk, freed last and loaded with the first block.
        device: this rank's device.

    Run each step inside `stream`; call `micro_batch` before each micro-batch's forward,
    `before_step` before ``optimizer.step()`` and `after_step` once the step's results have been
    read, and `on_device` before anything reads the optimizer's state (a checkpoint); after
    loading a state, `after_step` moves it out again.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        blocks: Sequence[nn.Module],
        *,
        device: torch.device,
    ) -> None:
        self.optimizer, self.device = optimizer, device
        self.cuda = device.type == "cuda"
        self.compute = torch.cuda.Stream(device) if self.cuda else None  # the training step's
        self.copies = torch.cuda.Stream(device) if self.cuda else None
        owner: dict[int, int] = {}
        for k, block in enumerate(blocks):
            for p in block.parameters():
                owner.setdefault(id(p), k)
        params = [p for g in optimizer.param_groups for p in g["params"]]
        by_chunk: list[list[nn.Parameter]] = [[] for _ in range(len(blocks) + 1)]
        for p in params:
            by_chunk[owner.get(id(p), len(blocks))].append(p)
        self.chunks = [Chunk(ps) for ps in by_chunk]
        self.blocks = len(blocks)
        # Bytes of this rank's gradients, which ``zero_grad`` frees at each step: what the first
        # forward may hold of the moments beyond its own peak (set with the host memory).
        self._grad_bytes = 0
        self._last = False  # the current micro-batch is the step's last
        self._freeing = False  # after a step, until every chunk is on the host
        self._buffer: torch.Tensor | None = None
        self._registered = False
        # Before FSDP's own pre-forward hook (``prepend``), so that the hidden state the backward
        # hook goes on is the block's input as the previous block returned it (see `_hook`).
        self._handles = [
            block.register_forward_pre_hook(self._hook(k), with_kwargs=True, prepend=True)
            for k, block in enumerate(blocks)
        ]

    # ---- what the step calls --------------------------------------------------------------------

    @contextlib.contextmanager
    def stream(self) -> Iterator[None]:
        """Runs the body (a training step, a validation pass) on the compute stream, ordered after
        the work queued before it and before the work queued after it."""
        if self.compute is None:
            yield
            return
        caller = torch.cuda.current_stream(self.device)
        self.compute.wait_stream(caller)
        try:
            with torch.cuda.stream(self.compute):
                yield
        finally:
            caller.wait_stream(self.compute)

    def micro_batch(self, *, last: bool) -> None:
        """The next forward is a training micro-batch; ``last``: the step's last one."""
        self._last = last

    def before_step(self) -> None:
        """Every moment on the device, the step ordered after its copies (no host wait)."""
        for chunk in self.chunks:
            if chunk.where is Where.HOST:
                self._load(chunk)
        self._settle()

    def after_step(self) -> None:
        """The moments are on the device and up to date: copy them to the host; the next forward
        and backward free them."""
        if self._buffer is None and not self._allocate():
            return
        for chunk in self.chunks:
            if chunk.host:
                self._write(chunk)
        self._freeing = True

    def on_device(self) -> None:
        """Every moment on the device, and the host caught up with the copies (for a reader that
        is not ordered on the streams, such as a checkpoint)."""
        self.before_step()
        if self.compute is not None:
            self.compute.synchronize()
        self._freeing = self._buffer is not None  # the host copies are current: the next forward frees

    def close(self) -> None:
        """Removes the hooks and releases the host memory once no copy uses it (the moments on
        the host are lost: call `on_device` first to keep them)."""
        for h in self._handles:
            h.remove()
        self._handles = []
        if self.copies is not None:
            self.copies.synchronize()
        if self._buffer is not None and self._registered:
            torch.cuda.cudart().cudaHostUnregister(self._buffer.data_ptr())
        self._buffer = None

    # ---- state ----------------------------------------------------------------------------------

    def _moments(self, chunk: Chunk) -> Iterator[torch.Tensor]:
        """The chunk's moments that move, as the optimizer holds them now (loading a state dict
        replaces the tensors)."""
        for p, key in chunk.keys:
            yield local(self.optimizer.state[p][key])

    @property
    def device_bytes(self) -> int:
        """Bytes of moments held on the device now (by the bookkeeping)."""
        return sum(c.nbytes for c in self.chunks if c.where is not Where.HOST)

    @property
    def total_bytes(self) -> int:
        return sum(c.nbytes for c in self.chunks)

    def _allocate(self) -> bool:
        """Host memory for every moment, once the optimizer has made them (its first step): one
        buffer, pinned by registering it with CUDA (pinned tensors of their own would each be
        rounded up to a power of two). False when there is nothing to move."""
        for c in self.chunks:
            c.keys = [
                (p, key)
                for p in c.params
                for key in MOMENTS
                if key in (state := self.optimizer.state.get(p, {})) and movable(local(state[key]))
            ]
        sizes = [[t.nbytes for t in self._moments(c)] for c in self.chunks]
        align = 64
        total = sum(-(-n // align) * align for s in sizes for n in s)
        if not total:
            return False
        buffer = torch.empty(total, dtype=torch.uint8)
        if self.cuda:
            err = torch.cuda.cudart().cudaHostRegister(buffer.data_ptr(), total, 0)
            self._registered = int(err) == 0
            if not self._registered:
                log.warning("offload_optimizer: could not pin %.1f GiB of host memory (CUDA error %s); "
                            "copies will not overlap compute", total / 2**30, err)  # fmt: skip
        offset = 0
        for chunk, chunk_sizes in zip(self.chunks, sizes, strict=True):
            tensors = list(self._moments(chunk))
            chunk.host = []
            for t, n in zip(tensors, chunk_sizes, strict=True):
                chunk.host.append(buffer[offset : offset + n].view(t.dtype).view(t.shape))
                offset += -(-n // align) * align
            chunk.nbytes = sum(chunk_sizes)
        self._buffer = buffer
        self._grad_bytes = sum(local(p).nbytes for c in self.chunks for p in c.params if p.requires_grad)
        log.info("offload_optimizer: %.2f GiB of AdamW moments per GPU kept on the host", total / 2**30)
        return True

    # ---- copies ---------------------------------------------------------------------------------

    def _ordered_after_compute(self) -> torch.cuda.StreamContext:
        """The copy stream, made to wait for everything queued so far on the compute stream."""
        assert self.copies is not None and self.compute is not None
        self.copies.wait_stream(self.compute)
        return torch.cuda.stream(self.copies)

    def _copy(self, chunk: Chunk, pairs: list[tuple[torch.Tensor, torch.Tensor]], moving: Where) -> None:
        """Copies each (destination, source) of ``chunk`` on the copy stream, after what the compute
        stream has queued; ``moving``: the chunk's state until the copies are waited for."""
        if not self.cuda:
            for dst, src in pairs:
                dst.copy_(src)
            chunk.where = Where.BOTH
            return
        with self._ordered_after_compute():
            for dst, src in pairs:
                dst.copy_(src, non_blocking=True)
            chunk.event = torch.cuda.Event()
            chunk.event.record(self.copies)
        chunk.where = moving

    def _write(self, chunk: Chunk) -> None:
        tensors = list(self._moments(chunk))
        if not all(movable(t) for t in tensors):  # e.g. a state dict loaded as views
            raise RuntimeError("offload_optimizer: an AdamW moment no longer owns its storage")
        self._copy(chunk, list(zip(chunk.host, tensors, strict=True)), Where.WRITING)

    def _free(self, chunk: Chunk) -> None:
        if chunk.where is Where.HOST or not chunk.host:
            return
        if chunk.where is Where.DEVICE:
            self._write(chunk)
        if chunk.where in (Where.WRITING, Where.LOADING):
            self._wait(chunk)
        # The compute stream waited for the copy, so whatever it allocates from this memory next
        # runs after the copy has read it.
        for t in self._moments(chunk):
            t.untyped_storage().resize_(0)
        chunk.where = Where.HOST

    def _load(self, chunk: Chunk) -> None:
        if chunk.where is not Where.HOST:
            return
        tensors = list(self._moments(chunk))
        with torch.cuda.stream(self.compute) if self.compute is not None else contextlib.nullcontext():
            for t in tensors:  # allocated in the compute stream's order, at this point of it
                t.untyped_storage().resize_(t.numel() * t.element_size())
        self._copy(chunk, list(zip(tensors, chunk.host, strict=True)), Where.LOADING)

    def _wait(self, chunk: Chunk) -> None:
        """The compute stream waits (on the device) for the chunk's copy; the host copy is then valid."""
        if chunk.event is not None and self.compute is not None:
            self.compute.wait_event(chunk.event)
            chunk.event = None
        chunk.where = Where.BOTH

    def _settle(self) -> None:
        """Every copy in flight finishes before the compute stream goes on (the optimizer's update
        must not race a copy still reading the moments)."""
        for chunk in self.chunks:
            if chunk.where in (Where.WRITING, Where.LOADING):
                self._wait(chunk)
        self._freeing = False

    # ---- hooks ----------------------------------------------------------------------------------

    def _free_until(self, device_bytes: float) -> None:
        """Frees chunks, in forward order, until at most ``device_bytes`` of moments remain."""
        for chunk in self.chunks:
            if self.device_bytes <= device_bytes:
                break
            self._free(chunk)
        if self.device_bytes == 0:
            self._freeing = False

    def _hook(self, k: int) -> Any:
        @torch.compiler.disable
        def pre_forward(module: nn.Module, args: tuple, kwargs: dict) -> None:
            if self._freeing:
                # By the end of this forward, the moments beyond the freed gradients' bytes go.
                extra = max(0, self.total_bytes - self._grad_bytes)
                self._free_until(self.total_bytes - extra * (k + 1) / self.blocks)
            # The previous block's output. FSDP hooked it first (its pre-backward gathers the
            # previous block's weights), so this hook runs after FSDP has queued that block's
            # small host→GPU copies, and the moments' large copies do not hold them up.
            x = args[0] if args else kwargs.get("hidden_states")
            if (
                torch.is_grad_enabled()
                and isinstance(x, torch.Tensor)
                and x.requires_grad
                and self._buffer is not None
            ):
                x.register_hook(functools.partial(self._after_backward, k))

        return pre_forward

    def _after_backward(self, k: int, grad: torch.Tensor) -> None:
        """Block ``k``'s backward is done: its activations are freed."""
        if self._last:  # load this block's moments (and, after the first block, the root's)
            self._load(self.chunks[k])
            if k == 0:
                self._load(self.chunks[-1])
        elif self._freeing:  # hold no more than the gradients not yet made
            left = self._grad_bytes * k / self.blocks
            self._free_until(min(self.device_bytes, left))
