"""Training configuration: one typed dataclass, read from YAML and/or flags and ``--set`` overrides.

Precedence: defaults < YAML file < command-line flags < ``--set key=value``. Every problem (unknown
key, wrong type, invalid value) is collected and reported in one error that names each option.
"""

from __future__ import annotations

import contextlib
import difflib
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import MISSING, dataclass, fields
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import yaml

from rewardkit.errors import ConfigError
from rewardkit.train.activation_checkpointing import normalize_ac
from rewardkit.train.lora import DEFAULT_TARGET_MODULES
from rewardkit.train.loss import LossName

DataFormat = Literal["auto", "helpsteer3", "helpsteer2", "chosen_rejected"]
Precision = Literal["auto", "bf16-mixed", "fp32"]
TrainTruncation = Literal["drop", "left", "error"]


@dataclass(kw_only=True)
class TrainConfig:
    """Everything a training run needs. Defaults follow NVIDIA's HelpSteer3 reward-model recipe
    (global batch 128 pairs, lr 2e-6, 1 epoch, AdamW with weight decay 0.1 and betas 0.9/0.98,
    warmup then constant learning rate, gradient clipping 1.0, Scaled-BT on HelpSteer data).

    Args:
        model: HF id or directory of a causal LM (a 1-output head is added) or of a reward model.
        data: training pairs: a local ``.jsonl``/``.jsonl.gz``/``.parquet`` file or a hub dataset
            id (``nvidia/HelpSteer3``, ``nvidia/HelpSteer2``; ``id:config`` picks a config).
        output: run directory: checkpoints, metrics and the exported model (``output/final``).
        val_data: validation pairs (file or hub id); hub HelpSteer data defaults to its own
            validation split.
        val_fraction: hold out this fraction of ``data`` for validation when ``val_data`` is unset.
        data_format: record shape; ``auto`` detects it from the records.
        loss: ``bt``, ``scaled_bt`` or ``margin_bt``; default ``scaled_bt`` for HelpSteer data,
            ``bt`` for chosen/rejected pairs.
        reward_centering: λ of the ``λ·E[(r_c + r_r)²]`` term (0 disables it).
        epochs: passes over the data (fractions allowed); ignored when ``max_steps`` is set.
        max_steps: optimizer steps to run (overrides ``epochs``).
        global_batch_size: preference pairs per optimizer step, over all ranks.
        token_budget: tokens of one packed forward (chosen + rejected); a longer pair gets a
            forward of its own. With ``activation_checkpointing`` ``auto`` on a GPU it is an upper
            bound: a smaller micro-batch is used where it lets a mode with less recompute fit
            (the run records the one used). ``micro_batch_tokens`` is accepted as its old name.
        lr: peak learning rate (constant after warmup).
        warmup_steps: linear warmup from 0 to ``lr``.
        weight_decay: AdamW decoupled weight decay.
        adam_betas: AdamW betas.
        adam_eps: AdamW epsilon.
        grad_clip: clip the global gradient norm to this (0 disables).
        max_length: longest conversation in tokens (default: the model's limit).
        truncation: over-long pairs: ``drop`` (skip and count), ``left`` (drop oldest context),
            ``error`` (stop with the record's location).
        max_pairs: use at most this many training pairs (after shuffling); for quick runs.
        max_val_pairs: use at most this many validation pairs.
        precision: ``auto`` = bf16 mixed precision on GPU (fp32 master weights), fp32 on CPU.
        activation_checkpointing: what backward recomputes instead of keeping: ``none``,
            ``full``, ``selective-op``, ``selective-layer:N`` or ``auto`` (the fastest that the
            memory plan fits on the GPU; ``none`` on CPU); ``true``/``false`` mean ``full``/``none``
            (see `rewardkit.train.activation_checkpointing`).
        compile: ``torch.compile`` each decoder block (default: on GPU).
        memory_budget_gib: GiB per GPU that ``auto`` plans for (default: the GPU's memory less
            4 GiB).
        offload_optimizer: keep AdamW's moments in host memory between steps, copied while the GPU
            computes, so that larger micro-batches fit (`rewardkit.train.offload`); training is
            unchanged. Default: where ``auto`` checkpointing finds it faster and the host has the
            memory (8 bytes per trained weight, shared among the GPUs).
        device: ``auto``, ``cpu`` or ``cuda`` (each rank takes ``cuda:LOCAL_RANK``).
        lora_rank: train LoRA adapters of this rank (with the reward head) instead of every
            weight; 0 = full fine-tuning. Needs ``peft``.
        lora_alpha: adapters are scaled by ``lora_alpha / lora_rank`` (default ``2 · lora_rank``).
        lora_dropout: dropout on the adapters' input.
        lora_target_modules: names of the linear layers that get adapters (default: the
            attention and MLP projections).
        seed: data order and head initialisation.
        eval_every: validate every N steps (0: only at the end).
        save_every: write a sharded checkpoint every N steps (0: only at the end).
        keep_checkpoints: how many recent checkpoints to keep.
        resume: ``latest`` (newest checkpoint under ``output``) or a checkpoint directory.
        force_resume: resume although the checkpoint was written with other data, model, loss or
            schedule (refused otherwise).
        log_every: write metrics every N steps.
        tensorboard: write TensorBoard logs (default: if ``tensorboard`` is installed).
        peak_tflops: the device's peak dense TFLOP/s for MFU (default: known GPUs only).
        chat_template: Jinja chat template file to use instead of the tokenizer's.
        revision: hub revision of ``model``.
        trust_remote_code: allow model code from the hub.
        export: write the final HF reward model to ``output/final``.
    """

    model: str
    data: str
    output: str
    val_data: str | None = None
    val_fraction: float = 0.0
    data_format: DataFormat = "auto"
    loss: LossName | None = None
    reward_centering: float = 0.0
    epochs: float = 1.0
    max_steps: int | None = None
    global_batch_size: int = 128
    token_budget: int = 16384
    lr: float = 2e-6
    warmup_steps: int = 10
    weight_decay: float = 0.1
    adam_betas: tuple[float, float] = (0.9, 0.98)
    adam_eps: float = 1e-8
    grad_clip: float = 1.0
    max_length: int | None = None
    truncation: TrainTruncation = "drop"
    max_pairs: int | None = None
    max_val_pairs: int | None = None
    precision: Precision = "auto"
    activation_checkpointing: str | bool | None = "auto"
    compile: bool | None = None
    memory_budget_gib: float | None = None
    offload_optimizer: bool | None = None
    device: str = "auto"
    lora_rank: int = 0
    lora_alpha: float | None = None
    lora_dropout: float = 0.0
    lora_target_modules: tuple[str, ...] = DEFAULT_TARGET_MODULES
    seed: int = 0
    eval_every: int = 50
    save_every: int = 100
    keep_checkpoints: int = 2
    resume: str | None = None
    force_resume: bool = False
    log_every: int = 1
    tensorboard: bool | None = None
    peak_tflops: float | None = None
    chat_template: str | None = None
    revision: str | None = None
    trust_remote_code: bool = False
    export: bool = True

    def __post_init__(self) -> None:
        for key in ("adam_betas", "lora_target_modules"):
            if isinstance(getattr(self, key), list):
                setattr(self, key, tuple(getattr(self, key)))
        problems = _problems(vars(self))
        if problems:
            raise ConfigError(_format(problems))
        self.activation_checkpointing = normalize_ac(self.activation_checkpointing)

    @property
    def output_dir(self) -> Path:
        return Path(self.output)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> TrainConfig:
        """Builds a config from plain values (YAML, flags), reporting every problem at once."""
        hints = _hints()
        problems: list[str] = []
        values = _rename_aliases(values, problems)
        for key in values:
            if key not in hints:
                close = difflib.get_close_matches(key, hints, n=1)
                hint = f"; did you mean '{close[0]}'?" if close else ""
                problems.append(f"{key}: unknown option{hint}")
        for f in fields(cls):
            if f.default is MISSING and values.get(f.name) is None:
                problems.append(f"{_name(f.name)}: required")
        known = {k: v for k, v in values.items() if k in hints}
        problems += _problems({k: v for k, v in known.items() if not (v is None and k in _REQUIRED)})
        if problems:
            raise ConfigError(_format(problems))
        return cls(**known)

    def to_dict(self) -> dict[str, Any]:
        return {
            f.name: (list(v) if isinstance(v := getattr(self, f.name), tuple) else v) for f in fields(self)
        }


