"""Message / Conversation / PreferencePair validation."""

from __future__ import annotations

import pytest

from rewardkit.data.conversation import Conversation, Message, PreferencePair, content_text, parse_message
from rewardkit.errors import InputError

U = {"role": "user", "content": "hi"}
A = {"role": "assistant", "content": "hello"}
S = {"role": "system", "content": "be brief"}


def test_conversation_from_dicts_and_back() -> None:
    conv = Conversation.of([S, U, A, U, A], id="x")
    assert conv.id == "x"
    assert len(conv) == 5
    assert conv.to_dicts() == [S, U, A, U, A]
    assert conv.messages[0] == Message(role="system", content="be brief")
    assert Conversation.of(conv) is conv
    assert Conversation.from_prompt("q", "r").to_dicts() == [
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": "r"},
    ]


@pytest.mark.parametrize(
    ("messages", "field", "text"),
    [
        ([], "messages", "no messages"),
        (
            [U, {"role": "robot", "content": "x"}],
            "messages[1].role",
            "role must be one of system, user, assistant",
        ),
        ([U, {"content": "x"}], "messages[1].role", "got None"),
        ([U, S, A], "messages[1].role", "system message is allowed only first"),
        ([U, A, U], "messages[2].role", "last message must be the assistant turn"),
        ([S], "messages[0].role", "last message must be the assistant"),
        ([U, {"role": "assistant", "content": "   \n"}], "messages[1].content", "content is empty"),
        (
            [U, {"role": "assistant", "content": 5}],
            "messages[1].content",
            "content must be a string or a list of text parts, got int",
        ),
        ([U, {"role": "assistant", "content": []}], "messages[1].content", "an empty list of parts"),
        (
            [U, {"role": "assistant", "content": [{"type": "image_url", "image_url": {}}]}],
            "messages[1].content[0].type",
            "only text parts can be scored, got type 'image_url'",
        ),
        (
            [U, {"role": "assistant", "content": [{"type": "text", "text": 3}]}],
            "messages[1].content[0].text",
            "text must be a string, got int",
        ),
        ([U, {"role": "assistant", "content": ["x"]}], "messages[1].content[0]", "expected a text part"),
        (
            [U, {"role": "assistant", "content": [{"type": "text", "text": " "}]}],
            "messages[1].content",
            "empty",
        ),
        ([U, {"role": "assistant", "content": None}], "messages[1].content", "got NoneType"),
        ([U, "hello"], "messages[1]", "expected an object with 'role' and 'content', got str"),
    ],
)
def test_conversation_validation(messages: list, field: str, text: str) -> None:
    with pytest.raises(InputError, match=text) as info:
        Conversation.of(messages)
    assert info.value.field == field
    assert f"field '{field}'" in str(info.value)


def test_openai_content_parts_are_joined_with_newlines() -> None:
    parts = [{"type": "text", "text": "What is"}, {"type": "text", "text": "1+1?", "cache_control": {}}]
    conv = Conversation.of([{"role": "user", "content": parts}, A])
    assert conv.messages[0] == Message(role="user", content="What is\n1+1?")
    assert content_text(parts, "content") == "What is\n1+1?"


def test_every_problem_of_a_conversation_is_reported() -> None:
    messages = [
        {"role": "bot", "content": ""},
        U,
        {"role": "assistant", "content": [{"type": "image_url"}, {"type": "text", "text": 1}]},
    ]
    with pytest.raises(InputError) as info:
        Conversation.of(messages)
    err = info.value
    assert [(e.field, e.message) for e in err.errors] == [
        ("messages[0].role", "role must be one of system, user, assistant, got 'bot'"),
        ("messages[0].content", "content is empty"),
        ("messages[2].content[0].type", "only text parts can be scored, got type 'image_url'"),
        ("messages[2].content[1].text", "text must be a string, got int"),
    ]
    assert str(err) == (
        "field 'messages[0].role': role must be one of system, user, assistant, got 'bot'; "
        "field 'messages[0].content': content is empty; "
        "field 'messages[2].content[0].type': only text parts can be scored, got type 'image_url'; "
        "field 'messages[2].content[1].text': text must be a string, got int"
    )
    # Conversation rules too: a misplaced system message and a wrong last role.
    with pytest.raises(InputError) as info:
        Conversation.of([U, S, A, U])
    assert [e.field for e in info.value.errors] == ["messages[1].role", "messages[3].role"]


def test_combined_errors_keep_every_location() -> None:
    err = InputError.combine([InputError("a", field="x"), InputError("b", field="y")])
    located = err.locate(source="f.jsonl", line=2)
    assert [(e.source, e.line, e.field) for e in located.errors] == [("f.jsonl", 2, "x"), ("f.jsonl", 2, "y")]
    assert str(located) == "f.jsonl:2: field 'x': a; field 'y': b"
    assert [e.field for e in err.under("[3]").errors] == ["[3].x", "[3].y"]
    assert InputError("whole").under("[0]").field == "[0]"
    single = InputError("c", field="z")
    assert InputError.combine([single]) is single and single.errors == (single,)


def test_messages_must_be_a_list() -> None:
    with pytest.raises(InputError, match="expected a list of messages, got str") as info:
        Conversation("hello")  # type: ignore[arg-type]
    assert info.value.field == "messages"


def test_message_objects_are_validated_too() -> None:
    with pytest.raises(InputError, match="content is empty") as info:
        Conversation.from_prompt("What is 1+1?", " ")
    assert info.value.field == "messages[1].content"
    with pytest.raises(InputError, match="role must be one of"):
        parse_message(Message(role="tool", content="x"), "m")  # type: ignore[arg-type]


def test_input_error_describe_and_locate() -> None:
    e = InputError("content is empty", field="messages[1].content")
    assert str(e) == "field 'messages[1].content': content is empty"
    located = e.locate(source="data.jsonl", line=7)
    assert str(located) == "data.jsonl:7: field 'messages[1].content': content is empty"
    # Existing location information is kept.
    assert located.locate(source="other", line=1).line == 7
    assert str(InputError("bad", line=3)) == "line 3: bad"


def _pair(preference: float, style: str = "helpsteer") -> PreferencePair:
    return PreferencePair(
        context=(Message(role="user", content="q"),),
        first=(Message(role="assistant", content="one"),),
        second=(Message(role="assistant", content="two"),),
        preference=preference,
        style=style,  # type: ignore[arg-type]
        id="p",
    )


def test_preference_pair_conventions() -> None:
    first_better = _pair(-2)
    assert first_better.chosen.messages[-1].content == "one"
    assert first_better.rejected.messages[-1].content == "two"
    assert first_better.strength == 2 and not first_better.is_tie
    second_better = _pair(3)
    assert second_better.chosen.messages[-1].content == "two"
    assert second_better.rejected.messages[-1].content == "one"
    assert _pair(0).is_tie
    assert _pair(-1).names == ("1", "2")
    assert _pair(-1, "chosen_rejected").names == ("chosen", "rejected")
    assert _pair(-1).fields == ("response1", "response2")
    a, b = _pair(1).conversations()
    assert (a.source_field, b.source_field) == ("response1", "response2")
    assert a.turn_field(1) == "response1" and Conversation.of([U, A]).turn_field(1) == "messages[1].content"
    assert [m.content for m in a.messages] == ["q", "one"] and a.id == "p"
    assert [m.content for m in b.messages] == ["q", "two"]
