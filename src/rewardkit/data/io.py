"""Streaming JSONL/Parquet input and crash-safe, resumable JSONL output."""

from __future__ import annotations

import hashlib
import io
import json
import os
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rewardkit.data.formats import Record, parse_record
from rewardkit.errors import InputError, RewardkitError

STDIO = "-"


def source_name(path: str | Path) -> str:
    return "<stdin>" if str(path) == STDIO else str(path)


def _open_text(path: str | Path) -> io.TextIOBase:
    if str(path) == STDIO:
        return sys.stdin  # type: ignore[return-value]
    if str(path).endswith(".gz"):
        import gzip

        return gzip.open(path, "rt", encoding="utf-8")  # type: ignore[return-value]
    return open(path, encoding="utf-8")


def iter_raw(path: str | Path) -> Iterator[tuple[int, Any]]:
    """Yields ``(line_or_row_number, decoded_object)``; malformed lines yield an InputError.

    JSONL (optionally ``.gz``) and Parquet (by the ``.parquet`` suffix) are read as streams;
    blank lines are skipped but still counted, so numbers match what an editor shows.
    """
    src = source_name(path)
    if str(path) != STDIO and not Path(path).is_file():
        raise RewardkitError(f"input file not found: {src}")
    if str(path).endswith(".parquet"):
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            batches = pq.ParquetFile(path).iter_batches(batch_size=1024)
        except pa.ArrowException as e:
            raise RewardkitError(f"cannot read {src} as Parquet: {e}") from e
        n = 0
        for batch in batches:
            for row in batch.to_pylist():
                n += 1
                yield n, row
        return
    try:
        with _open_text(path) as f:
            for n, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    yield n, json.loads(line)
                except json.JSONDecodeError as e:
                    yield n, InputError(f"malformed JSON: {e.msg} at column {e.colno}", source=src, line=n)
    except (UnicodeDecodeError, OSError) as e:  # not UTF-8, or a broken .gz
        raise RewardkitError(f"cannot read {src}: {e}") from e


@dataclass(frozen=True, kw_only=True)
class LoadedRecords:
    """Validated records with their 1-based line numbers, and the rejected ones."""

    records: list[tuple[int, Record]]
    errors: list[InputError]


def read_records(path: str | Path) -> LoadedRecords:
    """Reads and validates every record of a file; errors carry file, line and field."""
    src = source_name(path)
    records: list[tuple[int, Record]] = []
    errors: list[InputError] = []
    kind: tuple[int, type] | None = None
    for n, obj in iter_raw(path):
        try:
            if isinstance(obj, InputError):
                raise obj
            rec = parse_record(obj)
            if kind is None:
                kind = (n, type(rec))
            elif type(rec) is not kind[1]:
                raise InputError(
                    f"record is a {type(rec).__name__} but line {kind[0]} is a "
                    f"{kind[1].__name__}; one file holds one kind of record"
                )
            records.append((n, rec))
        except InputError as e:
            errors.append(e.locate(source=src, line=n))
    return LoadedRecords(records=records, errors=errors)


def file_digest(path: str | Path) -> str | None:
    """sha256 of a file (None for stdin), used to tie an output to its input for resuming."""
    if str(path) == STDIO:
        return None
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def meta_path(output: str | Path) -> Path:
    """The sidecar that records what produced an output file: ``OUT.meta.json``."""
    out = Path(output)
    return out.with_name(out.name + ".meta.json")


def part_path(output: str | Path, rank: int, world_size: int) -> Path:
    """The resumable part file one rank of ``world_size`` writes before the merge: ``OUT.rank{r}-of-{w}``."""
    out = Path(output)
    return out.with_name(f"{out.name}.rank{rank}-of-{world_size}")


def count_rows(path: str | Path) -> int:
    """Complete lines of a JSONL file, read in blocks."""
    with open(path, "rb") as f:
        return sum(block.count(b"\n") for block in iter(lambda: f.read(1 << 20), b""))


def merge_parts(
    output: str | Path, parts: Sequence[Path], meta: dict[str, Any], *, expected_rows: int
) -> None:
    """Concatenates the parts (in rank order) into ``output`` atomically, then removes them.

    The merged file and its `meta_path` sidecar are written beside ``output`` and moved into
    place with ``os.replace``, so a kill leaves either the parts or the complete output, never a mix.

    Raises:
        RewardkitError: a part is missing, or the parts hold another number of rows than expected.
    """
    out = Path(output)
    missing = [str(p) for p in parts if not p.exists()]
    if missing:
        raise RewardkitError(f"cannot merge {out}: missing part file(s) {', '.join(missing)}")
    tmp = out.with_name(out.name + ".merging")
    rows = 0
    with open(tmp, "wb") as f:
        for p in parts:
            with open(p, "rb") as src:
                for block in iter(lambda src=src: src.read(1 << 20), b""):
                    rows += block.count(b"\n")
                    f.write(block)
        f.flush()
        os.fsync(f.fileno())
    if rows != expected_rows:
        tmp.unlink()
        raise RewardkitError(f"the part files of {out} hold {rows} rows, expected {expected_rows}")
    _atomic_write_text(meta_path(out), json.dumps(meta, indent=1, sort_keys=True))
    os.replace(tmp, out)
    for p in parts:
        p.unlink()
        meta_path(p).unlink(missing_ok=True)


def _complete_rows(path: Path) -> int:
    """Counts complete lines and cuts a torn last line (a write killed half-way)."""
    with open(path, "rb+") as f:
        data = f.read()
        end = data.rfind(b"\n") + 1
        if end != len(data):
            f.truncate(end)
    return data[:end].count(b"\n")


class JsonlWriter:
    """Writes output rows so that a killed run can resume with no lost or duplicated rows.

    Rows go out in whole-line batches (one ``write`` + ``fsync``); a torn last line left by a
    kill is cut on resume. A ``<output>.meta.json`` sidecar records what produced the file
    (scoring spec, input digest): resuming against different settings is refused.

    Args:
        path: output file, or ``-`` for stdout (never resumable).
        meta: what produced the rows; compared on resume.
        overwrite: start afresh even if a matching partial output exists.
    """

    def __init__(self, path: str | Path, meta: dict[str, Any], *, overwrite: bool = False) -> None:
        self.stdout = str(path) == STDIO
        self.done = 0
        if self.stdout:
            self._f = sys.stdout
            return
        self.path = Path(path)
        self.meta_path = meta_path(self.path)
        meta_text = json.dumps(meta, indent=1, sort_keys=True)
        if self.path.exists() and not overwrite:
            if not self.meta_path.exists():
                raise RewardkitError(
                    f"{self.path} exists and was not written by rewardkit score; "
                    "pass --overwrite or choose another -o"
                )
            old = json.loads(self.meta_path.read_text(encoding="utf-8"))
            if old != json.loads(meta_text):
                diff = sorted(k for k in set(old) | set(meta) if old.get(k) != meta.get(k))
                raise RewardkitError(
                    f"{self.path} was written with different settings ({', '.join(diff)}); "
                    "pass --overwrite to start again or choose another -o"
                )
            self.done = _complete_rows(self.path)
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            _atomic_write_text(self.meta_path, meta_text)
            self.path.write_bytes(b"")
        self._f = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()

    def write(self, rows: Iterable[dict[str, Any]]) -> None:
        text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
        if not text:
            return
        self._f.write(text)
        self._f.flush()
        if not self.stdout:
            os.fsync(self._f.fileno())

    def close(self) -> None:
        if not self.stdout:
            self._f.close()

    def __enter__(self) -> JsonlWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
