"""Tensor-parallel scoring: one reward model sharded over the GPUs of one machine.

For reward models that do not fit one GPU (Llama-3.3-70B shapes are 141 GB in bf16). The model
is loaded with transformers' own tensor-parallel plan (``DistributedConfig(tp_plan="auto")``:
q/k/v and the MLP's gate/up column-sharded, o/down row-sharded with an all-reduce, the token
embedding sharded over the vocabulary), one process per GPU under ``torchrun``. Each rank holds
``H/world`` query heads and ``KV/world`` key/value heads of every layer; the packed varlen
attention reads head counts from its inputs, so the engine's forward runs unchanged.

Every rank must run the same forwards in the same order (each layer ends in a collective).
`Lockstep` makes that so without a second scoring path: rank 0 runs the ordinary engine (it
reads the input, plans batches, resumes, writes the output) and broadcasts each packed batch
before running it; the other ranks run the broadcast batches and discard their (identical)
rewards.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.distributed as dist

from rewardkit.engine.engine import ScoringEngine, head_linear
from rewardkit.errors import ConfigError, ModelError
from rewardkit.models.loading import (
    SEQUENCE_CLASSIFICATION,
    from_pretrained,
    load_config,
    resolve_output,
)

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


def load_sharded_model(
    name: str,
    *,
    revision: str | None = None,
    dtype: torch.dtype,
    trust_remote_code: bool = False,
    output_index: int | None = None,
    reward_head: str | None = None,
) -> tuple[torch.nn.Module, int, str]:
    """Loads this rank's shard of a reward model; returns (model, output index, reward head).

    The tensor-parallel counterpart of `rewardkit.models.loading.load_model`: same heads and
    checks, weights read from safetensors straight into each rank's shard (on ``cuda:LOCAL_RANK``,
    or the CPU with gloo). Call after joining the process group; every rank of it takes part.

    Raises:
        ConfigError: not inside a process group, or shapes that do not split over its ranks.
        ModelError: as `load_model`.
    """
    from transformers.distributed import DistributedConfig

    if not dist.is_initialized():
        raise ConfigError(
            "--tensor-parallel runs under torchrun: torchrun --nproc-per-node N -m rewardkit ..."
        )
    world = dist.get_world_size()
    config = load_config(name, revision=revision, trust_remote_code=trust_remote_code)
    check_shapes(config.get_text_config(), world)
    head, output_index = resolve_output(name, config, reward_head, output_index)
    model = from_pretrained(
        name,
        config,
        head,
        revision=revision,
        dtype=dtype,
        trust_remote_code=trust_remote_code,
        distributed_config=DistributedConfig(tp_plan="auto"),
    )
    if tensor_parallel_size(model) != world:
        raise ModelError(f"{type(model).__name__} has no tensor-parallel plan for {world} ranks")
    replicate_head(model, head)
    model.eval().requires_grad_(False)
    log.info("loaded %s tensor-parallel over %d ranks (head %s)", name, world, head)
    return model, output_index, head


def tensor_parallel_engine(
    model: torch.nn.Module, *, head: str = SEQUENCE_CLASSIFICATION, **kwargs: Any
) -> ScoringEngine:
    """A `ScoringEngine` for a sharded model, uncompiled unless ``compile=True`` is passed.

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
    return ScoringEngine(model, head=head, **kwargs)


class Lockstep:
    """Runs one engine's forwards on every rank of a tensor-parallel group, in the same order.

    Rank 0 calls `lead` around its ordinary scoring; every other rank calls `follow`, which
    returns when rank 0 leaves `lead` (normally or by an exception).

    Args:
        engine: this rank's engine over its shard of the model.
        src: the global rank that drives (reads input, writes output).
    """

    def __init__(self, engine: ScoringEngine, *, src: int = 0) -> None:
        self.engine = engine
        self.src = src

    def _send(self, message: tuple[str, Any]) -> tuple[str, Any]:
        box = [message]
        dist.broadcast_object_list(box, src=self.src)
        return box[0]

    @contextmanager
    def lead(self) -> Iterator[ScoringEngine]:
        """Broadcasts every forward of the engine before running it; stops followers on exit.

        A forward that fails on this rank leaves the others inside a collective, so no stop is
        sent then: the process exits with the error and torchrun ends the job. Running out of
        memory is such a failure here (the engine's split-and-retry would send the followers a
        new batch mid-forward); lower ``--token-budget`` instead.
        """
        engine = self.engine
        forward_batch, forward_long = engine.forward_batch, engine._forward_long
        broken = False

        def run(kind: str, payload: Any, fn: Any) -> torch.Tensor:
            nonlocal broken
            self._send((kind, payload))
            try:
                return fn(payload)
            except torch.OutOfMemoryError as e:
                broken = True
                raise RuntimeError(
                    f"out of memory in a tensor-parallel forward ({e}); lower --token-budget"
                ) from e
            except BaseException:
                broken = True
                raise

        engine.forward_batch = lambda b: run(_BATCH, b, forward_batch)  # type: ignore[method-assign]
        engine._forward_long = lambda ids: run(_LONG, list(ids), forward_long)  # type: ignore[method-assign]
        try:
            yield engine
        finally:
            engine.forward_batch, engine._forward_long = forward_batch, forward_long  # type: ignore[method-assign]
            if not broken:
                self._send((_STOP, None))

    def follow(self) -> int:
        """Runs the leader's forwards until it stops; returns how many ran."""
        n = 0
        while True:
            kind, payload = self._send((_STOP, None))  # the value sent is the leader's
            if kind == _STOP:
                return n
            if kind == _BATCH:
                self.engine.forward_batch(payload)
            else:
                self.engine._forward_long(payload)
            n += 1