def load_config(
    path: str | Path | None = None,
    *,
    flags: Mapping[str, Any] | None = None,
    sets: Sequence[str] = (),
) -> TrainConfig:
    """YAML file (optional) < ``flags`` (``None`` values ignored) < ``--set key=value`` strings.

    Values of ``--set`` are parsed as YAML scalars (``lr=1e-5`` is a float, ``resume=latest`` a
    string, ``adam_betas=[0.9,0.95]`` a list).
    """
    values: dict[str, Any] = {}
    problems: list[str] = []
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"--config: file not found: {p}")
        try:
            loaded = yaml.safe_load(p.read_text(encoding="utf-8"))
        except yaml.YAMLError as e:
            raise ConfigError(f"--config {p}: invalid YAML: {e}") from e
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(
                f"--config {p}: expected a mapping of option: value, got {type(loaded).__name__}"
            )
        values.update(_rename_aliases(loaded or {}, problems))
    values.update({k: v for k, v in (flags or {}).items() if v is not None})
    for item in sets:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            problems.append(f"--set {item!r}: expected key=value")
            continue
        key = ALIASES.get(key.strip(), key.strip())
        try:
            values[key] = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError:
            values[key] = raw
    if problems:
        raise ConfigError(_format(problems))
    # Numbers written like 2e-6 in YAML 1.1 load as strings; accept them for float options.
    hints = _hints()
    for k, v in values.items():
        if isinstance(v, str) and k in hints and _accepts(hints[k], float):
            with contextlib.suppress(ValueError):
                values[k] = float(v)
    return TrainConfig.from_dict(values)


