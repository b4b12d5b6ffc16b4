"""Run a benchmark: score its items through `RewardModel` (`evaluate`), or recompute its metrics
from a score file (`recompute`); write and read score files and run directories."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rewardkit.data.io import iter_raw
from rewardkit.data.outputs import JsonlWriter
from rewardkit.engine.engine import ProgressFn
from rewardkit.errors import InputError, RewardkitError
from rewardkit.eval.base import Benchmark, EvalOptions, Item, Loaded, OnError, listed
from rewardkit.eval.helpsteer3 import HelpSteer3
from rewardkit.eval.judgebench import JudgeBench
from rewardkit.eval.pairs import Pairs
from rewardkit.eval.rewardbench import RewardBench
from rewardkit.eval.rm_bench import RMBench
from rewardkit.models.templating import Encoded
from rewardkit.nested import flatten, split
from rewardkit.scoring.pipeline import compact, default_window_tokens, score_window, windows

if TYPE_CHECKING:
    from rewardkit.api import RewardModel, Scored

log = logging.getLogger(__name__)

BENCHMARKS: dict[str, Benchmark] = {
    b.name: b for b in (RMBench(), JudgeBench(), HelpSteer3(), RewardBench(), Pairs())
}
ALIASES = {"rmbench": "rm-bench"}  # other spellings of a benchmark's name
SCORES_FORMAT = 1
SCORES_FILE = "scores.jsonl"
SKIPPED_FILE = "skipped.jsonl"


def get_benchmark(name: str) -> Benchmark:
    """The benchmark called ``name`` (or one of its `ALIASES`)."""
    name = ALIASES.get(name, name)
    if name not in BENCHMARKS:
        raise RewardkitError(f"unknown benchmark {name!r}; choose one of {', '.join(BENCHMARKS)}")
    return BENCHMARKS[name]


@dataclass(kw_only=True)
class ScoredItems:
    """Score rows of the scored items, with how their inputs were tokenized.

    Args:
        rows: one score row per scored item, in item order.
        conversations: conversations scored.
        tokens: tokens scored in total.
        truncated_items: items with at least one conversation shortened by the length policy.
        truncated_conversations: conversations shortened by the length policy.
        skipped: items left out because a conversation could not be scored (``on_error=skip``).
    """

    rows: list[dict[str, Any]]
    conversations: int
    tokens: int
    truncated_items: int
    truncated_conversations: int
    skipped: list[dict[str, Any]] = field(default_factory=list)


def _item_label(meta: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in meta.items() if k in ("id", "pair_id", "domain", "subset"))


def score_items(
    rm: RewardModel,
    bench: Benchmark,
    items: Sequence[Item],
    *,
    on_error: OnError = "raise",
    progress: ProgressFn | None = None,
    on_start: Callable[[int], None] | None = None,
) -> ScoredItems:
    """Tokenizes every conversation of every item with the model's template and length policy,
    then scores them through the scoring pipeline's windows (`rewardkit.scoring.pipeline`): each
    window is one engine call over length-sorted batches, each item's conversations one
    shared-prompt group (RM-Bench: 6 responses per prompt; pairs: 2).

    Args:
        on_start: called with the number of conversations about to be scored.
        progress: the engine's per-batch callback (conversations, tokens).

    Raises:
        RewardkitError: some item cannot be scored and ``on_error`` is ``raise``; lists them.
    """
    # 1. Tokenize everything (as compact arrays); over-long conversations come back as InputErrors.
    flat_convs, sizes = flatten(it.conversations for it in items)
    per_item: list[list[Encoded | InputError]] = split(rm.encode(flat_convs), sizes)
    # 2. Set aside the items that cannot be scored, before anything is scored.
    good: list[tuple[int, list[Encoded]]] = []
    skipped: list[dict[str, Any]] = []
    for i, (it, encs) in enumerate(zip(items, per_item, strict=True)):
        bad = [(k, e) for k, e in enumerate(encs) if isinstance(e, InputError)]
        if bad:
            k, e = bad[0]
            skipped.append({**it.meta, "conversation": k, "error": e.message})  # type: ignore[union-attr]
        else:
            good.append((i, [compact(e) for e in encs]))  # type: ignore[arg-type]
    if skipped and on_error == "raise":
        shown = listed(
            [f"{_item_label(s)} (conversation {s['conversation']}): {s['error']}" for s in skipped]
        )
        raise RewardkitError(
            f"{len(skipped)} of {len(items)} {bench.name} items cannot be scored; nothing was scored:"
            f"{shown}\nuse --truncation left (drop the oldest context), a larger --max-length, "
            "or --on-error skip to leave these items out (the report counts them)"
        )
    if skipped:
        log.warning(
            "%d %s item(s) cannot be scored and are left out of the metrics", len(skipped), bench.name
        )
    # 3. Score window by window, in item order.
    if on_start is not None:
        on_start(sum(len(encs) for _, encs in good))
    rows = []
    scored: list[Scored] = []
    trunc_items = 0
    for window in windows(good, max_tokens=default_window_tokens(rm)):
        for i, mine in score_window(rm, window, progress):
            assert not isinstance(mine, InputError)  # set aside above
            rows.append(bench.row(items[i], [s.reward for s in mine]))
            trunc_items += any(s.truncated_tokens > 0 for s in mine)
            scored.extend(mine)
    return ScoredItems(
        rows=rows,
        conversations=len(scored),
        tokens=sum(s.num_tokens for s in scored),
        truncated_items=trunc_items,
        truncated_conversations=sum(s.truncated_tokens > 0 for s in scored),
        skipped=skipped,
    )


@dataclass(frozen=True, kw_only=True)
class EvalRun:
    """An evaluation's report (see `rewardkit.eval.report.make_report`) and the files written."""

    report: dict[str, Any]
    files: list[Path]


