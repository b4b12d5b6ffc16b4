"""HelpSteer3 preference, validation split (nvidia/HelpSteer3, config ``preference``).

Layouts read: the hub's ``preference/validation.jsonl.gz`` (a directory holding it, or the
file), Parquet/JSONL exports of the split, or the hub dataset itself. Records:
``{"domain", "language", "context": [turns], "response1", "response2", "overall_preference"}``
(-3..3; negative: response 1 is better). Records have no id; the row index is used.

Score row: ``{"id", "domain", "overall_preference", "score_1", "score_2"}``.
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
from rewardkit.eval.metrics import BenchResult, helpsteer3_metrics


def make_item(rec: Mapping[str, Any], index: int) -> Item:
    """One preference record → an item scoring context+response1 and context+response2."""
    for key in ("response1", "response2", "context"):
        if key not in rec:
            raise InputError("missing; expected a HelpSteer3 preference record", field=key)
    domain = rec.get("domain")
    if not isinstance(domain, str):
        raise InputError(f"expected a string, got {domain!r}", field="domain")
    pair = parse_pair({k: v for k, v in rec.items() if k != "id"})
    rid = rec.get("id", index)
    return Item(
        meta={"id": rid, "domain": domain, "overall_preference": pair.preference},
        conversations=pair.conversations(),
    )


class HelpSteer3(Benchmark):
    name = "helpsteer3"
    title = "HelpSteer3 (validation)"
    hub_id = "nvidia/HelpSteer3"
    meta_fields: ClassVar[dict[str, FieldKind]] = {
        "id": "id",
        "domain": "str",
        "overall_preference": "preference",
    }
    score_fields: ClassVar[dict[str, FieldKind]] = {"score_1": "float", "score_2": "float"}

    def load(self, data: str | Path | None, opts: EvalOptions) -> Loaded:
        if data is None:
            rows = load_hub(self.hub_id, config="preference", split="validation")
            source, layout = f"hf:{self.hub_id}:preference:validation", "hub"
            recs = list(rows)
        else:
            path = Path(data)
            if path.is_dir():
                files = find_data_files(path, ["preference/validation*", "validation*"])
                if not files:
                    raise RewardkitError(
                        f"--data {path}: no HelpSteer3 validation file found; expected "
                        "preference/validation.jsonl.gz (hub layout) or validation*.jsonl/.parquet"
                    )
            elif path.is_file():
                files = [path]
            else:
                raise RewardkitError(f"--data: no such file or directory: {path}")
            recs = [wr for f in files for wr in read_rows(f)]
            source, layout = str(path), "hub"
        items = [parse_item(w, lambda r, i=i: make_item(r, i), r) for i, (w, r) in enumerate(recs)]
        return Loaded(items=take(items, opts.limit), source=source, layout=layout)

    def scores_of(self, rewards: Sequence[float]) -> dict[str, Any]:
        return {"score_1": rewards[0], "score_2": rewards[1]}

    def metrics(self, rows: Sequence[Mapping[str, Any]], opts: EvalOptions) -> BenchResult:
        return helpsteer3_metrics(rows)
