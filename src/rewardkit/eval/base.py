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
FieldKind = Literal["id", "str", "group", "float", "float3", "label", "preference"]
MAX_LISTED = 20  # problems listed in one error message; the rest are counted


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
        group_by: ``pairs`` only: report accuracy per value of this top-level field of the records.
    """

    difficulty_agg: DifficultyAgg = "domain"
    split: str = "gpt"
    limit: int | None = None
    on_error: OnError = "raise"
    group_by: str | None = None

    def __post_init__(self) -> None:
        if self.difficulty_agg not in ("domain", "pooled"):
            raise ConfigError(f"--difficulty-agg must be domain or pooled, got {self.difficulty_agg!r}")
        if self.split not in ("gpt", "claude"):
            raise ConfigError(f"--split must be gpt or claude, got {self.split!r}")
        if self.limit is not None and self.limit < 1:
            raise ConfigError(f"--limit must be at least 1, got {self.limit}")
        if self.on_error not in ("raise", "skip"):
            raise ConfigError(f"--on-error must be raise or skip, got {self.on_error!r}")
        if self.group_by is not None and not self.group_by.strip():
            raise ConfigError("--group-by needs a field name, got an empty string")


@dataclass(frozen=True, kw_only=True)
class Item:
    """One benchmark item: the fields its score row carries, and the conversations to score."""

    meta: dict[str, Any]
    conversations: tuple[Conversation, ...]


@dataclass(frozen=True, kw_only=True)
class Loaded:
    """A benchmark's items as read.

    Args:
        items: the items to score, in data order.
        source: where the data came from (a path, or ``hf:`` hub id and split).
        layout: which layout was read.
        notes: what reading left out or changed, for the report's warnings.
    """

    items: list[Item]
    source: str
    layout: str
    notes: tuple[str, ...] = ()


class Benchmark(ABC):
    """A benchmark: how to read its data, which score row each item gives, which metrics."""

    name: str
    title: str
    hub_id: str
    # Score-row fields (besides the rewards) and their kinds, in row order.
    meta_fields: ClassVar[dict[str, FieldKind]]
    score_fields: ClassVar[dict[str, FieldKind]]
    # Names the reward fields had in older score files (``reward_A``: ``score_A``), still read.
    legacy_fields: ClassVar[dict[str, str]] = {}

    @abstractmethod
    def load(self, data: str | Path | None, opts: EvalOptions) -> Loaded:
        """Items from a local path (any supported layout) or, when ``data`` is None, the hub."""

    def scores_of(self, rewards: Sequence[float]) -> dict[str, Any]:
        """An item's rewards (in its conversations' order) → the reward fields of its row; by
        default one reward per field of `score_fields`, in order."""
        return dict(zip(self.score_fields, rewards, strict=True))

    @abstractmethod
    def metrics(self, rows: Sequence[Mapping[str, Any]], opts: EvalOptions) -> BenchResult: ...

    def row(self, item: Item, rewards: Sequence[float]) -> dict[str, Any]:
        return {**item.meta, **self.scores_of(rewards)}

    def check_row(self, obj: Any, *, source: str, line: int) -> dict[str, Any]:
        """Validates one score-file row; errors name the file, line and field. Fields under
        their `legacy_fields` names come back under the current ones."""
        if not isinstance(obj, Mapping):
            raise InputError(f"expected a JSON object, got {type(obj).__name__}", source=source, line=line)
        out: dict[str, Any] = {}
        for name, kind in {**self.meta_fields, **self.score_fields}.items():
            key = name if name in obj else self.legacy_fields.get(name)
            if key is None or key not in obj:
                raise InputError(
                    f"missing; a {self.name} score row has {', '.join(self.meta_fields | self.score_fields)}",
                    source=source,
                    line=line,
                    field=name,
                )
            try:
                out[name] = check_value(obj[key], kind)
            except InputError as e:
                raise InputError(e.message, source=source, line=line, field=name) from None
        return out


class SplitBenchmark(Benchmark):
    """A benchmark that is one split of a hub dataset, or a local copy of it, with one item per
    record (`make_item`; the record's index stands in for a missing id)."""

    hub_config: ClassVar[str | None] = None
    hub_split: ClassVar[str]
    # Local copies: glob patterns of the split's files, first match wins; what was expected.
    local_patterns: ClassVar[tuple[str, ...]]
    local_expected: ClassVar[str]

    @staticmethod
    @abstractmethod
    def make_item(rec: Mapping[str, Any], index: int) -> Item: ...

    def load(self, data: str | Path | None, opts: EvalOptions) -> Loaded:
        read = read_split(
            data,
            self.hub_id,
            config=self.hub_config,
            split=self.hub_split,
            patterns=self.local_patterns,
            missing=self.local_expected,
        )
        items = [
            parse_item(w, lambda r, i=i: self.make_item(r, i), r) for i, (w, r) in enumerate(read.records)
        ]
        return Loaded(items=take(items, opts.limit), source=read.source, layout="hub")


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
    if kind == "group":
        if v is not None and not isinstance(v, str):
            raise InputError(f"expected a string or null, got {type(v).__name__}")
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


def listed(lines: Sequence[str]) -> str:
    """Indented lines for an error message: the first `MAX_LISTED`, then how many more."""
    shown = "".join(f"\n  {x}" for x in lines[:MAX_LISTED])
    return shown + (f"\n  ... and {len(lines) - MAX_LISTED} more" if len(lines) > MAX_LISTED else "")


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


def local_files(path: Path, patterns: Sequence[str], *, missing: str) -> list[Path]:
    """The data files of ``--data PATH``: the file itself, or the files under a directory that
    match the first of ``patterns`` that matches (``missing`` says what was expected)."""
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise RewardkitError(f"--data: no such file or directory: {path}")
    files = find_data_files(path, patterns)
    if not files:
        raise RewardkitError(f"--data {path}: {missing}")
    return files


@dataclass(frozen=True, kw_only=True)
class Records:
    """Raw records, each with its location; ``source`` names the data, ``files`` what was read
    (empty for the hub)."""

    records: list[tuple[str, dict[str, Any]]]
    source: str
    files: list[Path]


def read_split(
    data: str | Path | None,
    hub_id: str,
    *,
    config: str | None = None,
    split: str,
    patterns: Sequence[str],
    missing: str,
) -> Records:
    """A benchmark split's records: from the hub when ``data`` is None, else from `local_files`."""
    if data is None:
        records = list(load_hub(hub_id, config=config, split=split))
        return Records(
            records=records, source=":".join(["hf", hub_id, *filter(None, [config, split])]), files=[]
        )
    path = Path(data)
    files = local_files(path, patterns, missing=missing)
    return Records(records=[wr for f in files for wr in read_rows(f)], source=str(path), files=files)


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
