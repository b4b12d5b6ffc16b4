"""Rebuild the built-in demo reward model from scratch, on CPU.

    python -m rewardkit.demo.build [--out DIR] [--export DIR] [--seed N]

Steps: (1) generate the preference data (`rewardkit.demo.generate`); (2) train a byte-level
BPE tokenizer on it with a ChatML template; (3) create a small random
``Qwen2ForSequenceClassification`` (one output); (4) train it with rewardkit's trainer
(Scaled Bradley-Terry); (5) copy the exported model to the package's ``assets/demo-rm``;
(6) measure its validation accuracy per skill through ``RewardModel.score_pairs``.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from rewardkit.demo import DEMO_MODEL_DIR
from rewardkit.demo.generate import DemoDataConfig, write_splits
from rewardkit.models.tiny import CHATML_TEMPLATE, SPECIAL_TOKENS, tiny_reward_model

log = logging.getLogger(__name__)

# Files a loadable model directory needs; everything else the trainer writes stays behind.
MODEL_FILES = (
    "config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
    "chat_template.jinja",
)


@dataclass(frozen=True, kw_only=True)
class DemoModelConfig:
    """Shape of the demo network and its tokenizer (defaults give ~1.2M parameters, ~5 MB).

    Args:
        vocab_size: BPE vocabulary including the 256 byte symbols and 3 special tokens.
        hidden_size: width of the residual stream.
        layers: decoder layers.
        heads: attention heads (head dim = hidden_size / heads).
        kv_heads: key/value heads (grouped-query attention, as Qwen2).
        intermediate_size: MLP width.
        max_length: longest conversation in tokens.
    """

    vocab_size: int = 3072
    hidden_size: int = 128
    layers: int = 4
    heads: int = 4
    kv_heads: int = 2
    intermediate_size: int = 384
    max_length: int = 2048


@dataclass(frozen=True, kw_only=True)
class DemoTrainConfig:
    """Trainer settings for the demo (a from-scratch model wants a far larger lr than fine-tuning)."""

    epochs: float = 3.0
    global_batch_size: int = 64
    lr: float = 1e-3
    warmup_steps: int = 30
    weight_decay: float = 0.01
    micro_batch_tokens: int = 8192


def corpus(records: Iterable[dict[str, Any]]) -> Iterable[str]:
    """The texts the tokenizer learns from: every prompt and response, plus the role names."""
    yield "system\nuser\nassistant\n"
    for r in records:
        for m in r["context"]:
            yield m["content"]
        yield r["response1"]
        yield r["response2"]


def train_tokenizer(texts: Iterable[str], *, vocab_size: int, max_length: int) -> PreTrainedTokenizerFast:
    """Byte-level BPE (any input text encodes; digits are split one per token, as Qwen2 does, so
    numbers are spelled out digit by digit) with ``<|endoftext|>`` as pad and ChatML markers."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        chat_template=CHATML_TEMPLATE,
        model_max_length=max_length,
    )


def init_model(tokenizer: PreTrainedTokenizerFast, config: DemoModelConfig, *, seed: int) -> torch.nn.Module:
    """A random ``Qwen2ForSequenceClassification`` with one output, sized by ``config``."""
    model = tiny_reward_model(
        "qwen2",
        vocab_size=len(tokenizer),
        pad_token_id=tokenizer.pad_token_id,
        hidden_size=config.hidden_size,
        layers=config.layers,
        heads=config.heads,
        kv_heads=config.kv_heads,
        max_positions=config.max_length,
        seed=seed,
    )
    if config.intermediate_size != model.config.intermediate_size:
        # tiny_reward_model fixes the MLP at 2x width; rebuild with the width asked for.
        cfg = model.config
        cfg.intermediate_size = config.intermediate_size
        torch.manual_seed(seed)
        model = type(model)(cfg)
    # Start from a near-zero head: the untrained rewards should be close to a tie, not noise.
    torch.nn.init.normal_(model.score.weight, std=0.02)
    return model.eval()


def write_initial_model(
    out_dir: Path, data_paths: dict[str, Path], config: DemoModelConfig, *, seed: int
) -> Path:
    """Trains the tokenizer on the training split and saves it with a random model to ``out_dir``."""
    records = [json.loads(line) for line in data_paths["train"].read_text(encoding="utf-8").splitlines()]
    tok = train_tokenizer(corpus(records), vocab_size=config.vocab_size, max_length=config.max_length)
    model = init_model(tok, config, seed=seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir, safe_serialization=True)
    tok.save_pretrained(out_dir)
    n_params = sum(p.numel() for p in model.parameters())
    log.info("initial model: %d parameters, vocabulary %d -> %s", n_params, len(tok), out_dir)
    return out_dir