def _rename_aliases(values: Mapping[str, Any], problems: list[str]) -> dict[str, Any]:
    """Old option names → current ones; both spellings in one source is a problem."""
    out = dict(values)
    for old, new in ALIASES.items():
        if old in out:
            if new in out:
                problems.append(f"{_name(new)} and {old} (its old name) can't both be set")
            out[new] = out.pop(old)
    return out


def _hints() -> dict[str, Any]:
    return typing.get_type_hints(TrainConfig)


def _name(key: str) -> str:
    """How a user sets an option: the YAML key, and the flag or ``--set`` form."""
    flag = key.replace("_", "-")
    if key in CLI_FLAGS:
        return f"{key} (--{flag})"
    return f"{key} (--set {key}=...)"


def _accepts(tp: Any, base: type) -> bool:
    if get_origin(tp) in (typing.Union, types.UnionType):
        return any(_accepts(a, base) for a in get_args(tp))
    return tp is base


def _type_problem(value: Any, tp: Any) -> str | None:
    """Why ``value`` does not fit the annotation ``tp`` (None when it does)."""
    origin = get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        opts = get_args(tp)
        if value is None and type(None) in opts:
            return None
        errs = [_type_problem(value, a) for a in opts if a is not type(None)]
        return None if any(e is None for e in errs) else errs[0]
    if origin is Literal:
        allowed = get_args(tp)
        return None if value in allowed else f"must be one of {', '.join(map(str, allowed))}"
    if origin is tuple and get_args(tp)[1:] == (...,):
        ok = isinstance(value, list | tuple) and all(_type_problem(v, get_args(tp)[0]) is None for v in value)
        return None if ok else "must be a list of strings"
    if origin is tuple:
        n = len(get_args(tp))
        ok = isinstance(value, list | tuple) and len(value) == n
        ok = ok and all(_type_problem(v, a) is None for v, a in zip(value, get_args(tp), strict=True))
        return None if ok else f"must be a list of {n} numbers"
    if tp is bool:
        return None if isinstance(value, bool) else "must be true or false"
    if tp is int:
        return None if isinstance(value, int) and not isinstance(value, bool) else "must be an integer"
    if tp is float:
        return None if isinstance(value, int | float) and not isinstance(value, bool) else "must be a number"
    if tp is str:
        return None if isinstance(value, str) else "must be a string"
    raise AssertionError(f"unhandled annotation {tp}")


