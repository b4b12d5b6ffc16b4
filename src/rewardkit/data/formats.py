"""Record shapes rewardkit reads, each turned into a `Conversation` or a `PreferencePair`.

Supported (one JSON object per JSONL line, or one Parquet row):

- ``{"messages": [{"role", "content"}, ...], "id"?}`` — OpenAI style, last message scored;
- ``{"prompt": str | messages, "response": str | messages}``;
- ``{"prompt"?: str | messages, "chosen": str | messages, "rejected": str | messages}`` — TRL /
  OpenRLHF pairs (without ``prompt``, ``chosen`` and ``rejected`` are whole conversations);
- ``{"context": [turns], "response1": str, "response2": str, "overall_preference": -3..3}`` —
  HelpSteer3 preference;
- ``{"prompt": str | messages, "responses": [str | messages, ...]}`` (or ``"messages"`` for the
  context) — K responses to one prompt (best-of-N samples), scored as one shared-prompt group.

Message content is a string or an OpenAI list of text parts (`content_text`). A record's problems
are reported together, each naming its field. One file holds one `RecordKind`: the kinds are the
shapes of output row (`SameKind`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

from rewardkit.data.conversation import (
    Conversation,
    Message,
    PreferencePair,
    ResponseGroup,
    check_turns,
    parse_messages,
)
from rewardkit.errors import InputError, InputErrors

RecordKind = Literal["conversation", "pair", "helpsteer3", "group"]
Record = Conversation | PreferencePair | ResponseGroup

SHAPES = (
    '{"messages": [...]}, {"prompt", "response"}, {"prompt", "chosen", "rejected"} or HelpSteer3 '
    '{"context", "response1", "response2", "overall_preference"} or {"prompt", "responses"}'
)
KIND_NAMES: dict[RecordKind, str] = {
    "conversation": 'a conversation ({"messages"} or {"prompt", "response"})',
    "pair": 'a chosen/rejected pair ({"chosen", "rejected"})',
    "helpsteer3": 'a HelpSteer3 pair ({"context", "response1", "response2", "overall_preference"})',
    "group": 'a group of responses ({"prompt", "responses"})',
}


def record_kind(obj: Mapping[str, Any]) -> RecordKind:
    """Which kind a raw record is; raises InputError naming the keys it found.

    Records of one kind give the same output row (``reward``; ``reward_chosen``/``reward_rejected``;
    ``reward_1``/``reward_2``; ``rewards``), so the two conversation shapes are one kind.
    """
    if "responses" in obj:
        return "group"
    if "messages" in obj or "response" in obj:
        return "conversation"
    if "response1" in obj and "response2" in obj:
        return "helpsteer3"
    if "chosen" in obj and "rejected" in obj:
        return "pair"
    raise InputError(f"unrecognised record with keys {sorted(obj)}; expected one of {SHAPES}")


def kind_of(record: Record) -> RecordKind:
    """The `RecordKind` of a parsed record."""
    if isinstance(record, Conversation):
        return "conversation"
    if isinstance(record, ResponseGroup):
        return "group"
    return "pair" if record.style == "chosen_rejected" else "helpsteer3"


class SameKind:
    """Checks that the records of one file are all of one kind (call it on each, in order)."""

    def __init__(self, *, first: tuple[int, RecordKind] | None = None) -> None:
        self.first = first  # (line, kind) of the file's first record, once seen

    def __call__(self, line: int, record: Record) -> None:
        """Raises InputError if ``record`` (at ``line``) is not the kind of the first record."""
        kind = kind_of(record)
        if self.first is None:
            self.first = (line, kind)
            return
        first_line, first_kind = self.first
        if kind != first_kind:
            raise InputError(
                f"this record is {KIND_NAMES[kind]} but line {first_line} is {KIND_NAMES[first_kind]}; "
                "a file holds one kind of record: split it into one file per kind"
            )


def _record_id(obj: Mapping[str, Any]) -> str | None:
    rid = obj.get("id")
    if rid is None:
        return None
    if isinstance(rid, bool) or not isinstance(rid, str | int):
        raise InputError(f"id must be a string or integer, got {type(rid).__name__}", field="id")
    return str(rid)


def _prompt(
    obj: Any, path: str, *, missing: str = "expected a string or a list of messages"
) -> tuple[Message, ...]:
    """A prompt given as a string (one user turn) or as a list of messages; None is missing."""
    if obj is None:
        raise InputError(f"missing; {missing}", field=path)
    if isinstance(obj, str):
        if not obj.strip():
            raise InputError("prompt is empty", field=path)
        return (Message(role="user", content=obj),)
    msgs = parse_messages(obj, path)
    check_turns(msgs, path, final=None)
    if msgs[-1].role == "assistant":
        raise InputError("the prompt must end with a user turn, got 'assistant'", field=path)
    return msgs


def _response(obj: Any, path: str) -> tuple[Message, ...]:
    """A response given as a string (one assistant turn) or as a list of messages."""
    if isinstance(obj, str):
        if not obj.strip():
            raise InputError("response is empty", field=path)
        return (Message(role="assistant", content=obj),)
    if obj is None:
        raise InputError("missing; expected a string or a list of messages", field=path)
    return parse_messages(obj, path)


def _joined(context: tuple[Message, ...], response: tuple[Message, ...], path: str) -> tuple[Message, ...]:
    """``context + response`` under the conversation rules; error fields index into ``path``."""
    if not response:
        raise InputError("no messages; expected the response turn(s)", field=path)
    messages = context + response
    check_turns(messages, path, offset=len(context))
    return messages


def parse_conversation(obj: Mapping[str, Any]) -> Conversation:
    """A ``messages`` or ``prompt``/``response`` record; every problem is reported."""
    found = InputErrors()
    rid = found.check(_record_id, obj)
    if "messages" in obj:
        messages = found.check(parse_messages, obj["messages"], "messages")
        if messages is not None:
            found.check(check_turns, messages, "messages")
        found.raise_if_any()
        return Conversation(messages, id=rid)  # type: ignore[arg-type]
    prompt = found.check(_prompt, obj.get("prompt"), "prompt", missing="a 'response' record needs a 'prompt'")
    response = found.check(_response, obj.get("response"), "response")
    joined = None
    if prompt is not None and response is not None:
        joined = found.check(_joined, prompt, response, "response")
    found.raise_if_any()
    return Conversation(joined, id=rid, source_field="response")  # type: ignore[arg-type]


def _preference(obj: Mapping[str, Any]) -> float:
    if "overall_preference" not in obj:
        raise InputError("missing; expected a number from -3 to 3", field="overall_preference")
    value = obj["overall_preference"]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InputError(
            f"expected a number from -3 to 3, got {type(value).__name__}",
            field="overall_preference",
        )
    if not -3 <= value <= 3:
        raise InputError(f"expected a number from -3 to 3, got {value}", field="overall_preference")
    return float(value)


def parse_pair(obj: Mapping[str, Any]) -> PreferencePair:
    """A chosen/rejected or HelpSteer3 record; every problem is reported."""
    found = InputErrors()
    rid = found.check(_record_id, obj)
    if "response1" in obj and "response2" in obj:
        context = found.check(
            _prompt, obj.get("context"), "context", missing="HelpSteer3 records need 'context'"
        )
        pref = found.check(_preference, obj)
        names, style = ("response1", "response2"), "helpsteer"
        extra = {k: v for k, v in obj.items() if k in ("domain", "language")}
    else:
        context = found.check(_prompt, obj["prompt"], "prompt") if obj.get("prompt") is not None else ()
        names, pref, style, extra = ("chosen", "rejected"), -1.0, "chosen_rejected", {}
    first, second = (found.check(_response, obj.get(name), name) for name in names)
    if context is not None:
        for name, resp in zip(names, (first, second), strict=True):
            if resp is not None:
                found.check(_joined, context, resp, name)
    found.raise_if_any()
    return PreferencePair(
        context=context,  # type: ignore[arg-type]
        first=first,  # type: ignore[arg-type]
        second=second,  # type: ignore[arg-type]
        preference=pref,  # type: ignore[arg-type]
        style=style,  # type: ignore[arg-type]
        id=rid,
        extra=extra,
    )


def parse_group(obj: Mapping[str, Any]) -> ResponseGroup:
    """``{"prompt" | "messages": context, "responses": [response, ...]}``: K responses to one context.

    The context is a string (one user turn) or a list of messages ending with a user turn; each
    response a non-empty string (one assistant turn) or a list of messages.
    """
    rid = _record_id(obj)
    keys = [k for k in ("prompt", "messages") if k in obj]
    if len(keys) != 1:
        found = "both 'prompt' and 'messages'" if keys else "neither"
        raise InputError(
            f"a 'responses' record needs its context as 'prompt' or 'messages', got {found}", field="prompt"
        )
    (key,) = keys
    context = _prompt(obj[key], key)
    raw = obj["responses"]
    if not isinstance(raw, Sequence) or isinstance(raw, str | bytes):
        raise InputError(
            f"expected a list of responses (strings or lists of messages), got {type(raw).__name__}",
            field="responses",
        )
    if not raw:
        raise InputError("no responses; expected at least one", field="responses")
    responses = tuple(_response(r, f"responses[{i}]") for i, r in enumerate(raw))
    for i, resp in enumerate(responses):
        _joined(context, resp, f"responses[{i}]")
    conversational = not isinstance(obj[key], str) or any(not isinstance(r, str) for r in raw)
    return ResponseGroup(context=context, responses=responses, conversational=conversational, id=rid)


_PARSERS = {
    "conversation": parse_conversation,
    "pair": parse_pair,
    "helpsteer3": parse_pair,
    "group": parse_group,
}


def parse_record(obj: Any) -> Record:
    """Turns one raw record (a decoded JSON object) into a Conversation, PreferencePair or
    ResponseGroup."""
    if not isinstance(obj, Mapping):
        raise InputError(f"expected a JSON object, got {type(obj).__name__}")
    return _PARSERS[record_kind(obj)](obj)


def as_pair(obj: PreferencePair | Mapping[str, Any]) -> PreferencePair:
    """A `PreferencePair`, or one given as a record (TRL's ``{"prompt"?, "chosen", "rejected"}``,
    each a string or a list of messages, or a HelpSteer3 record)."""
    if isinstance(obj, PreferencePair):
        return obj
    if not isinstance(obj, Mapping):
        raise InputError(
            f'expected a PreferencePair or a {{"prompt", "chosen", "rejected"}} mapping, got {type(obj).__name__}'
        )
    kind = record_kind(obj)
    if kind not in ("pair", "helpsteer3"):
        raise InputError(
            f'expected a pair ({{"prompt", "chosen", "rejected"}}), got {KIND_NAMES[kind]} with keys {sorted(obj)}'
        )
    return parse_pair(obj)