def train_demo(
    init_dir: Path, data_paths: dict[str, Path], run_dir: Path, config: DemoTrainConfig, *, seed: int
) -> Path:
    """Trains ``init_dir`` on the generated pairs with rewardkit's trainer (Scaled-BT, CPU, fp32);
    returns the exported model directory."""
    from rewardkit.train import train  # the trainer pulls in torch.distributed; only load it here

    # One thread: on a small or shared CPU, OpenMP threads spin-waiting for each other cost more
    # than a second core gains for matrices this small.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)

    def on_log(row: dict[str, Any]) -> None:
        if "val_accuracy" in row:
            log.info(
                "step %d: validation accuracy %.3f, loss %.4f",
                row["step"],
                row["val_accuracy"],
                row["val_loss"],
            )
        else:
            log.info("step %d: loss %.4f, accuracy %.3f", row["step"], row["loss"], row["accuracy"])

    try:
        return train(
            {
                "model": str(init_dir),
                "data": str(data_paths["train"]),
                "val_data": str(data_paths["validation"]),
                "output": str(run_dir),
                "loss": "scaled_bt",
                "epochs": config.epochs,
                "global_batch_size": config.global_batch_size,
                "micro_batch_tokens": config.micro_batch_tokens,
                "lr": config.lr,
                "warmup_steps": config.warmup_steps,
                "weight_decay": config.weight_decay,
                "device": "cpu",
                "precision": "fp32",
                "seed": seed,
                "eval_every": 0,
                "save_every": 0,
                "log_every": 10,
                "tensorboard": False,
            },
            on_log=on_log,
        )
    finally:
        torch.set_num_threads(threads)


def install(model_dir: Path, dest: Path) -> Path:
    """Copies the files a model needs from ``model_dir`` to ``dest`` (replacing what was there)."""
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for name in MODEL_FILES:
        shutil.copyfile(model_dir / name, tmp / name)
        (tmp / name).chmod(0o644)  # readable by everyone once installed with the package
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)
    return dest


def measure(model_dir: Path, validation: Path) -> dict[str, Any]:
    """Per-skill validation accuracy and the 1+1 check, through `RewardModel` (the scoring path)."""
    from rewardkit.api import RewardModel
    from rewardkit.demo.evaluate import accuracy_by_skill, one_plus_one

    rm = RewardModel.load(model_dir, device="cpu", dtype="float32")
    records = [json.loads(line) for line in validation.read_text(encoding="utf-8").splitlines()]
    acc = accuracy_by_skill(rm, records)
    right, wrong = one_plus_one(rm)
    return {
        "validation_accuracy": {
            k: {"correct": a.correct, "total": a.total, "accuracy": a.accuracy} for k, a in acc.items()
        },
        "one_plus_one": {"1+1=2": right, "1+1=3": wrong},
    }


def build(
    out: Path,
    *,
    export: Path | None,
    seed: int = 0,
    data: DemoDataConfig | None = None,
    model: DemoModelConfig | None = None,
    training: DemoTrainConfig | None = None,
) -> dict[str, Any]:
    """Runs every step; returns a summary (also written to ``out/summary.json``).

    Args:
        out: work directory (data, initial model, training run).
        export: where to install the trained model (``None``: leave it in ``out/run/final``).
        seed: seeds the data, the initial weights and the data order.
    """
    started = time.process_time()
    data_cfg = data or DemoDataConfig(seed=seed)
    # 1. Data.
    paths = write_splits(out / "data", data_cfg)
    # 2–3. Tokenizer and initial model.
    init_dir = write_initial_model(out / "init", paths, model or DemoModelConfig(), seed=seed)
    # 4. Training.
    run_dir = out / "run"
    shutil.rmtree(run_dir, ignore_errors=True)
    final = train_demo(init_dir, paths, run_dir, training or DemoTrainConfig(), seed=seed)
    # 5. Install.
    model_dir = install(final, export) if export is not None else final
    # 6. Measure, from the installed copy.
    summary = {
        "model_dir": str(model_dir),
        "seed": seed,
        "cpu_seconds": round(time.process_time() - started, 1),
        "model_bytes": (model_dir / "model.safetensors").stat().st_size,
        **measure(model_dir, paths["validation"]),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m rewardkit.demo.build", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="demo-rm-build", help="work directory (default: ./demo-rm-build)")
    p.add_argument(
        "--export",
        default=str(DEMO_MODEL_DIR),
        help="where to install the model (default: the package's assets/demo-rm); '' to skip",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of data, weights and data order (default 0)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)
    summary = build(Path(args.out), export=Path(args.export) if args.export else None, seed=args.seed)
    json.dump(summary, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
