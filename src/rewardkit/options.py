"""Command-line options shared by the subcommands that load a reward model, and the progress
bar they show. Light to import: torch and transformers load only when a model does."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rewardkit.api import ModelOptions


def add_model_args(p: argparse.ArgumentParser) -> None:
    """Options shared by every command that loads a reward model (see `model_options`)."""
    g = p.add_argument_group("model")
    g.add_argument(
        "--model",
        "-m",
        default=None,
        help="HF model id or local directory (default: the built-in demo reward model)",
    )
    g.add_argument("--revision", help="hub revision (branch, tag or commit)")
    g.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda, cuda:1")
    g.add_argument("--dtype", default="auto", help="auto (bf16 on GPU, fp32 on CPU), bfloat16, float32")
    g.add_argument("--head-dtype", default=None, help="dtype of the reward head (default: the model's)")
    g.add_argument("--max-length", type=int, default=None, help="longest conversation in tokens")
    g.add_argument(
        "--truncation",
        choices=["error", "left"],
        default="error",
        help="over-long conversations: fail the record, or drop the oldest context",
    )
    g.add_argument("--chat-template", default=None, help="Jinja chat template file to use instead")
    g.add_argument("--output-index", type=int, default=None, help="head output to use as reward")
    g.add_argument(
        "--reward-head",
        default=None,
        metavar="HEAD",
        help="sequence-classification (score head) or lm-logit:TOKEN_ID (a causal LM's next-token "
        "logit of TOKEN_ID, e.g. lm-logit:0); default: what the checkpoint declares",
    )
    g.add_argument("--trust-remote-code", action="store_true", help="allow model code from the hub")
    g.add_argument(
        "--fp8",
        action="store_true",
        help="decoder linear layers as FP8 GEMMs (Hopper GPUs; faster, rewards move slightly)",
    )
    g.add_argument(
        "--no-compile",
        action="store_true",
        help="run the decoder layers eagerly (GPU: skips the compile warm-up; for short jobs)",
    )
    g.add_argument(
        "--token-budget",
        type=int,
        default=None,
        help="tokens per packed batch (default: sized from free GPU memory)",
    )


def model_options(args: argparse.Namespace, *, tensor_parallel: bool = False) -> ModelOptions:
    """The `ModelOptions` the `add_model_args` flags describe.

    Without ``--model`` this is the built-in demo reward model, announced on stderr once per job.
    """
    from rewardkit.api import ModelOptions
    from rewardkit.distributed import is_main_process

    model = args.model
    if model is None:
        from rewardkit.demo import DEMO_MODEL_DIR, DEMO_NOTICE

        if is_main_process():
            print(DEMO_NOTICE, file=sys.stderr)
        model = str(DEMO_MODEL_DIR)
    return ModelOptions(
        model=model,
        revision=args.revision,
        device=args.device,
        dtype=args.dtype,
        head_dtype=args.head_dtype,
        max_length=args.max_length,
        truncation=args.truncation,
        chat_template=args.chat_template,
        output_index=args.output_index,
        reward_head=args.reward_head,
        trust_remote_code=args.trust_remote_code,
        fp8=args.fp8,
        token_budget=args.token_budget,
        tensor_parallel=tensor_parallel,
        compile=False if args.no_compile else None,
    )


def progress_bar(total: int, *, disable: bool, unit: str = "conv", **kwargs: Any) -> Any:
    """A tqdm bar on stderr, sized to the terminal."""
    from tqdm import tqdm

    return tqdm(total=total, unit=unit, disable=disable, file=sys.stderr, dynamic_ncols=True, **kwargs)