def _problems(values: Mapping[str, Any]) -> list[str]:
    """Type checks, then value checks on the well-typed values; each message names its option."""
    hints = _hints()
    out: list[str] = []
    v = {f.name: f.default for f in fields(TrainConfig) if f.default is not MISSING}
    for key, value in values.items():
        err = _type_problem(value, hints[key])
        if err:
            out.append(f"{_name(key)}: {err}, got {value!r}")
        else:
            v[key] = value

    def need(ok: bool, key: str, what: str) -> None:
        if not ok:
            out.append(f"{_name(key)}: {what}, got {v.get(key)!r}")

    for key in ("global_batch_size", "token_budget", "log_every", "keep_checkpoints"):
        need(v.get(key, 1) >= 1, key, "must be at least 1")
    for key in ("max_steps", "max_pairs", "max_val_pairs"):
        need(v.get(key) is None or v[key] >= 1, key, "must be at least 1 when set")
    for key in ("warmup_steps", "eval_every", "save_every", "weight_decay", "grad_clip", "reward_centering"):
        need(v.get(key, 0) >= 0, key, "must be 0 or more")
    need(v.get("lr", 1) > 0, "lr", "must be positive")
    need(v.get("lora_rank", 0) >= 0, "lora_rank", "must be 0 (full fine-tuning) or more")
    need(v.get("lora_alpha") is None or v["lora_alpha"] > 0, "lora_alpha", "must be positive")
    need(0 <= v.get("lora_dropout", 0) < 1, "lora_dropout", "must be in [0, 1)")
    need(
        len(v.get("lora_target_modules", DEFAULT_TARGET_MODULES)) > 0,
        "lora_target_modules",
        "must not be empty",
    )
    need(v.get("epochs", 1) > 0, "epochs", "must be positive")
    need(v.get("adam_eps", 1) > 0, "adam_eps", "must be positive")
    need(0 <= v.get("val_fraction", 0) < 1, "val_fraction", "must be in [0, 1)")
    need(v.get("max_length") is None or v["max_length"] >= 8, "max_length", "must be at least 8")
    need(v.get("peak_tflops") is None or v["peak_tflops"] > 0, "peak_tflops", "must be positive")
    need(
        v.get("memory_budget_gib") is None or v["memory_budget_gib"] > 0,
        "memory_budget_gib",
        "must be positive",
    )
    try:
        normalize_ac(v.get("activation_checkpointing"))
    except ValueError as e:
        need(False, "activation_checkpointing", str(e))
    betas = v.get("adam_betas", (0.9, 0.98))
    need(all(0 <= b < 1 for b in betas), "adam_betas", "each beta must be in [0, 1)")
    if v.get("val_data") and v.get("val_fraction"):
        out.append("val_data (--val-data) and val_fraction (--set val_fraction=...) can't both be set")
    return out


def _format(problems: list[str]) -> str:
    if len(problems) == 1:
        return problems[0]
    return f"{len(problems)} problems in the training options:\n  " + "\n  ".join(problems)


_REQUIRED = tuple(f.name for f in fields(TrainConfig) if f.default is MISSING)
# Old option names that existing YAML files and scripts use.
ALIASES = {"micro_batch_tokens": "token_budget"}
# Options that have their own command-line flag (the rest are set with --set or in YAML).
CLI_FLAGS = (
    "model",
    "data",
    "val_data",
    "output",
    "loss",
    "max_steps",
    "epochs",
    "lr",
    "global_batch_size",
    "token_budget",
    "max_length",
    "resume",
    "force_resume",
    "activation_checkpointing",
    "compile",
    "device",
    "seed",
)
