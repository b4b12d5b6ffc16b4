"""Sharded checkpoints (torch.distributed.checkpoint) for resuming, and the final HF export.

A checkpoint ``output/checkpoints/step-000120/`` holds the model and optimizer shards of every
rank (DCP; reloadable on a different number of ranks), ``trainer.json`` (step, data-order
settings, scheduler, metrics so far) and ``rng-rank{r}.pt`` (each rank's RNG state). It is written
to ``step-N.tmp`` and renamed when complete, so a killed save never looks like a checkpoint.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_state_dict,
    set_model_state_dict,
    set_state_dict,
)

from rewardkit.errors import ConfigError
from rewardkit.train.lora import merge_state_dict

log = logging.getLogger(__name__)

_STEP_DIR = re.compile(r"^step-(\d+)$")


def checkpoint_root(output: Path) -> Path:
    return output / "checkpoints"


def latest_checkpoint(output: Path) -> Path | None:
    """The complete checkpoint with the highest step under ``output``, if any."""
    root = checkpoint_root(output)
    if not root.is_dir():
        return None
    steps = [(int(m.group(1)), p) for p in root.iterdir() if (m := _STEP_DIR.match(p.name)) and p.is_dir()]
    return max(steps)[1] if steps else None


def resolve_resume(resume: str | None, output: Path) -> Path | None:
    """``latest`` → the newest checkpoint under ``output`` (None if there is none yet, so the same
    command starts or resumes a run); a path → that checkpoint, which must exist."""
    if resume is None:
        return None
    if resume == "latest":
        return latest_checkpoint(output)
    path = Path(resume)
    if not (path / "trainer.json").is_file():
        raise ConfigError(f"resume (--resume): {path} is not a rewardkit checkpoint (no trainer.json)")
    return path


def _rng_state(device: torch.device) -> dict[str, Any]:
    state: dict[str, Any] = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def save_checkpoint(
    output: Path,
    step: int,
    root: nn.Module,
    optimizer: torch.optim.Optimizer,
    trainer_state: dict[str, Any],
    *,
    device: torch.device,
    keep: int,
    trainable_only: bool = False,
) -> Path:
    """Writes the checkpoint of ``step`` (collective: every rank calls it).

    With ``trainable_only`` (LoRA) the frozen weights are left out: they are re-read from the model
    source on resume.
    """
    rank = dist.get_rank()
    final = checkpoint_root(output) / f"step-{step:06d}"
    tmp = final.with_name(final.name + ".tmp")
    if rank == 0:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    dist.barrier()
    model_sd, optim_sd = get_state_dict(root, optimizer, options=_options(trainable_only))
    dcp.save({"model": model_sd, "optim": optim_sd}, checkpoint_id=str(tmp))
    torch.save(_rng_state(device), tmp / f"rng-rank{rank}.pt")
    dist.barrier()
    if rank == 0:
        (tmp / "trainer.json").write_text(json.dumps(trainer_state, indent=1), encoding="utf-8")
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
        _prune(output, keep)
        log.info("saved checkpoint %s", final)
    dist.barrier()
    return final


def _prune(output: Path, keep: int) -> None:
    root = checkpoint_root(output)
    steps = sorted((int(m.group(1)), p) for p in root.iterdir() if (m := _STEP_DIR.match(p.name)))
    for _, path in steps[:-keep]:
        shutil.rmtree(path, ignore_errors=True)


def _options(trainable_only: bool) -> StateDictOptions:
    return StateDictOptions(ignore_frozen_params=trainable_only, strict=not trainable_only)


def load_checkpoint(
    path: Path,
    root: nn.Module,
    optimizer: torch.optim.Optimizer,
    *,
    device: torch.device,
    trainable_only: bool = False,
) -> dict[str, Any]:
    """Restores model, optimizer and this rank's RNG from ``path``; returns its trainer state.
    ``trainable_only`` must be as when saved."""
    opts = _options(trainable_only)
    model_sd, optim_sd = get_state_dict(root, optimizer, options=opts)
    state = {"model": model_sd, "optim": optim_sd}
    dcp.load(state, checkpoint_id=str(path))
    set_state_dict(
        root, optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"], options=opts
    )
    rng_file = path / f"rng-rank{dist.get_rank()}.pt"
    if rng_file.is_file():  # absent when resuming on more ranks than saved: keep the fresh seed
        rng = torch.load(rng_file, weights_only=True)
        torch.set_rng_state(rng["cpu"])
        if device.type == "cuda" and "cuda" in rng:
            torch.cuda.set_rng_state(rng["cuda"], device)
    return json.loads((path / "trainer.json").read_text(encoding="utf-8"))


def load_full_weights(root: nn.Module, full: dict[str, torch.Tensor] | None) -> None:
    """Fills a sharded model from rank 0's full state dict (others pass None): each rank receives
    only its shards."""
    set_model_state_dict(
        root,
        full or {},
        options=StateDictOptions(full_state_dict=True, broadcast_from_rank0=True),
    )


def export_hf(
    root: nn.Module,
    model: nn.Module,
    tokenizer: Any,
    out: Path,
    *,
    dtype: torch.dtype,
    prefix: str = "model.",
    lora_scaling: float | None = None,
) -> Path:
    """Writes a HF reward model directory (safetensors, ``num_labels=1``, tokenizer and chat
    template) that ``RewardModel.load``, ``AutoModelForSequenceClassification`` and vLLM load.

    Collective: every rank takes part in gathering the full weights; rank 0 writes them. With
    ``lora_scaling`` (a LoRA model), each adapter is merged into its weight first
    (`rewardkit.train.lora.merge_state_dict`), so the export is a plain model.
    """
    full = get_model_state_dict(root, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    if dist.get_rank() == 0:
        sd = {k.removeprefix(prefix): v for k, v in full.items()}
        if lora_scaling is not None:
            sd = merge_state_dict(sd, lora_scaling)
        sd = {k: v.to(dtype) for k, v in sd.items()}
        config = model.config
        old_attn, old_dtype = config._attn_implementation, getattr(config, "dtype", None)
        config._attn_implementation = "sdpa"  # the exported model runs anywhere, not only in rewardkit
        config.dtype = dtype
        try:
            model.save_pretrained(out, state_dict=sd, safe_serialization=True)
        finally:
            config._attn_implementation, config.dtype = old_attn, old_dtype
        tokenizer.save_pretrained(out)
        log.info("exported %s (%s)", out, str(dtype).removeprefix("torch."))
    dist.barrier()
    return out
