"""``rewardkit eval BENCH`` and ``rewardkit report DIR...``."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rewardkit.errors import RewardkitError
from rewardkit.options import add_model_args, model_options, progress_bar

if TYPE_CHECKING:
    from rewardkit.eval.base import Benchmark, EvalOptions

log = logging.getLogger(__name__)

# Without importing the benchmarks (``rewardkit --help`` stays light); `rewardkit.eval.run`
# has the same names and aliases.
BENCH_NAMES = ("rm-bench", "judgebench", "helpsteer3", "rewardbench", "pairs")
BENCH_ALIASES = {"rmbench": "rm-bench"}


EVAL_HELP = (
    "evaluate a reward model on RM-Bench, JudgeBench, HelpSteer3, RewardBench, or your own "
    "preference pairs (rewardkit eval pairs FILE)"
)
REPORT_HELP = "put several evaluation runs side by side (markdown; optionally a PNG)"


def _bench_name(name: str) -> str:
    name = BENCH_ALIASES.get(name, name)
    if name not in BENCH_NAMES:
        raise argparse.ArgumentTypeError(f"choose one of {', '.join(BENCH_NAMES)}")
    return name


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help=EVAL_HELP, description=EVAL_HELP)
    p.add_argument("bench", type=_bench_name, metavar="{" + ",".join(BENCH_NAMES) + "}")
    p.add_argument("file", nargs="?", default=None, help="pairs: the chosen/rejected or HelpSteer3 file")
    p.add_argument("--data", default=None, help="local copy (file or directory; hub or original layout)")
    p.add_argument("--scores", default=None, help="compute the metrics from this score file (no model)")
    p.add_argument("-o", "--output-dir", default=None, help="run directory (default: eval-BENCH)")
    p.add_argument("--overwrite", action="store_true", help="replace a run already in the -o directory")
    p.add_argument("--label", default=None, help="row name in the tables (default: the model's name)")
    p.add_argument(
        "--difficulty-agg",
        choices=["domain", "pooled"],
        default="domain",
        help="RM-Bench Easy/Normal/Hard: mean over domains (official) or one pooled matrix",
    )
    p.add_argument("--split", choices=["gpt", "claude"], default="gpt", help="JudgeBench response model")
    p.add_argument(
        "--group-by", default=None, metavar="FIELD", help="pairs: accuracy per value of this record field"
    )
    p.add_argument("--limit", type=int, default=None, help="only the first N items (smoke runs)")
    p.add_argument(
        "--on-error",
        choices=["raise", "skip"],
        default="raise",
        help="items too long to score: fail, or leave them out (counted in the report)",
    )
    p.add_argument("--no-plots", action="store_true", help="no PNG plots")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_model_args(p)
    p.set_defaults(run=run_eval)
    r = sub.add_parser("report", help=REPORT_HELP, description=REPORT_HELP)
    r.add_argument("runs", nargs="+", help="run directories written by rewardkit eval -o")
    r.add_argument("--png", default=None, help="also write a combined bar chart here")
    r.add_argument("-o", "--output", default=None, help="write the markdown here instead of stdout")
    r.set_defaults(run=run_report)


def _data_arg(args: argparse.Namespace) -> str | None:
    """The data path (``--data``, or the pairs FILE), after the checks that need no file."""
    if args.model is not None and args.scores is not None:
        raise RewardkitError("give either --model (score the benchmark) or --scores FILE (recompute)")
    data = args.data
    if args.file is not None:
        if args.bench != "pairs":
            raise RewardkitError(
                f"{args.bench} reads its data with --data PATH (or the hub), not {args.file}"
            )
        if args.data is not None:
            raise RewardkitError("give the pairs file once: rewardkit eval pairs FILE (without --data)")
        data = args.file
    if args.scores is not None and data is not None:
        raise RewardkitError("--data is not used with --scores: the score file holds everything needed")
    if args.group_by is not None and args.bench != "pairs":
        raise RewardkitError("--group-by is for rewardkit eval pairs FILE only")
    if args.bench == "pairs" and data is None and args.scores is None:
        raise RewardkitError("rewardkit eval pairs needs the pairs file: rewardkit eval pairs FILE")
    return data


def run_eval(args: argparse.Namespace) -> int:
    from rewardkit.eval.base import EvalOptions
    from rewardkit.eval.run import check_output_dir, get_benchmark

    data = _data_arg(args)
    opts = EvalOptions(
        difficulty_agg=args.difficulty_agg,
        split=args.split,
        limit=args.limit,
        on_error=args.on_error,
        group_by=args.group_by,
    )
    bench = get_benchmark(args.bench)
    if args.scores is not None:
        return _recompute(args, bench, opts)
    out_dir = check_output_dir(args.output_dir or f"eval-{bench.name}", overwrite=args.overwrite)
    return _evaluate(args, bench, data, opts, out_dir)


def _evaluate(
    args: argparse.Namespace, bench: Benchmark, data: str | None, opts: EvalOptions, out_dir: Path
) -> int:
    from rewardkit.eval.report import render_markdown
    from rewardkit.eval.run import evaluate

    loaded = bench.load(data, opts)  # before the (slow) model load
    if not loaded.items:
        raise RewardkitError(f"{loaded.source}: no {bench.name} items")
    print(f"rewardkit eval {bench.name}: {len(loaded.items)} items from {loaded.source}", file=sys.stderr)
    rm = model_options(args).load()
    bar: Any = None

    def on_start(total: int) -> None:
        nonlocal bar
        bar = progress_bar(total, disable=args.no_progress)

    try:
        run = evaluate(
            rm,
            bench,
            loaded,
            out_dir,
            options=opts,
            label=args.label,
            plots=not args.no_plots,
            overwrite=args.overwrite,
            on_start=on_start,
            progress=lambda n, _tokens: bar.update(n),
        )
    finally:
        if bar is not None:
            bar.close()
    print(f"wrote {', '.join(str(p) for p in run.files)}", file=sys.stderr)
    print(render_markdown(run.report), end="")
    return 0


def _recompute(args: argparse.Namespace, bench: Benchmark, opts: EvalOptions) -> int:
    from rewardkit.eval.report import render_markdown
    from rewardkit.eval.run import recompute

    run = recompute(
        bench,
        args.scores,
        args.output_dir,
        options=opts,
        label=args.label,
        plots=not args.no_plots,
        overwrite=args.overwrite,
    )
    if run.files:
        print(f"wrote {', '.join(str(p) for p in run.files)}", file=sys.stderr)
    print(render_markdown(run.report), end="")
    return 0


def run_report(args: argparse.Namespace) -> int:
    from rewardkit.eval.report import compare_markdown, load_report, plot_compare

    reports = [load_report(d) for d in args.runs]
    # Two runs of one benchmark with the same label are told apart by their directories.
    keys = [(r["bench"], r["label"]) for r in reports]
    for r, d in zip(reports, args.runs, strict=True):
        if keys.count((r["bench"], r["label"])) > 1:
            r["label"] = f"{r['label']} ({Path(d).name})"
    text = compare_markdown(reports)
    if args.output:
        Path(args.output).write_text(text, encoding="utf-8")
    else:
        print(text, end="")
    if args.png:
        print(f"wrote {plot_compare(reports, Path(args.png))}", file=sys.stderr)
    return 0
