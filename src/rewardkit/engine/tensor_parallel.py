"""Tensor-parallel scoring: one reward model sharded over the GPUs of one machine.

For reward models that do not fit one GPU (Llama-3.3-70B shapes are 141 GB in bf16). The model
is loaded with transformers' own tensor-parallel plan (``DistributedConfig(tp_plan="auto")``:
q/k/v and the MLP's gate/up column-sharded, o/down row-sharded with an all-reduce, the token
embedding sharded over the vocabulary), one process per GPU under ``torchrun``. Each rank holds
``H/world`` query heads and ``KV/world`` key/value heads of every layer; the packed varlen
attention reads head counts from its inputs, so the engine's forward runs unchanged.

Every rank must run the same forwards in the same order (each layer ends in a collective).
`Lockstep` makes that so without a second scoring path: it is the engine's `Forward` (plugged in
through ``ScoringEngine(wrap_forward=...)``). Rank 0 runs the ordinary engine (it reads the input,
plans batches, resumes, writes the output) and broadcasts each packed batch before running it;
the other ranks run the broadcast batches and discard their (identical) rewards. Loading goes
through the one `rewardkit.models.loading.load_model` (``tensor_parallel=True``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
import torch.distributed as dist

from rewardkit.engine.batching import PackedBatch
from rewardkit.engine.engine import Forward, ScoringEngine, head_linear
from rewardkit.errors import ConfigError, ModelError
from rewardkit.models.loading import SEQUENCE_CLASSIFICATION

log = logging.getLogger(__name__)

_BATCH, _LONG, _STOP = "batch", "long", "stop"


def tensor_parallel_size(model: torch.nn.Module) -> int:
    """How many ranks share the model's layers (1 for an unsharded model)."""
    return int(getattr(model, "tp_size", None) or 1)


def check_shapes(config: Any, world_size: int) -> None:
    """Checks that heads and MLP width split evenly over ``world_size`` ranks.

    Raises:
        ConfigError: naming every dimension that does not divide.
    """
    heads = config.num_attention_heads
    dims = {
        "num_attention_heads": heads,
        "num_key_value_heads": getattr(config, "num_key_value_heads", None) or heads,
        "intermediate_size": config.intermediate_size,
    }
    bad = [f"{k}={v}" for k, v in dims.items() if v % world_size]
    if bad:
        raise ConfigError(
            f"--tensor-parallel over {world_size} ranks needs these divisible by {world_size}: "
            f"{', '.join(bad)}; run torchrun with a --nproc-per-node that divides them"
        )


def replicate_head(model: torch.nn.Module, head: str) -> None:
    """Gives every rank the whole reward-head weight as a plain tensor.

    The ``lm-logit`` head reads one row of the output embedding, which the plan shards over the
    vocabulary (a DTensor). Gathering it once here (``V·D`` elements per rank: 2 GiB for
    Llama-3.3-70B in bf16) keeps `apply_head` a plain row lookup; the ``score`` head of a sequence
    classifier is not in the plan and is already replicated.
    """
    linear, _ = head_linear(model, head)
    w = linear.weight
    if hasattr(w, "full_tensor"):  # a DTensor
        with torch.no_grad():
            linear.weight = torch.nn.Parameter(w.full_tensor(), requires_grad=False)
        log.info("gathered the %s head weight %s on every rank", head, tuple(linear.weight.shape))


def sharding_options(config: Any) -> dict[str, Any]:
    """``from_pretrained`` options that load this rank's shard (transformers' ``tp_plan="auto"``).

    Call after joining the process group; every rank of it takes part in the load.

    Raises:
        ConfigError: not inside a process group, or shapes that do not split over its ranks.
    """
    from transformers.distributed import DistributedConfig

    if not dist.is_initialized():
        raise ConfigError(
            "--tensor-parallel runs under torchrun: torchrun --nproc-per-node N -m rewardkit ..."
        )
    check_shapes(config.get_text_config(), dist.get_world_size())
    return {"distributed_config": DistributedConfig(tp_plan="auto")}