def check_output_dir(output_dir: str | Path, *, overwrite: bool = False) -> Path:
    """Refuses to write a run into a directory that already holds one, unless ``overwrite``.

    Cheap: callers run it before loading a model.

    Raises:
        RewardkitError: ``output_dir`` is a file, or holds ``report.json`` / ``scores.jsonl``
            and ``overwrite`` is False.
    """
    out = Path(output_dir)
    if out.exists() and not out.is_dir():
        raise RewardkitError(f"-o {out}: is a file, not a directory")
    found = [n for n in ("report.json", SCORES_FILE) if (out / n).exists()]
    if found and not overwrite:
        raise RewardkitError(
            f"-o {out} already holds an evaluation run ({', '.join(found)}); pass --overwrite to "
            "replace it or choose another -o"
        )
    return out


def _remove_stale(out_dir: Path, names: Sequence[str]) -> None:
    """Deletes files an earlier run left under these names, so that none outlives its run."""
    for name in names:
        for p in (out_dir / name, out_dir / f"{name}.meta.json"):
            if p.is_file():
                p.unlink()


def _report_names() -> list[str]:
    from rewardkit.eval.report import report_file_names

    return report_file_names(BENCHMARKS)


def evaluate(
    rm: RewardModel,
    bench: Benchmark,
    loaded: Loaded,
    output_dir: str | Path,
    *,
    options: EvalOptions | None = None,
    label: str | None = None,
    plots: bool = True,
    overwrite: bool = False,
    progress: ProgressFn | None = None,
    on_start: Callable[[int], None] | None = None,
) -> EvalRun:
    """Scores a benchmark's items with ``rm`` and writes the run directory.

    ``output_dir`` receives ``scores.jsonl`` (one row per item, with a ``.meta.json`` sidecar that
    lets `recompute` redo the metrics), ``skipped.jsonl`` when items could not be scored, and the
    report (``report.json``, ``report.md``, PNG plots).

    Args:
        bench: from `get_benchmark`; ``loaded``: its items (``bench.load(data, options)``).
        options: the evaluation's options (default `EvalOptions()`).
        label: row name in the tables (default: the model's name).
        overwrite: replace a run already in ``output_dir`` (see `check_output_dir`).
        progress / on_start: see `score_items`.

    Raises:
        RewardkitError: no items, ``output_dir`` holds a run and ``overwrite`` is False, or items
            cannot be scored under ``options.on_error="raise"``.
    """
    from rewardkit.eval.report import make_report, write_report

    t0 = time.perf_counter()
    opts = options or EvalOptions()
    out_dir = check_output_dir(output_dir, overwrite=overwrite)
    if not loaded.items:
        raise RewardkitError(f"{loaded.source}: no {bench.name} items")
    scored = score_items(
        rm, bench, loaded.items, on_error=opts.on_error, progress=progress, on_start=on_start
    )
    spec = rm.spec.to_dict()
    label = label or Path(spec["model"].rstrip("/")).name
    _remove_stale(out_dir, [SCORES_FILE, SKIPPED_FILE, *_report_names()])
    scores_path = write_scores(
        out_dir / SCORES_FILE,
        scored.rows,
        {"bench": bench.name, "spec": spec, "data": loaded.source, "options": asdict(opts), "label": label},
    )
    if scored.skipped:
        with JsonlWriter(out_dir / SKIPPED_FILE, {"bench": bench.name}, overwrite=True) as w:
            w.write(scored.skipped)
    result = bench.metrics(scored.rows, opts)
    result.warnings += loaded.notes
    if scored.skipped:
        result.warnings.append(
            f"{len(scored.skipped)} item(s) could not be scored and are NOT in the metrics "
            f"(listed in {out_dir / SKIPPED_FILE})"
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
            "limit": opts.limit,
        },
        options=asdict(opts),
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
    for w in report["warnings"]:
        log.warning("%s", w)
    return EvalRun(report=report, files=write_report(out_dir, report, plots=plots))


