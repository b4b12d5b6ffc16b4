"""The training loop: setup → fit → close, the same on one CPU process and on many GPUs.

Each optimizer step takes one global batch of pairs (a deterministic shuffle of the data, the
same on every rank and after a resume); each rank takes its shard of the batch, packs it into
token-budget micro-batches (chosen and rejected of a pair in one stream), and accumulates
gradients over them. FSDP2 averages gradients over ranks, so the update equals one step on the
whole global batch.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from rewardkit.distributed import ProcessGroup, join, leave
from rewardkit.errors import ConfigError
from rewardkit.train import checkpoint as ckpt
from rewardkit.train.build import (
    build_optimizer,
    check_output,
    load_chat,
    load_data,
    load_model,
    resolve_settings,
)
from rewardkit.train.config import TrainConfig
from rewardkit.train.data import TokenPairs, global_batch
from rewardkit.train.fingerprint import differences, run_fingerprint
from rewardkit.train.lora import flop_params
from rewardkit.train.metrics import FlopCounter, MetricsWriter, peak_tflops, tensorboard_enabled
from rewardkit.train.modeling import matmul_params
from rewardkit.train.offload import HostMoments
from rewardkit.train.parallelize import decoder_blocks, parallelize
from rewardkit.train.step import PairStep

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
        self.created_output = False

    # ---- setup ---------------------------------------------------------------------------------

    def setup(self) -> None:
        """Process group, tokenizer, data, sharded model, optimizer; restores a checkpoint.

        The steps are the functions of `rewardkit.train.build`; the run directory is created
        last, once everything that can fail on the options or the data has passed.
        """
        cfg = self.cfg
        self.env = env = join(cfg.device)
        tensorboard = tensorboard_enabled(cfg.tensorboard) and env.is_main
        torch.manual_seed(cfg.seed + env.rank)
        self.output = cfg.output_dir
        resume = check_output(cfg)  # 1
        existed = self.output.exists()  # before any rank creates it
        self.tokenizer, self.chat, model_config = load_chat(cfg)  # 2
        data = load_data(cfg, self.chat, env)  # 3
        model, weights = load_model(cfg, model_config, env)  # 4
        settings = resolve_settings(cfg, env, model, data)  # 5
        # The run's options as it runs: what "auto" resolved to (the mode, and the micro-batch it
        # may have lowered) is what the checkpoints record.
        self.cfg = cfg = replace(
            cfg,
            activation_checkpointing=str(settings.ac),
            compile=settings.compile,
            token_budget=settings.micro_batch_tokens,
            offload_optimizer=settings.host_moments,
        )
        self.fingerprint = run_fingerprint(
            cfg, train=data.train, val=data.val, weights=weights, loss=data.loss
        )
        if resume is not None:
            self._check_resumable(resume)
        self.root = parallelize(  # 6
            model,
            device=env.device,
            ac=settings.ac,
            compile=settings.compile,
            lora=settings.lora,
            param_dtype=torch.bfloat16 if settings.bf16 else None,
        )
        self.model = model
        n = matmul_params(model)
        flops = FlopCounter(model.config, flop_params(model, n) if settings.lora is not None else n)
        self.optimizer, self.scheduler = build_optimizer(cfg, self.root, settings)  # 7
        self.host_moments = (
            HostMoments(self.optimizer, decoder_blocks(model), device=env.device)
            if settings.host_moments
            else None
        )
        self.data, self.settings = data, settings
        self.pad_token_id = model.config.pad_token_id
        self.stepper = PairStep(
            self.root,
            self.optimizer,
            self.scheduler,
            device=env.device,
            rank=env.rank,
            world_size=env.world_size,
            loss_name=data.loss,
            reward_centering=cfg.reward_centering,
            token_budget=cfg.token_budget,
            pad_token_id=self.pad_token_id,
            flops=flops,
            grad_clip=cfg.grad_clip,
            host_moments=self.host_moments,
        )
        if resume is not None:  # 8. restore
            state = ckpt.load_checkpoint(
                resume, self.root, self.optimizer, device=env.device, trainable_only=settings.lora is not None
            )
            self.step = int(state["step"])
            self.scheduler.load_state_dict(state["scheduler"])
            if self.host_moments is not None:
                self.host_moments.after_step()  # the loaded moments go to the host
            log.info("resumed from %s at step %d", resume, self.step)
        self.created_output = not existed
        self._open_output(tensorboard, resumed=resume is not None)  # 9
        self.peak = peak_tflops(env.device, cfg.peak_tflops) if (settings.bf16 or cfg.peak_tflops) else None
        log.info(
            "training %s: %d pairs (%d ties, %d over-long dropped), %d steps of %d pairs, loss %s, "
            "%d rank(s) on %s, %s, activation checkpointing %s%s%s",
            cfg.model,
            len(data.train),
            data.ties,
            data.train.dropped,
            data.total_steps,
            cfg.global_batch_size,
            data.loss,
            env.world_size,
            env.device.type,
            "bf16 mixed precision" if settings.bf16 else "fp32",
            settings.ac,
            ", compiled" if settings.compile else "",
            ", AdamW moments on the host" if settings.host_moments else "",
        )

    # Names the loop, the tests and `bench/` read.
    @property
    def train_data(self) -> TokenPairs:
        return self.data.train

    @property
    def val_data(self) -> TokenPairs | None:
        return self.data.val

    @property
    def total_steps(self) -> int:
        return self.data.total_steps

    @property
    def steps_per_epoch(self) -> int:
        return self.data.steps_per_epoch

    def _open_output(self, tensorboard: bool, *, resumed: bool) -> None:
        """Creates the run directory and, on rank 0, ``run.json`` (the resolved options and
        settings) and the metrics writer."""
        assert self.env is not None
        try:
            self.output.mkdir(parents=True, exist_ok=True)
        except OSError as e:  # raced with something that made a file there
            raise ConfigError(f"output (--output): cannot create {self.output}: {e}") from e
        if not self.env.is_main:
            return
        run = {
            "config": self.cfg.to_dict(),
            "settings": self.settings.to_dict(),
            "world_size": self.env.world_size,
            "device": str(self.env.device),
            "fingerprint": self.fingerprint,
        }
        (self.output / "run.json").write_text(json.dumps(run, indent=1) + "\n", encoding="utf-8")
        self.writer = MetricsWriter(
            self.output, tensorboard=tensorboard, truncate_after=self.step if resumed else None
        )

    def _check_resumable(self, path: Path) -> None:
        """Refuses a checkpoint of another run: one with another LoRA layout, or, unless
        ``force_resume``, another fingerprint (data, model, loss, schedule)."""
        saved = json.loads((path / "trainer.json").read_text(encoding="utf-8"))
        config = saved.get("config", {})
        keys = ("lora_rank", "lora_alpha", "lora_target_modules")
        now = self.cfg.to_dict()
        default = TrainConfig(model="", data="", output="").to_dict()  # options the checkpoint predates
        old = {k: config.get(k, default[k]) for k in keys}
        diff = [f"{k}: checkpoint {old[k]!r}, now {now[k]!r}" for k in keys if old[k] != now[k]]
        if diff:  # the checkpoint's tensors would not fit the model
            raise ConfigError(
                f"resume (--resume): {path} was written with other LoRA settings ({'; '.join(diff)})"
            )
        fp = self.fingerprint
        legacy = {"num_pairs": fp["num_pairs"], **{k: fp[k] for k in ("global_batch_size", "seed")}}
        diff = differences(saved.get("fingerprint", saved), fp if "fingerprint" in saved else legacy)
        if diff and not self.cfg.force_resume:
            raise ConfigError(
                f"resume (--resume): {path} was written by another run ({'; '.join(diff)}); resuming "
                "would mix the two. Pass --force-resume to continue it anyway, or choose another --output"
            )
        if diff:
            log.warning("resuming %s although it differs (--force-resume): %s", path, "; ".join(diff))

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
        if s.peak_memory_gib is not None:
            row["peak_memory_gib"] = s.peak_memory_gib
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
            "scheduler": self.scheduler.state_dict(),
            "config": self.cfg.to_dict(),
            "fingerprint": self.fingerprint,
        }
        assert self.env is not None
        if self.host_moments is not None:
            self.host_moments.on_device()
        return ckpt.save_checkpoint(
            self.output,
            self.step,
            self.root,
            self.optimizer,
            state,
            device=self.env.device,
            keep=self.cfg.keep_checkpoints,
            trainable_only=self.settings.lora is not None,
        )

    def export(self) -> Path:
        """Writes ``output/final``: safetensors, config (``num_labels=1``), tokenizer, template;
        LoRA adapters are merged into the weights."""
        dtype = torch.bfloat16 if self.settings.bf16 else torch.float32
        lora = self.settings.lora
        scaling = lora.scaling if lora is not None else None
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
            if (host := self.__dict__.pop("host_moments", None)) is not None:
                host.close()
            for name in ("stepper", "scheduler", "optimizer", "root", "model"):
                self.__dict__.pop(name, None)
            leave(self.env)
            self.env = None

    def discard_unused_output(self) -> None:
        """After a failed run: removes the run directory if this run created it and wrote no
        checkpoint and no metrics row into it (call after `close`, on rank 0)."""
        out = self.output if self.created_output else None
        if out is None or not out.is_dir() or ckpt.latest_checkpoint(out) is not None:
            return
        metrics = out / "metrics.jsonl"
        if metrics.exists() and metrics.stat().st_size > 0:
            return
        shutil.rmtree(out, ignore_errors=True)
        log.info("removed %s: the run failed before writing anything", out)


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
    except BaseException:
        main = trainer.env is None or trainer.env.is_main
        trainer.close()
        if main:
            trainer.discard_unused_output()
        raise
    finally:
        trainer.close()


__all__ = ["TokenPairs", "Trainer", "train"]
