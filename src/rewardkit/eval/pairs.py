"""Your own preference pairs: how often the reward model prefers the preferred response.

Reads the pair records `rewardkit score` reads (JSONL, ``.jsonl.gz`` or Parquet, one kind per
file): ``{"prompt"?, "chosen", "rejected"}`` (TRL / OpenRLHF; without ``prompt`` the two sides are
whole conversations) and HelpSteer3 ``{"context", "response1", "response2",
"overall_preference"}``. Every invalid record is listed with its line and field. HelpSteer3
records with ``overall_preference`` 0 prefer neither response: they are left out and counted.

A pair is right when the preferred response gets the strictly higher reward (a tie is wrong).
With ``group_by`` (``--group-by FIELD``) accuracy is also reported per value of that top-level
field of the records.

Score row: ``{"id", "group", "reward_chosen", "reward_rejected"}``; ``chosen`` is the preferred
response (for HelpSteer3 records, the one ``overall_preference`` points to); ``group`` is null
without ``group_by``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

from rewardkit.data.conversation import PreferencePair
from rewardkit.data.io import iter_raw, read_records
from rewardkit.errors import InputError, RewardkitError
from rewardkit.eval.base import Benchmark, EvalOptions, FieldKind, Item, Loaded, listed, take
from rewardkit.eval.metrics import BenchResult, pct

OVERALL = "Overall"


def group_values(path: Path, field: str) -> tuple[dict[int, str], list[InputError]]:
    """Line → the record's ``field`` as a string (JSON text for non-strings), and the records
    that lack it."""
    values: dict[int, str] = {}
    errors: list[InputError] = []
    for line, obj in iter_raw(path):
        if not isinstance(obj, Mapping):
            continue  # read_records reports it
        v = obj.get(field)
        if v is None:
            errors.append(
                InputError(
                    "missing; --group-by needs it in every record", source=str(path), line=line, field=field
                )
            )
        else:
            values[line] = v if isinstance(v, str) else json.dumps(v, ensure_ascii=False)
    return values, errors


class Pairs(Benchmark):
    name = "pairs"
    title = "Preference pairs"
    meta_fields: ClassVar[dict[str, FieldKind]] = {"id": "id", "group": "group"}
    score_fields: ClassVar[dict[str, FieldKind]] = {"reward_chosen": "float", "reward_rejected": "float"}

    def load(self, data: str | Path | None, opts: EvalOptions) -> Loaded:
        if data is None:
            raise RewardkitError("rewardkit eval pairs needs the pairs file: rewardkit eval pairs FILE")
        path = Path(data)
        if not path.is_file():
            raise RewardkitError(f"pairs file not found: {path}")
        loaded = read_records(path)
        errors = list(loaded.errors)
        groups: dict[int, str] = {}
        if opts.group_by is not None:
            groups, missing = group_values(path, opts.group_by)
            errors += missing
        for line, rec in loaded.records:
            if not isinstance(rec, PreferencePair):
                errors.append(
                    InputError(
                        "a single conversation, not a pair; expected chosen/rejected or HelpSteer3 records",
                        source=str(path),
                        line=line,
                    )
                )
        if errors:
            errors.sort(key=lambda e: e.line or 0)
            raise RewardkitError(
                f"{len(errors)} problem(s) in {path}; nothing was scored:"
                f"{listed([e.describe() for e in errors])}"
            )
        items: list[Item] = []
        ties = 0
        for line, rec in loaded.records:
            assert isinstance(rec, PreferencePair)
            if rec.is_tie:
                ties += 1
                continue
            meta = {"id": rec.id if rec.id is not None else line, "group": groups.get(line)}
            items.append(Item(meta=meta, conversations=(rec.chosen, rec.rejected)))
        notes = ()
        if ties:
            notes = (f"{ties} record(s) with overall_preference 0 prefer neither response and were left out",)
        return Loaded(items=take(items, opts.limit), source=str(path), layout="pairs", notes=notes)

    def metrics(self, rows: Sequence[Mapping[str, Any]], opts: EvalOptions) -> BenchResult:
        return pairs_metrics(rows)


def pairs_metrics(rows: Sequence[Mapping[str, Any]]) -> BenchResult:
    """Accuracy = pairs with reward_chosen > reward_rejected / pairs: per group (sorted), then
    Overall over every pair."""
    right = [r["reward_chosen"] > r["reward_rejected"] for r in rows]
    per_group: dict[str, dict[str, int]] = {}
    for r, good in zip(rows, right, strict=True):
        if r["group"] is not None:
            g = per_group.setdefault(r["group"], {"pairs": 0, "correct": 0})
            g["pairs"] += 1
            g["correct"] += good
    per_group = dict(sorted(per_group.items()))
    table = {g: pct(c["correct"], c["pairs"]) for g, c in per_group.items()}
    table[OVERALL] = pct(sum(right), len(rows))  # a group named "Overall" is shown as Overall
    ties = sum(r["reward_chosen"] == r["reward_rejected"] for r in rows)
    result = BenchResult(
        bench="pairs",
        columns=(*(g for g in per_group if g != OVERALL), OVERALL),
        table=table,
        counts={"pairs": len(rows), "correct": sum(right), "ties": ties, "per_group": per_group},
    )
    if OVERALL in per_group:
        result.warnings.append(f"a group is named {OVERALL!r}; its accuracy is in counts.per_group only")
    ungrouped = sum(r["group"] is None for r in rows)
    if per_group and ungrouped:
        result.warnings.append(f"{ungrouped} pair(s) have no group and count in Overall only")
    if ties:
        result.warnings.append(f"{ties} pair(s) scored a tie (counted wrong)")
    return result
