"""RewardBench v1 (allenai/reward-bench, split ``filtered``, 2,985 pairs in 23 subsets).

Layouts read: the hub's ``data/filtered-*.parquet`` (a directory holding it, or the file),
JSON/JSONL exports with the same fields, or the hub dataset itself. Records:
``{"id", "subset", "prompt": str, "chosen": str, "rejected": str, ...}``.

Prior preference sets (allenai/pref-test-sets: ``anthropic_helpful``, ``anthropic_hhh``,
``shp``, ``summarize`` ...) are read from the same record shape, ``subset`` naming the set (their
``prompt`` is a list of messages); the leaderboard's Prior Sets column averages four of them.

Score row: ``{"id", "subset", "reward_chosen", "reward_rejected"}`` (older files:
``score_chosen``/``score_rejected``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from rewardkit.data.formats import parse_pair
from rewardkit.errors import InputError
from rewardkit.eval.base import EvalOptions, FieldKind, Item, SplitBenchmark
from rewardkit.eval.metrics import BenchResult, rewardbench_metrics


class RewardBench(SplitBenchmark):
    name = "rewardbench"
    title = "RewardBench"
    hub_id = "allenai/reward-bench"
    meta_fields: ClassVar[dict[str, FieldKind]] = {"id": "id", "subset": "str"}
    score_fields: ClassVar[dict[str, FieldKind]] = {"reward_chosen": "float", "reward_rejected": "float"}
    legacy_fields: ClassVar[dict[str, str]] = {
        "reward_chosen": "score_chosen",
        "reward_rejected": "score_rejected",
    }
    hub_split = "filtered"
    local_patterns = ("filtered-*", "filtered.*")
    local_expected = (
        "no RewardBench 'filtered' split found; expected data/filtered-*.parquet (hub layout) or "
        "filtered.jsonl"
    )

    @staticmethod
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

    def metrics(self, rows: Sequence[Mapping[str, Any]], opts: EvalOptions) -> BenchResult:
        return rewardbench_metrics(rows)
