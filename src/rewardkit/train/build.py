"""The steps that set up a training run, each returning what it builds; `Trainer.setup` calls
them in order:

1. `check_output`: the run directory can be created, and holds no other run (or ``--resume``);
2. `load_chat`: tokenizer, chat template and the 1-output model config;
3. `load_data`: training and validation pairs, tokenized, and the number of steps;
4. `load_model`: the reward model (real weights on rank 0, the meta device elsewhere) and a
   digest of its starting weights, the same on every rank;
5. `resolve_settings`: precision, compilation and the activation-checkpointing mode (``auto``:
   from the memory plan);
6. `rewardkit.train.parallelize.parallelize`: LoRA, checkpointing, compile, FSDP2, weights;
7. `build_optimizer`: AdamW and its schedule over the trainable weights.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from transformers import PretrainedConfig

from rewardkit.distributed import ProcessGroup
from rewardkit.errors import ConfigError, RewardkitError
from rewardkit.models.loading import default_max_length, load_tokenizer
from rewardkit.models.templating import ChatTokenizer
from rewardkit.train import checkpoint as ckpt
from rewardkit.train.activation_checkpointing import ACMode, parse_ac
from rewardkit.train.config import TrainConfig
from rewardkit.train.data import (
    PairData,
    TokenPairs,
    is_local,
    load_pairs,
    split_holdout,
    steps_per_epoch,
    subset,
    tokenize_pairs,
)
from rewardkit.train.fingerprint import weights_digest
from rewardkit.train.lora import LoraSettings, trainable_parameters
from rewardkit.train.loss import LossName
from rewardkit.train.memory import (
    ACChoice,
    Shapes,
    choose_ac,
    device_budget_gib,
    host_available_gib,
    host_moments_gib,
)
from rewardkit.train.modeling import ModelSource, load_reward_model, reward_config
from rewardkit.train.step import make_optimizer

log = logging.getLogger(__name__)


def check_output(cfg: TrainConfig) -> Path | None:
    """Checks that ``cfg.output`` can be the run directory; returns the checkpoint to resume.

    Nothing is created here: the directory is made once the run is set up, so a run that fails
    before leaves none behind.

    Raises:
        ConfigError: the path runs through a regular file, or it already holds checkpoints and
            ``resume`` is not set.
    """
    out = cfg.output_dir
    blocked = next((p for p in (out, *out.parents) if p.exists() and not p.is_dir()), None)
    if blocked is not None:
        what = "is a file" if blocked == out else f"is under {blocked}, which is a file"
        raise ConfigError(f"output (--output): {out} {what}; choose a directory path")
    resume = ckpt.resolve_resume(cfg.resume, out)
    if resume is None and (old := ckpt.latest_checkpoint(out)) is not None:
        raise ConfigError(
            f"output (--output): {out} already holds checkpoints ({old.name}); pass "
            "--resume to continue that run, or choose another --output"
        )
    return resume


def model_source(cfg: TrainConfig) -> ModelSource:
    return ModelSource(name=cfg.model, revision=cfg.revision, trust_remote_code=cfg.trust_remote_code)


def load_chat(cfg: TrainConfig) -> tuple[Any, ChatTokenizer, PretrainedConfig]:
    """The tokenizer, the `ChatTokenizer` that encodes conversations for training, and the
    model's config as a 1-output reward model."""
    tokenizer, _ = load_tokenizer(
        cfg.model,
        revision=cfg.revision,
        chat_template=cfg.chat_template,
        trust_remote_code=cfg.trust_remote_code,
    )
    model_config = reward_config(model_source(cfg), tokenizer.pad_token_id)
    max_length = cfg.max_length or default_max_length(model_config, tokenizer)
    truncation = "left" if cfg.truncation == "left" else "error"
    return tokenizer, ChatTokenizer(tokenizer, max_length=max_length, truncation=truncation), model_config


@dataclass(frozen=True, kw_only=True)
class RunData:
    """Tokenized pairs of a run and its length in steps.

    Args:
        train: the training pairs; val: the validation pairs, if any.
        ties: training records dropped as ties.
        loss: the loss (``cfg.loss``, or ``scaled_bt`` on HelpSteer data and ``bt`` otherwise).
        steps_per_epoch: optimizer steps per pass over ``train``.
        total_steps: optimizer steps of the whole run.
    """

    train: TokenPairs
    val: TokenPairs | None
    ties: int
    loss: LossName
    steps_per_epoch: int
    total_steps: int


