"""Crash-safe, resumable outputs: JSONL rows (or Parquet by extension), the ``.meta.json``
sidecar that ties an output to its settings, early checks of output paths, and the block parts
that the ranks of a job write and rank 0 merges — every output file is named here."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from rewardkit.data.io import STDIO, is_parquet
from rewardkit.errors import RewardkitError


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def meta_path(output: str | Path) -> Path:
    """The sidecar that records what produced an output file: ``OUT.meta.json``."""
    out = Path(output)
    return out.with_name(out.name + ".meta.json")


def parts_dir(output: str | Path) -> Path:
    """Where the ranks of a job write their blocks before the merge: ``OUT.parts/``."""
    out = Path(output)
    return out.with_name(out.name + ".parts")


def parts_meta_path(output: str | Path) -> Path:
    """What the blocks in `parts_dir` were written with (compared before resuming them)."""
    return parts_dir(output) / "meta.json"


def block_path(output: str | Path, index: int) -> Path:
    """The rows of one input block (see `Block`), written whole by the rank that scored it."""
    return parts_dir(output) / f"block-{index:07d}.jsonl"


def count_rows(path: str | Path) -> int:
    """Complete lines of a JSONL file (rows of a Parquet file), read in blocks."""
    if is_parquet(path):
        import pyarrow.parquet as pq

        return int(pq.ParquetFile(path).metadata.num_rows)
    with open(path, "rb") as f:
        return sum(block.count(b"\n") for block in iter(lambda: f.read(1 << 20), b""))


def partial_path(output: str | Path) -> Path:
    """Where the rows of an unfinished Parquet output go: ``OUT.parquet.partial.jsonl``."""
    out = Path(output)
    return out.with_name(out.name + ".partial.jsonl")


def rows_written(output: str | Path) -> int:
    """Complete rows an earlier run left in ``output`` (its `partial_path` while unfinished); 0
    when there is none. Read only: `open_output` checks the settings and cuts a torn line."""
    if str(output) == STDIO:
        return 0
    out = Path(output)
    if is_parquet(out) and not out.exists():
        out = partial_path(out)
    return count_rows(out) if out.is_file() else 0


def check_output(output: str | Path, *, input_path: str | Path, error_file: str | Path | None = None) -> None:
    """Fails early (before any model loads) on an output that cannot be written, or that would
    destroy the input.

    Raises:
        RewardkitError: naming the path and what is wrong.
    """
    for flag, path in (("-o", output), ("--error-file", error_file)):
        if path is None or str(path) == STDIO:
            continue
        p = Path(path)
        if p.is_dir():
            raise RewardkitError(f"{flag} {p} is a directory; give a file name")
        if str(input_path) != STDIO and p.exists() and p.samefile(input_path):
            raise RewardkitError(f"{flag} {p} is the input file; choose another output")
        parent = p.parent
        while not parent.exists() and parent != parent.parent:
            parent = parent.parent
        if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
            raise RewardkitError(
                f"{flag} {p}: cannot write in {parent} (permission denied or not a directory)"
            )


# Meta fields that name things rather than identify their content: an output resumes when its
# input has the same sha256 and its model the same weights, however their paths are written.
_SPELLINGS = {"input": "input_sha256", "spec.model": "spec.weights"}


def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def meta_differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """What differs between two outputs' metadata, as ``field: VALUE in the output, VALUE now``;
    a path spelled differently is no difference when its content identifier matches."""
    a, b = _flat(old), _flat(new)
    diffs = []
    for key in sorted(set(a) | set(b)):
        same_content = key in _SPELLINGS and a.get(_SPELLINGS[key]) is not None
        same_content = same_content and a.get(_SPELLINGS[key]) == b.get(_SPELLINGS[key])
        if a.get(key) != b.get(key) and not same_content:
            diffs.append(f"{key}: {a.get(key)!r} in the output, {b.get(key)!r} now")
    return diffs


def check_resumable(output: Path, meta: dict[str, Any], *, sidecar: Path | None = None) -> None:
    """Raises unless ``output`` was written by a run with these settings (see `meta_differences`),
    as its sidecar (default `meta_path`) records."""
    sidecar = sidecar or meta_path(output)
    if not sidecar.exists():
        raise RewardkitError(
            f"{output} exists and was not written by rewardkit score; pass --overwrite or choose another -o"
        )
    diffs = meta_differences(json.loads(sidecar.read_text(encoding="utf-8")), meta)
    if diffs:
        raise RewardkitError(
            f"{output} was written with different settings, so it cannot be resumed:\n  "
            + "\n  ".join(diffs)
            + "\npass --overwrite to start again or choose another -o"
        )


def _complete_rows(path: Path) -> int:
    """Counts complete lines and cuts a torn last line (a write killed half-way)."""
    with open(path, "rb+") as f:
        data = f.read()
        end = data.rfind(b"\n") + 1
        if end != len(data):
            f.truncate(end)
    return data[:end].count(b"\n")


def rows_text(rows: Iterable[dict[str, Any]]) -> str:
    """Rows as JSONL lines (UTF-8 kept as is)."""
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)


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
        if self.path.exists() and not overwrite:
            check_resumable(self.path, meta)
            self.done = _complete_rows(self.path)
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            _atomic_write_text(self.meta_path, json.dumps(meta, indent=1, sort_keys=True))
            self.path.write_bytes(b"")
        self._f = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()

    def write(self, rows: Iterable[dict[str, Any]]) -> None:
        text = rows_text(rows)
        if not text:
            return
        self._f.write(text)
        self._f.flush()
        if not self.stdout:
            os.fsync(self._f.fileno())

    def finish(self) -> None:
        """Nothing left to do for JSONL (see `ParquetWriter.finish`)."""

    def close(self) -> None:
        if not self.stdout:
            self._f.close()

    def __enter__(self) -> JsonlWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class ParquetWriter:
    """A Parquet output (``-o OUT.parquet``): rows go to a resumable JSONL part
    (`partial_path`) and `finish` converts it into ``OUT.parquet`` atomically; a complete
    ``OUT.parquet`` of the same settings is left as it is.

    ``id`` is written as a string column (records without an id get their line number).
    """

    def __init__(self, path: str | Path, meta: dict[str, Any], *, overwrite: bool = False) -> None:
        self.final = Path(path)
        self.meta = meta
        self._rows: JsonlWriter | None = None
        if self.final.exists() and not overwrite:
            check_resumable(self.final, meta)
            self.done = count_rows(self.final)
        else:
            self._rows = JsonlWriter(partial_path(self.final), meta, overwrite=overwrite)
            self.done = self._rows.done

    def write(self, rows: Iterable[dict[str, Any]]) -> None:
        if self._rows is None:
            rows = list(rows)
            assert not rows, "a complete Parquet output takes no more rows"
            return
        self._rows.write(rows)

    def finish(self) -> None:
        if self._rows is None:
            return
        self._rows.close()
        _atomic_write_text(meta_path(self.final), json.dumps(self.meta, indent=1, sort_keys=True))
        jsonl_to_parquet(self._rows.path, self.final)
        self._rows.path.unlink()
        self._rows.meta_path.unlink(missing_ok=True)
        self._rows = None

    def close(self) -> None:
        if self._rows is not None:
            self._rows.close()


Output = JsonlWriter | ParquetWriter


def open_output(path: str | Path, meta: dict[str, Any], *, overwrite: bool = False) -> Output:
    """The writer for an output path: Parquet by the ``.parquet`` extension, else JSONL."""
    return (ParquetWriter if is_parquet(path) else JsonlWriter)(path, meta, overwrite=overwrite)


def jsonl_to_parquet(src: Path, dest: Path, *, chunk_rows: int = 65536) -> None:
    """Converts JSONL rows into a Parquet file (written beside ``dest``, then moved into place)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    tmp = dest.with_name(dest.name + ".tmp")
    writer: pq.ParquetWriter | None = None
    try:
        with open(src, "rb") as f:
            while True:
                rows = [json.loads(line) for _, line in zip(range(chunk_rows), f, strict=False)]
                if not rows:
                    break
                for r in rows:
                    if "id" in r:
                        r["id"] = str(r["id"])
                table = pa.Table.from_pylist(rows)
                if writer is None:
                    writer = pq.ParquetWriter(tmp, table.schema)
                writer.write_table(table.cast(writer.schema))
        if writer is None:  # no rows: an empty file with no columns
            pq.write_table(pa.table({}), tmp)
    finally:
        if writer is not None:
            writer.close()
    os.replace(tmp, dest)


def merge_blocks(
    output: str | Path, parts: Sequence[Path], meta: dict[str, Any], *, expected_rows: int
) -> None:
    """Concatenates block parts (in input order) into ``output`` atomically, then removes them.

    The merged file and its `meta_path` sidecar are written beside ``output`` and moved into
    place with ``os.replace``, so a kill leaves either the parts or the complete output, never a mix.

    Raises:
        RewardkitError: a part is missing, or the parts hold another number of rows than expected.
    """
    out = Path(output)
    missing = [str(p) for p in parts if not p.exists()]
    if missing:
        raise RewardkitError(f"cannot merge {out}: missing part file(s) {', '.join(missing[:5])}")
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
    if is_parquet(out):
        jsonl_to_parquet(tmp, out)
        tmp.unlink()
    else:
        os.replace(tmp, out)
    for p in parts:
        p.unlink()
