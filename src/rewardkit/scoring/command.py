"""``rewardkit score``: a thin layer over `rewardkit.scoring` (one process, ranks, tensor parallel)."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rewardkit.errors import RewardkitError
from rewardkit.options import add_model_args, model_options, progress_bar

if TYPE_CHECKING:
    from rewardkit.api import ModelOptions, RewardModel
    from rewardkit.distributed import Rank
    from rewardkit.scoring.files import ScoreSummary

log = logging.getLogger(__name__)

HELP = "score conversations or preference pairs (JSONL/Parquet in, JSONL out)"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("score", help=HELP, description=HELP)
    p.add_argument("input", nargs="?", help="JSONL (.gz) or Parquet file, or - for stdin")
    p.add_argument("-o", "--output", default="-", help="JSONL output (default: stdout); resumable")
    p.add_argument("--prompt", help="score one prompt instead of a file")
    p.add_argument("--response", action="append", help="response to --prompt (repeatable)")
    p.add_argument(
        "--on-error",
        choices=["raise", "skip"],
        default="raise",
        help="invalid records: fail before scoring anything, or skip and list them",
    )
    p.add_argument("--error-file", default=None, help="where skipped records are listed")
    p.add_argument("--overwrite", action="store_true", help="start the output afresh")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument(
        "--devices",
        default=None,
        help="data parallel: one replica per GPU, e.g. 0,1,2,3 or all (under torchrun: one per rank)",
    )
    p.add_argument(
        "--tensor-parallel",
        action="store_true",
        help="shard the model over the ranks of torchrun (one per GPU) for models too large for one GPU",
    )
    p.add_argument(
        "--ray",
        nargs="?",
        const="",
        default=None,
        metavar="ADDRESS",
        help="score on a Ray cluster (after INPUT): ADDRESS of a running one, or none for RAY_ADDRESS, "
        "one started on this machine, or a new local one (pip install 'rewardkit[ray]')",
    )
    p.add_argument(
        "--replicas", type=int, default=None, help="with --ray: model replicas (default: one per GPU)"
    )
    add_model_args(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from rewardkit.data.io import check_input
    from rewardkit.data.outputs import check_output
    from rewardkit.distributed import rank_from_env

    if args.ray is not None:
        from rewardkit.ray.command import run as run_on_ray

        return run_on_ray(args)
    if args.replicas is not None:
        raise RewardkitError("--replicas applies to --ray")
    one_prompt = args.prompt is not None or bool(args.response)
    if one_prompt and (args.input or not (args.prompt and args.response)):
        raise RewardkitError("use either INPUT, or --prompt with one or more --response")
    if not one_prompt and not args.input:
        raise RewardkitError("missing INPUT (a JSONL/Parquet file or -), or --prompt/--response")
    if one_prompt and args.devices is not None:
        raise RewardkitError("--devices applies to scoring an INPUT file, not --prompt")
    if args.tensor_parallel and args.devices is not None:
        raise RewardkitError("--tensor-parallel and --devices cannot be combined")
    rank = rank_from_env()
    if args.devices is not None and rank is not None:
        from rewardkit.distributed import launched_by_devices

        if not launched_by_devices():
            raise RewardkitError("--devices cannot be combined with torchrun, which already sets the ranks")
    # Cheap checks before any model loads.
    if one_prompt:
        check_output(args.output, input_path="-")
    else:
        check_input(args.input)
        check_output(args.output, input_path=args.input, error_file=args.error_file)
    if args.tensor_parallel:
        return _tensor_parallel(args, model_options(args))
    if one_prompt:
        return _score_prompt(args, model_options(args).load())
    if args.devices is not None and rank is None:
        return _launch_devices(args)
    opts = model_options(args)
    if rank is not None:
        return _score_on_ranks(args, opts, rank)
    return _score_file(args, opts, _Report(args))


def _launch_devices(args: argparse.Namespace) -> int:
    """``--devices``: this command line again, once per GPU, as the ranks of one job."""
    import torch

    from rewardkit.distributed import launch_local, parse_devices

    devices = parse_devices(args.devices, torch.cuda.device_count())
    if args.output == "-" or args.input == "-":
        raise RewardkitError("--devices needs an INPUT file and -o OUTPUT (not stdin/stdout)")
    if args.device not in ("auto", "cuda"):
        raise RewardkitError(f"--device {args.device} cannot be combined with --devices")
    return launch_local(args.argv, devices)


def _score_prompt(args: argparse.Namespace, rm: RewardModel) -> int:
    """``--prompt P --response R...``: one JSON row per response, to stdout or ``-o``."""
    from rewardkit.data.conversation import Conversation
    from rewardkit.data.outputs import rows_text

    convs = [Conversation.from_prompt(args.prompt, r) for r in args.response]
    rows = [
        {"prompt": args.prompt, "response": resp, "reward": reward}
        for resp, reward in zip(args.response, rm.score(convs), strict=True)
    ]
    if args.output == "-":
        print(rows_text(rows), end="")
    else:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(rows_text(rows), encoding="utf-8")
    return 0


def _file_options(args: argparse.Namespace, report: _Report) -> dict[str, Any]:
    """What every way of scoring a file takes from the command line, and the report's callbacks."""
    return {
        "on_error": args.on_error,
        "error_file": args.error_file,
        "overwrite": args.overwrite,
        "on_load": report.loaded,
        "on_start": report.start,
        "progress": report.advance,
    }


