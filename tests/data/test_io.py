"""JSONL / .jsonl.gz / Parquet input and the resumable JSONL writer."""

from __future__ import annotations

import gzip
import hashlib
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from rewardkit.data.conversation import Conversation, PreferencePair
from rewardkit.data.io import file_digest, iter_raw, read_records
from rewardkit.data.outputs import JsonlWriter
from rewardkit.errors import RewardkitError

U = {"role": "user", "content": "What is 1+1?"}
A = {"role": "assistant", "content": "1+1=2"}
ROWS = [
    {"id": "a", "messages": [U, A]},
    {"id": "b", "messages": [{"role": "system", "content": "Be brief."}, U, A]},
]


def _jsonl(rows: list[dict]) -> str:
    return "".join(json.dumps(r) + "\n" for r in rows)


def test_jsonl_gz_input(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl.gz"
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.write(_jsonl(ROWS))
    loaded = read_records(path)
    assert loaded.errors == []
    assert [(n, r.id) for n, r in loaded.records] == [(1, "a"), (2, "b")]
    assert [len(r) for _, r in loaded.records] == [2, 3]


def test_parquet_conversations(tmp_path: Path) -> None:
    path = tmp_path / "in.parquet"
    pq.write_table(pa.Table.from_pylist(ROWS), path)
    loaded = read_records(path)
    assert loaded.errors == []
    recs = [r for _, r in loaded.records]
    assert all(isinstance(r, Conversation) for r in recs)
    assert [r.id for r in recs] == ["a", "b"]
    assert recs[1].to_dicts()[1:] == [U, A]


def test_parquet_pairs_and_row_numbers_in_errors(tmp_path: Path) -> None:
    path = tmp_path / "pairs.parquet"
    rows = [
        {"prompt": "q", "chosen": "good", "rejected": "bad"},
        {"prompt": "q", "chosen": "", "rejected": "bad"},
        {"prompt": "r", "chosen": "fine", "rejected": "worse"},
    ]
    pq.write_table(pa.Table.from_pylist(rows), path)
    loaded = read_records(path)
    assert [n for n, _ in loaded.records] == [1, 3]
    assert all(isinstance(r, PreferencePair) for _, r in loaded.records)
    (err,) = loaded.errors
    assert str(err) == f"{path}:2: field 'chosen': response is empty"


def test_helpsteer3_parquet(tmp_path: Path) -> None:
    path = tmp_path / "hs3.parquet"
    rows = [
        {"domain": "general", "context": [U], "response1": "2", "response2": "3", "overall_preference": -2},
        {"domain": "code", "context": [U], "response1": "2", "response2": "two", "overall_preference": 0},
    ]
    pq.write_table(pa.Table.from_pylist(rows), path)
    loaded = read_records(path)
    assert loaded.errors == []
    prefs = [r.preference for _, r in loaded.records]  # type: ignore[union-attr]
    assert prefs == [-2.0, 0.0]


@pytest.mark.parametrize("name", ["missing.jsonl", "missing.parquet", "missing.jsonl.gz"])
def test_missing_input_file(tmp_path: Path, name: str) -> None:
    with pytest.raises(RewardkitError, match=f"input file not found: .*{name}"):
        read_records(tmp_path / name)


@pytest.mark.parametrize(
    ("name", "data", "words"),
    [
        ("x.parquet", b"not parquet", "as Parquet"),
        ("x.jsonl.gz", b"not gzip", "Not a gzipped file"),
    ],
)
def test_unreadable_input_is_a_user_error(tmp_path: Path, name: str, data: bytes, words: str) -> None:
    path = tmp_path / name
    path.write_bytes(data)
    with pytest.raises(RewardkitError, match=words) as info:
        read_records(path)
    assert str(path) in str(info.value)


def test_a_line_that_is_not_utf8_is_an_error_of_that_record(tmp_path: Path) -> None:
    path = tmp_path / "x.jsonl"
    good = b'{"prompt": "Hi", "response": "Hello"}\n'
    path.write_bytes(good + b'{"prompt": "\xff\xfe", "response": "x"}\n' + good)
    loaded = read_records(path)
    assert [n for n, _ in loaded.records] == [1, 3]
    (err,) = loaded.errors
    assert err.describe().startswith(f"{path}:2: not UTF-8")


def test_blank_lines_are_counted(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_text("\n" + json.dumps(ROWS[0]) + "\n  \n" + json.dumps(ROWS[1]), encoding="utf-8")
    assert [n for n, _ in iter_raw(path)] == [2, 4]  # no trailing newline needed either


def test_file_digest(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"abc")
    assert file_digest(path) == hashlib.sha256(b"abc").hexdigest()
    assert file_digest("-") is None


META = {"spec": {"model": "m"}, "input_sha256": "x"}


def test_writer_resume_cuts_torn_line(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    with JsonlWriter(out, META) as w:
        assert w.done == 0
        w.write([{"i": 0}, {"i": 1}])
        w.write([])
    assert (tmp_path / "out.jsonl.meta.json").is_file()
    with open(out, "a", encoding="utf-8") as f:
        f.write('{"i": 2, "rew')  # a kill half-way through a line
    with JsonlWriter(out, META) as w:
        assert w.done == 2
        w.write([{"i": 2}])
    assert [json.loads(x) for x in out.read_text(encoding="utf-8").splitlines()] == [
        {"i": 0},
        {"i": 1},
        {"i": 2},
    ]


def test_writer_refuses_other_settings_and_foreign_files(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    with JsonlWriter(out, META) as w:
        w.write([{"i": 0}])
    other = {**META, "input_sha256": "y"}
    with pytest.raises(
        RewardkitError,
        match=r"different settings.*\n  input_sha256: 'x' in the output, 'y' now\n.*--overwrite",
    ):
        JsonlWriter(out, other)
    with JsonlWriter(out, other, overwrite=True) as w:
        assert w.done == 0
    assert out.read_text(encoding="utf-8") == ""
    foreign = tmp_path / "notes.jsonl"
    foreign.write_text("precious\n", encoding="utf-8")
    with pytest.raises(RewardkitError, match="not written by rewardkit score"):
        JsonlWriter(foreign, META)
    assert foreign.read_text(encoding="utf-8") == "precious\n"
