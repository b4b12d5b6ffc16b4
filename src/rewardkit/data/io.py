"""Streaming JSONL/Parquet input (whole files or blocks of them) and crash-safe, resumable output."""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from rewardkit.data.formats import Record, RecordKind, SameKind, kind_of, parse_record
from rewardkit.errors import InputError, RewardkitError

STDIO = "-"


def source_name(path: str | Path) -> str:
    return "<stdin>" if str(path) == STDIO else str(path)


def _open_binary(path: str | Path) -> IO[bytes]:
    if str(path) == STDIO:
        return sys.stdin.buffer
    if str(path).endswith(".gz"):
        import gzip

        return gzip.open(path, "rb")  # type: ignore[return-value]
    return open(path, "rb")


def is_parquet(path: str | Path) -> bool:
    return str(path).endswith(".parquet")


def check_input(path: str | Path) -> None:
    """Fails early (before any model loads) on an input that cannot be read.

    Raises:
        RewardkitError: naming the path and what is wrong with it.
    """
    if str(path) == STDIO:
        return
    p = Path(path)
    if not p.exists():
        raise RewardkitError(f"input file not found: {p}")
    if p.is_dir():
        raise RewardkitError(f"input {p} is a directory; give a JSONL (.gz) or Parquet file")
    if not os.access(p, os.R_OK):
        raise RewardkitError(f"input {p} is not readable (permission denied)")


@dataclass(frozen=True, kw_only=True)
class Block:
    """A run of consecutive records of a file, the unit that ranks share out.

    Args:
        index: position of the block in the file (blocks in index order cover the file in order).
        first_line: 1-based line (row) number of the block's first line.
        start: byte offset of its first line (JSONL; in the decompressed stream for .gz), or the
            row group (Parquet).
        end: byte offset just past its last line (JSONL), or ``start + 1`` (Parquet).
    """

    index: int
    first_line: int
    start: int
    end: int


def index_blocks(path: str | Path, *, target_bytes: int) -> list[Block]:
    """Cuts a file into blocks of whole lines of about ``target_bytes`` each (Parquet: one block a
    row group), reading it once without parsing."""
    check_input(path)
    src = source_name(path)
    if str(path) == STDIO:
        raise RewardkitError("stdin cannot be shared out between ranks; give an INPUT file")
    if is_parquet(path):
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            meta = pq.ParquetFile(path).metadata
        except pa.ArrowException as e:
            raise RewardkitError(f"cannot read {src} as Parquet: {e}") from e
        blocks, line = [], 1
        for g in range(meta.num_row_groups):
            blocks.append(Block(index=g, first_line=line, start=g, end=g + 1))
            line += meta.row_group(g).num_rows
        return blocks
    target = max(1, target_bytes)
    blocks = []
    start, line, pos, lines_before = 0, 1, 0, 0
    try:
        with _open_binary(path) as f:
            for raw in f:
                pos += len(raw)
                lines_before += 1
                if pos - start >= target:
                    blocks.append(Block(index=len(blocks), first_line=line, start=start, end=pos))
                    start, line = pos, lines_before + 1
    except OSError as e:  # a broken .gz
        raise RewardkitError(f"cannot read {src}: {e}") from e
    if pos > start or not blocks:
        blocks.append(Block(index=len(blocks), first_line=line, start=start, end=pos))
    return blocks


def _lines(path: str | Path, block: Block | None) -> Iterator[tuple[int, bytes]]:
    """``(line number, raw line)`` of the file, or of one block of it."""
    first, start, end = (1, 0, None) if block is None else (block.first_line, block.start, block.end)
    with _open_binary(path) as f:
        if start:
            f.seek(start)
        pos = start
        for n, raw in enumerate(f, start=first):
            if end is not None and pos >= end:
                return
            pos += len(raw)
            yield n, raw