def _score_file(args: argparse.Namespace, model: RewardModel | ModelOptions, report: _Report) -> int:
    from rewardkit.scoring.files import score_file

    try:
        summary = score_file(model, args.input, args.output, **_file_options(args, report))
    finally:
        report.close()
    report.summary(summary)
    return 0


def _score_on_ranks(args: argparse.Namespace, opts: ModelOptions, rank: Rank) -> int:
    """One rank of a torchrun (or ``--devices``) job; rank 0 reports and merges."""
    from rewardkit.scoring.jobs import score_file_on_ranks

    report = _Report(args, rank=rank)
    try:
        summary = score_file_on_ranks(opts, args.input, args.output, rank=rank, **_file_options(args, report))
    except RewardkitError as e:
        # Every rank fails alike (same input, same checks): rank 0 reports. The others wait a
        # moment first, as torchrun stops the whole job when the first rank exits.
        if rank.is_main:
            print(f"rewardkit score: error: {e}", file=sys.stderr)
        else:
            log.debug("rank %d: %s", rank.rank, e)
            time.sleep(3.0)
        return 2
    finally:
        report.close()
    report.summary(summary)
    return 0


def _tensor_parallel(args: argparse.Namespace, opts: ModelOptions) -> int:
    """Every rank loads its shard; rank 0 scores (the file or the prompt), the others follow."""
    from rewardkit.scoring.jobs import run_tensor_parallel

    def work(rm: RewardModel) -> int:
        if args.prompt is not None:
            return _score_prompt(args, rm)
        return _score_file(args, rm, _Report(args))

    return run_tensor_parallel(opts, work) or 0


class _Report:
    """What ``rewardkit score`` prints on stderr: a header, a progress bar with tok/s, a summary;
    on rank 0 only when several ranks score."""

    def __init__(self, args: argparse.Namespace, *, rank: Rank | None = None) -> None:
        self.args = args
        self.rank = rank
        self.main = rank is None or rank.is_main
        self.bar: Any = None
        self.tokens = 0

    def loaded(self, rm: RewardModel) -> None:
        if not self.main:
            return
        s = rm.spec
        where = "" if self.rank is None else f" ranks={self.rank.world_size}"
        print(
            f"rewardkit score: model={s.model} device={rm.device}{where} dtype={s.dtype} "
            f"template={s.chat_template_sha256} max_length={s.max_length} truncation={s.truncation} head={s.head}",
            file=sys.stderr,
        )

    def start(self, total: int, done: int) -> None:
        if done and self.main:
            print(f"resuming: {done} rows already in {self.args.output}", file=sys.stderr)
        self.bar = progress_bar(
            total,
            disable=self.args.no_progress or not self.main,
            desc=None if self.rank is None else "rank 0",
        )

    def advance(self, n: int, tokens: int) -> None:
        self.bar.update(n)
        self.tokens += tokens
        elapsed = self.bar.format_dict["elapsed"] or 1e-9
        self.bar.set_postfix_str(f"{self.tokens / elapsed:,.0f} tok/s")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()

    def summary(self, s: ScoreSummary) -> None:
        if not self.main:
            return
        out = self.args.output
        part = "" if self.rank is None else f" on {self.rank.world_size} ranks, merged into {out}"
        print(
            f"scored {s.rows} rows ({s.tokens:,} tokens), {s.resumed} resumed, {s.skipped} skipped{part}",
            file=sys.stderr,
        )
        if len(s.rank_tokens) > 1:
            total = sum(s.rank_tokens) or 1
            shares = ", ".join(f"rank {r}: {t:,} ({t / total:.0%})" for r, t in enumerate(s.rank_tokens))
            print(f"tokens per rank: {shares}", file=sys.stderr)
        t = dict(s.seconds)
        if "total" in t:
            # Imports (torch, transformers) and checks, from the command's start to the scoring call.
            t["start_up"] = time.perf_counter() - self.args.started - t["total"]
            names = ("start_up", "load", "scan", "compile", "score", "first_row", "total")
            times = ", ".join(f"{k.replace('_', ' ')} {t[k]:.1f} s" for k in names if k in t)
            rate = f"; {s.tokens / t['score']:,.0f} tok/s scoring" if t.get("score") and s.tokens else ""
            print(f"time: {times}{rate}", file=sys.stderr)
