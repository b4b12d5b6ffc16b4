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
        err_path.write_text("".join(json.dumps(_error_row(e)) + "\n" for e in errors), encoding="utf-8")
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
    tokens = 0
    with JsonlWriter(output_path, meta, overwrite=overwrite) as writer:
        if writer.done > len(good):
            raise RewardkitError(f"{output_path} has more rows ({writer.done}) than the input has records")
        todo = good[writer.done :]
        if on_start is not None:
            on_start(sum(len(encs) for _, _, encs in todo), writer.done)
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
    return ScoreSummary(rows=len(todo), resumed=writer.done, skipped=len(errors), tokens=tokens)
