"""Score a file of records into a resumable JSONL output (what ``rewardkit score`` runs)."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from rewardkit.api import RewardModel
from rewardkit.data.formats import Record
from rewardkit.data.io import (
    STDIO,
    JsonlWriter,
    count_rows,
    file_digest,
    merge_parts,
    meta_path,
    part_path,
    read_records,
    source_name,
)
from rewardkit.errors import InputError, RewardkitError
from rewardkit.models.loading import ScoringSpec
from rewardkit.models.templating import Encoded
from rewardkit.nested import flatten, split
from rewardkit.scoring.rows import output_row, record_conversations

log = logging.getLogger(__name__)

OnError = Literal["raise", "skip"]
MAX_LISTED_ERRORS = 20


class InvalidInputError(RewardkitError):
    """Some records are invalid; ``errors`` lists all of them."""

    def __init__(self, errors: Sequence[InputError]) -> None:
        self.errors = list(errors)
        shown = "\n  ".join(e.describe() for e in self.errors[:MAX_LISTED_ERRORS])
        more = len(self.errors) - MAX_LISTED_ERRORS
        tail = f"\n  ... and {more} more" if more > 0 else ""
        super().__init__(
            f"{len(self.errors)} invalid record(s); nothing was scored:\n  {shown}{tail}\n"
            "fix them, or pass --on-error skip to score the valid records and list the rest"
        )


@dataclass(frozen=True, kw_only=True)
class ScoreSummary:
    rows: int
    resumed: int
    skipped: int
    tokens: int


def _error_row(e: InputError) -> dict[str, Any]:
    return {"source": e.source, "line": e.line, "field": e.field, "error": e.message}


def output_meta(spec: ScoringSpec, input_path: str | Path, *, on_error: OnError) -> dict[str, Any]:
    """What an output's ``.meta.json`` records: the scoring spec and the input (name and sha256).

    A run resumes an output only when this is equal; every way of scoring a file writes it.
    """
    return {
        "spec": spec.to_dict(),
        "input": source_name(input_path),
        "input_sha256": file_digest(input_path),
        "on_error": on_error,
        "rewardkit_output": 1,
    }


@dataclass(frozen=True, kw_only=True)
class _Prepared:
    """Validated, tokenized records of one input and the output's provenance."""

    good: list[tuple[int, Record, list[Encoded]]]
    errors: list[InputError]
    meta: dict[str, Any]


def _prepare(
    rm: RewardModel,
    input_path: str | Path,
    output_path: str | Path,
    *,
    on_error: OnError,
    error_file: str | Path | None,
    overwrite: bool,
    write_errors: bool = True,
) -> _Prepared:
    """Reads, validates and tokenizes every record; raises or lists the invalid ones."""
    src = source_name(input_path)
    loaded = read_records(input_path)
    items = loaded.records
    flat, sizes = flatten(record_conversations(rec) for _, rec in items)
    errors = list(loaded.errors)
    good: list[tuple[int, Record, list[Encoded]]] = []
    for (line, rec), encs in zip(items, split(rm.encode(flat), sizes), strict=True):
        bad = [e for e in encs if isinstance(e, InputError)]
        if bad:
            errors.append(bad[0].locate(source=src, line=line))
        else:
            good.append((line, rec, encs))  # type: ignore[arg-type]
    errors.sort(key=lambda e: e.line or 0)
    if errors and on_error == "raise":
        raise InvalidInputError(errors)
    if errors:
        err_path = (
            Path(error_file)
            if error_file
            else (None if str(output_path) == STDIO else Path(f"{output_path}.errors.jsonl"))
        )
        if err_path is None:
            raise RewardkitError("--on-error skip with output to stdout needs --error-file PATH")
        if write_errors:
            text = "".join(json.dumps(_error_row(e)) + "\n" for e in errors)
            err_path.write_text(text, encoding="utf-8")
            log.warning("%d invalid record(s) skipped, listed in %s", len(errors), err_path)

    if (
        str(input_path) == STDIO
        and str(output_path) != STDIO
        and Path(output_path).exists()
        and not overwrite
    ):
        raise RewardkitError(
            f"{output_path} exists and the input is stdin, which cannot be checked for resuming; "
            "pass --overwrite or read the input from a file"
        )
    return _Prepared(good=good, errors=errors, meta=output_meta(rm.spec, input_path, on_error=on_error))


def _score_into(
    rm: RewardModel,
    writer: JsonlWriter,
    records: Sequence[tuple[int, Record, list[Encoded]]],
    *,
    chunk_size: int,
    progress: Callable[[int, int], None] | None,
    on_start: Callable[[int, int], None] | None,
) -> tuple[int, int]:
    """Scores the records ``writer`` does not hold yet; returns (rows written, tokens)."""
    if writer.done > len(records):
        raise RewardkitError(f"{writer.path} has more rows ({writer.done}) than the input has records")
    todo = records[writer.done :]
    if on_start is not None:
        on_start(sum(len(encs) for _, _, encs in todo), writer.done)
    tokens = 0
    for start in range(0, len(todo), chunk_size):
        chunk = todo[start : start + chunk_size]
        flat, sizes = flatten(encs for _, _, encs in chunk)  # a pair's two responses share a prompt
        scored = rm.score_encoded(flat, group_sizes=sizes, progress=progress)
        rows = [
            output_row(rec, line, mine)
            for (line, rec, _), mine in zip(chunk, split(scored, sizes), strict=True)
        ]
        writer.write(rows)
        tokens += sum(len(e.ids) for e in flat)
    return len(todo), tokens