def _select_pairs(cfg: TrainConfig) -> tuple[PairData, PairData | None, PairData]:
    """(train, validation, the whole training source) after holdout and subsetting."""
    source = load_pairs(cfg.data, data_format=cfg.data_format, split="train")
    train, val = source, None
    if cfg.val_data:
        val = load_pairs(cfg.val_data, data_format=cfg.data_format, split="validation")
    elif cfg.val_fraction:
        keep, held = split_holdout(len(source.pairs), cfg.val_fraction, cfg.seed)
        train, val = source.take(keep), source.take(held)
    elif not is_local(cfg.data):
        try:
            val = load_pairs(cfg.data, data_format=cfg.data_format, split="validation")
        except RewardkitError as e:
            log.warning("no validation split for %s (%s); training without validation", cfg.data, e)
    train = train.take(subset(len(train.pairs), cfg.max_pairs, cfg.seed))
    if val is not None:
        val = val.take(subset(len(val.pairs), cfg.max_val_pairs, cfg.seed))
    return train, val, source


def load_data(cfg: TrainConfig, chat: ChatTokenizer, env: ProcessGroup) -> RunData:
    """Reads, validates and tokenizes the pairs (rank 0 first, so that a hub download happens
    once), and works out the loss and the number of steps."""
    if not env.is_main:
        dist.barrier()
    try:
        train, val, source = _select_pairs(cfg)
    finally:
        if env.is_main:
            dist.barrier()
    train_tokens = tokenize_pairs(train, chat, truncation=cfg.truncation)
    val_tokens = tokenize_pairs(val, chat, truncation=cfg.truncation) if val and val.pairs else None
    per_epoch = steps_per_epoch(len(train_tokens), cfg.global_batch_size)
    return RunData(
        train=train_tokens,
        val=val_tokens,
        ties=source.ties,
        loss=cfg.loss or ("scaled_bt" if source.helpsteer else "bt"),
        steps_per_epoch=per_epoch,
        total_steps=cfg.max_steps or math.ceil(cfg.epochs * per_epoch),
    )


def load_model(
    cfg: TrainConfig, model_config: PretrainedConfig, env: ProcessGroup
) -> tuple[torch.nn.Module, str]:
    """The reward model in fp32 — rank 0 reads the weights, the others build it on the meta
    device and receive only their shards later — and the digest of its starting weights
    (`rewardkit.train.fingerprint.weights_digest`), computed on rank 0 and shared."""
    materialize = env.is_main or env.world_size == 1
    model = load_reward_model(model_source(cfg), model_config, materialize=materialize, seed=cfg.seed)
    digest = [weights_digest(model) if env.is_main else None]
    if env.world_size > 1:
        dist.broadcast_object_list(digest, src=0)
    assert digest[0] is not None
    return model, digest[0]


@dataclass(frozen=True, kw_only=True)
class Settings:
    """How this run computes, resolved from the options and the device.

    Args:
        bf16: bf16 mixed precision (fp32 master weights) rather than fp32.
        compile: decoder blocks compiled.
        fused_optimizer: fused AdamW (CUDA) rather than ``foreach``.
        ac: the activation-checkpointing mode.
        ac_choice: how ``auto`` chose ``ac`` (None when the mode was given, or on CPU).
        lora: the LoRA adapters' settings, or None for full fine-tuning.
        micro_batch_tokens: the token budget of one packed forward: ``token_budget``, or less
            where ``auto`` found a smaller micro-batch with less recompute faster.
        host_moments: AdamW's moments live on the host between steps (``offload_optimizer``).
    """

    bf16: bool
    compile: bool
    fused_optimizer: bool
    ac: ACMode
    ac_choice: ACChoice | None
    lora: LoraSettings | None
    micro_batch_tokens: int
    host_moments: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "precision": "bf16-mixed" if self.bf16 else "fp32",
            "compile": self.compile,
            "optimizer": "fused" if self.fused_optimizer else "foreach",
            "offload_optimizer": self.host_moments,
            "activation_checkpointing": str(self.ac),
            "memory_plan": self.ac_choice.to_dict() if self.ac_choice is not None else None,
        }


def lora_settings(cfg: TrainConfig) -> LoraSettings | None:
    if not cfg.lora_rank:
        return None
    return LoraSettings(
        rank=cfg.lora_rank,
        alpha=cfg.lora_alpha,
        dropout=cfg.lora_dropout,
        target_modules=cfg.lora_target_modules,
    )


