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
from rewardkit.errors import InputError

RecordKind = Literal["conversation", "pair", "group"]
Record = Conversation | PreferencePair | ResponseGroup

SHAPES = (
    '{"messages": [...]}, {"prompt", "response"}, {"prompt", "chosen", "rejected"} or HelpSteer3 '
    '{"context", "response1", "response2", "overall_preference"} or {"prompt", "responses"}'
)


def record_kind(obj: Mapping[str, Any]) -> RecordKind:
    """Which shape a raw record has; raises InputError naming the keys it found."""
    if "responses" in obj:
        return "group"
    if "messages" in obj or "response" in obj:
        return "conversation"
    if ("chosen" in obj and "rejected" in obj) or ("response1" in obj and "response2" in obj):
        return "pair"
    raise InputError(f"unrecognised record with keys {sorted(obj)}; expected one of {SHAPES}")


def _record_id(obj: Mapping[str, Any]) -> str | None:
    rid = obj.get("id")
    if rid is None:
        return None
    if isinstance(rid, bool) or not isinstance(rid, str | int):
        raise InputError(f"id must be a string or integer, got {type(rid).__name__}", field="id")
    return str(rid)


def _prompt(obj: Any, path: str) -> tuple[Message, ...]:
    """A prompt given as a string (one user turn) or as a list of messages."""
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
    rid = _record_id(obj)
    if "messages" in obj:
        messages = parse_messages(obj["messages"], "messages")
        check_turns(messages, "messages")
        return Conversation(messages, id=rid)
    if "prompt" not in obj:
        raise InputError("missing; a 'response' record needs a 'prompt'", field="prompt")
    prompt = _prompt(obj["prompt"], "prompt")
    return Conversation(_joined(prompt, _response(obj["response"], "response"), "response"), id=rid)


def _preference(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InputError(
            f"expected a number from -3 to 3, got {type(value).__name__}",
            field="overall_preference",
        )
    if not -3 <= value <= 3:
        raise InputError(f"expected a number from -3 to 3, got {value}", field="overall_preference")
    return float(value)


def parse_pair(obj: Mapping[str, Any]) -> PreferencePair:
    rid = _record_id(obj)
    if "response1" in obj and "response2" in obj:
        if "context" not in obj:
            raise InputError("missing; HelpSteer3 records need 'context'", field="context")
        context = _prompt(obj["context"], "context")
        if "overall_preference" not in obj:
            raise InputError("missing; expected a number from -3 to 3", field="overall_preference")
        first, second = _response(obj["response1"], "response1"), _response(obj["response2"], "response2")
        names, pref, style = ("response1", "response2"), _preference(obj["overall_preference"]), "helpsteer"
        extra = {k: v for k, v in obj.items() if k in ("domain", "language")}
    else:
        context = _prompt(obj["prompt"], "prompt") if obj.get("prompt") is not None else ()
        first, second = _response(obj["chosen"], "chosen"), _response(obj["rejected"], "rejected")
        names, pref, style, extra = ("chosen", "rejected"), -1.0, "chosen_rejected", {}
    for name, resp in zip(names, (first, second), strict=True):
        _joined(context, resp, name)
    return PreferencePair(
        context=context, first=first, second=second, preference=pref, style=style, id=rid, extra=extra
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


_PARSERS = {"conversation": parse_conversation, "pair": parse_pair, "group": parse_group}


def parse_record(obj: Any) -> Record:
    """Turns one raw record (a decoded JSON object) into a Conversation, PreferencePair or
    ResponseGroup."""
    if not isinstance(obj, Mapping):
        raise InputError(f"expected a JSON object, got {type(obj).__name__}")
    return _PARSERS[record_kind(obj)](obj)
