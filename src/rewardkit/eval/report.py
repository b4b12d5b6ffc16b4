"""Reports of evaluation runs: markdown tables in the model card's layout, JSON, PNG plots.

A run directory holds ``scores.jsonl`` (+ ``.meta.json``), ``report.json``, ``report.md`` and
PNGs; `compare_markdown` and `plot_compare` put several runs side by side.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from rewardkit.errors import RewardkitError
from rewardkit.eval.metrics import INCOMPLETE, BenchResult

log = logging.getLogger(__name__)

REPORT_FORMAT = 1
STYLES = ("concise", "detailed", "markdown")
MISSING = "—"


def make_report(
    *,
    result: BenchResult,
    title: str,
    label: str,
    spec: dict[str, Any] | None,
    data: dict[str, Any],
    options: dict[str, Any],
    scoring: dict[str, Any] | None,
    scores_file: str,
    wall_s: float | None = None,
) -> dict[str, Any]:
    """The JSON report of one run (what ``report.json`` holds and `render_markdown` reads)."""
    return {
        "rewardkit_eval": REPORT_FORMAT,
        "bench": result.bench,
        "title": title,
        "label": label,
        **result.to_dict(),
        "spec": spec,
        "data": data,
        "options": options,
        "scoring": scoring,
        "scores_file": scores_file,
        "wall_s": wall_s,
    }


def fmt(value: float | None, mark: str = "") -> str:
    return MISSING if value is None else f"{value:.1f}{mark}"


def cell(text: str) -> str:
    """Text as one markdown table cell: a ``|`` in it (HelpSteer3's ``|2|``) would split it."""
    return text.replace("|", "\\|")


def union_columns(reports: Sequence[dict[str, Any]]) -> list[str]:
    """The columns of several runs of one benchmark, each in its place (RewardBench's Prior Sets
    before Score, pair groups before Overall)."""
    cols: list[str] = []
    for r in reports:
        at = -1  # a column new to the table goes right after its predecessor in its own run
        for c in r["columns"]:
            if c in cols:
                at = cols.index(c)
            else:
                at += 1
                cols.insert(at, c)
    return cols


def table_markdown(reports: Sequence[dict[str, Any]]) -> str:
    """One markdown table, a row per run: ``| Model | <the benchmark's columns> |``; a column
    only some runs have (RewardBench's Prior Sets, pair groups) is ``—`` for the others."""
    cols = union_columns(reports)
    lines = [
        "| Model | " + " | ".join(map(cell, cols)) + " |",
        "|:--|" + "--:|" * len(cols),
    ]
    for r in reports:
        cells = [fmt(r["table"].get(c), r.get("marks", {}).get(c, "")) for c in cols]
        lines.append(f"| {cell(r['label'])} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def render_markdown(report: dict[str, Any]) -> str:
    """``report.md``: the card-layout table, then warnings, provenance and breakdowns."""
    out = [f"## {report['title']}", "", table_markdown([report]), ""]
    for w in report["warnings"]:
        out.append(f"> **WARNING:** {w}")
    if report["warnings"]:
        out.append("")
    if any(INCOMPLETE in m for m in report.get("marks", {}).values()):
        out += [f"{INCOMPLETE} computed over only part of the benchmark (see the warnings).", ""]
    data, scoring, spec = report["data"], report["scoring"], report["spec"]
    out.append(f"- Data: {data.get('source')} ({data.get('layout')} layout), {data.get('items')} items")
    if data.get("limit"):
        out.append(f"- **Partial run:** only the first {data['limit']} items (--limit)")
    if scoring:
        out.append(
            f"- Scored: {scoring['conversations']:,} conversations, {scoring['tokens']:,} tokens; "
            f"truncated items: {scoring['truncated_items']} ({scoring['truncated_conversations']} "
            f"conversations); skipped items: {scoring['skipped_items']}"
        )
    else:
        out.append(f"- Metrics recomputed from the score file {report['scores_file']}")
    if spec:
        out.append(
            f"- Scoring spec: model={spec['model']} revision={spec.get('revision')} "
            f"template={spec['chat_template_sha256']} max_length={spec['max_length']} "
            f"truncation={spec['truncation']} dtype={spec['dtype']} head_dtype={spec['head_dtype']}"
        )
    if report.get("wall_s") is not None:
        out.append(f"- Wall time: {report['wall_s']:.1f} s")
    out.append(f"- Counts: `{json.dumps(report['counts'], sort_keys=True)}`")
    if report["bench"] == "rm-bench":
        out += ["", *_rm_bench_matrices(report)]
    elif report["bench"] == "rewardbench":
        acc = report["details"].get("subset_accuracy", {})
        out += ["", "| Subset | Pairs | Accuracy |", "|:--|--:|--:|"]
        out += [f"| {s} | {report['counts']['per_subset'][s]} | {a:.1f} |" for s, a in acc.items()]
    return "\n".join(out) + "\n"


def _rm_bench_matrices(report: dict[str, Any]) -> list[str]:
    agg = report["details"]["difficulty_agg"]
    how = "mean over domains (official)" if agg == "domain" else "one matrix over all prompts (pooled)"
    out = [f"Easy/Normal/Hard: {how}.", ""]
    out.append("Accuracy matrices (row: chosen style, column: rejected style; Hard = above the diagonal):")
    for dom, m in report["details"]["matrices"].items():
        out += ["", f"**{dom}** ({report['counts']['per_domain'][dom]} prompts)", ""]
        out += ["| chosen \\ rejected | " + " | ".join(STYLES) + " |", "|:--|--:|--:|--:|"]
        out += [f"| {STYLES[i]} | " + " | ".join(f"{c:.1f}" for c in row) + " |" for i, row in enumerate(m)]
    return out


# --- plots ------------------------------------------------------------------------------------


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_bars(report: dict[str, Any], path: Path) -> Path:
    """Bar chart of the headline columns (missing ones left empty), chance level dashed."""
    plt = _pyplot()
    cols = report["columns"]
    vals = [report["table"].get(c) for c in cols]
    fig, ax = plt.subplots(figsize=(1.0 + 0.9 * len(cols), 3.6))
    bars = ax.bar(range(len(cols)), [v or 0 for v in vals], color="#4c72b0")
    for b, v, c in zip(bars, vals, cols, strict=True):
        txt = fmt(v, report.get("marks", {}).get(c, ""))
        ax.annotate(txt, (b.get_x() + b.get_width() / 2, (v or 0) + 1), ha="center", fontsize=8)
    ax.axhline(50, ls="--", lw=0.8, color="grey")
    ax.set_xticks(range(len(cols)), cols, fontsize=8)
    ax.set_ylim(0, 105)
    ax.set_ylabel("accuracy (%)")
    ax.set_title(f"{report['title']} — {report['label']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_rm_bench_heatmap(report: dict[str, Any], path: Path) -> Path:
    """One 3×3 heatmap (chosen style × rejected style) per RM-Bench domain present."""
    plt = _pyplot()
    mats = report["details"]["matrices"]
    fig, axes = plt.subplots(1, max(len(mats), 1), figsize=(3.2 * max(len(mats), 1), 3.2), squeeze=False)
    for ax, (dom, m) in zip(axes[0], mats.items(), strict=False):
        ax.imshow(m, vmin=0, vmax=100, cmap="viridis")
        for i in range(3):
            for j in range(3):
                ax.text(j, i, f"{m[i][j]:.0f}", ha="center", va="center", color="white", fontsize=9)
        ax.set_xticks(range(3), STYLES, fontsize=7)
        ax.set_yticks(range(3), STYLES, fontsize=7)
        ax.set_xlabel("rejected style", fontsize=8)
        ax.set_title(dom, fontsize=9)
    axes[0][0].set_ylabel("chosen style", fontsize=8)
    fig.suptitle(f"RM-Bench accuracy matrices — {report['label']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_compare(reports: Sequence[dict[str, Any]], path: Path) -> Path:
    """Grouped bars: one panel per benchmark, one bar per run for each headline column."""
    plt = _pyplot()
    groups = group_by_bench(reports)
    fig, axes = plt.subplots(len(groups), 1, figsize=(10, 3.4 * len(groups)), squeeze=False)
    for ax, runs in zip(axes[:, 0], groups.values(), strict=True):
        cols = union_columns(runs)
        width = 0.8 / len(runs)
        for k, r in enumerate(runs):
            xs = [i + (k - (len(runs) - 1) / 2) * width for i in range(len(cols))]
            ax.bar(xs, [r["table"].get(c) or 0 for c in cols], width, label=r["label"])
        ax.axhline(50, ls="--", lw=0.8, color="grey")
        ax.set_xticks(range(len(cols)), cols, fontsize=8)
        ax.set_ylim(0, 100)
        ax.set_ylabel("accuracy (%)")
        ax.set_title(runs[0]["title"], fontsize=9)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


# --- files ------------------------------------------------------------------------------------

MATRIX_PNG = "rm-bench-matrix.png"


def report_file_names(benches: Iterable[str]) -> list[str]:
    """Every file name `write_report` may write, for runs of these benchmarks."""
    return ["report.json", "report.md", *(f"{b}.png" for b in benches), MATRIX_PNG]


def write_report(out_dir: Path, report: dict[str, Any], *, plots: bool = True) -> list[Path]:
    """Writes ``report.json``, ``report.md`` and (with ``plots``) PNGs into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = [out_dir / "report.json", out_dir / "report.md"]
    written[0].write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    written[1].write_text(render_markdown(report), encoding="utf-8")
    if plots:
        written.append(plot_bars(report, out_dir / f"{report['bench']}.png"))
        if report["bench"] == "rm-bench" and report["details"]["matrices"]:
            written.append(plot_rm_bench_heatmap(report, out_dir / MATRIX_PNG))
    return written


def load_report(path: str | Path) -> dict[str, Any]:
    """A run's ``report.json`` (``path`` is the run directory or the file)."""
    p = Path(path)
    f = p / "report.json" if p.is_dir() else p
    if not f.is_file():
        raise RewardkitError(f"{p}: no report.json (is it the -o directory of a rewardkit eval run?)")
    rep = json.loads(f.read_text(encoding="utf-8"))
    if rep.get("rewardkit_eval") != REPORT_FORMAT:
        raise RewardkitError(f"{f} is not a rewardkit eval report (format {rep.get('rewardkit_eval')!r})")
    return rep


def group_by_bench(reports: Sequence[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in reports:
        groups.setdefault(r["bench"], []).append(r)
    return groups


def compare_markdown(reports: Sequence[dict[str, Any]]) -> str:
    """Side-by-side tables, one per benchmark, a row per run, then every run's warnings."""
    out: list[str] = []
    for runs in group_by_bench(reports).values():
        out += [f"## {runs[0]['title']}", "", table_markdown(runs), ""]
        for r in runs:
            out += [f"> **WARNING ({r['label']}):** {w}" for w in r["warnings"]]
        if any(r["warnings"] for r in runs):
            out.append("")
    return "\n".join(out)
