"""RM-Bench (THU-KEG/RM-Bench): 3 chosen × 3 rejected responses per prompt, in style order
[concise, detailed plain, detailed markdown].

Layouts read:

- hub: ``total_dataset.json`` (or the hub dataset itself), one record per prompt with a
  ``domain`` field and string ids like ``"chat/100"``;
- original repository: ``data/<domain>_filtered.json`` per domain (``chat``, ``code``, ``math``,
  ``safety-refuse``, ``safety-response``), integer ids; the domain comes from the file name.

Score row: ``{"id", "domain", "reward_chosen": [3 floats], "reward_rejected": [3 floats]}``
(older files: ``scores_chosen``/``scores_rejected``).
"""

from __future__ import annotations

import logging
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
    load_hub,
    parse_item,
    read_rows,
    take,
)
from rewardkit.eval.metrics import BenchResult, rm_bench_metrics

log = logging.getLogger(__name__)

SOURCE_DOMAINS = ("chat", "code", "math", "safety-refuse", "safety-response")
HUB_FILE = "total_dataset.json"
ORIGINAL_SUFFIX = "_filtered"


def _responses(rec: Mapping[str, Any], key: str) -> list[str]:
    v = rec.get(key)
    if not isinstance(v, list) or len(v) != 3 or not all(isinstance(x, str) for x in v):
        raise InputError("expected a list of 3 response strings (concise, detailed, markdown)", field=key)
    return v


def make_item(rec: Mapping[str, Any], domain: str | None = None) -> Item:
    """One RM-Bench record → an item scoring 6 conversations: chosen[0..2], rejected[0..2]."""
    dom = rec.get("domain", domain)
    if dom not in SOURCE_DOMAINS:
        raise InputError(f"expected one of {', '.join(SOURCE_DOMAINS)}, got {dom!r}", field="domain")
    prompt = rec.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise InputError("expected a non-empty string", field="prompt")
    rid = rec.get("id")
    if isinstance(rid, bool) or not isinstance(rid, str | int):
        raise InputError(f"expected a string or integer, got {rid!r}", field="id")
    # Per-domain files number prompts per file; the hub's "chat/100" form makes ids unique.
    rid = rid if isinstance(rid, str) and "/" in rid else f"{dom}/{rid}"
    responses = _responses(rec, "chosen") + _responses(rec, "rejected")
    convs = tuple(Conversation.from_prompt(prompt, r, id=rid) for r in responses)
    return Item(meta={"id": rid, "domain": dom}, conversations=convs)


def _domain_of_file(path: Path) -> str | None:
    stem = path.name.split(".")[0]
    dom = stem.removesuffix(ORIGINAL_SUFFIX)
    return dom if dom in SOURCE_DOMAINS else None


class RMBench(Benchmark):
    name = "rm-bench"
    title = "RM-Bench"
    hub_id = "THU-KEG/RM-Bench"
    meta_fields: ClassVar[dict[str, FieldKind]] = {"id": "id", "domain": "str"}
    score_fields: ClassVar[dict[str, FieldKind]] = {"reward_chosen": "float3", "reward_rejected": "float3"}
    legacy_fields: ClassVar[dict[str, str]] = {
        "reward_chosen": "scores_chosen",
        "reward_rejected": "scores_rejected",
    }

    def load(self, data: str | Path | None, opts: EvalOptions) -> Loaded:
        if data is None:
            items = [parse_item(w, make_item, r) for w, r in load_hub(self.hub_id, split="train")]
            return Loaded(items=take(items, opts.limit), source=f"hf:{self.hub_id}", layout="hub")
        path = Path(data)
        files, layout = self._files(path)
        items: list[Item] = []
        for f in files:
            dom = _domain_of_file(f)
            items += [parse_item(w, lambda r, d=dom: make_item(r, d), r) for w, r in read_rows(f)]
        self._check_unique(items)
        return Loaded(items=take(items, opts.limit), source=str(path), layout=layout)

    def _files(self, path: Path) -> tuple[list[Path], str]:
        if path.is_file():
            return [path], "hub" if _domain_of_file(path) is None else "original"
        if not path.is_dir():
            raise RewardkitError(f"--data: no such file or directory: {path}")
        for d in (path, path / "data"):
            if (d / HUB_FILE).is_file():
                return [d / HUB_FILE], "hub"
        for d in (path, path / "data"):
            found = sorted(f for f in d.glob(f"*{ORIGINAL_SUFFIX}.json") if _domain_of_file(f))
            if found:
                absent = sorted(set(SOURCE_DOMAINS) - {_domain_of_file(f) for f in found})
                if absent:
                    log.warning("RM-Bench files for %s are MISSING in %s", ", ".join(absent), d)
                return found, "original"
        raise RewardkitError(
            f"--data {path}: no RM-Bench data found; expected {HUB_FILE} (hub layout) or "
            f"<domain>{ORIGINAL_SUFFIX}.json files (original repository layout)"
        )

    @staticmethod
    def _check_unique(items: list[Item]) -> None:
        seen: set[str] = set()
        for it in items:
            if it.meta["id"] in seen:
                raise RewardkitError(f"RM-Bench id {it.meta['id']!r} appears twice; is a file read twice?")
            seen.add(it.meta["id"])

    def scores_of(self, rewards: Sequence[float]) -> dict[str, Any]:
        return {"reward_chosen": list(rewards[:3]), "reward_rejected": list(rewards[3:6])}

    def metrics(self, rows: Sequence[Mapping[str, Any]], opts: EvalOptions) -> BenchResult:
        return rm_bench_metrics(rows, difficulty_agg=opts.difficulty_agg)