def decode_json(text: str) -> Any:
    """One JSONL line's object, or the InputError that says why it is not JSON."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        return InputError(f"malformed JSON: {e.msg} at column {e.colno}")
    except RecursionError:
        return InputError("malformed JSON: nested too deeply")


def iter_raw(
    path: str | Path, *, block: Block | None = None, source: str | None = None
) -> Iterator[tuple[int, Any]]:
    """Yields ``(line_or_row_number, decoded_object)``; a malformed line yields an InputError.

    JSONL (optionally ``.gz``) and Parquet (by the ``.parquet`` suffix) are read as streams;
    blank lines are skipped but still counted, so numbers match what an editor shows. With
    ``block``, only that block of the file (see `index_blocks`). ``source`` names the file in
    errors (default: its path).
    """
    src = source or source_name(path)
    check_input(path)
    if is_parquet(path):
        yield from _parquet_rows(path, block)
        return
    try:
        for n, raw in _lines(path, block):
            if not raw.strip():
                continue
            try:
                obj = decode_json(raw.decode("utf-8"))
            except UnicodeDecodeError as e:
                obj = InputError(f"not UTF-8: {e.reason} at byte {e.start}")
            yield n, obj.locate(source=src, line=n) if isinstance(obj, InputError) else obj
    except OSError as e:  # a broken .gz
        raise RewardkitError(f"cannot read {src}: {e}") from e


def _parquet_rows(path: str | Path, block: Block | None) -> Iterator[tuple[int, Any]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    src = source_name(path)
    try:
        pf = pq.ParquetFile(path)
        groups = range(pf.metadata.num_row_groups) if block is None else [block.start]
        n = 0 if block is None else block.first_line - 1
        for g in groups:
            for batch in pf.iter_batches(batch_size=1024, row_groups=[g]):
                for row in batch.to_pylist():
                    n += 1
                    yield n, row
    except pa.ArrowException as e:
        raise RewardkitError(f"cannot read {src} as Parquet: {e}") from e


def iter_records(
    path: str | Path,
    *,
    block: Block | None = None,
    kind: tuple[int, RecordKind] | None = None,
    source: str | None = None,
) -> Iterator[tuple[int, Record | InputError]]:
    """Yields ``(line, record)`` for every record, or ``(line, InputError)`` for an invalid one
    (with file, line and field filled in). One file holds one kind of record (`SameKind`): a
    record of another kind than the first is an error.

    Args:
        block: read only this block (see `index_blocks`).
        kind: ``(line, kind)`` of the file's first record (`first_record_kind`), when reading a
            later block.
        source: how errors name the file (default: its path).
    """
    src = source or source_name(path)
    same_kind = SameKind(first=kind)
    for n, obj in iter_raw(path, block=block, source=src):
        try:
            if isinstance(obj, InputError):
                raise obj
            rec = parse_record(obj)
            same_kind(n, rec)
            yield n, rec
        except InputError as e:
            yield n, e.locate(source=src, line=n)


def first_record_kind(path: str | Path) -> tuple[int, RecordKind] | None:
    """``(line, kind)`` of the file's first valid record (what `iter_records` checks others by)."""
    return next(((n, kind_of(r)) for n, r in iter_records(path) if not isinstance(r, InputError)), None)


@dataclass(frozen=True, kw_only=True)
class LoadedRecords:
    """Validated records with their 1-based line numbers, and the rejected ones."""

    records: list[tuple[int, Record]]
    errors: list[InputError]


def read_records(path: str | Path) -> LoadedRecords:
    """Reads and validates every record of a file into memory (small files; scoring streams with
    `iter_records`); errors carry file, line and field."""
    records: list[tuple[int, Record]] = []
    errors: list[InputError] = []
    for n, rec in iter_records(path):
        if isinstance(rec, InputError):
            errors.append(rec)
        else:
            records.append((n, rec))
    return LoadedRecords(records=records, errors=errors)


def spool_stdin(directory: str | Path | None = None) -> Path:
    """Copies standard input to a temporary file (so it can be read twice, in bounded memory)."""
    import shutil
    import tempfile

    fd, name = tempfile.mkstemp(prefix="rewardkit-stdin-", suffix=".jsonl", dir=directory)
    with os.fdopen(fd, "wb") as out:
        shutil.copyfileobj(sys.stdin.buffer, out, 1 << 20)
    return Path(name)


def file_digest(path: str | Path) -> str | None:
    """sha256 of a file (None for stdin), used to tie an output to its input for resuming."""
    if str(path) == STDIO:
        return None
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
