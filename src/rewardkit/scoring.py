"""Score a file of records into a resumable JSONL output (what ``rewardkit score`` runs)."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from rewardkit.api import RewardModel, Scored, sigmoid
from rewardkit.data.conversation import Conversation, PreferencePair
from rewardkit.data.formats import Record
from rewardkit.data.io import STDIO, JsonlWriter, file_digest, read_records, source_name
from rewardkit.engine.parallel import merge_parts, part_path, shard_bounds
from rewardkit.errors import InputError, RewardkitError
from rewardkit.models.templating import Encoded

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


def record_conversations(rec: Record) -> tuple[Conversation, ...]:
    return rec.conversations() if isinstance(rec, PreferencePair) else (rec,)


def output_row(rec: Record, line: int, scored: Sequence[Scored]) -> dict[str, Any]:
    """One output row: the record's id (or line number) and its reward(s)."""
    row: dict[str, Any] = {"id": rec.id if rec.id is not None else line}
    if isinstance(rec, Conversation):
        (s,) = scored
        row["reward"] = s.reward
        row.update(
            num_tokens=s.num_tokens, truncated_tokens=s.truncated_tokens, truncated_turns=s.truncated_turns
        )
        return row
    a, b = scored
    n1, n2 = rec.names
    row[f"reward_{n1}"], row[f"reward_{n2}"] = a.reward, b.reward
    row["p_first_better"] = sigmoid(a.reward - b.reward)
    row.update(
        num_tokens=[a.num_tokens, b.num_tokens],
        truncated_tokens=[a.truncated_tokens, b.truncated_tokens],
        truncated_turns=[a.truncated_turns, b.truncated_turns],
    )
    return row


def _error_row(e: InputError) -> dict[str, Any]:
    return {"source": e.source, "line": e.line, "field": e.field, "error": e.message}


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
    convs = [c for _, rec in items for c in record_conversations(rec)]
    encoded = rm.chat.encode(convs)
    errors = list(loaded.errors)
    good: list[tuple[int, Record, list[Encoded]]] = []
    pos = 0
    for line, rec in items:
        k = 1 if isinstance(rec, Conversation) else 2
        encs, pos = encoded[pos : pos + k], pos + k
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
    meta = {
        "spec": rm.spec.to_dict(),
        "input": src,
        "input_sha256": file_digest(input_path),
        "on_error": on_error,
        "rewardkit_output": 1,
    }
    return _Prepared(good=good, errors=errors, meta=meta)


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
        flat = [e for _, _, encs in chunk for e in encs]
        sizes = [len(encs) for _, _, encs in chunk]  # a pair's two responses share a prompt
        scored = rm.score_encoded(flat, group_sizes=sizes, progress=progress)
        rows, j = [], 0
        for line, rec, encs in chunk:
            rows.append(output_row(rec, line, scored[j : j + len(encs)]))
            j += len(encs)
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
    meta_path = output.with_name(output.name + ".meta.json")
    if not output.exists():
        return False
    if meta_path.exists() and json.loads(meta_path.read_text(encoding="utf-8")) == meta:
        with open(output, "rb") as f:
            done = sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))
        if done == rows:
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
        barrier: waits for every rank (`rewardkit.engine.parallel.barrier` under torchrun).
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
    missing = [str(p) for p in parts if not p.exists()]
    if missing:
        raise RewardkitError(f"cannot merge {output_path}: missing part file(s) {', '.join(missing)}")
    merge_parts(output_path, parts, json.dumps(meta, indent=1, sort_keys=True), expected_rows=rows)
