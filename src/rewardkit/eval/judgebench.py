"""JudgeBench (ScalerLab/JudgeBench): pairs of responses with an objective correctness label.

Layouts read: the original repository's ``data/dataset=judgebench,response_model=<model>.jsonl``
(or a file named ``<model>.jsonl``), the hub's splits ``gpt`` / ``claude`` (Parquet/JSONL files
named after the split, or the hub dataset itself), or any single file of pairs.

Each response is scored as [user question, assistant response], as the benchmark's own
reward-model judges do.

Score row: ``{"pair_id", "source", "label", "reward_A", "reward_B"}`` (older files:
``score_A``/``score_B``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

from rewardkit.data.conversation import Conversation
from rewardkit.errors import InputError, RewardkitError
from rewardkit.eval.base import (
    Benchmark,
    EvalOptions,
    FieldKind,
    Item,
    Loaded,
    parse_item,
    read_split,
    take,
)
from rewardkit.eval.metrics import BenchResult, judgebench_metrics

RESPONSE_MODELS = {"gpt": "gpt-4o-2024-05-13", "claude": "claude-3-5-sonnet-20240620"}


def _text(rec: Mapping[str, Any], key: str) -> str:
    v = rec.get(key)
    if not isinstance(v, str) or not v.strip():
        raise InputError("expected a non-empty string", field=key)
    return v


def make_item(rec: Mapping[str, Any]) -> Item:
    """One pair → an item scoring [question, response_A] and [question, response_B]."""
    pair_id, source, question = _text(rec, "pair_id"), _text(rec, "source"), _text(rec, "question")
    label = rec.get("label")
    if label not in ("A>B", "B>A"):
        raise InputError(f"expected 'A>B' or 'B>A', got {label!r}", field="label")
    convs = tuple(
        Conversation.from_prompt(question, _text(rec, k), id=pair_id) for k in ("response_A", "response_B")
    )
    return Item(meta={"pair_id": pair_id, "source": source, "label": label}, conversations=convs)


class JudgeBench(Benchmark):
    name = "judgebench"
    title = "JudgeBench"
    hub_id = "ScalerLab/JudgeBench"
    meta_fields: ClassVar[dict[str, FieldKind]] = {"pair_id": "str", "source": "str", "label": "label"}
    score_fields: ClassVar[dict[str, FieldKind]] = {"reward_A": "float", "reward_B": "float"}
    legacy_fields: ClassVar[dict[str, str]] = {"reward_A": "score_A", "reward_B": "score_B"}

    def load(self, data: str | Path | None, opts: EvalOptions) -> Loaded:
        model = RESPONSE_MODELS[opts.split]
        read = read_split(
            data,
            self.hub_id,
            split=opts.split,
            patterns=[f"*{model}*", f"{opts.split}-*", f"{opts.split}.*"],
            missing=f"no JudgeBench '{opts.split}' split found; expected a file named *{model}*.jsonl "
            f"(original layout) or {opts.split}-*.parquet (hub layout)",
        )
        items = [parse_item(w, make_item, r) for w, r in read.records]
        ids = [it.meta["pair_id"] for it in items]
        if len(set(ids)) != len(ids):
            raise RewardkitError(f"--data {data}: pair_id values repeat; is a split read twice?")
        if data is None:
            layout = "hub"
        elif Path(data).is_file():
            layout = "file"
        else:
            layout = "original" if model in read.files[0].name else "hub"
        return Loaded(items=take(items, opts.limit), source=read.source, layout=layout)

    def metrics(self, rows: Sequence[Mapping[str, Any]], opts: EvalOptions) -> BenchResult:
        return judgebench_metrics(rows)
