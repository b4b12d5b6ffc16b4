"""What every benchmark provides, and the shared readers (local files, the Hugging Face hub,
score files)."""

from __future__ import annotations

import json
import logging
import math
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

from rewardkit.data.conversation import Conversation
from rewardkit.data.io import iter_raw
from rewardkit.errors import ConfigError, InputError, RewardkitError
from rewardkit.eval.metrics import BenchResult, DifficultyAgg

log = logging.getLogger(__name__)

OnError = Literal["raise", "skip"]
FieldKind = Literal["id", "str", "float", "float3", "label", "preference"]


@dataclass(frozen=True, kw_only=True)
class EvalOptions:
    """Options of one evaluation.

    Args:
        difficulty_agg: RM-Bench Easy/Normal/Hard: ``domain`` (mean over domains, official) or
            ``pooled`` (one matrix over all prompts).
        split: JudgeBench response-model split: ``gpt`` (350 pairs, the card's) or ``claude``.
        limit: keep only the first N items (smoke runs; the report says so).
        on_error: items that cannot be scored (too long under ``--truncation error``): fail, or
            leave them out and count them in the report.
    """

    difficulty_agg: DifficultyAgg = "domain"
    split: str = "gpt"
    limit: int | None = None
    on_error: OnError = "raise"

    def __post_init__(self) -> None:
        if self.difficulty_agg not in ("domain", "pooled"):
            raise ConfigError(f"--difficulty-agg must be domain or pooled, got {self.difficulty_agg!r}")
        if self.split not in ("gpt", "claude"):
            raise ConfigError(f"--split must be gpt or claude, got {self.split!r}")
        if self.limit is not None and self.limit < 1:
            raise ConfigError(f"--limit must be at least 1, got {self.limit}")
        if self.on_error not in ("raise", "skip"):
            raise ConfigError(f"--on-error must be raise or skip, got {self.on_error!r}")


@dataclass(frozen=True, kw_only=True)
class Item:
    """One benchmark item: the fields its score row carries, and the conversations to score."""

    meta: dict[str, Any]
    conversations: tuple[Conversation, ...]


@dataclass(frozen=True, kw_only=True)
class Loaded:
    items: list[Item]
    source: str  # where the data came from (path or hub id/split)
    layout: str  # which layout was read


class Benchmark(ABC):
    """A benchmark: how to read its data, which score row each item gives, which metrics."""

    name: str
    title: str
    hub_id: str
    # Score-row fields (besides the scores) and their kinds, in row order.
    meta_fields: ClassVar[dict[str, FieldKind]]
    score_fields: ClassVar[dict[str, FieldKind]]

    @abstractmethod
    def load(self, data: str | Path | None, opts: EvalOptions) -> Loaded:
        """Items from a local path (any supported layout) or, when ``data`` is None, the hub."""

    @abstractmethod
    def scores_of(self, rewards: Sequence[float]) -> dict[str, Any]:
        """An item's rewards (in its conversations' order) → the score fields of its row."""

    @abstractmethod
    def metrics(self, rows: Sequence[Mapping[str, Any]], opts: EvalOptions) -> BenchResult: ...

    def row(self, item: Item, rewards: Sequence[float]) -> dict[str, Any]:
        return {**item.meta, **self.scores_of(rewards)}

    def check_row(self, obj: Any, *, source: str, line: int) -> dict[str, Any]:
        """Validates one score-file row; errors name the file, line and field."""
        if not isinstance(obj, Mapping):
            raise InputError(f"expected a JSON object, got {type(obj).__name__}", source=source, line=line)
        out: dict[str, Any] = {}
        for name, kind in {**self.meta_fields, **self.score_fields}.items():
            if name not in obj:
                raise InputError(
                    f"missing; a {self.name} score row has {', '.join(self.meta_fields | self.score_fields)}",
                    source=source,
                    line=line,
                    field=name,
                )
            try:
                out[name] = check_value(obj[name], kind)
            except InputError as e:
                raise InputError(e.message, source=source, line=line, field=name) from None
        return out


