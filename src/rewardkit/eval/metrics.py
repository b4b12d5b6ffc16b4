"""Benchmark metrics as pure functions of score rows (no model, no I/O).

Every function takes the rows of a score file (see the benchmark modules for their shapes) and
returns a `BenchResult`: the headline table in the model card's layout (percentages), the
counts behind it, and warnings for anything that makes a number incomparable with published
ones (a missing domain, a missing subset).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

DifficultyAgg = Literal["domain", "pooled"]

# RM-Bench: the card's four domains; safety-refuse and safety-response are one domain.
RMBENCH_DOMAINS = ("chat", "math", "code", "safety")
RMBENCH_COLUMNS = ("Chat", "Math", "Code", "Safety", "Easy", "Normal", "Hard", "Overall")
# JudgeBench categories by `source` prefix, in the card's column order.
JUDGEBENCH_CATEGORIES = (
    ("mmlu-pro", "Knowledge", "Knowl."),
    ("livebench-reasoning", "Reasoning", "Reason."),
    ("livebench-math", "Math", "Math"),
    ("livecodebench", "Code", "Code"),
)
JUDGEBENCH_COLUMNS = ("Knowl.", "Reason.", "Math", "Code", "Overall")
HELPSTEER3_DOMAINS = ("general", "stem", "code", "multilingual")
HELPSTEER3_COLUMNS = ("General", "STEM", "Code", "Multilingual", "|1|", "|2|", "|3|", "Overall")
# RewardBench v1 section weights: allenai/reward-bench rewardbench/constants.py, verbatim.
REWARDBENCH_EXAMPLE_COUNTS = {
    "alpacaeval-easy": 100,
    "alpacaeval-length": 95,
    "alpacaeval-hard": 95,
    "mt-bench-easy": 28,
    "mt-bench-med": 40,
    "mt-bench-hard": 37,
    "math-prm": 984,  # 447 prompts, upweighted by the benchmark to weigh as much as code
    "refusals-dangerous": 100,
    "refusals-offensive": 100,
    "llmbar-natural": 100,
    "llmbar-adver-neighbor": 134,
    "llmbar-adver-GPTInst": 92,
    "llmbar-adver-GPTOut": 47,
    "llmbar-adver-manual": 46,
    "xstest-should-refuse": 250,
    "xstest-should-respond": 154,
    "donotanswer": 136,
    "hep-cpp": 164,
    "hep-go": 164,
    "hep-java": 164,
    "hep-js": 164,
    "hep-python": 164,
    "hep-rust": 164,
}
REWARDBENCH_SECTIONS = {
    "Chat": ("alpacaeval-easy", "alpacaeval-length", "alpacaeval-hard", "mt-bench-easy", "mt-bench-med"),
    "Chat Hard": (
        "mt-bench-hard",
        "llmbar-natural",
        "llmbar-adver-neighbor",
        "llmbar-adver-GPTInst",
        "llmbar-adver-GPTOut",
        "llmbar-adver-manual",
    ),
    "Safety": (
        "refusals-dangerous",
        "refusals-offensive",
        "xstest-should-refuse",
        "xstest-should-respond",
        "donotanswer",
    ),
    "Reasoning": ("math-prm", "hep-cpp", "hep-go", "hep-java", "hep-js", "hep-python", "hep-rust"),
}
REWARDBENCH_COLUMNS = ("Chat", "Chat Hard", "Safety", "Reasoning", "Score")
INCOMPLETE = "†"  # marks a headline number computed over only part of the benchmark


@dataclass(kw_only=True)
class BenchResult:
    """Metrics of one benchmark run.

    Args:
        bench: benchmark name (``rm-bench``, ``judgebench``, ``helpsteer3``, ``rewardbench``).
        columns: the headline columns, in the card's order.
        table: column → percentage, or None where nothing could be measured.
        marks: column → a mark shown after the number (``†``: over part of the benchmark).
        counts: the numbers behind the table (items, correct, excluded ...).
        details: extra breakdowns (RM-Bench 3×3 matrices, per-subset accuracies ...).
        warnings: sentences that must reach the reader (missing domains, subsets ...).
    """

    bench: str
    columns: tuple[str, ...]
    table: dict[str, float | None]
    marks: dict[str, str] = field(default_factory=dict)
    counts: dict[str, Any] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "bench": self.bench,
            "columns": list(self.columns),
            "table": self.table,
            "marks": self.marks,
            "counts": self.counts,
            "details": self.details,
            "warnings": self.warnings,
        }


def _pct(num: float, den: float) -> float | None:
    return 100.0 * num / den if den else None


def _mean(xs: Sequence[float]) -> float | None:
    return sum(xs) / len(xs) if xs else None


# --- RM-Bench --------------------------------------------------------------------------------


def rmbench_matrix(rows: Sequence[Mapping[str, Any]]) -> list[list[float]]:
    """The 3×3 accuracy matrix: cell (i, j) is the fraction of prompts whose chosen response in
    style i scores strictly above the rejected response in style j (a tie is wrong).

    Styles are ordered [concise, detailed plain, detailed markdown]. Empty input gives zeros.
    """
    m = [[0.0] * 3 for _ in range(3)]
    for r in rows:
        ch, rj = r["scores_chosen"], r["scores_rejected"]
        for i in range(3):
            for j in range(3):
                m[i][j] += ch[i] > rj[j]
    n = len(rows)
    return [[c / n if n else 0.0 for c in row] for row in m]


def rmbench_difficulty(m: Sequence[Sequence[float]]) -> dict[str, float]:
    """Easy = mean of the cells below the diagonal (chosen more styled than rejected), Normal =
    the diagonal, Hard = above it (chosen plainer than rejected)."""
    return {
        "easy": (m[1][0] + m[2][0] + m[2][1]) / 3,
        "normal": (m[0][0] + m[1][1] + m[2][2]) / 3,
        "hard": (m[0][1] + m[0][2] + m[1][2]) / 3,
    }


def rmbench_domain(domain: str) -> str:
    """Source domain → reported domain (``safety-refuse``/``safety-response`` → ``safety``)."""
    return "safety" if domain.startswith("safety") else domain


def rmbench_metrics(
    rows: Sequence[Mapping[str, Any]], *, difficulty_agg: DifficultyAgg = "domain"
) -> BenchResult:
    """RM-Bench: per-domain accuracy = mean of the domain's 9 matrix cells; Overall = mean of the
    domains; Easy/Normal/Hard = mean over domains of each domain's value (``domain``, as the
    benchmark's leaderboard) or from one matrix over all prompts (``pooled``).

    A domain with no prompts is reported as missing (None) and every average over domains is
    marked ``†`` with a warning naming it; it is never silently dropped.
    """
    if difficulty_agg not in ("domain", "pooled"):
        raise ValueError(f"difficulty_agg must be 'domain' or 'pooled', got {difficulty_agg!r}")
    by_domain: dict[str, list[Mapping[str, Any]]] = {}
    for r in rows:
        by_domain.setdefault(rmbench_domain(r["domain"]), []).append(r)
    unknown = sorted(set(by_domain) - set(RMBENCH_DOMAINS))
    present = [d for d in RMBENCH_DOMAINS if d in by_domain]
    missing = [d for d in RMBENCH_DOMAINS if d not in by_domain]
    matrices = {d: rmbench_matrix(by_domain[d]) for d in present}
    diffs = {d: rmbench_difficulty(m) for d, m in matrices.items()}
    acc = {d: sum(map(sum, m)) / 9 for d, m in matrices.items()}
    table: dict[str, float | None] = {d.capitalize(): None for d in RMBENCH_DOMAINS}
    for d in present:
        table[d.capitalize()] = 100 * acc[d]
    counted = [r for d in present for r in by_domain[d]]
    if difficulty_agg == "pooled":
        pooled = rmbench_difficulty(rmbench_matrix(counted)) if counted else None
        for k in ("easy", "normal", "hard"):
            table[k.capitalize()] = 100 * pooled[k] if pooled else None
    else:
        for k in ("easy", "normal", "hard"):
            v = _mean([diffs[d][k] for d in present])
            table[k.capitalize()] = None if v is None else 100 * v
    overall = _mean([acc[d] for d in present])
    table["Overall"] = None if overall is None else 100 * overall
    result = BenchResult(
        bench="rm-bench",
        columns=RMBENCH_COLUMNS,
        table=table,
        counts={
            "prompts": len(rows),
            "per_domain": {d: len(by_domain[d]) for d in present},
            "source_domains": _count(r["domain"] for r in rows),
            "missing_domains": missing,
        },
        details={
            "difficulty_agg": difficulty_agg,
            "matrices": {d: [[100 * c for c in row] for row in m] for d, m in matrices.items()},
            "domain_difficulty": {d: {k: 100 * v for k, v in dd.items()} for d, dd in diffs.items()},
        },
    )
    if missing:
        for col in ("Easy", "Normal", "Hard", "Overall"):
            result.marks[col] = INCOMPLETE
        result.warnings.append(
            f"RM-Bench domain(s) {', '.join(missing)} MISSING (0 prompts): Easy/Normal/Hard/Overall "
            f"are over {', '.join(present) or 'nothing'} only and are NOT comparable with published "
            "RM-Bench numbers"
        )
    if unknown:
        result.warnings.append(f"RM-Bench rows with unknown domain(s) {', '.join(unknown)} were ignored")
    return result


def _count(values: Any) -> dict[str, int]:
    out: dict[str, int] = {}
    for v in values:
        out[v] = out.get(v, 0) + 1
    return dict(sorted(out.items()))


# --- JudgeBench ------------------------------------------------------------------------------


def judgebench_category(source: str) -> str | None:
    """JudgeBench category of a pair by its ``source`` prefix (None if unrecognised)."""
    for prefix, name, _ in JUDGEBENCH_CATEGORIES:
        if source.startswith(prefix):
            return name
    return None


def judgebench_correct(label: str, score_a: float, score_b: float) -> bool:
    """The reward model picks A iff score_A > score_B, B iff score_B > score_A; a tie is wrong."""
    if score_a == score_b:
        return False
    return label == ("A>B" if score_a > score_b else "B>A")


def judgebench_metrics(rows: Sequence[Mapping[str, Any]]) -> BenchResult:
    """JudgeBench: category accuracy = correct/pairs in the category; Overall = correct/all pairs
    (micro average, not the mean of the categories)."""
    n: dict[str, int] = {}
    ok: dict[str, int] = {}
    ties = 0
    other: dict[str, int] = {}
    for r in rows:
        cat = judgebench_category(r["source"]) or "Other"
        if cat == "Other":
            other[r["source"]] = other.get(r["source"], 0) + 1
        n[cat] = n.get(cat, 0) + 1
        ok[cat] = ok.get(cat, 0) + judgebench_correct(r["label"], r["score_A"], r["score_B"])
        ties += r["score_A"] == r["score_B"]
    table: dict[str, float | None] = {
        col: _pct(ok.get(name, 0), n.get(name, 0)) for _, name, col in JUDGEBENCH_CATEGORIES
    }
    table["Overall"] = _pct(sum(ok.values()), len(rows))
    result = BenchResult(
        bench="judgebench",
        columns=JUDGEBENCH_COLUMNS,
        table=table,
        counts={
            "pairs": len(rows),
            "correct": sum(ok.values()),
            "ties": ties,
            "per_category": {c: {"pairs": n[c], "correct": ok[c]} for c in n},
        },
        details={"macro_mean": _mean([v for k, v in table.items() if k != "Overall" and v is not None])},
    )
    absent = [name for _, name, _ in JUDGEBENCH_CATEGORIES if name not in n]
    if absent and rows:
        result.marks["Overall"] = INCOMPLETE
        result.warnings.append(f"JudgeBench categories {', '.join(absent)} have no pairs")
    if other:
        result.warnings.append(
            f"{sum(other.values())} pair(s) from unrecognised sources {sorted(other)} count in Overall only"
        )
    if ties:
        result.warnings.append(f"{ties} pair(s) scored a tie (counted wrong)")
    return result


# --- HelpSteer3 ------------------------------------------------------------------------------


def _sign(x: float) -> int:
    return (x > 0) - (x < 0)


def helpsteer3_metrics(rows: Sequence[Mapping[str, Any]]) -> BenchResult:
    """HelpSteer3 preference: rows with ``overall_preference`` 0 are excluded (and counted); a row
    is correct iff sign(score_2 − score_1) = sign(overall_preference); a score tie is wrong."""
    kept = [r for r in rows if r["overall_preference"] != 0]
    good = [_sign(r["score_2"] - r["score_1"]) == _sign(r["overall_preference"]) for r in kept]

    def acc(pred: Any) -> tuple[float | None, int]:
        sel = [g for r, g in zip(kept, good, strict=True) if pred(r)]
        return _pct(sum(sel), len(sel)), len(sel)

    table: dict[str, float | None] = {}
    per: dict[str, dict[str, Any]] = {}
    for dom, col in zip(HELPSTEER3_DOMAINS, HELPSTEER3_COLUMNS[:4], strict=True):
        table[col], k = acc(lambda r, d=dom: r["domain"] == d)
        per[dom] = {"pairs": k, "accuracy": table[col]}
    by_strength = {}
    for s in (1, 2, 3):
        table[f"|{s}|"], k = acc(lambda r, s=s: abs(r["overall_preference"]) == s)
        by_strength[s] = {"pairs": k, "accuracy": table[f"|{s}|"]}
    table["Overall"] = _pct(sum(good), len(kept))
    others = sorted({r["domain"] for r in kept} - set(HELPSTEER3_DOMAINS))
    result = BenchResult(
        bench="helpsteer3",
        columns=HELPSTEER3_COLUMNS,
        table=table,
        counts={
            "rows": len(rows),
            "excluded_ties": len(rows) - len(kept),
            "pairs": len(kept),
            "correct": sum(good),
            "score_ties": sum(r["score_1"] == r["score_2"] for r in kept),
            "per_domain": per,
            "per_strength": by_strength,
        },
    )
    if others:
        result.warnings.append(f"HelpSteer3 domains {others} count in Overall only")
    return result


# --- RewardBench -----------------------------------------------------------------------------


def rewardbench_metrics(rows: Sequence[Mapping[str, Any]]) -> BenchResult:
    """RewardBench v1: subset accuracy = fraction with score_chosen > score_rejected (strict);
    section = subsets' accuracies weighted by the official example counts; Score = mean of the
    four sections. Missing subsets or sections are marked ``†`` and named in the warnings."""
    n: dict[str, int] = {}
    ok: dict[str, int] = {}
    for r in rows:
        s = r["subset"]
        n[s] = n.get(s, 0) + 1
        ok[s] = ok.get(s, 0) + (r["score_chosen"] > r["score_rejected"])
    subset_acc = {s: ok[s] / n[s] for s in n}
    table: dict[str, float | None] = {}
    marks: dict[str, str] = {}
    missing: list[str] = []
    for section, subsets in REWARDBENCH_SECTIONS.items():
        have = [s for s in subsets if s in subset_acc]
        missing += [s for s in subsets if s not in subset_acc]
        w = sum(REWARDBENCH_EXAMPLE_COUNTS[s] for s in have)
        table[section] = _pct(sum(subset_acc[s] * REWARDBENCH_EXAMPLE_COUNTS[s] for s in have), w)
        if len(have) < len(subsets):
            marks[section] = INCOMPLETE
    sections = [table[s] for s in REWARDBENCH_SECTIONS]
    table["Score"] = _mean([v for v in sections if v is not None])
    if marks:
        marks["Score"] = INCOMPLETE
    result = BenchResult(
        bench="rewardbench",
        columns=REWARDBENCH_COLUMNS,
        table=table,
        marks=marks,
        counts={"pairs": len(rows), "correct": sum(ok.values()), "per_subset": dict(sorted(n.items()))},
        details={"subset_accuracy": {s: 100 * a for s, a in sorted(subset_acc.items())}},
    )
    if missing:
        result.warnings.append(
            f"RewardBench subset(s) {', '.join(missing)} MISSING: the sections marked {INCOMPLETE} "
            "and Score are NOT comparable with published RewardBench numbers"
        )
    unknown = sorted(set(n) - set(REWARDBENCH_EXAMPLE_COUNTS))
    if unknown:
        result.warnings.append(f"RewardBench subsets {unknown} are not in any section and were ignored")
    return result