def score_file(
    rm: RewardModel,
    input_path: str | Path,
    output_path: str | Path = STDIO,
    *,
    on_error: OnError = "raise",
    error_file: str | Path | None = None,
    overwrite: bool = False,
    chunk_size: int = 2048,
    progress: Callable[[int, int], None] | None = None,
    on_start: Callable[[int, int], None] | None = None,
) -> ScoreSummary:
    """Validates and tokenizes every record first, then scores in chunks, appending rows in
    input order. With ``on_error="raise"`` nothing is written unless every record is valid.

    Args:
        on_start: called with (conversations to score, rows already done) before scoring.
        progress: called with (conversations, tokens) after each engine batch.
    """
    prep = _prepare(
        rm, input_path, output_path, on_error=on_error, error_file=error_file, overwrite=overwrite
    )
    with JsonlWriter(output_path, prep.meta, overwrite=overwrite) as writer:
        rows, tokens = _score_into(
            rm, writer, prep.good, chunk_size=chunk_size, progress=progress, on_start=on_start
        )
    return ScoreSummary(rows=rows, resumed=writer.done, skipped=len(prep.errors), tokens=tokens)


def _finished(output: Path, meta: dict[str, Any], rows: int) -> bool:
    """Whether ``output`` is already the complete result of these settings.

    Raises:
        RewardkitError: ``output`` exists but is another run's, or partial (resume it in the
            mode that wrote it, or pass --overwrite).
    """
    sidecar = meta_path(output)
    if not output.exists():
        return False
    if (
        sidecar.exists()
        and json.loads(sidecar.read_text(encoding="utf-8")) == meta
        and count_rows(output) == rows
    ):
        return True
    raise RewardkitError(
        f"{output} exists but is not the complete output of these settings; "
        "pass --overwrite or choose another -o"
    )


def score_file_sharded(
    rm: RewardModel,
    input_path: str | Path,
    output_path: str | Path,
    *,
    rank: int,
    world_size: int,
    on_error: OnError = "raise",
    error_file: str | Path | None = None,
    overwrite: bool = False,
    chunk_size: int = 2048,
    progress: Callable[[int, int], None] | None = None,
    on_start: Callable[[int, int], None] | None = None,
    barrier: Callable[[], None] | None = None,
) -> ScoreSummary:
    """`score_file` for one rank of a data-parallel job; the merged output is the same file.

    1. Every rank validates and tokenizes the whole input, so invalid records are found (and
       raised) identically on every rank before any rank writes.
    2. The rank scores its contiguous block of the valid records (`shard_bounds`) into its own
       resumable part ``OUT.rank{r}-of-{w}``.
    3. After ``barrier`` (every rank done), rank 0 concatenates the parts in rank order, which
       is input order, into ``OUT`` atomically and removes them.

    A killed job resumes each part where it stopped when run again with the same world size.
    The merged output and its ``.meta.json`` are those a one-process run writes.

    Args:
        rank: this process's rank; rank 0 writes the error list and merges.
        world_size: number of ranks sharing the input.
        barrier: waits for every rank (`rewardkit.distributed.barrier` under torchrun).
            Without it only the part is written; call `merge_score_parts` when all are done.

    Raises:
        RewardkitError: output to stdout or input from stdin (each rank needs the file), or an
            existing ``OUT`` that is not this run's complete output (without ``overwrite``).
    """
    if str(output_path) == STDIO or str(input_path) == STDIO:
        raise RewardkitError("scoring on several ranks needs an INPUT file and -o OUTPUT, not stdin/stdout")
    out = Path(output_path)
    prep = _prepare(
        rm,
        input_path,
        output_path,
        on_error=on_error,
        error_file=error_file,
        overwrite=overwrite,
        write_errors=rank == 0,
    )
    if overwrite and rank == 0:
        out.unlink(missing_ok=True)  # other ranks do not look at OUT when overwriting
    elif not overwrite and _finished(out, prep.meta, len(prep.good)):
        if on_start is not None:
            on_start(0, len(prep.good))
        return ScoreSummary(rows=0, resumed=len(prep.good), skipped=len(prep.errors), tokens=0)
    lo, hi = shard_bounds(len(prep.good), rank, world_size)
    meta = {**prep.meta, "shard": [rank, world_size]}
    with JsonlWriter(part_path(out, rank, world_size), meta, overwrite=overwrite) as writer:
        rows, tokens = _score_into(
            rm, writer, prep.good[lo:hi], chunk_size=chunk_size, progress=progress, on_start=on_start
        )
    if barrier is not None:
        barrier()
        if rank == 0:
            merge_score_parts(out, world_size, prep.meta, rows=len(prep.good))
    return ScoreSummary(rows=rows, resumed=writer.done, skipped=len(prep.errors), tokens=tokens)


def merge_score_parts(output_path: str | Path, world_size: int, meta: dict[str, Any], *, rows: int) -> None:
    """Merges the ``world_size`` part files of ``output_path`` into it, in input order."""
    parts = [part_path(output_path, r, world_size) for r in range(world_size)]
    merge_parts(output_path, parts, meta, expected_rows=rows)


def shard_bounds(n: int, rank: int, world_size: int) -> tuple[int, int]:
    """``[lo, hi)``: the contiguous block of ``n`` items that ``rank`` of ``world_size`` takes.

    Block sizes differ by at most one; concatenating the blocks in rank order gives ``0..n``.
    """
    return n * rank // world_size, n * (rank + 1) // world_size