def check_value(v: Any, kind: FieldKind) -> Any:
    """One score-row value of the given kind (raises InputError describing what was expected)."""
    if kind == "id":
        if isinstance(v, bool) or not isinstance(v, str | int):
            raise InputError(f"expected a string or integer, got {type(v).__name__}")
        return v
    if kind == "str":
        if not isinstance(v, str):
            raise InputError(f"expected a string, got {type(v).__name__}")
        return v
    if kind == "label":
        if v not in ("A>B", "B>A"):
            raise InputError(f"expected 'A>B' or 'B>A', got {v!r}")
        return v
    if kind == "float3":
        if not isinstance(v, list) or len(v) != 3:
            raise InputError(f"expected a list of 3 numbers, got {v!r}")
        return [check_value(x, "float") for x in v]
    if kind == "preference":
        if isinstance(v, bool) or not isinstance(v, int | float) or not -3 <= v <= 3:
            raise InputError(f"expected a number from -3 to 3, got {v!r}")
        return v
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        raise InputError(f"expected a finite number, got {v!r}")
    return float(v)


# --- reading benchmark data ---------------------------------------------------------------------

DATA_SUFFIXES = (".json", ".jsonl", ".jsonl.gz", ".parquet")


def read_rows(path: str | Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """Raw records of a JSON array, JSONL (.gz) or Parquet file, each with a location label
    (``file:line`` or ``file[index]``) for error messages."""
    p = Path(path)
    if not p.is_file():
        raise RewardkitError(f"data file not found: {p}")
    if p.suffix == ".json":
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise InputError(f"malformed JSON: {e.msg}", source=str(p), line=e.lineno) from None
        if isinstance(data, dict) and len(data) == 1 and isinstance(next(iter(data.values())), list):
            data = next(iter(data.values()))  # {"data": [...]}
        if not isinstance(data, list):
            raise InputError("expected a JSON array of records", source=str(p))
        for i, rec in enumerate(data):
            yield f"{p}[{i}]", _mapping(rec, f"{p}[{i}]")
        return
    for line, rec in iter_raw(p):
        if isinstance(rec, InputError):
            raise rec
        yield f"{p}:{line}", _mapping(rec, f"{p}:{line}")


def _mapping(rec: Any, where: str) -> dict[str, Any]:
    if not isinstance(rec, Mapping):
        raise InputError(f"expected a JSON object, got {type(rec).__name__}", source=where)
    return dict(rec)


def find_data_files(directory: Path, patterns: Sequence[str]) -> list[Path]:
    """Files under ``directory`` (recursively) matching the first glob pattern that matches."""
    for pat in patterns:
        found = sorted(f for f in directory.rglob(pat) if f.is_file() and f.name.endswith(DATA_SUFFIXES))
        if found:
            return found
    return []


def load_hub(repo: str, *, config: str | None = None, split: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """Rows of a hub dataset through ``datasets`` (imported here: optional, and slow to import)."""
    try:
        import datasets
    except ImportError as e:
        raise RewardkitError(
            "reading benchmarks from the hub needs the 'datasets' package (pip install rewardkit[eval]); "
            "or pass --data PATH to a local copy"
        ) from e
    try:
        ds = datasets.load_dataset(repo, config, split=split)
    except Exception as e:  # network, auth and missing-split errors all mean: use a local copy
        raise RewardkitError(
            f"cannot load {repo} (split {split}) from the Hugging Face hub: {type(e).__name__}: {e}; "
            "pass --data PATH to a local copy"
        ) from e
    for i, rec in enumerate(ds):
        yield f"{repo}:{split}[{i}]", dict(rec)


def parse_item(where: str, build: Any, rec: Mapping[str, Any]) -> Item:
    """Calls ``build(rec)``, adding the record's location to any InputError."""
    try:
        return build(rec)
    except InputError as e:
        raise InputError(e.message, source=where, field=e.field) from None


def take(items: list[Item], limit: int | None) -> list[Item]:
    return items if limit is None else items[:limit]