def resolve_settings(cfg: TrainConfig, env: ProcessGroup, model: torch.nn.Module, data: RunData) -> Settings:
    """Precision (``auto``: bf16 on GPU), compilation (default: on GPU), the optimizer kernel
    (fused on GPU) and the activation-checkpointing mode.

    ``auto`` checkpointing plans the memory of each mode for the largest micro-batch that fits
    the budget (``memory_budget_gib``, default the GPU's memory less 4 GiB), at most the token
    budget and at least the longest pair, and takes the fastest estimated (mode, micro-batch)
    (`rewardkit.train.memory.choose_ac`). Without a budget (CPU) it is ``none``; fp32 on a GPU
    (which the plan, counting bf16 activations, does not cover) takes ``full``. With
    ``offload_optimizer`` unset, the same choice decides where AdamW's moments live between steps
    (the host, if it has the memory for every local rank's share); otherwise they stay on the GPU.
    """
    cuda = env.device.type == "cuda"
    bf16 = cfg.precision == "bf16-mixed" or (cfg.precision == "auto" and cuda)
    compiled = cuda if cfg.compile is None else cfg.compile
    lora = lora_settings(cfg)
    choice = None

    def shapes() -> Shapes:
        return Shapes.of(model, lora_rank=cfg.lora_rank, lora_targets=cfg.lora_target_modules)

    if cfg.offload_optimizer:
        need, available = host_memory_gib(shapes(), env.world_size)
        if available is not None and need > available:
            raise ConfigError(
                f"offload_optimizer (--set offload_optimizer=...): the AdamW moments of this machine's "
                f"ranks need {need:.1f} GiB of host memory and {available:.1f} GiB is available; set it "
                "to false, or use more machines"
            )
    if cfg.activation_checkpointing != "auto":
        ac = parse_ac(cfg.activation_checkpointing)
    elif (budget := cfg.memory_budget_gib or device_budget_gib(env.device)) is None:
        ac = ACMode("none")  # CPU: memory is not planned
    elif not bf16 and cuda:
        ac = ACMode("full")  # the plan counts bf16 activations; fp32 ones take twice the memory
        log.info("activation checkpointing auto → full (the memory plan is for bf16 mixed precision)")
    else:
        longest = max(data.train.lengths)
        shape = shapes()
        host = cfg.offload_optimizer
        if host is None and not host_has_room(shape, env.world_size):
            host = False
        choice = choose_ac(
            shape,
            world_size=env.world_size,
            tokens=cfg.token_budget,
            budget_gib=budget,
            compiled=compiled,
            fused_optimizer=cuda,
            longest=longest,
            host_moments=host,
        )
        ac = choice.mode
        if not choice.fits:
            log.warning(
                "memory plan: no checkpointing mode fits %.1f GiB per GPU with %d-token micro-batches "
                "(full checkpointing needs %.1f GiB); lower token_budget or use more GPUs",
                budget,
                max(cfg.token_budget, longest),
                choice.plan.total,
            )
        else:
            log.info(
                "activation checkpointing auto → %s with %d-token micro-batches%s (planned %.1f GiB of %.1f per GPU)",
                ac,
                choice.tokens,
                ", AdamW moments on the host" if choice.plan.host_moments else "",
                choice.plan.total,
                budget,
            )
    return Settings(
        bf16=bf16,
        compile=compiled,
        fused_optimizer=cuda,
        ac=ac,
        ac_choice=choice,
        lora=lora,
        micro_batch_tokens=choice.tokens if choice is not None else cfg.token_budget,
        host_moments=choice.plan.host_moments if choice is not None else bool(cfg.offload_optimizer),
    )


def host_memory_gib(shapes: Shapes, world_size: int) -> tuple[float, float | None]:
    """GiB the AdamW moments of every rank on this machine need in its memory, and GiB it has
    available (None where that is not known)."""
    local_ranks = int(os.environ.get("LOCAL_WORLD_SIZE", world_size))
    return host_moments_gib(shapes, world_size=world_size) * local_ranks, host_available_gib()


def host_has_room(shapes: Shapes, world_size: int) -> bool:
    """Whether the host can hold the AdamW moments of every rank on it, with half its available
    memory left for everything else."""
    need, available = host_memory_gib(shapes, world_size)
    if available is None or need > available / 2:
        log.info("offload_optimizer: not considered (%.1f GiB of host memory needed, %s available)",
                 need, "unknown" if available is None else f"{available:.1f} GiB")  # fmt: skip
        return False
    return True


def build_optimizer(
    cfg: TrainConfig, root: torch.nn.Module, settings: Settings
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW over the trainable weights (frozen LoRA bases get no state), linear warmup then
    constant."""
    return make_optimizer(
        trainable_parameters(root),
        lr=cfg.lr,
        betas=cfg.adam_betas,
        eps=cfg.adam_eps,
        weight_decay=cfg.weight_decay,
        warmup_steps=cfg.warmup_steps,
        fused=settings.fused_optimizer,
    )
