"""Where a Ray scoring job reads its input and writes its output: local paths or any filesystem URI
pyarrow understands (``s3://``, ``gs://``, ``hdfs://``, ``file://``).

The input is cut into pieces of about ``batch_size`` records, each with the line (or Parquet row)
number of its first record, so that Ray reads them in parallel, numbers every record as
``rewardkit score`` does (1-based, blank lines counted), and hands the scoring replicas blocks of a
useful size. Plain JSONL is cut at line boundaries, Parquet into slices of its row groups, and a
``.jsonl.gz`` is one piece (gzip cannot be split).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import itertools
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from rewardkit.errors import RewardkitError

Format = Literal["jsonl", "jsonl.gz", "parquet"]

# The column of a read piece that holds each record's line number; dunder so that it cannot
# clash with a Parquet file's own columns.
SOURCE_LINE = "__line__"
# The column of a JSONL piece that holds each line's text (null: not UTF-8).
TEXT = "text"
_BLOCK = 1 << 20
# A Parquet row group is decoded whole by every piece cut from it: at most this many pieces.
_MAX_PIECES_PER_ROW_GROUP = 16


@dataclass(frozen=True, kw_only=True)
class Location:
    """A file on a local disk or behind a URI.

    Args:
        name: as the user gave it (used in messages and in ``.meta.json``).
        fs: the pyarrow filesystem that holds it.
        path: its path inside ``fs``.
        local: a local path (readable by `rewardkit.data.io`) rather than a URI.
    """

    name: str
    fs: pafs.FileSystem
    path: str
    local: bool

    @classmethod
    def of(cls, name: str) -> Location:
        if "://" in name:
            try:
                fs, path = pafs.FileSystem.from_uri(name)
            except (pa.ArrowException, ValueError) as e:
                raise RewardkitError(f"cannot open {name}: {e}") from e
            return cls(name=name, fs=fs, path=path, local=False)
        return cls(name=name, fs=pafs.LocalFileSystem(), path=os.path.abspath(name), local=True)

    def sibling(self, suffix: str) -> Location:
        """The file named like this one plus ``suffix`` (e.g. ``.meta.json``), beside it."""
        return Location(name=self.name + suffix, fs=self.fs, path=self.path + suffix, local=self.local)

    def exists(self) -> bool:
        return self.fs.get_file_info(self.path).type == pafs.FileType.File


def input_format(name: str) -> Format:
    if name.endswith(".parquet"):
        return "parquet"
    return "jsonl.gz" if name.endswith(".gz") else "jsonl"


@dataclass(frozen=True, kw_only=True)
class Plan:
    """An input cut into pieces.

    Args:
        pieces: rows for ``ray.data.from_items``, one per piece: ``start``/``stop`` are byte
            offsets (JSONL), or a row group and the rows ``[start, stop)`` in it (Parquet);
            ``first_line`` numbers the piece's first line or row.
        lines: lines (rows) in the input, blank lines included; None for gzip.
        sha256: of the input's bytes, as ``.meta.json`` records it.
    """

    pieces: list[dict[str, int]]
    lines: int | None
    sha256: str


def plan_pieces(src: Location, *, lines_per_piece: int) -> Plan:
    """Reads the input once: its sha256 and where each piece starts.

    Raises:
        RewardkitError: the input is missing or cannot be read.
    """
    if not src.exists():
        raise RewardkitError(f"input file not found: {src.name}")
    fmt = input_format(src.name)
    sha = hashlib.sha256()
    cuts, lines, size, last = [0], 0, 0, b"\n"
    try:
        with src.fs.open_input_stream(src.path, compression=None) as f:
            for block in iter(lambda: f.read(_BLOCK), b""):
                sha.update(block)
                if fmt == "jsonl":
                    # byte offsets just past each newline; a piece ends after every k-th line
                    ends = np.flatnonzero(np.frombuffer(block, np.uint8) == ord("\n")) + size + 1
                    cuts.extend(int(e) for e in ends[(-lines - 1) % lines_per_piece :: lines_per_piece])
                    lines += len(ends)
                size += len(block)
                last = block[-1:]
    except (OSError, pa.ArrowException) as e:
        raise RewardkitError(f"cannot read {src.name}: {e}") from e
    if fmt == "jsonl.gz":
        return Plan(pieces=[{"start": 0, "stop": -1, "first_line": 1}], lines=None, sha256=sha.hexdigest())
    if fmt == "parquet":
        pieces, rows = _parquet_pieces(src, lines_per_piece)
        return Plan(pieces=pieces, lines=rows, sha256=sha.hexdigest())
    if last != b"\n":  # a last line without a newline
        lines += 1
    if cuts[-1] < size:
        cuts.append(size)
    # ``lines_per_piece`` lines per piece but the last: piece i starts at line i·k + 1
    pieces = [
        {"start": a, "stop": b, "first_line": i * lines_per_piece + 1}
        for i, (a, b) in enumerate(itertools.pairwise(cuts))
    ]
    return Plan(pieces=pieces, lines=lines, sha256=sha.hexdigest())


def _parquet_pieces(src: Location, rows_per_piece: int) -> tuple[list[dict[str, int]], int]:
    try:
        with src.fs.open_input_file(src.path) as f:
            meta = pq.ParquetFile(f).metadata
    except pa.ArrowException as e:
        raise RewardkitError(f"cannot read {src.name} as Parquet: {e}") from e
    pieces: list[dict[str, int]] = []
    first = 1
    for g in range(meta.num_row_groups):
        n = meta.row_group(g).num_rows
        step = max(rows_per_piece, -(-n // _MAX_PIECES_PER_ROW_GROUP))
        for lo in range(0, n, step):
            pieces.append({"row_group": g, "start": lo, "stop": min(lo + step, n), "first_line": first + lo})
        first += n
    return pieces, first - 1


def read_pieces(pieces: pa.Table, *, src: Location, lines_per_chunk: int) -> Iterator[pa.Table]:
    """A ``map_batches`` function: the records of each piece, numbered.

    JSONL pieces give the columns ``__line__`` and ``text`` (the line with its newline; null if it
    is not UTF-8), blank lines left out; Parquet pieces give the file's own columns and ``__line__``.
    """
    fmt = input_format(src.name)
    for piece in pieces.to_pylist():
        if fmt == "parquet":
            yield _parquet_piece(src, piece)
        elif fmt == "jsonl.gz":
            with src.fs.open_input_file(src.path) as f, gzip.GzipFile(fileobj=f) as text:
                yield from _numbered(text, first_line=1, chunk=lines_per_chunk)
        else:
            with src.fs.open_input_file(src.path) as f:
                f.seek(piece["start"])
                data = f.read(piece["stop"] - piece["start"])
            # lines keep their "\n", as ``rewardkit score`` gives them to the JSON decoder
            yield from _numbered(io.BytesIO(data), first_line=piece["first_line"], chunk=None)


def _parquet_piece(src: Location, piece: dict[str, Any]) -> pa.Table:
    with src.fs.open_input_file(src.path) as f:
        group = pq.ParquetFile(f).read_row_group(piece["row_group"])
    rows = group.slice(piece["start"], piece["stop"] - piece["start"])
    first = piece["first_line"]
    return rows.append_column(SOURCE_LINE, pa.array(range(first, first + rows.num_rows), pa.int64()))


def _numbered(lines: Any, *, first_line: int, chunk: int | None) -> Iterator[pa.Table]:
    """(line number, text) of the non-blank lines, ``chunk`` lines per table (None: one table)."""
    numbers: list[int] = []
    texts: list[str | None] = []
    for n, raw in enumerate(lines, start=first_line):
        if not raw.strip():
            continue
        numbers.append(n)
        try:
            texts.append(raw.decode("utf-8"))
        except UnicodeDecodeError:
            texts.append(None)
        if chunk is not None and len(numbers) == chunk:
            yield _lines_table(numbers, texts)
            numbers, texts = [], []
    if numbers:
        yield _lines_table(numbers, texts)


def _lines_table(numbers: list[int], texts: list[str | None]) -> pa.Table:
    return pa.table({SOURCE_LINE: pa.array(numbers, pa.int64()), TEXT: pa.array(texts, pa.string())})


def write_text(dst: Location, text: str) -> None:
    """Writes a small file whole: a temporary beside it, then moved into place."""
    tmp = dst.sibling(".tmp")
    with tmp.fs.open_output_stream(tmp.path) as f:
        f.write(text.encode("utf-8"))
    dst.fs.move(tmp.path, dst.path)


class RowWriter:
    """Output rows appended to a JSONL file (one JSON object a line, as ``rewardkit score``
    writes them) or a Parquet file (``id`` as a string column)."""

    def __init__(self, path: Location, *, parquet: bool) -> None:
        self.path = path
        self.parquet = parquet
        self.stream = path.fs.open_output_stream(path.path)
        self.table_writer: pq.ParquetWriter | None = None

    def write(self, rows: list[dict[str, Any]]) -> None:
        if not rows:
            return
        if not self.parquet:
            self.stream.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode("utf-8"))
            return
        table = pa.Table.from_pylist([{**r, "id": None if r["id"] is None else str(r["id"])} for r in rows])
        if self.table_writer is None:
            self.table_writer = pq.ParquetWriter(self.stream, table.schema)
        self.table_writer.write_table(table.cast(self.table_writer.schema))

    def __enter__(self) -> RowWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.parquet and self.table_writer is None:  # no rows: still a Parquet file
            self.table_writer = pq.ParquetWriter(self.stream, pa.schema([("id", pa.string())]))
        if self.table_writer is not None:
            self.table_writer.close()
        self.stream.close()
