"""Best-of-N and preference pairs from a file of response groups: score, then build rows.

Each workflow runs in two stages so that a killed run loses nothing:

1. ``score_file`` scores every ``{"prompt", "responses"}`` record as one shared-prompt group
   into a resumable score file (``OUT.scores.jsonl`` by default, with its ``.meta.json``); run
   again, it continues after the last complete row, and once complete it scores nothing.
2. The input and the score file are read side by side and the output rows are built (best
   response, or pairs). The output is written beside ``OUT`` and moved into place with
   ``os.replace``: a kill leaves the previous file or the complete new one, never a partial one.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rewardkit.api import RewardModel
from rewardkit.data.conversation import ResponseGroup
from rewardkit.data.formats import record_kind
from rewardkit.data.io import STDIO, iter_raw, read_records, source_name
from rewardkit.errors import InputError, RewardkitError
from rewardkit.preferences.pairs import PairOptions, group_pair_rows
from rewardkit.scoring.files import OnError, ScoreSummary, score_file
from rewardkit.scoring.rows import response_value

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class GroupsSummary:
    """What a best-of-N or pairs run did.

    Args:
        scoring: the scoring stage (rows scored now, resumed, skipped as invalid).
        groups: scored groups read back.
        rows: rows written to the output (one per group for best-of-N; pairs for pairs).
        scores: the score file.
    """

    scoring: ScoreSummary
    groups: int
    rows: int
    scores: Path


def default_scores_path(output: str | Path) -> Path:
    """Where the score file of ``OUT`` goes unless given: ``OUT.scores.jsonl``."""
    out = Path(output)
    return out.with_name(out.name + ".scores.jsonl")


def _errors_path(scores: Path) -> Path:
    return scores.with_name(scores.name + ".errors.jsonl")


def check_inputs(
    input_path: str | Path, output_path: str | Path, scores_path: str | Path | None = None
) -> Path:
    """Checks the files of a best-of-N or pairs run before any model is loaded; returns the
    score file's path.

    Raises:
        RewardkitError: stdin/stdout, the same file twice, or an input of other records.
    """
    scores = Path(scores_path) if scores_path is not None else default_scores_path(output_path)
    _check_paths(input_path, output_path, scores)
    _check_groups(input_path)
    return scores


def _check_paths(input_path: str | Path, output_path: str | Path, scores: Path) -> None:
    if str(input_path) == STDIO:
        raise RewardkitError("INPUT is read twice (to score, then to build rows): give a file, not stdin")
    if str(output_path) == STDIO:
        raise RewardkitError("-o OUTPUT must be a file (it is written atomically once complete)")
    paths = {Path(input_path).resolve(), Path(output_path).resolve(), scores.resolve()}
    if len(paths) != 3:
        raise RewardkitError("INPUT, -o OUTPUT and --scores must be three different files")


def _check_groups(input_path: str | Path) -> None:
    """Fails early unless the input holds response groups (the file holds one kind of record)."""
    for line, obj in iter_raw(input_path):
        if isinstance(obj, dict):
            try:
                kind = record_kind(obj)
            except InputError:
                continue  # reported with the other invalid records when scoring
            if kind != "group":
                raise InputError(
                    f'expected {{"prompt", "responses": [...]}} records (K responses to one prompt), '
                    f"found a {kind} record",
                    source=source_name(input_path),
                    line=line,
                )
            return


def score_groups(
    rm: RewardModel,
    input_path: str | Path,
    scores_path: str | Path,
    *,
    on_error: OnError = "raise",
    overwrite: bool = False,
    window_tokens: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    on_start: Callable[[int, int], None] | None = None,
) -> ScoreSummary:
    """Stage 1: every group of ``input_path`` scored into the resumable ``scores_path`` (checked
    with `check_inputs` first).

    Invalid records skipped under ``on_error="skip"`` are listed in
    ``SCORES.errors.jsonl``, which `read_scored_groups` reads to pair records with rows.
    """
    scores = Path(scores_path)
    errors = _errors_path(scores)
    errors.unlink(missing_ok=True)  # rewritten by this run when it skips records
    return score_file(
        rm,
        input_path,
        scores,
        on_error=on_error,
        error_file=errors,
        overwrite=overwrite,
        window_tokens=window_tokens,
        progress=progress,
        on_start=on_start,
    )


def read_scored_groups(
    input_path: str | Path, scores_path: str | Path
) -> Iterator[tuple[ResponseGroup, dict]]:
    """Stage 2's input: each valid group of ``input_path`` with its row of ``scores_path``.

    Rows follow the valid records in input order; records listed in ``SCORES.errors.jsonl``
    were skipped. Each row's ``id`` is checked against its record's.

    Raises:
        RewardkitError: the score file is incomplete or belongs to another input.
    """
    scores = Path(scores_path)
    errors = _errors_path(scores)
    skipped: set[int] = set()
    if errors.exists():
        with open(errors, encoding="utf-8") as f:
            skipped = {json.loads(x)["line"] for x in f if x.strip()}
    records = [(n, rec) for n, rec in read_records(input_path).records if n not in skipped]
    with open(scores, encoding="utf-8") as f:
        rows = [json.loads(x) for x in f if x.strip()]
    if len(rows) != len(records):
        raise RewardkitError(
            f"{scores} holds {len(rows)} rows for {len(records)} valid records of "
            f"{source_name(input_path)}; run again to finish scoring, or pass --overwrite"
        )
    for (line, rec), row in zip(records, rows, strict=True):
        expected = rec.id if rec.id is not None else line
        if not isinstance(rec, ResponseGroup) or row.get("id") != expected or "rewards" not in row:
            raise RewardkitError(
                f"{scores} does not match {source_name(input_path)} at line {line} "
                f"(row id {row.get('id')!r}, record id {expected!r}); pass --overwrite to score again"
            )
        yield rec, row


def write_rows_atomic(path: str | Path, rows: Iterable[dict[str, Any]]) -> int:
    """Writes JSONL rows to ``path`` via a temporary file and ``os.replace``; returns the count."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    n = 0
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
                n += 1
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, out)
    return n


