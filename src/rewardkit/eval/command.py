"""``rewardkit eval BENCH`` and ``rewardkit report DIR...``."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import Any

from rewardkit.cli import Command, add_model_args, command, load_reward_model
from rewardkit.errors import RewardkitError

log = logging.getLogger(__name__)

BENCH_NAMES = ("rm-bench", "judgebench", "helpsteer3", "rewardbench")


@command("eval", "evaluate a reward model on RM-Bench, JudgeBench, HelpSteer3 or RewardBench")
def _eval(p: argparse.ArgumentParser) -> Command:
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

    def run(args: argparse.Namespace) -> int:
        if args.model is not None and args.scores is not None:
            raise RewardkitError("give either --model (score the benchmark) or --scores FILE (recompute)")
        if args.scores is not None and args.data is not None:
            raise RewardkitError("--data is not used with --scores: the score file holds everything needed")
        return _eval_scores(args) if args.scores else _eval_model(args)

    return run


def _options(args: argparse.Namespace) -> Any:
    from rewardkit.eval.base import EvalOptions

    return EvalOptions(
        difficulty_agg=args.difficulty_agg, split=args.split, limit=args.limit, on_error=args.on_error
    )


def _options_dict(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "difficulty_agg": args.difficulty_agg,
        "split": args.split,
        "limit": args.limit,
        "on_error": args.on_error,
    }


def _eval_model(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from rewardkit.eval.report import make_report, render_markdown
    from rewardkit.eval.run import get_benchmark, score_items, write_scores

    t0 = time.perf_counter()
    opts = _options(args)
    bench = get_benchmark(args.bench)
    out_dir = Path(args.output_dir or f"eval-{args.bench}")
    loaded = bench.load(args.data, opts)
    if not loaded.items:
        raise RewardkitError(f"{loaded.source}: no {bench.name} items")
    print(f"rewardkit eval {bench.name}: {len(loaded.items)} items from {loaded.source}", file=sys.stderr)
    rm = load_reward_model(args)
    bar: Any = None

    def on_start(total: int) -> None:
        nonlocal bar
        bar = tqdm(total=total, unit="conv", disable=args.no_progress, file=sys.stderr, dynamic_ncols=True)

    def progress(n: int, tokens: int) -> None:
        bar.update(n)

    try:
        scored = score_items(
            rm, bench, loaded.items, on_error=opts.on_error, progress=progress, on_start=on_start
        )
    finally:
        if bar is not None:
            bar.close()
    spec = rm.spec.to_dict()
    label = args.label or Path(spec["model"].rstrip("/")).name
    scores_path = write_scores(
        out_dir / "scores.jsonl",
        scored.rows,
        {
            "bench": bench.name,
            "spec": spec,
            "data": loaded.source,
            "options": _options_dict(args),
            "label": label,
        },
    )
    if scored.skipped:
        from rewardkit.data.io import JsonlWriter

        with JsonlWriter(out_dir / "skipped.jsonl", {"bench": bench.name}, overwrite=True) as w:
            w.write(scored.skipped)
    result = bench.metrics(scored.rows, opts)
    if scored.skipped:
        result.warnings.append(
            f"{len(scored.skipped)} item(s) could not be scored and are NOT in the metrics "
            f"(listed in {out_dir / 'skipped.jsonl'})"
        )
    report = make_report(
        result=result,
        title=bench.title,
        label=label,
        spec=spec,
        data={
            "source": loaded.source,
            "layout": loaded.layout,
            "items": len(loaded.items),
            "limit": args.limit,
        },
        options=_options_dict(args),
        scoring={
            "conversations": scored.conversations,
            "tokens": scored.tokens,
            "truncated_items": scored.truncated_items,
            "truncated_conversations": scored.truncated_conversations,
            "skipped_items": len(scored.skipped),
        },
        scores_file=str(scores_path),
        wall_s=time.perf_counter() - t0,
    )
    _finish(out_dir, report, plots=not args.no_plots)
    print(render_markdown(report), end="")
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
        options=_options_dict(args),
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


@command("report", "put several evaluation runs side by side (markdown; optionally a PNG)")
def _report(p: argparse.ArgumentParser) -> Command:
    p.add_argument("runs", nargs="+", help="run directories written by rewardkit eval -o")
    p.add_argument("--png", default=None, help="also write a combined bar chart here")
    p.add_argument("-o", "--output", default=None, help="write the markdown here instead of stdout")

    def run(args: argparse.Namespace) -> int:
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

    return run