def finish_sharded(model: torch.nn.Module, head: str) -> None:
    """Checks that the model was sharded over every rank and replicates its reward head.

    Raises:
        ModelError: the architecture has no tensor-parallel plan for this many ranks.
    """
    world = dist.get_world_size()
    if tensor_parallel_size(model) != world:
        raise ModelError(f"{type(model).__name__} has no tensor-parallel plan for {world} ranks")
    replicate_head(model, head)
    log.info("sharded %s tensor-parallel over %d ranks (head %s)", type(model).__name__, world, head)


def tensor_parallel_engine(
    model: torch.nn.Module, *, head: str = SEQUENCE_CLASSIFICATION, **kwargs: Any
) -> ScoringEngine:
    """A `ScoringEngine` for a sharded model whose forwards run in `Lockstep` on every rank;
    uncompiled unless ``compile=True`` is passed.

    ``torch.compile`` falling back to eager on one rank and not on another would desynchronise
    the ranks' collectives, so it is opt-in (and measured by ``bench/tp_bench.py --compile``).

    Raises:
        ConfigError: ``fp8=True`` (not supported with sharded weights).
    """
    if kwargs.get("fp8"):
        raise ConfigError(
            "--fp8 cannot be combined with --tensor-parallel (FP8 layers expect unsharded weights)"
        )
    kwargs.setdefault("compile", False)
    return ScoringEngine(model, head=head, wrap_forward=Lockstep, **kwargs)


class Lockstep:
    """A `Forward` that runs each forward on every rank of a tensor-parallel group, in order.

    Rank 0 scores as usual inside `leading`: each forward is broadcast to the other ranks before
    it runs here. Every other rank calls `follow`, which runs the broadcast forwards until rank 0
    leaves `leading` (normally or by an exception).

    Args:
        inner: this rank's forward over its shard of the model.
        src: the global rank that drives (reads input, writes output).
    """

    def __init__(self, inner: Forward, *, src: int = 0) -> None:
        self.inner = inner
        self.src = src
        self._leading = False
        self._broken = False

    def _send(self, message: tuple[str, Any]) -> tuple[str, Any]:
        box = [message]
        dist.broadcast_object_list(box, src=self.src)
        return box[0]

    def _lead(self, kind: str, payload: Any, run: Callable[[Any], torch.Tensor]) -> torch.Tensor:
        if not self._leading:
            raise RuntimeError("a tensor-parallel forward on the leading rank runs inside Lockstep.leading()")
        self._send((kind, payload))
        try:
            return run(payload)
        except torch.OutOfMemoryError as e:
            self._broken = True
            raise RuntimeError(
                f"out of memory in a tensor-parallel forward ({e}); lower --token-budget"
            ) from e
        except BaseException:
            self._broken = True
            raise

    def packed(self, batch: PackedBatch) -> torch.Tensor:
        return self._lead(_BATCH, batch, self.inner.packed)

    def long(self, ids: Sequence[int]) -> torch.Tensor:
        return self._lead(_LONG, list(ids), self.inner.long)

    @contextmanager
    def leading(self) -> Iterator[None]:
        """Rank 0's scoring runs inside this block; on leaving it the followers stop.

        A forward that fails on this rank leaves the others inside a collective, so no stop is
        sent then: the process exits with the error and torchrun ends the job. Running out of
        memory is such a failure here (the engine's split-and-retry would send the followers a
        new batch mid-forward); lower ``--token-budget`` instead.
        """
        self._leading, self._broken = True, False
        try:
            yield
        finally:
            self._leading = False
            if not self._broken:
                self._send((_STOP, None))

    def follow(self) -> int:
        """Runs the leader's forwards until it stops; returns how many ran."""
        n = 0
        while True:
            kind, payload = self._send((_STOP, None))  # the value sent is the leader's
            if kind == _STOP:
                return n
            if kind == _BATCH:
                self.inner.packed(payload)
            else:
                self.inner.long(payload)
            n += 1
