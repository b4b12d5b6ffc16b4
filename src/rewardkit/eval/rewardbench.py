"""RewardBench v1 (allenai/reward-bench, split ``filtered``, 2,985 pairs in 23 subsets).

Layouts read: the hub's ``data/filtered-*.parquet`` (a directory holding it, or the file),
JSON/JSONL exports with the same fields, or the hub dataset itself. Records:
``{"id", "subset", "prompt": str, "chosen": str, "rejected": str, ...}``.

Score row: ``{"id", "subset", "score_chosen", "score_rejected"}``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

from rewardkit.data.formats import parse_pair
from rewardkit.errors import InputError, RewardkitError
from rewardkit.eval.base import (
    Benchmark,
    EvalOptions,
    FieldKind,
    Item,
    Loaded,
    find_data_files,
    load_hub,
    parse_item,
    read_rows,
    take,
)
from rewardkit.eval.metrics import BenchResult, rewardbench_metrics


def make_item(rec: Mapping[str, Any], index: int) -> Item:
    """One pair → an item scoring [prompt, chosen] and [prompt, rejected]."""
    subset = rec.get("subset")
    if not isinstance(subset, str) or not subset:
        raise InputError(f"expected a subset name, got {subset!r}", field="subset")
    for key in ("prompt", "chosen", "rejected"):
        if key not in rec:
            raise InputError("missing; expected a RewardBench record", field=key)
    pair = parse_pair({k: rec[k] for k in ("prompt", "chosen", "rejected")})
    rid = rec.get("id", index)
    return Item(meta={"id": rid, "subset": subset}, conversations=pair.conversations())


class RewardBench(Benchmark):
    name = "rewardbench"
    title = "RewardBench"
    hub_id = "allenai/reward-bench"
    meta_fields: ClassVar[dict[str, FieldKind]] = {"id": "id", "subset": "str"}
    score_fields: ClassVar[dict[str, FieldKind]] = {"score_chosen": "float", "score_rejected": "float"}

    def load(self, data: str | Path | None, opts: EvalOptions) -> Loaded:
        if data is None:
            recs = list(load_hub(self.hub_id, split="filtered"))
            source = f"hf:{self.hub_id}:filtered"
        else:
            path = Path(data)
            if path.is_dir():
                files = find_data_files(path, ["filtered-*", "filtered.*"])
                if not files:
                    raise RewardkitError(
                        f"--data {path}: no RewardBench 'filtered' split found; expected "
                        "data/filtered-*.parquet (hub layout) or filtered.jsonl"
                    )
            elif path.is_file():
                files = [path]
            else:
                raise RewardkitError(f"--data: no such file or directory: {path}")
            recs = [wr for f in files for wr in read_rows(f)]
            source = str(path)
        items = [parse_item(w, lambda r, i=i: make_item(r, i), r) for i, (w, r) in enumerate(recs)]
        return Loaded(items=take(items, opts.limit), source=source, layout="hub")

    def scores_of(self, rewards: Sequence[float]) -> dict[str, Any]:
        return {"score_chosen": rewards[0], "score_rejected": rewards[1]}

    def metrics(self, rows: Sequence[Mapping[str, Any]], opts: EvalOptions) -> BenchResult:
        return rewardbench_metrics(rows)
