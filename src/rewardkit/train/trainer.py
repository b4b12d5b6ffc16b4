"""The training loop: setup → fit → close, the same on one CPU process and on many GPUs.

Each optimizer step takes one global batch of pairs (a deterministic shuffle of the data, the
same on every rank and after a resume); each rank takes its shard of the batch, packs it into
token-budget micro-batches (chosen and rejected of a pair in one stream), and accumulates
gradients over them. FSDP2 averages gradients over ranks, so the update equals one step on the
whole global batch.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from rewardkit.data.conversation import PreferencePair
from rewardkit.distributed import ProcessGroup, join, leave
from rewardkit.errors import ConfigError, RewardkitError
from rewardkit.models.loading import default_max_length, load_tokenizer
from rewardkit.models.templating import ChatTokenizer
from rewardkit.train import checkpoint as ckpt
from rewardkit.train.config import TrainConfig
from rewardkit.train.data import (
    TokenPairs,
    epoch_order,
    global_batch,
    is_local,
    load_pairs,
    split_holdout,
    steps_per_epoch,
    tokenize_pairs,
)
from rewardkit.train.distributed import PairRewards, broadcast_buffers, shard_model
from rewardkit.train.lora import LoraSettings, apply_lora, flop_params, trainable_parameters
from rewardkit.train.metrics import FlopCounter, MetricsWriter, peak_tflops, tensorboard_enabled
from rewardkit.train.modeling import (
    ModelSource,
    enable_activation_checkpointing,
    load_reward_model,
    matmul_params,
    reward_config,
)
from rewardkit.train.step import PairStep, make_optimizer

log = logging.getLogger(__name__)

StartFn = Callable[[int, int], None]  # (total steps, first step) on rank 0
LogFn = Callable[[dict[str, Any]], None]  # one metrics row on rank 0


class Trainer:
    """Trains a reward model as `TrainConfig` says.

    Args:
        config: the run's options.
        on_start: called on rank 0 once the number of steps is known.
        on_log: called on rank 0 with every metrics row (training and validation).

    Example:
        >>> t = Trainer(TrainConfig(model="Qwen/Qwen2.5-0.5B-Instruct", data="nvidia/HelpSteer3",
        ...                         output="runs/rm"))  # doctest: +SKIP
        >>> t.setup(); export_dir = t.fit(); t.close()  # doctest: +SKIP
    """

    def __init__(
        self, config: TrainConfig, *, on_start: StartFn | None = None, on_log: LogFn | None = None
    ) -> None:
        self.cfg = config
        self.on_start = on_start
        self.on_log = on_log
        self.env: ProcessGroup | None = None
        self.writer: MetricsWriter | None = None
        self.step = 0

    # ---- setup ---------------------------------------------------------------------------------

    def setup(self) -> None:
        """Process group, tokenizer, data, sharded model, optimizer; restores a checkpoint."""
        cfg = self.cfg
        self.env = env = join(cfg.device)
        self.tensorboard = tensorboard_enabled(cfg.tensorboard) and env.is_main
        torch.manual_seed(cfg.seed + env.rank)
        cuda = env.device.type == "cuda"
        self.bf16 = cfg.precision == "bf16-mixed" or (cfg.precision == "auto" and cuda)
        self.output = cfg.output_dir
        self.output.mkdir(parents=True, exist_ok=True)
        resume = ckpt.resolve_resume(cfg.resume, self.output)
        if resume is None and (old := ckpt.latest_checkpoint(self.output)) is not None:
            raise ConfigError(
                f"output (--output): {self.output} already holds checkpoints ({old.name}); pass "
                "--resume to continue that run, or choose another --output"
            )

        # 1. Tokenizer and the 1-output model config.
        self.tokenizer, _ = load_tokenizer(
            cfg.model,
            revision=cfg.revision,
            chat_template=cfg.chat_template,
            trust_remote_code=cfg.trust_remote_code,
        )
        src = ModelSource(name=cfg.model, revision=cfg.revision, trust_remote_code=cfg.trust_remote_code)
        model_config = reward_config(src, self.tokenizer.pad_token_id)
        max_length = cfg.max_length or default_max_length(model_config, self.tokenizer)
        self.chat = ChatTokenizer(
            self.tokenizer, max_length=max_length, truncation="left" if cfg.truncation == "left" else "error"
        )

        # 2. Data (rank 0 first, so that a hub download happens once).
        if not env.is_main:
            dist.barrier()
        try:
            train_pairs, val_pairs, helpsteer = self._load_data()
        finally:
            if env.is_main:
                dist.barrier()
        self.loss_name = cfg.loss or ("scaled_bt" if helpsteer else "bt")
        self.train_data = tokenize_pairs(train_pairs, self.chat, truncation=cfg.truncation, source=cfg.data)
        self.val_data = (
            tokenize_pairs(
                val_pairs, self.chat, truncation=cfg.truncation, source=cfg.val_data or "validation"
            )
            if val_pairs
            else None
        )
        n = len(self.train_data)
        self.steps_per_epoch = steps_per_epoch(n, cfg.global_batch_size)
        self.total_steps = cfg.max_steps or math.ceil(cfg.epochs * self.steps_per_epoch)

        # 3. Model: rank 0 reads the weights, the others build on the meta device and receive
        #    only their shards.
        materialize = env.is_main or env.world_size == 1
        model = load_reward_model(src, model_config, materialize=materialize, seed=cfg.seed)
        self.lora = self._lora_settings()
        if self.lora is not None:  # before sharding, so that FSDP2 sees frozen and trainable weights
            with torch.device("meta") if not materialize else contextlib.nullcontext():
                apply_lora(model, self.lora, frozen_dtype=torch.bfloat16 if self.bf16 else None)
        self.pad_token_id = model.config.pad_token_id
        model.train()
        ac = cfg.activation_checkpointing if cfg.activation_checkpointing is not None else cuda
        if ac:
            enable_activation_checkpointing(model)
        self.model = model
        self.root = PairRewards(model)
        full = self.root.state_dict() if env.world_size > 1 and env.is_main else None
        shard_model(self.root, model, device=env.device, param_dtype=torch.bfloat16 if self.bf16 else None)
        if env.world_size > 1:
            if not env.is_main:
                self.root.to_empty(device=env.device)
            ckpt.load_full_weights(self.root, full)
            broadcast_buffers(self.root)
            del full

        # 4. Optimizer: AdamW, linear warmup then constant; frozen weights (LoRA) get no state.
        self.optimizer, self.scheduler = make_optimizer(
            trainable_parameters(self.root),
            lr=cfg.lr,
            betas=cfg.adam_betas,
            eps=cfg.adam_eps,
            weight_decay=cfg.weight_decay,
            warmup_steps=cfg.warmup_steps,
        )
        self.stepper = PairStep(
            self.root,
            self.optimizer,
            self.scheduler,
            device=env.device,
            rank=env.rank,
            world=env.world_size,
            loss_name=self.loss_name,
            reward_centering=cfg.reward_centering,
            token_budget=cfg.micro_batch_tokens,
            pad_token_id=self.pad_token_id,
            flops=FlopCounter(model.config, self._flop_params(model)),
            grad_clip=cfg.grad_clip,
        )

        # 5. Resume.
        if resume is not None:
            self._check_lora(resume)
            state = ckpt.load_checkpoint(
                resume, self.root, self.optimizer, device=env.device, trainable_only=self.lora is not None
            )
            self._check_resumable(state, resume)
            self.step = int(state["step"])
            self.scheduler.load_state_dict(state["scheduler"])
            log.info("resumed from %s at step %d", resume, self.step)
        if env.is_main:
            self.writer = MetricsWriter(
                self.output, tensorboard=self.tensorboard, truncate_after=self.step if resume else None
            )
        self.peak = peak_tflops(env.device, cfg.peak_tflops) if (self.bf16 or cfg.peak_tflops) else None
        log.info(
            "training %s: %d pairs (%d ties, %d over-long dropped), %d steps of %d pairs, loss %s, "
            "%d rank(s) on %s, %s",
            cfg.model,
            n,
            self.ties,
            self.train_data.dropped,
            self.total_steps,
            cfg.global_batch_size,
            self.loss_name,
            env.world_size,
            env.device.type,
            "bf16 mixed precision" if self.bf16 else "fp32",
        )

    def _lora_settings(self) -> LoraSettings | None:
        cfg = self.cfg
        if not cfg.lora_rank:
            return None
        return LoraSettings(
            rank=cfg.lora_rank,
            alpha=cfg.lora_alpha,
            dropout=cfg.lora_dropout,
            target_modules=cfg.lora_target_modules,
        )

    def _flop_params(self, model: torch.nn.Module) -> float:
        n = matmul_params(model)
        return flop_params(model, n) if self.lora is not None else n

    def _check_lora(self, path: Path) -> None:
        """A checkpoint holds only the adapters and head (LoRA) or every weight: the adapter
        settings must match before loading it."""
        saved = json.loads((path / "trainer.json").read_text(encoding="utf-8")).get("config", {})
        keys = ("lora_rank", "lora_alpha", "lora_target_modules")
        now = self.cfg.to_dict()
        default = TrainConfig(model="", data="", output="").to_dict()  # options the checkpoint predates
        old = {k: saved.get(k, default[k]) for k in keys}
        diff = [f"{k}: checkpoint {old[k]!r}, now {now[k]!r}" for k in keys if old[k] != now[k]]
        if diff:
            raise ConfigError(
                f"resume (--resume): {path} was written with other LoRA settings ({'; '.join(diff)})"
            )

    def _load_data(self) -> tuple[list[PreferencePair], list[PreferencePair], bool]:
        cfg = self.cfg
        train = load_pairs(cfg.data, data_format=cfg.data_format, split="train")
        self.ties = train.ties
        pairs = train.pairs
        val: list[PreferencePair] = []
        if cfg.val_data:
            val = load_pairs(cfg.val_data, data_format=cfg.data_format, split="validation").pairs
        elif cfg.val_fraction:
            pairs, val = split_holdout(pairs, cfg.val_fraction, cfg.seed)
        elif not is_local(cfg.data):
            try:
                val = load_pairs(cfg.data, data_format=cfg.data_format, split="validation").pairs
            except RewardkitError as e:
                log.warning("no validation split for %s (%s); training without validation", cfg.data, e)
        pairs = _subset(pairs, cfg.max_pairs, cfg.seed)
        val = _subset(val, cfg.max_val_pairs, cfg.seed)
        return pairs, val, train.helpsteer

    def _check_resumable(self, state: dict[str, Any], path: Path) -> None:
        """Data order is a function of (pairs, batch size, seed): all three must match."""
        now = {"num_pairs": len(self.train_data), "global_batch_size": self.cfg.global_batch_size}
        now["seed"] = self.cfg.seed
        diff = [f"{k}: checkpoint {state.get(k)!r}, now {v!r}" for k, v in now.items() if state.get(k) != v]
        if diff:
            raise ConfigError(
                f"resume (--resume): {path} was written with different data settings, so the data "
                f"order would not continue ({'; '.join(diff)})"
            )

    # ---- fit -----------------------------------------------------------------------------------

    def fit(self) -> Path:
        """Runs the remaining steps; returns the exported model directory (or the last checkpoint
        when ``export`` is off)."""
        assert self.env is not None, "call setup() first"
        cfg, env = self.cfg, self.env
        if env.is_main and self.on_start is not None:
            self.on_start(self.total_steps, self.step)
        last: Path | None = None
        while self.step < self.total_steps:
            row = self.train_step()
            self.step += 1
            done = self.step == self.total_steps
            if self.step % cfg.log_every == 0 or done:
                self._emit(row)
            if self.val_data is not None and ((cfg.eval_every and self.step % cfg.eval_every == 0) or done):
                self._emit({"step": self.step, **self.evaluate()})
            if (cfg.save_every and self.step % cfg.save_every == 0) or done:
                last = self.save()
        if cfg.export:
            return self.export()
        return last or ckpt.latest_checkpoint(self.output) or self.output

    def train_step(self) -> dict[str, Any]:
        """One optimizer step on global batch ``self.step``; returns its metrics row (all ranks)."""
        cfg, env = self.cfg, self.env
        assert env is not None
        batch = global_batch(
            len(self.train_data), self.step, global_batch_size=cfg.global_batch_size, seed=cfg.seed
        )
        s = self.stepper.train(self.train_data, batch)
        row: dict[str, Any] = {
            "step": self.step + 1,
            "epoch": (self.step + 1) / self.steps_per_epoch,
            "loss": s.loss,
            "accuracy": s.accuracy,
            "lr": s.lr,
            "grad_norm": s.grad_norm,
            "pairs": s.pairs,
            "tokens": s.tokens,
            "seconds": s.seconds,
            "tokens_per_s_per_gpu": s.tokens / s.seconds / env.world_size,
        }
        if self.peak is not None:
            row["mfu"] = s.flops / s.seconds / env.world_size / (self.peak * 1e12)
        return row

    def evaluate(self) -> dict[str, float]:
        """Validation loss and preference accuracy (ties were excluded when loading)."""
        assert self.val_data is not None
        self.model.eval()
        try:
            loss, accuracy, pairs = self.stepper.evaluate(self.val_data)
        finally:
            self.model.train()
        return {"val_loss": loss, "val_accuracy": accuracy, "val_pairs": pairs}

    def _emit(self, row: dict[str, Any]) -> None:
        if self.writer is not None:
            self.writer.write(row)
        if self.env is not None and self.env.is_main and self.on_log is not None:
            self.on_log(row)

    # ---- checkpoints and export ----------------------------------------------------------------

    def save(self) -> Path:
        state = {
            "step": self.step,
            "num_pairs": len(self.train_data),
            "global_batch_size": self.cfg.global_batch_size,
            "seed": self.cfg.seed,
            "scheduler": self.scheduler.state_dict(),
            "config": self.cfg.to_dict(),
        }
        assert self.env is not None
        return ckpt.save_checkpoint(
            self.output,
            self.step,
            self.root,
            self.optimizer,
            state,
            device=self.env.device,
            keep=self.cfg.keep_checkpoints,
            trainable_only=self.lora is not None,
        )

    def export(self) -> Path:
        """Writes ``output/final``: safetensors, config (``num_labels=1``), tokenizer, template;
        LoRA adapters are merged into the weights."""
        dtype = torch.bfloat16 if self.bf16 else torch.float32
        scaling = self.lora.scaling if self.lora is not None else None
        return ckpt.export_hf(
            self.root, self.model, self.tokenizer, self.output / "final", dtype=dtype, lora_scaling=scaling
        )

    def close(self) -> None:
        """Ends the run: closes the metrics log, frees the model and optimizer, leaves the group."""
        if self.writer is not None:
            self.writer.close()
            self.writer = None
        if self.env is not None:
            # Sharded parameters and optimizer state go before the process group (see
            # `rewardkit.distributed.leave`).
            for name in ("stepper", "scheduler", "optimizer", "root", "model"):
                self.__dict__.pop(name, None)
            leave(self.env)
            self.env = None


def _subset(pairs: list[PreferencePair], limit: int | None, seed: int) -> list[PreferencePair]:
    """At most ``limit`` pairs, a deterministic sample kept in source order."""
    if limit is None or len(pairs) <= limit:
        return pairs
    keep = sorted(epoch_order(len(pairs), seed=seed, epoch=-2)[:limit])
    return [pairs[i] for i in keep]


def train(
    config: TrainConfig | Mapping[str, Any],
    *,
    on_start: StartFn | None = None,
    on_log: LogFn | None = None,
) -> Path:
    """Trains a reward model and returns the exported model directory (``output/final``).

    Args:
        config: a `TrainConfig` or a mapping of its options (validated as the CLI's are).
        on_start: called on rank 0 with (total steps, first step).
        on_log: called on rank 0 with each metrics row.

    Example:
        >>> path = train({"model": "Qwen/Qwen2.5-0.5B-Instruct", "data": "pairs.jsonl",
        ...               "output": "runs/rm", "max_steps": 50})  # doctest: +SKIP
        >>> RewardModel.load(path).score([...])  # doctest: +SKIP
    """
    cfg = config if isinstance(config, TrainConfig) else TrainConfig.from_dict(config)
    trainer = Trainer(cfg, on_start=on_start, on_log=on_log)
    try:
        trainer.setup()
        return trainer.fit()
    finally:
        trainer.close()


__all__ = ["TokenPairs", "Trainer", "train"]
