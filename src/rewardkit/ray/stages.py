"""The two stages of scoring on Ray Data: callable classes for ``Dataset.map_batches``.

`RewardTokenizer` (CPU) turns records into token ids with the model's chat template and length
policy; `RewardScorer` (one model replica per actor, usually one GPU) scores them and gives the
reward columns ``rewardkit score`` writes. Both take and return ``pyarrow.Table`` batches::

    import ray
    from ray.data import ActorPoolStrategy
    from rewardkit.api import ModelOptions
    from rewardkit.ray import RewardScorer, RewardTokenizer

    opts = ModelOptions(model="nvidia/Qwen-2.5-Nemotron-32B-Reward")
    ds = ray.data.read_parquet("s3://bucket/pairs.parquet")
    ds = ds.map_batches(RewardTokenizer, fn_constructor_kwargs={"options": opts},
                        batch_format="pyarrow", compute=ActorPoolStrategy(min_size=1, max_size=32))
    ds = ds.map_batches(RewardScorer, fn_constructor_kwargs={"options": opts}, batch_size=512,
                        batch_format="pyarrow", num_gpus=1, compute=ActorPoolStrategy(size=8))
    ds.write_parquet("s3://bucket/rewards/")

Token ids travel between the stages as one ``list<list<int32>>`` column (a record's
conversations: one, or a pair's two). Invalid records are not dropped: they give a row whose
``error`` column says what is wrong (and no rewards), so one bad record never fails a job; filter
on ``error`` (or see `rewardkit.ray.score_file_ray`, which applies ``--on-error``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from rewardkit.api import ModelOptions
from rewardkit.data.formats import Record, RecordKind, SameKind, parse_record
from rewardkit.data.io import decode_json
from rewardkit.errors import ConfigError, InputError, RewardkitError
from rewardkit.models.templating import Encoded
from rewardkit.nested import flatten, split
from rewardkit.scoring.rows import record_conversations, record_names, reward_columns, row_id

log = logging.getLogger(__name__)

# Columns `RewardTokenizer` gives and `RewardScorer` reads.
LINE = "line"
ID = "id"
NAMES = "names"
INPUT_IDS = "input_ids"
TRUNCATED_TURNS = "truncated_turns"
TRUNCATED_TOKENS = "truncated_tokens"
ERROR = "error"
ERROR_FIELD = "error_field"
# The column `RewardScorer(provenance=True)` adds: the scoring spec as JSON.
SPEC = "spec"
# Columns of `RewardScorer` that are not part of an output row.
_NOT_OUTPUT = {ID, LINE, ERROR, ERROR_FIELD, SPEC}

_COUNTS = pa.list_(pa.int32())


class RewardTokenizer:
    """``map_batches`` stage: records → token ids (loads only the tokenizer, chat template and
    length policy of ``options``; no weights).

    Each input row is one record of any kind ``rewardkit score`` reads (messages, prompt +
    response, chosen/rejected pair, HelpSteer3): the row's columns, as ``ray.data.read_json`` /
    ``read_parquet`` give them (a null column counts as absent), or its JSON text in
    ``json_column`` (e.g. ``"text"`` of ``ray.data.read_text``).

    Output columns: ``line`` (from ``line_column``, else null), ``id`` (the record's, as a
    string, else null), ``names`` (a pair's response names, null for a conversation),
    ``input_ids`` (one id list per conversation), ``truncated_turns``, ``truncated_tokens`` (one
    per conversation), ``error`` and ``error_field`` (null unless the record is invalid or too
    long for the length policy; then it has no token ids).

    Args:
        options: the model whose tokenization to use.
        json_column: the column that holds each record as JSON text; None: the row is the record.
        line_column: a column with each record's 1-based line number (used as the ``id`` of
            records without one, and to locate errors).
        same_kind_as: ``(line, kind)`` of the first valid record of a file (a `RecordKind`):
            records of another kind are invalid, as one file holds one kind of record (`SameKind`).
        errors_only: give the rows of the invalid records alone (a validation pass).
    """

    def __init__(
        self,
        options: ModelOptions,
        *,
        json_column: str | None = None,
        line_column: str | None = None,
        same_kind_as: tuple[int, RecordKind] | None = None,
        errors_only: bool = False,
    ) -> None:
        self.chat = options.load_chat_tokenizer()
        self.json_column = json_column
        self.line_column = line_column
        self.same_kind_as = same_kind_as
        self.errors_only = errors_only

    def __call__(self, batch: pa.Table) -> pa.Table:
        lines = batch[self.line_column].to_pylist() if self.line_column else [None] * batch.num_rows
        records = [
            self._same_kind(r, line)
            for r, line in zip(
                parse_rows(batch, json_column=self.json_column, skip=self.line_column), lines, strict=True
            )
        ]
        good = [r for r in records if not isinstance(r, InputError)]
        flat, sizes = flatten(record_conversations(r) for r in good)
        encoded = iter(split(self.chat.encode(flat), sizes))
        out: list[tuple[Record | None, list[Encoded], InputError | None]] = []
        for rec in records:
            if isinstance(rec, InputError):
                out.append((None, [], rec))
                continue
            encs = next(encoded)
            bad = [e for e in encs if isinstance(e, InputError)]
            out.append((None, [], bad[0]) if bad else (rec, encs, None))  # type: ignore[arg-type]
        if self.errors_only:
            lines, out = _only_errors(lines, out)
        return _tokens_table(lines, out)

    def _same_kind(self, rec: Record | InputError, line: int | None) -> Record | InputError:
        if isinstance(rec, InputError) or self.same_kind_as is None:
            return rec
        try:
            SameKind(first=self.same_kind_as)(line or 0, rec)
        except InputError as e:
            return e
        return rec


def parse_rows(
    batch: pa.Table, *, json_column: str | None, skip: str | None = None
) -> list[Record | InputError]:
    """The records of a batch (see `RewardTokenizer`), or for each invalid one its InputError.

    Args:
        json_column: the column holding each record as JSON text; None: each row's columns, but
            ``skip`` and null values, are the record.
    """
    if json_column is None:
        raw: list[Any] = [
            {k: v for k, v in row.items() if v is not None and k != skip} for row in batch.to_pylist()
        ]
    else:
        raw = [_decode(text) for text in batch[json_column].to_pylist()]
    return [obj if isinstance(obj, InputError) else _parse(obj) for obj in raw]


def _parse(obj: Any) -> Record | InputError:
    try:
        return parse_record(obj)
    except InputError as e:
        return e


def _decode(text: str | None) -> Any:
    """One JSONL line → its object, or the InputError ``rewardkit score`` reports for it."""
    if text is None:
        return InputError("line is not UTF-8 text")
    return decode_json(text)


def _only_errors(lines: list[Any], out: list[Any]) -> tuple[list[Any], list[Any]]:
    keep = [i for i, (_, _, err) in enumerate(out) if err is not None]
    return [lines[i] for i in keep], [out[i] for i in keep]


def _tokens_table(
    lines: list[int | None], out: Sequence[tuple[Record | None, list[Encoded], InputError | None]]
) -> pa.Table:
    # input_ids built from offsets and one flat int32 array: no per-token Python objects.
    convs = [e for _, encs, _ in out for e in encs]
    conv_offsets = np.cumsum([0] + [len(e.ids) for e in convs], dtype=np.int32)
    rec_offsets = np.cumsum([0] + [len(encs) for _, encs, _ in out], dtype=np.int32)
    values = np.fromiter((t for e in convs for t in e.ids), dtype=np.int32, count=int(conv_offsets[-1]))
    ids = pa.ListArray.from_arrays(rec_offsets, pa.ListArray.from_arrays(conv_offsets, values))
    return pa.table(
        {
            LINE: pa.array(lines, pa.int64()),
            ID: pa.array([rec.id if rec is not None else None for rec, _, _ in out], pa.string()),
            NAMES: pa.array([record_names(rec) if rec else None for rec, _, _ in out], pa.list_(pa.string())),
            INPUT_IDS: ids,
            TRUNCATED_TURNS: pa.array([[e.truncated_turns for e in encs] for _, encs, _ in out], _COUNTS),
            TRUNCATED_TOKENS: pa.array([[e.truncated_tokens for e in encs] for _, encs, _ in out], _COUNTS),
            ERROR: pa.array([err.message if err else None for _, _, err in out], pa.string()),
            ERROR_FIELD: pa.array([err.field if err else None for _, _, err in out], pa.string()),
        }
    )


class RewardScorer:
    """``map_batches`` stage: `RewardTokenizer`'s output → reward columns. Loads one replica of
    the model per actor, once (on the actor's GPU when it has one: pass ``num_gpus=1``).

    The records of a batch are scored together, sorted by length into the engine's token-budget
    batches; a pair's two responses form one shared-prompt group (the prompt computed once), as in
    ``rewardkit score``. Output columns: ``id`` and ``line`` (passed through), the reward columns
    of ``rewardkit score`` (``reward``, ``num_tokens``, ``truncated_tokens``, ``truncated_turns``;
    for pairs ``reward_<name>`` ×2, ``p_first_better`` and per-response lists), and ``error``,
    ``error_field`` (invalid records pass through with no rewards).

    Args:
        options: the model to load (``device`` ``auto`` takes the GPU Ray gave the actor, else
            the CPU). One replica per actor: tensor parallel is refused.
        provenance: add a ``spec`` column, the JSON of the scoring spec (dictionary-encoded: one
            string per batch), to record what scored each row.
    """

    def __init__(self, options: ModelOptions, *, provenance: bool = False) -> None:
        if options.tensor_parallel:
            raise ConfigError(
                "tensor parallel does not run inside Ray actors: one replica per actor; "
                "score models larger than one GPU with torchrun --tensor-parallel"
            )
        self.provenance = provenance
        self.load_error: RewardkitError | None = None
        try:
            self.rm = options.load()
        except RewardkitError as e:
            # Ray keeps only the text of an error raised while an actor starts; raised with the
            # first batch instead, it reaches the driver as itself (e.g. a ModelError).
            self.load_error = e
            return
        self.spec_json = json.dumps(self.rm.spec.to_dict(), sort_keys=True)
        log.info("scoring replica loaded %s on %s", self.rm.spec.model, self.rm.device)

    def __call__(self, batch: pa.Table) -> pa.Table:
        if self.load_error is not None:
            raise self.load_error
        errors = batch[ERROR].to_pylist()
        ok = [i for i, e in enumerate(errors) if e is None]
        names = batch[NAMES].to_pylist()
        ids, turns, cut = (
            batch[c].take(pa.array(ok, pa.int64())).to_pylist()
            for c in (INPUT_IDS, TRUNCATED_TURNS, TRUNCATED_TOKENS)
        )
        flat, sizes = flatten(
            [Encoded(ids=x, truncated_turns=t, truncated_tokens=c) for x, t, c in zip(*rec, strict=True)]
            for rec in zip(ids, turns, cut, strict=True)
        )
        scored = iter(split(self.rm.score_encoded(flat, group_sizes=sizes), sizes))
        rows: list[dict[str, Any]] = [
            {} if e is not None else reward_columns(names[i], next(scored)) for i, e in enumerate(errors)
        ]
        return self._table(batch, rows)

    def _table(self, batch: pa.Table, rows: list[dict[str, Any]]) -> pa.Table:
        keys = dict.fromkeys(k for r in rows for k in r)
        columns: dict[str, pa.Array] = {ID: batch[ID], LINE: batch[LINE]}
        columns.update({k: pa.array([r.get(k) for r in rows]) for k in keys})
        columns.update({ERROR: batch[ERROR], ERROR_FIELD: batch[ERROR_FIELD]})
        if self.provenance:
            columns[SPEC] = pa.DictionaryArray.from_arrays(
                pa.array(np.zeros(batch.num_rows, np.int32)), pa.array([self.spec_json])
            )
        return pa.table(columns)


def as_output_row(row: dict[str, Any]) -> dict[str, Any]:
    """A row of `RewardScorer` (a valid record's) as ``rewardkit score`` writes it: ``id`` (the
    record's, else its line) and the reward columns."""
    out = {"id": row_id(row[ID], row[LINE])}
    out.update((k, v) for k, v in row.items() if k not in _NOT_OUTPUT and v is not None)
    return out
