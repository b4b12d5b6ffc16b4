"""Score a file of records into a resumable output, streaming (what ``rewardkit score`` runs).

Two passes over the input, each in bounded memory whatever its length:

1. *scan*: every record is read, validated and tokenized (nothing kept but counts and the
   errors), so that an invalid or over-long record fails the run before any row is written
   (``on_error="raise"``) or is listed with its file:line in the error file (``"skip"``). Given
   `ModelOptions`, the scan runs while the weights load.
2. *score*: the records are read again and streamed through `rewardkit.scoring.pipeline`
   (tokenized on a background thread, scored in large length-sorted windows); rows are appended
   to the output in input order, one per valid record, window by window.

A killed run resumes after the output's last complete row when run again with the same settings
(the ``.meta.json`` sidecar records them; see `rewardkit.data.outputs`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Literal, TypeVar

from rewardkit.api import ModelOptions, RewardModel
from rewardkit.data.formats import Record, RecordKind
from rewardkit.data.io import (
    STDIO,
    Block,
    check_input,
    file_digest,
    first_record_kind,
    iter_records,
    source_name,
    spool_stdin,
)
from rewardkit.data.outputs import check_output, open_output, rows_written
from rewardkit.errors import InputError, RewardkitError
from rewardkit.models.loading import ScoringSpec
from rewardkit.models.templating import ChatTokenizer
from rewardkit.scoring.pipeline import UnitInput, score_stream, tokenize_units
from rewardkit.scoring.rows import output_row, record_conversations

log = logging.getLogger(__name__)

T = TypeVar("T")
OnError = Literal["raise", "skip"]
MAX_LISTED_ERRORS = 20
ProgressFn = Callable[[int, int], None]
StartFn = Callable[[int, int], None]


class InvalidInputError(RewardkitError):
    """Some records are invalid; ``errors`` holds the first of them, ``count`` how many there are."""

    def __init__(self, errors: Sequence[InputError], count: int | None = None) -> None:
        self.errors = list(errors)
        self.count = len(self.errors) if count is None else count
        shown = "\n  ".join(e.describe() for e in self.errors[:MAX_LISTED_ERRORS])
        more = self.count - min(len(self.errors), MAX_LISTED_ERRORS)
        tail = f"\n  ... and {more} more" if more > 0 else ""
        super().__init__(
            f"{self.count} invalid record(s); nothing was scored:\n  {shown}{tail}\n"
            "fix them, or pass --on-error skip to score the valid records and list the rest"
        )


@dataclass(frozen=True, kw_only=True)
class ScoreSummary:
    """What a scoring run did.

    Args:
        rows: rows scored by this run (by all ranks of a job).
        resumed: rows already in the output from an earlier run.
        skipped: invalid records left out (listed in the error file).
        tokens: tokens scored by this run (by all ranks of a job).
        seconds: wall time of each phase (``load``, ``scan``, ``compile``, ``score``, ``total``)
            and ``first_row`` (from the start to the first row written), where they apply.
        rank_tokens: tokens scored by each rank of a job, in rank order (one process: one entry).
    """

    rows: int
    resumed: int
    skipped: int
    tokens: int
    seconds: dict[str, float] = field(default_factory=dict)
    rank_tokens: list[int] = field(default_factory=list)


def output_meta(spec: ScoringSpec, input_path: str | Path, *, on_error: OnError) -> dict[str, Any]:
    """What an output's ``.meta.json`` records: the scoring spec and the input (name and sha256).

    A run resumes an output only when this matches (`rewardkit.data.outputs.meta_differences`);
    every way of scoring a file writes it.
    """
    return {
        "spec": spec.to_dict(),
        "input": source_name(input_path),
        "input_sha256": file_digest(input_path),
        "on_error": on_error,
        "rewardkit_output": 1,
    }


def error_row(e: InputError) -> dict[str, Any]:
    """One line of the error file (``--on-error skip``)."""
    return {"source": e.source, "line": e.line, "field": e.field, "error": e.message}


def error_file_path(output_path: str | Path, error_file: str | Path | None) -> Path:
    """Where ``--on-error skip`` lists the invalid records: ``--error-file``, else ``OUT.errors.jsonl``.

    Raises:
        RewardkitError: output to stdout and no ``--error-file``.
    """
    if error_file:
        return Path(error_file)
    if str(output_path) == STDIO:
        raise RewardkitError("--on-error skip with output to stdout needs --error-file PATH")
    return Path(f"{output_path}.errors.jsonl")


def record_units(
    path: str | Path, *, source: str, block: Block | None = None, kind: tuple[int, RecordKind] | None = None
) -> Iterator[tuple[tuple[int, Record | None], UnitInput]]:
    """The records of a file (or of one block) as pipeline units keyed by ``(line, record)``;
    an invalid record is ``((line, None), InputError)``."""
    for line, rec in iter_records(path, block=block, kind=kind, source=source):
        if isinstance(rec, InputError):
            yield (line, None), rec
        else:
            yield (line, rec), record_conversations(rec)


@dataclass(kw_only=True)
class Scan:
    """What the first pass found.

    Args:
        records: valid records. conversations / tokens: in them.
        todo_conversations: conversations of the valid records after the first ``skip``.
        errors: the first invalid records (all of them are written to ``error_sink`` if given).
        error_count: how many records are invalid.
    """

    records: int = 0
    conversations: int = 0
    tokens: int = 0
    todo_conversations: int = 0
    errors: list[InputError] = field(default_factory=list)
    error_count: int = 0
    seconds: float = 0.0


def scan(
    chat: ChatTokenizer,
    path: str | Path,
    *,
    source: str,
    block: Block | None = None,
    kind: tuple[int, RecordKind] | None = None,
    error_sink: IO[str] | None = None,
    keep_errors: int = MAX_LISTED_ERRORS,
    skip: int = 0,
) -> Scan:
    """Pass 1: validates and tokenizes every record (of ``path``, or of one block), keeping only
    counts and errors; each error is written to ``error_sink`` as a JSON line when given.
    ``skip``: valid records already scored (they count in ``records`` but not in
    ``todo_conversations``)."""
    t0 = time.perf_counter()
    out = Scan()
    for (line, _), unit in tokenize_units(
        chat.encode, record_units(path, source=source, block=block, kind=kind)
    ):
        if isinstance(unit, InputError):
            e = unit.locate(source=source, line=line)
            out.error_count += 1
            if len(out.errors) < keep_errors:
                out.errors.append(e)
            if error_sink is not None:
                error_sink.write(json.dumps(error_row(e)) + "\n")
            continue
        out.records += 1
        out.conversations += len(unit)
        if out.records > skip:
            out.todo_conversations += len(unit)
        out.tokens += sum(len(e.ids) for e in unit)
    out.seconds = time.perf_counter() - t0
    return out


def scan_while_loading(
    model: RewardModel | ModelOptions, run_scan: Callable[[ChatTokenizer], T]
) -> tuple[RewardModel, T, float]:
    """Runs ``run_scan``; given `ModelOptions`, on a thread while the weights load. Returns the
    model, the scan's result and the load time (0 for a model already loaded)."""
    if isinstance(model, RewardModel):
        return model, run_scan(model.chat), 0.0
    chat = model.load_chat_tokenizer()
    box: dict[str, Any] = {}

    def work() -> None:
        try:
            box["scan"] = run_scan(chat)
        except BaseException as e:  # re-raised below, after the load
            box["error"] = e

    thread = threading.Thread(target=work, name="rewardkit-scan", daemon=True)
    thread.start()
    t0 = time.perf_counter()
    try:
        rm = model.load(chat=chat)
    finally:
        thread.join()
    if "error" in box:
        raise box["error"]
    return rm, box["scan"], time.perf_counter() - t0


