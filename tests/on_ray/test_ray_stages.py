"""The two Ray Data stages called in-process: the rows and errors of ``rewardkit score``."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pytest

from rewardkit.api import ModelOptions, RewardModel
from rewardkit.data.formats import KIND_NAMES, RecordKind
from rewardkit.errors import ConfigError, InputError, ModelError
from rewardkit.ray import stages
from rewardkit.ray.stages import RewardScorer, RewardTokenizer, as_output_row
from rewardkit.ray.storage import SOURCE_LINE, TEXT, Location, plan_pieces, read_pieces
from rewardkit.scoring.files import score_file


def _score_with_stages(
    path: Path, options: ModelOptions, same_kind_as: tuple[int, RecordKind], *, piece: int, batch: int
) -> tuple[list[dict], list[InputError]]:
    """The file read in pieces, tokenized and scored in batches as on a cluster, in this process."""
    src = Location.of(str(path))
    pieces = pa.Table.from_pylist(plan_pieces(src, lines_per_piece=piece).pieces)
    tok = RewardTokenizer(options, json_column=TEXT, line_column=SOURCE_LINE, same_kind_as=same_kind_as)
    tokens = pa.concat_tables(tok(t) for t in read_pieces(pieces, src=src, lines_per_chunk=piece))
    scorer = RewardScorer(options, provenance=True)
    scored = pa.concat_tables(scorer(tokens.slice(i, batch)) for i in range(0, tokens.num_rows, batch))
    assert set(scored[stages.SPEC].to_pylist()) == {json.dumps(scorer.rm.spec.to_dict(), sort_keys=True)}
    rows, errors = [], []
    for r in scored.drop_columns([stages.SPEC]).to_pylist():
        if r[stages.ERROR] is None:
            rows.append(as_output_row(r))
        else:
            errors.append(
                InputError(
                    r[stages.ERROR], source=str(path), line=r[stages.LINE], field=r[stages.ERROR_FIELD]
                )
            )
    return rows, errors


@pytest.mark.parametrize("kind", ["conversations", "pairs"])
def test_stages_give_the_rows_and_errors_of_rewardkit_score(
    kind: str,
    tmp_path: Path,
    tiny_model_dir: Path,
    conversation_lines: Callable,
    pair_records: Callable,
    write_jsonl: Callable,
    read_jsonl: Callable,
    assert_same_rows: Callable,
) -> None:
    if kind == "pairs":
        lines, first = [json.dumps(r) for r in pair_records(17)], (1, "pair")
    else:
        lines, first = conversation_lines(23), (1, "conversation")
    path = write_jsonl(tmp_path / "in.jsonl", lines)
    # max_length 140 makes the longest conversations too long: errors of the tokenizing stage
    options = ModelOptions(model=str(tiny_model_dir), device="cpu", max_length=140)
    rm = options.load()
    score_file(rm, path, tmp_path / "ref.jsonl", on_error="skip")
    want_errors = read_jsonl(tmp_path / "ref.jsonl.errors.jsonl")
    assert any("over the maximum" in e["error"] for e in want_errors) or kind == "pairs"

    rows, errors = _score_with_stages(path, options, first, piece=4, batch=5)
    assert_same_rows(rows, read_jsonl(tmp_path / "ref.jsonl"))
    assert [
        {"source": e.source, "line": e.line, "field": e.field, "error": e.message} for e in errors
    ] == want_errors


def test_records_as_columns_tokenize_like_json_text(tiny_model_dir: Path, pair_records: Callable) -> None:
    recs = pair_records(9)
    options = ModelOptions(model=str(tiny_model_dir), device="cpu")
    by_text = RewardTokenizer(options, json_column="text")(pa.table({"text": [json.dumps(r) for r in recs]}))
    # as ray.data.read_json gives them: one column per field (absent fields null)
    by_columns = RewardTokenizer(options)(pa.Table.from_pylist(recs))
    assert by_columns.equals(by_text)
    assert by_text[stages.NAMES].to_pylist()[0] == ["chosen", "rejected"]
    assert by_text[stages.ERROR].null_count == len(recs) - 2


def test_tokens_travel_as_compact_int32_lists(tiny_model_dir: Path, tiny_rm: RewardModel) -> None:
    conv = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]
    table = RewardTokenizer(ModelOptions(model=str(tiny_model_dir), device="cpu"))(
        pa.Table.from_pylist([{"messages": conv}])
    )
    assert table.schema.field(stages.INPUT_IDS).type == pa.list_(pa.list_(pa.int32()))
    (encoded,) = tiny_rm.encode([conv])
    assert table[stages.INPUT_IDS].to_pylist() == [[encoded.ids]]


def test_a_file_holds_one_kind_of_record(tiny_model_dir: Path) -> None:
    tok = RewardTokenizer(
        ModelOptions(model=str(tiny_model_dir), device="cpu"),
        json_column="t",
        same_kind_as=(2, "conversation"),
    )
    out = tok(pa.table({"t": [json.dumps({"prompt": "q", "chosen": "a", "rejected": "b"})]}))
    (error,) = out[stages.ERROR].to_pylist()
    assert error.startswith(f"this record is {KIND_NAMES['pair']} but line 2 is {KIND_NAMES['conversation']}")
    assert out[stages.INPUT_IDS].to_pylist() == [[]]


def test_load_chat_tokenizer_is_what_the_model_tokenizes_with(
    tiny_model_dir: Path, tiny_rm: RewardModel
) -> None:
    chat = ModelOptions(model=str(tiny_model_dir), truncation="left").load_chat_tokenizer()
    assert (chat.max_length, chat.truncation) == (tiny_rm.chat.max_length, "left")
    assert chat.tokenizer.chat_template == tiny_rm.tokenizer.chat_template


def test_scorer_refuses_tensor_parallel(tiny_model_dir: Path) -> None:
    with pytest.raises(ConfigError, match="torchrun --tensor-parallel"):
        RewardScorer(ModelOptions(model=str(tiny_model_dir), tensor_parallel=True))


def test_a_replica_that_cannot_load_the_model_says_so_with_its_first_batch(tmp_path: Path) -> None:
    scorer = RewardScorer(ModelOptions(model=str(tmp_path / "no-such-model"), device="cpu"))
    with pytest.raises(ModelError, match="no-such-model"):
        scorer(pa.table({stages.ERROR: pa.array([None], pa.string())}))