def _run(
    rm: RewardModel,
    input_path: str | Path,
    output_path: str | Path,
    scores_path: str | Path | None,
    build: Callable[[ResponseGroup, dict], list[dict[str, Any]]],
    **scoring: Any,
) -> GroupsSummary:
    scores = check_inputs(input_path, output_path, scores_path)
    summary = score_groups(rm, input_path, scores, **scoring)
    groups = 0

    def rows() -> Iterator[dict[str, Any]]:
        nonlocal groups
        for group, row in read_scored_groups(input_path, scores):
            groups += 1
            yield from build(group, row)

    written = write_rows_atomic(output_path, rows())
    return GroupsSummary(scoring=summary, groups=groups, rows=written, scores=scores)


def best_of_n_file(
    rm: RewardModel,
    input_path: str | Path,
    output_path: str | Path,
    *,
    scores_path: str | Path | None = None,
    with_response: bool = False,
    **scoring: Any,
) -> GroupsSummary:
    """Best-of-N: per group ``{"id", "rewards", "best", "best_reward"}`` (+ ``best_response``).

    Args:
        rm: the reward model.
        input_path: JSONL/Parquet of ``{"prompt" | "messages", "responses": [...]}`` records.
        output_path: the JSONL output, written atomically once complete.
        scores_path: the resumable score file (default ``OUT.scores.jsonl``).
        with_response: add the best response itself, in the form the input gave it.
        **scoring: `score_groups` options (``on_error``, ``overwrite``, ``window_tokens``,
            ``progress``, ``on_start``).
    """

    def build(group: ResponseGroup, row: dict) -> list[dict[str, Any]]:
        out = {"id": row["id"], "rewards": row["rewards"], "best": row["best"]}
        out["best_reward"] = row["rewards"][row["best"]]
        if with_response:
            out["best_response"] = response_value(group, row["best"])
        return [out]

    return _run(rm, input_path, output_path, scores_path, build, **scoring)


def pairs_file(
    rm: RewardModel,
    input_path: str | Path,
    output_path: str | Path,
    *,
    options: PairOptions | None = None,
    scores_path: str | Path | None = None,
    **scoring: Any,
) -> GroupsSummary:
    """Preference pairs from each group's rewards (see `rewardkit.preferences.pairs`).

    Args:
        options: which pairs, minimum margin, output format (default: best-worst, DPO format).
        Others: as `best_of_n_file`.
    """
    opts = options or PairOptions()

    def build(group: ResponseGroup, row: dict) -> list[dict[str, Any]]:
        return group_pair_rows(group, row["rewards"], record_id=row["id"], options=opts)

    summary = _run(rm, input_path, output_path, scores_path, build, **scoring)
    if summary.rows == 0 and summary.groups:
        log.warning("no pair of any group has a reward margin of at least %g", opts.min_margin)
    return summary