@contextlib.contextmanager
def _readable(input_path: str | Path) -> Iterator[Path]:
    """The input as a file that can be read twice (standard input is spooled to a temporary file)."""
    if str(input_path) != STDIO:
        yield Path(input_path)
        return
    tmp = spool_stdin()
    try:
        yield tmp
    finally:
        tmp.unlink(missing_ok=True)


def score_file(
    model: RewardModel | ModelOptions,
    input_path: str | Path,
    output_path: str | Path = STDIO,
    *,
    on_error: OnError = "raise",
    error_file: str | Path | None = None,
    overwrite: bool = False,
    window_tokens: int | None = None,
    on_load: Callable[[RewardModel], None] | None = None,
    on_start: StartFn | None = None,
    progress: ProgressFn | None = None,
) -> ScoreSummary:
    """Scores every record of a JSONL/Parquet file (or ``-``) into a resumable output, streaming.

    Rows are appended in input order, one per valid record (see `rewardkit.scoring.rows`). With
    ``on_error="raise"`` nothing is written unless every record is valid; with ``"skip"`` the
    invalid records are listed in the error file (`error_file_path`).

    Args:
        model: a loaded `RewardModel`, or `ModelOptions` to load one while the input is scanned.
        output_path: ``.jsonl`` (or ``-`` for stdout) or ``.parquet``.
        window_tokens: tokens per engine call (default: 32 engine batches).
        on_load: called with the model once loaded (and the scan passed).
        on_start: called with (conversations to score, rows already done) before scoring.
        progress: called with (conversations, tokens) after each engine batch.

    Raises:
        InvalidInputError: invalid records with ``on_error="raise"`` (nothing is written).
        RewardkitError: unreadable input, unwritable output, or an output written with other
            settings (without ``overwrite``).
    """
    t_start = time.perf_counter()
    check_input(input_path)
    check_output(output_path, input_path=input_path, error_file=error_file)
    src = source_name(input_path)
    errors_to = error_file_path(output_path, error_file) if on_error == "skip" else None
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
    existing = 0 if overwrite else rows_written(output_path)
    with _readable(input_path) as path:
        kind = first_record_kind(path)

        def run_scan(chat: ChatTokenizer) -> Scan:
            if errors_to is None:
                return scan(chat, path, source=src, kind=kind, skip=existing)
            errors_to.parent.mkdir(parents=True, exist_ok=True)
            with open(errors_to, "w", encoding="utf-8") as sink:
                return scan(chat, path, source=src, kind=kind, error_sink=sink, skip=existing)

        rm, found, load_s = scan_while_loading(model, run_scan)
        seconds = {"load": load_s, "scan": found.seconds} if load_s else {"scan": found.seconds}
        if found.error_count and on_error == "raise":
            raise InvalidInputError(found.errors, found.error_count)
        if found.error_count:
            log.warning("%d invalid record(s) skipped, listed in %s", found.error_count, errors_to)
        if found.records == 0 and found.error_count == 0:
            if on_error == "raise":
                raise RewardkitError(f"{src} holds no records")
            log.warning("%s holds no records", src)
        if on_load is not None:
            on_load(rm)
        compile_s = rm.engine.warm_up()
        if compile_s:
            seconds["compile"] = compile_s
        meta = output_meta(rm.spec, input_path, on_error=on_error)
        writer = open_output(output_path, meta, overwrite=overwrite)
        try:
            done = writer.done
            if done > found.records:
                raise RewardkitError(f"{output_path} has more rows ({done}) than the input has records")
            if done != existing:  # the output changed since the scan counted
                raise RewardkitError(f"{output_path} changed while this run started; run it again")
            if on_start is not None:
                on_start(found.todo_conversations, done)
            t_score = time.perf_counter()
            rows, tokens, first_row = _score_rows(
                rm, path, src, kind, writer, skip=done, window_tokens=window_tokens, progress=progress
            )
            writer.finish()
        finally:
            writer.close()
    seconds["score"] = time.perf_counter() - t_score
    if first_row is not None:
        seconds["first_row"] = first_row - t_start
    seconds["total"] = time.perf_counter() - t_start
    return ScoreSummary(
        rows=rows,
        resumed=done,
        skipped=found.error_count,
        tokens=tokens,
        seconds=seconds,
        rank_tokens=[tokens],
    )


def _score_rows(
    rm: RewardModel,
    path: Path,
    source: str,
    kind: tuple[int, RecordKind] | None,
    writer: Any,
    *,
    skip: int,
    window_tokens: int | None,
    progress: ProgressFn | None,
    block: Block | None = None,
) -> tuple[int, int, float | None]:
    """Pass 2: streams the valid records (after the first ``skip``) through the pipeline and
    writes their rows in input order; returns (rows, tokens, time of the first row)."""
    rows = tokens = 0
    first_row: float | None = None
    units = record_units(path, source=source, block=block, kind=kind)
    for window in score_stream(rm, units, window_tokens=window_tokens, skip_valid=skip, progress=progress):
        out = []
        for (line, rec), scored in window:
            if isinstance(scored, InputError) or rec is None:
                continue  # listed by the scan
            out.append(output_row(rec, line, scored))
            tokens += sum(s.num_tokens for s in scored)
        writer.write(out)
        if out and first_row is None:
            first_row = time.perf_counter()
        rows += len(out)
    return rows, tokens, first_row
