"""``rewardkit eval BENCH`` and ``rewardkit report DIR...``."""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

from rewardkit.errors import RewardkitError
from rewardkit.options import add_model_args, model_options, progress_bar

log = logging.getLogger(__name__)

BENCH_NAMES = ("rm-bench", "judgebench", "helpsteer3", "rewardbench")


EVAL_HELP = "evaluate a reward model on RM-Bench, JudgeBench, HelpSteer3 or RewardBench"
REPORT_HELP = "put several evaluation runs side by side (markdown; optionally a PNG)"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help=EVAL_HELP, description=EVAL_HELP)
    p.add_argument("bench", choices=BENCH_NAMES)
    p.add_argument("--data", default=None, help="local copy (file or directory; hub or original layout)")
    p.add_argument("--scores", default=None, help="compute the metrics from this score file (no model)")
    p.add_argument("-o", "--output-dir", default=None, help="run directory (default: eval-BENCH)")
    p.add_argument("--label", default=None, help="row name in the tables (default: the model's name)")
    p.add_argument(
        "--difficulty-agg",
        choices=["domain", "pooled"],
        default="domain",
        help="RM-Bench Easy/Normal/Hard: mean over domains (official) or one pooled matrix",
    )
    p.add_argument("--split", choices=["gpt", "claude"], default="gpt", help="JudgeBench response model")
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


def run_eval(args: argparse.Namespace) -> int:
    if args.model is not None and args.scores is not None:
        raise RewardkitError("give either --model (score the benchmark) or --scores FILE (recompute)")
    if args.scores is not None and args.data is not None:
        raise RewardkitError("--data is not used with --scores: the score file holds everything needed")
    return _eval_scores(args) if args.scores else _eval_model(args)


def _options(args: argparse.Namespace) -> Any:
    from rewardkit.eval.base import EvalOptions

    return EvalOptions(
        difficulty_agg=args.difficulty_agg, split=args.split, limit=args.limit, on_error=args.on_error
    )


def _eval_model(args: argparse.Namespace) -> int:
    from rewardkit.eval.report import render_markdown
    from rewardkit.eval.run import evaluate, get_benchmark

    opts = _options(args)
    bench = get_benchmark(args.bench)
    loaded = bench.load(args.data, opts)  # before the (slow) model load
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
            args.output_dir or f"eval-{args.bench}",
            options=opts,
            label=args.label,
            plots=not args.no_plots,
            on_start=on_start,
            progress=lambda n, _tokens: bar.update(n),
        )
    finally:
        if bar is not None:
            bar.close()
    print(f"wrote {', '.join(str(p) for p in run.files)}", file=sys.stderr)
    print(render_markdown(run.report), end="")
    return 0


def _eval_scores(args: argparse.Namespace) -> int:
    from rewardkit.eval.report import make_report, render_markdown
    from rewardkit.eval.run import get_benchmark, read_scores, scores_meta

    opts = _options(args)
    bench = get_benchmark(args.bench)
    rows = read_scores(bench, args.scores)
    if args.limit is not None:
        rows = rows[: args.limit]
    meta = scores_meta(args.scores) or {}
    spec = meta.get("spec")
    label = args.label or meta.get("label") or (Path(spec["model"]).name if spec else Path(args.scores).stem)
    report = make_report(
        result=bench.metrics(rows, opts),
        title=bench.title,
        label=label,
        spec=spec,
        data={
            "source": meta.get("data", args.scores),
            "layout": "score file",
            "items": len(rows),
            "limit": args.limit,
        },
        options=asdict(opts),
        scoring=None,
        scores_file=str(args.scores),
    )
    if args.output_dir:
        _finish(Path(args.output_dir), report, plots=not args.no_plots)
    else:
        for w in report["warnings"]:
            log.warning("%s", w)
    print(render_markdown(report), end="")
    return 0


def _finish(out_dir: Path, report: dict[str, Any], *, plots: bool) -> None:
    from rewardkit.eval.report import write_report

    for w in report["warnings"]:
        log.warning("%s", w)
    paths = write_report(out_dir, report, plots=plots)
    print(f"wrote {', '.join(str(p) for p in paths)}", file=sys.stderr)


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
