"""The input pieces a Ray job reads (numbered as `rewardkit.data.io` numbers lines) and its output files."""

from __future__ import annotations

import gzip
import json
import random
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from rewardkit.data.io import iter_raw
from rewardkit.errors import InputError, RewardkitError
from rewardkit.ray.storage import SOURCE_LINE, TEXT, Location, RowWriter, plan_pieces, read_pieces

LINES = ['{"a": 1}', '{"b": [1, 2]}', "", "   ", "{not json", '{"c": "ünï 🙂"}']


def _read_all(src: Location, k: int) -> list[tuple[int, object]]:
    """(line, record) of every piece of ``src`` cut into ``k``-line pieces, in piece order."""
    plan = plan_pieces(src, lines_per_piece=k)
    out: list[tuple[int, object]] = []
    for table in read_pieces(pa.Table.from_pylist(plan.pieces), src=src, lines_per_chunk=k):
        if TEXT in table.column_names:
            texts = [t if t is None else t.removesuffix("\n") for t in table[TEXT].to_pylist()]
            out += list(zip(table[SOURCE_LINE].to_pylist(), texts, strict=True))
        else:
            out += [(row.pop(SOURCE_LINE), row) for row in table.to_pylist()]
    return out


def _reference(path: Path) -> list[tuple[int, object]]:
    """What ``rewardkit score`` reads: (line, text) per non-blank line (text: the raw line)."""
    numbers = [n for n, _ in iter_raw(path)]
    text = path.read_text(encoding="utf-8").split("\n")
    return [(n, text[n - 1]) for n in numbers]


def test_jsonl_pieces_number_every_line_as_rewardkit_score_does(tmp_path: Path) -> None:
    rng = random.Random(0)
    path = tmp_path / "in.jsonl"
    for _ in range(150):
        lines = [rng.choice(LINES) for _ in range(rng.randint(0, 25))]
        path.write_text("\n".join(lines) + rng.choice(["", "\n"]), encoding="utf-8")
        k = rng.randint(1, 6)
        src = Location.of(str(path))
        got = _read_all(src, k)
        assert got == _reference(path)
        plan = plan_pieces(src, lines_per_piece=k)
        # Every piece but the last holds exactly k lines.
        assert [p["first_line"] for p in plan.pieces] == [1 + i * k for i in range(len(plan.pieces))]
        assert plan.lines == sum(1 for _ in path.open(encoding="utf-8"))


def test_crlf_lines_and_bad_utf8_are_kept_for_the_tokenizer_to_report(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_bytes(b'{"a": 1}\r\n\xff\xfe\r\n{"b": 2}')
    got = _read_all(Location.of(str(path)), 2)
    assert [(n, t if t is None else json.loads(t)) for n, t in got] == [
        (1, {"a": 1}),
        (2, None),
        (3, {"b": 2}),
    ]


def test_gzip_is_one_piece_numbered_like_plain_jsonl(tmp_path: Path) -> None:
    lines = [json.dumps({"i": i}) if i % 4 else "" for i in range(23)]
    plain = tmp_path / "in.jsonl"
    plain.write_text("\n".join(lines) + "\n", encoding="utf-8")
    packed = tmp_path / "in.jsonl.gz"
    packed.write_bytes(gzip.compress(plain.read_bytes()))
    plan = plan_pieces(Location.of(str(packed)), lines_per_piece=5)
    assert len(plan.pieces) == 1 and plan.lines is None
    assert [(n, t.strip()) for n, t in _read_all(Location.of(str(packed)), 5)] == _reference(plain)


def test_parquet_pieces_are_slices_of_row_groups_numbered_by_row(tmp_path: Path) -> None:
    rows = [{"id": str(i), "messages": [{"role": "user", "content": f"q{i}"}]} for i in range(40)]
    path = tmp_path / "in.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path, row_group_size=7)
    plan = plan_pieces(Location.of(str(path)), lines_per_piece=3)
    assert plan.lines == 40
    assert {p["row_group"] for p in plan.pieces} == set(range(6))
    got = _read_all(Location.of(str(path)), 3)
    assert got == [(n, obj) for n, obj in iter_raw(path)]


def test_a_huge_row_group_is_cut_into_a_bounded_number_of_pieces(tmp_path: Path) -> None:
    path = tmp_path / "in.parquet"
    pq.write_table(pa.table({"x": list(range(1000))}), path)  # one row group
    plan = plan_pieces(Location.of(str(path)), lines_per_piece=2)
    assert len(plan.pieces) == 16  # each piece decodes the whole group: not 500 of them
    assert [n for n, _ in _read_all(Location.of(str(path)), 2)] == list(range(1, 1001))


def test_sha256_and_uris(tmp_path: Path) -> None:
    import hashlib

    path = tmp_path / "in.jsonl"
    path.write_text('{"a": 1}\n', encoding="utf-8")
    by_uri = plan_pieces(Location.of(path.as_uri()), lines_per_piece=4)
    assert by_uri.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert _read_all(Location.of(path.as_uri()), 4) == [(1, '{"a": 1}')]
    with pytest.raises(RewardkitError, match="not found"):
        plan_pieces(Location.of(str(tmp_path / "missing.jsonl")), lines_per_piece=4)


def test_row_writer_writes_jsonl_rows_verbatim_and_parquet_with_string_ids(tmp_path: Path) -> None:
    rows = [
        {"id": 3, "reward": 0.5, "num_tokens": 7},
        {"id": "ab", "reward": -1.25, "num_tokens": 9},
    ]
    with RowWriter(Location.of(str(tmp_path / "o.jsonl")), parquet=False) as w:
        w.write(rows[:1])
        w.write(rows[1:])
    assert (tmp_path / "o.jsonl").read_text(encoding="utf-8") == "".join(
        json.dumps(r, ensure_ascii=False) + "\n" for r in rows
    )
    by_uri = Location.of((tmp_path / "u.jsonl").as_uri())
    with RowWriter(by_uri, parquet=False) as w:
        w.write(rows)
    assert (tmp_path / "u.jsonl").read_bytes() == (tmp_path / "o.jsonl").read_bytes()
    with RowWriter(Location.of(str(tmp_path / "o.parquet")), parquet=True) as w:
        w.write(rows[:1])
        w.write(rows[1:])
    got = pq.read_table(tmp_path / "o.parquet").to_pylist()
    assert got == [{**r, "id": str(r["id"])} for r in rows]


def test_malformed_json_reads_as_text_and_fails_in_the_tokenizer(tmp_path: Path) -> None:
    from rewardkit.ray.stages import parse_rows

    path = tmp_path / "in.jsonl"
    path.write_text('{"messages": 5}\n{oops\n', encoding="utf-8")
    (table,) = read_pieces(
        pa.Table.from_pylist(plan_pieces(Location.of(str(path)), lines_per_piece=8).pieces),
        src=Location.of(str(path)),
        lines_per_chunk=8,
    )
    got = parse_rows(table, json_column=TEXT)
    want = [obj if isinstance(obj, InputError) else None for _, obj in iter_raw(path)]
    assert isinstance(got[0], InputError) and got[0].field == "messages"
    assert isinstance(got[1], InputError) and isinstance(want[1], InputError)
    assert got[1].message == want[1].message
