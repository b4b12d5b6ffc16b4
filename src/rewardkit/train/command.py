"""``rewardkit train``: build a `TrainConfig` from YAML/flags/``--set`` and run the trainer.

One process: ``rewardkit train --model M --data D --output OUT``; several (one per GPU, any number
of machines): ``torchrun --nproc-per-node N -m rewardkit train ...``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any

HELP = "train a Bradley-Terry reward model on preference pairs (torchrun for several GPUs)"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help=HELP, description=HELP)
    p.add_argument("--config", "-c", help="YAML file of training options (flags and --set override it)")
    p.add_argument(
        "--model", "-m", help="HF id or directory: a causal LM (a head is added) or a reward model"
    )
    p.add_argument(
        "--data", help="training pairs: .jsonl/.jsonl.gz/.parquet, or a hub id (nvidia/HelpSteer3)"
    )
    p.add_argument("--val-data", help="validation pairs (default: the hub dataset's validation split)")
    p.add_argument("--output", "-o", help="run directory (checkpoints, metrics.jsonl, final/)")
    p.add_argument("--loss", choices=["bt", "scaled_bt", "margin_bt"], help="default: scaled_bt on HelpSteer")
    p.add_argument("--max-steps", type=int, help="optimizer steps (overrides --epochs)")
    p.add_argument("--epochs", type=float, help="passes over the data (default 1)")
    p.add_argument("--lr", type=float, help="learning rate after warmup (default 2e-6)")
    p.add_argument("--global-batch-size", type=int, help="pairs per optimizer step over all ranks (128)")
    p.add_argument(
        "--token-budget",
        "--micro-batch-tokens",
        dest="token_budget",
        type=int,
        help="tokens per packed forward (16384; at most this with the auto checkpointing; --micro-batch-tokens is its old name)",
    )
    p.add_argument("--max-length", type=int, help="longest conversation in tokens (default: the model's)")
    p.add_argument(
        "--resume", nargs="?", const="latest", help="continue from the newest (or a given) checkpoint"
    )
    p.add_argument(
        "--force-resume",
        action="store_true",
        default=None,
        help="resume although the checkpoint was written with other data, model, loss or schedule",
    )
    p.add_argument(
        "--activation-checkpointing",
        metavar="MODE",
        help="none, full, selective-op, selective-layer:N or auto (default: the fastest that fits the GPU)",
    )
    p.add_argument(
        "--compile",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="torch.compile each decoder block (default: on GPU)",
    )
    p.add_argument("--device", help="auto (default), cpu or cuda")
    p.add_argument("--seed", type=int, help="data order and head initialisation (0)")
    p.add_argument(
        "--set",
        dest="sets",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="set any option (repeatable), e.g. --set warmup_steps=20 --set eval_every=25",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from rewardkit.distributed import is_main_process
    from rewardkit.train.config import CLI_FLAGS, load_config
    from rewardkit.train.trainer import train

    if not is_main_process():  # one copy of the log, from rank 0
        logging.getLogger("rewardkit").setLevel(logging.WARNING)
    flags = {k: getattr(args, k) for k in CLI_FLAGS}
    cfg = load_config(args.config, flags=flags, sets=args.sets)
    bar = _Progress(disabled=args.no_progress)
    try:
        out = train(cfg, on_start=bar.start, on_log=bar.log)
    finally:
        bar.close()
    if bar.started:  # rank 0 only
        print(f"rewardkit train: wrote {out}", file=sys.stderr)
    return 0


class _Progress:
    """tqdm bar on rank 0: step, loss, accuracy, tokens/s, MFU; validation rows are printed."""

    def __init__(self, *, disabled: bool) -> None:
        self.disabled = disabled
        self.bar: Any = None
        self.started = False

    def start(self, total: int, first: int) -> None:
        from tqdm import tqdm

        self.started = True
        self.bar = tqdm(
            total=total,
            initial=first,
            unit="step",
            disable=self.disabled,
            file=sys.stderr,
            dynamic_ncols=True,
        )

    def log(self, row: dict[str, Any]) -> None:
        if self.bar is None:
            return
        if "val_accuracy" in row:
            self.bar.write(
                f"step {row['step']}: val_loss {row['val_loss']:.4f} val_accuracy {row['val_accuracy']:.2%} "
                f"({row['val_pairs']} pairs)",
                file=sys.stderr,
            )
            return
        self.bar.n = row["step"]
        post = (
            f"loss {row['loss']:.4f} acc {row['accuracy']:.1%} {row['tokens_per_s_per_gpu']:,.0f} tok/s/gpu"
        )
        if "mfu" in row:
            post += f" MFU {row['mfu']:.1%}"
        if "peak_memory_gib" in row:
            post += f" {row['peak_memory_gib']:.1f} GiB"
        self.bar.set_postfix_str(post, refresh=False)
        self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
