"""``rewardkit score INPUT -o OUTPUT --ray [ADDRESS] [--replicas N]``: the file scored on a Ray
cluster by `rewardkit.ray.score_file_ray` (the other ``rewardkit score`` options apply)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from rewardkit.errors import RewardkitError
from rewardkit.options import model_options, progress_bar


def run(args: argparse.Namespace) -> int:
    """``rewardkit score --ray``: checks the options that do not apply, scores, reports on stderr."""
    if args.prompt is not None or args.response:
        raise RewardkitError("--ray scores an INPUT file, not --prompt/--response")
    if args.devices is not None or args.tensor_parallel:
        raise RewardkitError(
            "--ray cannot be combined with --devices or --tensor-parallel: Ray places the replicas"
        )
    if not args.input:
        raise RewardkitError(
            "--ray needs an INPUT file (put --ray after INPUT: --ray takes an optional ADDRESS)"
        )
    try:
        from rewardkit.ray.job import score_file_ray
    except ImportError as e:
        raise RewardkitError(f"--ray needs Ray Data: pip install 'rewardkit[ray]' ({e})") from e

    bar: Any = None

    def start(lines: int | None) -> None:
        nonlocal bar
        bar = progress_bar(lines or 0, disable=args.no_progress, unit="rec")

    def advance(records: int, tokens: int) -> None:
        bar.update(records)

    try:
        summary = score_file_ray(
            model_options(args),
            args.input,
            args.output,
            address=args.ray or None,
            replicas=args.replicas,
            on_error=args.on_error,
            error_file=args.error_file,
            overwrite=args.overwrite,
            quiet=True,  # this command's bar, not Ray Data's
            on_start=start,
            progress=advance,
        )
    finally:
        if bar is not None:
            bar.close()
    print(
        f"scored {summary.rows} rows ({summary.tokens:,} tokens) on Ray, {summary.skipped} skipped, "
        f"into {args.output}",
        file=sys.stderr,
    )
    return 0
