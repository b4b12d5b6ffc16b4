"""HelpSteer3 preference, validation split (nvidia/HelpSteer3, config ``preference``).

Layouts read: the hub's ``preference/validation.jsonl.gz`` (a directory holding it, or the
file), Parquet/JSONL exports of the split, or the hub dataset itself. Records:
``{"domain", "language", "context": [turns], "response1", "response2", "overall_preference"}``
(-3..3; negative: response 1 is better). Records have no id; the row index is used.

Score row: ``{"id", "domain", "overall_preference", "reward_1", "reward_2"}`` (older files:
``score_1``/``score_2``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from rewardkit.data.formats import parse_pair
from rewardkit.errors import InputError
from rewardkit.eval.base import EvalOptions, FieldKind, Item, SplitBenchmark
from rewardkit.eval.metrics import BenchResult, helpsteer3_metrics


class HelpSteer3(SplitBenchmark):
    name = "helpsteer3"
    title = "HelpSteer3 (validation)"
    hub_id = "nvidia/HelpSteer3"
    meta_fields: ClassVar[dict[str, FieldKind]] = {
        "id": "id",
        "domain": "str",
        "overall_preference": "preference",
    }
    score_fields: ClassVar[dict[str, FieldKind]] = {"reward_1": "float", "reward_2": "float"}
    legacy_fields: ClassVar[dict[str, str]] = {"reward_1": "score_1", "reward_2": "score_2"}
    hub_config = "preference"
    hub_split = "validation"
    local_patterns = ("preference/validation*", "validation*")
    local_expected = (
        "no HelpSteer3 validation file found; expected preference/validation.jsonl.gz (hub layout) "
        "or validation*.jsonl/.parquet"
    )

    @staticmethod
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

    def metrics(self, rows: Sequence[Mapping[str, Any]], opts: EvalOptions) -> BenchResult:
        return helpsteer3_metrics(rows)