def recompute(
    bench: Benchmark,
    scores: str | Path,
    output_dir: str | Path | None = None,
    *,
    options: EvalOptions | None = None,
    label: str | None = None,
    plots: bool = True,
    overwrite: bool = False,
) -> EvalRun:
    """Computes a benchmark's metrics from a score file alone (no model), e.g. with other
    options (``difficulty_agg``) or on rows written by another tool in the same shape.

    Args:
        bench: from `get_benchmark`; ``scores``: a score file (see `read_scores`).
        output_dir: where to write the report files (``report.json``, ``report.md``, plots);
            None writes nothing. The score file is never rewritten.
        options: ``limit`` keeps the first rows; the rest as in `evaluate`.
        label: row name in the tables (default: the label stored with the scores, else the
            model's or the file's name).
        overwrite: replace a run already in ``output_dir`` (see `check_output_dir`).

    Raises:
        RewardkitError: the score file is missing, invalid or for another benchmark, or
            ``output_dir`` holds a run and ``overwrite`` is False.
    """
    from rewardkit.eval.report import make_report, write_report

    opts = options or EvalOptions()
    out_dir = None if output_dir is None else check_output_dir(output_dir, overwrite=overwrite)
    rows = read_scores(bench, scores)
    if opts.limit is not None:
        rows = rows[: opts.limit]
    meta = scores_meta(scores) or {}
    spec = meta.get("spec")
    label = label or meta.get("label") or (Path(spec["model"]).name if spec else Path(scores).stem)
    report = make_report(
        result=bench.metrics(rows, opts),
        title=bench.title,
        label=label,
        spec=spec,
        data={
            "source": meta.get("data", str(scores)),
            "layout": "score file",
            "items": len(rows),
            "limit": opts.limit,
        },
        options=asdict(opts),
        scoring=None,
        scores_file=str(scores),
    )
    for w in report["warnings"]:
        log.warning("%s", w)
    if out_dir is None:
        return EvalRun(report=report, files=[])
    _remove_stale(out_dir, _report_names())
    return EvalRun(report=report, files=write_report(out_dir, report, plots=plots))


def write_scores(path: str | Path, rows: Sequence[dict[str, Any]], meta: dict[str, Any]) -> Path:
    """Writes a score file (JSONL, one row per item) and its ``.meta.json`` sidecar."""
    meta = {"rewardkit_scores": SCORES_FORMAT, **meta}
    with JsonlWriter(path, meta, overwrite=True) as w:
        w.write(rows)
    return Path(path)


def scores_meta(path: str | Path) -> dict[str, Any] | None:
    """The sidecar written with a score file, if there is one."""
    meta = Path(f"{path}.meta.json")
    return json.loads(meta.read_text(encoding="utf-8")) if meta.is_file() else None


def read_scores(bench: Benchmark, path: str | Path) -> list[dict[str, Any]]:
    """Reads and validates a score file; every invalid row is listed with file, line and field.
    Rows of older files, with ``score_*``/``scores_*`` fields, come back with today's names.

    Raises:
        RewardkitError: the file is missing, was written for another benchmark, or has invalid rows.
    """
    p = Path(path)
    if not p.is_file():
        raise RewardkitError(f"--scores: file not found: {p}")
    meta = scores_meta(p)
    if meta is not None and ALIASES.get(meta.get("bench"), meta.get("bench")) not in (None, bench.name):
        raise RewardkitError(f"{p} holds {meta['bench']} scores, not {bench.name}")
    rows: list[dict[str, Any]] = []
    errors: list[InputError] = []
    for line, obj in iter_raw(p):
        try:
            if isinstance(obj, InputError):
                raise obj
            rows.append(bench.check_row(obj, source=str(p), line=line))
        except InputError as e:
            errors.append(e)
    if errors:
        raise RewardkitError(f"{len(errors)} invalid row(s) in {p}:{listed([e.describe() for e in errors])}")
    if not rows:
        raise RewardkitError(f"{p} has no score rows")
    return rows
