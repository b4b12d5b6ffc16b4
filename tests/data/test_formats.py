"""Record shapes → Conversation / PreferencePair, and every validation error with file, line, field."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rewardkit.api import RewardModel
from rewardkit.cli import main
from rewardkit.data.conversation import Conversation, Message, PreferencePair, ResponseGroup
from rewardkit.data.formats import KIND_NAMES, SameKind, as_pair, kind_of, parse_record, record_kind
from rewardkit.data.io import read_records
from rewardkit.errors import InputError

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
U = {"role": "user", "content": "What is 1+1?"}
A = {"role": "assistant", "content": "1+1=2"}
S = {"role": "system", "content": "Be brief."}


def _contents(conv: Conversation) -> list[tuple[str, str]]:
    return [(m.role, m.content) for m in conv.messages]


def test_messages_record() -> None:
    rec = parse_record({"id": "a", "messages": [S, U, A]})
    assert isinstance(rec, Conversation)
    assert rec.id == "a"
    assert rec.to_dicts() == [S, U, A]
    assert parse_record({"id": 12, "messages": [U, A]}).id == "12"
    assert parse_record({"messages": [U, A]}).id is None


def test_prompt_response_with_str_and_messages_prompt() -> None:
    rec = parse_record({"prompt": "What is 1+1?", "response": "1+1=2"})
    assert isinstance(rec, Conversation)
    assert rec.to_dicts() == [U, A]
    rec = parse_record({"prompt": [S, U, A, U], "response": "again"})
    assert _contents(rec)[-1] == ("assistant", "again")
    assert rec.to_dicts()[:4] == [S, U, A, U]
    # A response given as messages is appended as-is.
    rec = parse_record({"prompt": "q", "response": [{"role": "assistant", "content": "r"}]})
    assert _contents(rec) == [("user", "q"), ("assistant", "r")]


def test_chosen_rejected_with_prompt() -> None:
    rec = parse_record({"id": "p", "prompt": "What is 1+1?", "chosen": "2", "rejected": "3"})
    assert isinstance(rec, PreferencePair)
    assert rec.style == "chosen_rejected" and rec.names == ("chosen", "rejected")
    assert rec.preference == -1.0 and rec.id == "p"
    chosen, rejected = rec.conversations()
    assert _contents(chosen) == [("user", "What is 1+1?"), ("assistant", "2")]
    assert _contents(rejected) == [("user", "What is 1+1?"), ("assistant", "3")]
    assert rec.chosen == chosen and rec.rejected == rejected


def test_chosen_rejected_without_prompt_are_whole_conversations() -> None:
    rec = parse_record({"chosen": [S, U, A], "rejected": [U, {"role": "assistant", "content": "3"}]})
    assert isinstance(rec, PreferencePair)
    assert rec.context == ()
    chosen, rejected = rec.conversations()
    assert chosen.to_dicts() == [S, U, A]
    assert _contents(rejected) == [("user", "What is 1+1?"), ("assistant", "3")]


def test_pair_shape_is_decided_by_complete_key_sets() -> None:
    # A stray "response1" does not make a chosen/rejected record a HelpSteer3 one.
    rec = parse_record({"prompt": "q", "chosen": "a", "rejected": "b", "response1": "x"})
    assert isinstance(rec, PreferencePair) and rec.style == "chosen_rejected"


def test_helpsteer3_record() -> None:
    rec = parse_record(
        {
            "domain": "general",
            "language": "english",
            "context": [U, A, {"role": "user", "content": "And 2+2?"}],
            "response1": "4",
            "response2": "5",
            "overall_preference": 2,
            "individual_preference": [{"score": 2}],
        }
    )
    assert isinstance(rec, PreferencePair)
    assert rec.style == "helpsteer" and rec.names == ("1", "2")
    assert rec.preference == 2.0 and rec.strength == 2
    assert rec.extra == {"domain": "general", "language": "english"}
    first, second = rec.conversations()
    assert _contents(first)[-2:] == [("user", "And 2+2?"), ("assistant", "4")]
    assert _contents(second)[-1] == ("assistant", "5")
    assert rec.chosen == second  # > 0: response2 is better


BAD_RECORDS = [
    # (record, field, words of the message)
    ({"messages": [U, {"role": "bot", "content": "x"}]}, "messages[1].role", "role must be one of"),
    ({"messages": [U, S, A]}, "messages[1].role", "system message is allowed only first"),
    ({"messages": [U, A, U]}, "messages[2].role", "last message must be the assistant"),
    ({"messages": [U, {"role": "assistant", "content": ""}]}, "messages[1].content", "content is empty"),
    (
        {"messages": [U, {"role": "assistant", "content": 3}]},
        "messages[1].content",
        "must be a string or a list",
    ),
    (
        {"messages": [U, {"role": "assistant", "content": ["x"]}]},
        "messages[1].content[0]",
        "expected a text part",
    ),
    ({"messages": "hello"}, "messages", "expected a list of messages, got str"),
    ({"messages": [U, 3]}, "messages[1]", "expected an object with 'role' and 'content', got int"),
    ({"messages": []}, "messages", "no messages"),
    ({"id": [1], "messages": [U, A]}, "id", "id must be a string or integer, got list"),
    ({"response": "x"}, "prompt", "needs a 'prompt'"),
    ({"prompt": "", "response": "x"}, "prompt", "prompt is empty"),
    ({"prompt": "q", "response": " "}, "response", "response is empty"),
    ({"prompt": "q", "response": 4}, "response", "expected a list of messages, got int"),
    ({"prompt": [U, A], "response": "x"}, "prompt", "must end with a user turn"),
    ({"prompt": {"q": 1}, "response": "x"}, "prompt", "expected a list of messages, got dict"),
    # Indices in response lists count from the response's own first message.
    ({"prompt": "q", "response": [A, U]}, "response[1].role", "last message must be the assistant"),
    ({"prompt": "q", "response": [S, A]}, "response[0].role", "system message is allowed only first"),
    ({"prompt": "q", "response": []}, "response", "no messages"),
    ({"prompt": "q", "chosen": "a", "rejected": None}, "rejected", "missing"),
    ({"prompt": "q", "chosen": [A, U], "rejected": "b"}, "chosen[1].role", "last message must be"),
    ({"chosen": [U, A], "rejected": [A, S]}, "rejected[1].role", "system message is allowed only first"),
    ({"context": [U], "response1": "a", "response2": "b"}, "overall_preference", "missing"),
    ({"response1": "a", "response2": "b", "overall_preference": 1}, "context", "need 'context'"),
    (
        {"context": [U], "response1": "a", "response2": "b", "overall_preference": 4},
        "overall_preference",
        "-3 to 3, got 4",
    ),
    (
        {"context": [U], "response1": "a", "response2": "b", "overall_preference": -3.5},
        "overall_preference",
        "got -3.5",
    ),
    (
        {"context": [U], "response1": "a", "response2": "b", "overall_preference": "1"},
        "overall_preference",
        "got str",
    ),
    (
        {"context": [U], "response1": "a", "response2": "b", "overall_preference": True},
        "overall_preference",
        "got bool",
    ),
    (
        {"context": [U], "response1": "", "response2": "b", "overall_preference": 0},
        "response1",
        "response is empty",
    ),
    (
        {"context": [A], "response1": "a", "response2": "b", "overall_preference": 0},
        "context",
        "must end with a user turn",
    ),
]


@pytest.mark.parametrize(("record", "field", "words"), BAD_RECORDS)
def test_validation_errors_name_file_line_and_field(
    tmp_path: Path, record: dict, field: str, words: str
) -> None:
    path = tmp_path / "data.jsonl"
    good = {"prompt": "q", "chosen": "a", "rejected": "b"} if "chosen" in record else {"messages": [U, A]}
    if "response1" in record:
        good = {"context": [U], "response1": "a", "response2": "b", "overall_preference": 1}
    path.write_text(json.dumps(good) + "\n\n" + json.dumps(record) + "\n", encoding="utf-8")
    loaded = read_records(path)
    assert [n for n, _ in loaded.records] == [1]
    (err,) = loaded.errors
    assert (err.source, err.line, err.field) == (str(path), 3, field)  # blank line 2 still counted
    assert words in err.message
    assert str(err).startswith(f"{path}:3: field '{field}': ")


@pytest.mark.parametrize(
    ("line", "words"),
    [
        ('{"messages": [', "malformed JSON"),
        ("[1, 2]", "expected a JSON object, got list"),
        ('"text"', "expected a JSON object, got str"),
        ('{"text": "hello", "label": 1}', "unrecognised record with keys ['label', 'text']"),
    ],
)
def test_malformed_and_unknown_records(tmp_path: Path, line: str, words: str) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps({"messages": [U, A]}) + "\n" + line + "\n", encoding="utf-8")
    (err,) = read_records(path).errors
    assert (err.source, err.line) == (str(path), 2)
    assert words in err.message
    assert str(err).startswith(f"{path}:2: ")


def test_mixed_record_kinds_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "mixed.jsonl"
    rows = [
        {"messages": [U, A]},
        {"prompt": "q", "response": "r"},
        {"prompt": "q", "chosen": "a", "rejected": "b"},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    loaded = read_records(path)
    assert [n for n, _ in loaded.records] == [1, 2]  # both conversation shapes are one kind
    (err,) = loaded.errors
    assert err.line == 3
    assert err.message.startswith(
        f"this record is {KIND_NAMES['pair']} but line 1 is {KIND_NAMES['conversation']}"
    )
    # Chosen/rejected pairs and HelpSteer3 pairs give different rows: two kinds.
    helpsteer = {"context": [U], "response1": "a", "response2": "b", "overall_preference": 1}
    path.write_text(json.dumps(rows[2]) + "\n" + json.dumps(helpsteer) + "\n", encoding="utf-8")
    loaded = read_records(path)
    assert [n for n, _ in loaded.records] == [1]
    (err,) = loaded.errors
    assert (err.line, err.message.split(" but ")[0]) == (2, f"this record is {KIND_NAMES['helpsteer3']}")


def test_example_files_are_valid() -> None:
    files = sorted(EXAMPLES.glob("*.jsonl"))
    assert files
    for path in files:
        loaded = read_records(path)
        assert loaded.errors == [], path
        assert loaded.records, path


def test_response_group_records() -> None:
    rec = parse_record({"id": "g", "prompt": "What is 1+1?", "responses": ["1+1=2", "1+1=3"]})
    assert isinstance(rec, ResponseGroup)
    assert rec.id == "g" and len(rec) == 2 and not rec.conversational
    assert [c.to_dicts() for c in rec.conversations()] == [
        [U, A],
        [U, {"role": "assistant", "content": "1+1=3"}],
    ]
    # Context as messages (under "prompt" or "messages"), responses as strings or message lists.
    for key in ("prompt", "messages"):
        rec = parse_record({key: [S, U], "responses": ["1+1=2", [A]]})
        assert isinstance(rec, ResponseGroup) and rec.conversational
        assert [c.to_dicts() for c in rec.conversations()] == [[S, U, A], [S, U, A]]
    # One string response given as a message list makes the record conversational too.
    assert parse_record(
        {"prompt": "q", "responses": ["a", [{"role": "assistant", "content": "b"}]]}
    ).conversational


BAD_GROUPS = [
    ({"prompt": "q", "responses": []}, "responses", "no responses"),
    ({"prompt": "q", "responses": "a"}, "responses", "expected a list of responses"),
    ({"prompt": "q", "responses": ["a", " "]}, "responses[1]", "response is empty"),
    ({"prompt": "q", "responses": ["a", None]}, "responses[1]", "missing"),
    (
        {"prompt": "q", "responses": ["a", [A, U]]},
        "responses[1][1].role",
        "last message must be the assistant",
    ),
    (
        {"prompt": "q", "responses": ["a", [{"role": "bot", "content": "x"}]]},
        "responses[1][0].role",
        "role must",
    ),
    ({"prompt": [U, A], "responses": ["a"]}, "prompt", "must end with a user turn"),
    ({"messages": [U, S], "responses": ["a"]}, "messages[1].role", "system message is allowed only first"),
    ({"responses": ["a"]}, "prompt", "got neither"),
    ({"prompt": "q", "messages": [U], "responses": ["a"]}, "prompt", "both 'prompt' and 'messages'"),
]


@pytest.mark.parametrize(("record", "field", "words"), BAD_GROUPS)
def test_response_group_errors_name_the_field(tmp_path: Path, record: dict, field: str, words: str) -> None:
    path = tmp_path / "groups.jsonl"
    path.write_text(
        json.dumps({"prompt": "q", "responses": ["a"]}) + "\n" + json.dumps(record) + "\n", "utf-8"
    )
    loaded = read_records(path)
    assert [n for n, _ in loaded.records] == [1]
    (err,) = loaded.errors
    assert (err.line, err.field) == (2, field)
    assert words in err.message


def test_every_problem_of_a_record_is_listed(tmp_path: Path) -> None:
    record = {
        "id": [1],
        "prompt": [U, A],
        "chosen": [{"role": "assistant", "content": ""}],
        "rejected": [{"role": "robot", "content": "x"}, A],
    }
    path = tmp_path / "data.jsonl"
    path.write_text(json.dumps(record) + "\n", encoding="utf-8")
    (err,) = read_records(path).errors
    assert [(e.line, e.field) for e in err.errors] == [
        (1, "id"),
        (1, "prompt"),
        (1, "chosen[0].content"),
        (1, "rejected[0].role"),
    ]
    assert str(err).startswith(f"{path}:1: field 'id': id must be a string or integer, got list; ")
    assert "field 'rejected[0].role': role must be one of" in str(err)
    # HelpSteer3: a missing context and a bad preference together.
    bad = {"response1": "a", "response2": " ", "overall_preference": 9}
    (err,) = read_records(_write(tmp_path, bad)).errors
    assert [e.field for e in err.errors] == ["context", "overall_preference", "response2"]


def _write(tmp_path: Path, *rows: dict) -> Path:
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_record_kinds() -> None:
    pair = {"prompt": "q", "chosen": "a", "rejected": "b"}
    helpsteer = {"context": [U], "response1": "a", "response2": "b", "overall_preference": 1}
    for obj, kind in [
        ({"messages": [U, A]}, "conversation"),
        ({"prompt": "q", "response": "r"}, "conversation"),
        (pair, "pair"),
        (helpsteer, "helpsteer3"),
    ]:
        assert record_kind(obj) == kind == kind_of(parse_record(obj))
    same = SameKind()
    same(1, parse_record({"messages": [U, A]}))
    same(2, parse_record({"prompt": "q", "response": "r"}))  # the same output row: one kind
    with pytest.raises(InputError) as info:
        same(3, parse_record(pair))
    assert info.value.message.startswith(
        f"this record is {KIND_NAMES['pair']} but line 1 is {KIND_NAMES['conversation']}"
    )
    pairs = SameKind()
    pairs(4, parse_record(pair))
    with pytest.raises(InputError, match=r"HelpSteer3 pair .* but line 4 is a chosen/rejected pair"):
        pairs(9, parse_record(helpsteer))


def test_as_pair_accepts_trl_dicts() -> None:
    pair = as_pair({"prompt": [U], "chosen": [{"role": "assistant", "content": "2"}], "rejected": "3"})
    assert pair.context == (Message(role="user", content=U["content"]),)
    assert [c.messages[-1].content for c in pair.conversations()] == ["2", "3"]
    assert as_pair(pair) is pair
    with pytest.raises(InputError, match="got a conversation"):
        as_pair({"messages": [U, A]})
    with pytest.raises(InputError, match="got list"):
        as_pair([U, A])  # type: ignore[arg-type]


def test_score_pairs_takes_trl_dicts(tiny_rm: RewardModel) -> None:
    objects = [parse_record({"prompt": "What is 1+1?", "chosen": "2", "rejected": "3"})]
    dicts = [
        {"prompt": "What is 1+1?", "chosen": "2", "rejected": "3"},
        {"prompt": [U], "chosen": [{"role": "assistant", "content": "2"}], "rejected": "3"},
        {"chosen": [{"role": "user", "content": "What is 1+1?"}, A], "rejected": [U, A]},
    ]
    (want,) = tiny_rm.score_pairs(objects)
    got = tiny_rm.score_pairs(dicts)
    # Batch composition moves fp32 sums by ~1e-6 (see the README).
    assert got[0] == pytest.approx(want, abs=1e-5) and got[1] == pytest.approx(want, abs=1e-5)
    assert got[2][0] == pytest.approx(got[2][1], abs=1e-5)
    with pytest.raises(InputError) as info:
        tiny_rm.score_pairs([dicts[0], {"prompt": "q", "chosen": "a"}])
    assert info.value.field == "[1]"  # no 'rejected': not a pair at all
    with pytest.raises(InputError) as info:
        tiny_rm.score_pairs([dicts[0], {"prompt": "q", "chosen": "a", "rejected": ""}])
    assert info.value.field == "[1].rejected" and "response is empty" in info.value.message


def test_cli_scores_openai_content_parts(
    tmp_path: Path, tiny_model_dir: Path, tiny_rm: RewardModel, capsys: pytest.CaptureFixture[str]
) -> None:
    parts = {
        "role": "user",
        "content": [{"type": "text", "text": "What is"}, {"type": "text", "text": "1+1?"}],
    }
    path = _write(tmp_path, {"id": "parts", "messages": [parts, A]})
    assert main(["score", str(path), "--model", str(tiny_model_dir)]) == 0
    (row,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    (want,) = tiny_rm.score([[{"role": "user", "content": "What is\n1+1?"}, A]])
    assert row["id"] == "parts" and row["reward"] == pytest.approx(want, abs=1e-6)
