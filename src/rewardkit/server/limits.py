"""Per-request limits checked on the raw JSON of a request, before anything is built from it:
the number of conversations (or texts), messages per conversation, characters of each. They run as
pydantic "before" validators with the `Limits` in the validation context (``{LIMITS: limits}``)
and raise `RequestTooLarge` (HTTP 413), which pydantic lets through unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationInfo

LIMITS = "limits"  # key of `Limits` in the validation context


class RequestTooLarge(Exception):
    """A per-request limit was exceeded (HTTP 413); the message names the server option."""


@dataclass(frozen=True, kw_only=True)
class Limits:
    """What one request may hold, checked before it costs anything (see `ServerConfig`)."""

    max_items: int  # conversations (or texts) per request: --max-conversations
    max_messages: int  # messages per conversation: --max-messages
    max_chars: int  # characters of one conversation or text: --max-conversation-chars

    def check_items(self, n: int, name: str) -> None:
        if n > self.max_items:
            raise RequestTooLarge(
                f"request has {n} {name}, over the limit of {self.max_items} "
                "(server option --max-conversations); split it"
            )

    def check_conversation(self, where: str, messages: int, chars: int) -> None:
        if messages > self.max_messages:
            raise RequestTooLarge(
                f"{where} has {messages} messages, over the limit of {self.max_messages} "
                "(server option --max-messages)"
            )
        self.check_chars(where, chars)

    def check_chars(self, where: str, chars: int) -> None:
        if chars > self.max_chars:
            raise RequestTooLarge(
                f"{where} has {chars} characters, over the limit of {self.max_chars} "
                "(server option --max-conversation-chars)"
            )


def limits_of(info: ValidationInfo) -> Limits | None:
    return info.context.get(LIMITS) if isinstance(info.context, dict) else None


def _text_chars(content: Any) -> int:
    """Characters of a message's content (a string, or vLLM's text parts); 0 for anything else
    (validation reports it)."""
    if isinstance(content, str):
        return len(content)
    if isinstance(content, list):
        return sum(len(p["text"]) for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
    return 0


def message_chars(messages: Sequence[Any]) -> int:
    return sum(_text_chars(m.get("content")) for m in messages if isinstance(m, dict))


def within_limits(value: Any, info: ValidationInfo) -> Any:
    """Before validation of a list of conversations: their number, and each one's size."""
    limits = limits_of(info)
    if limits is None or not isinstance(value, list):
        return value
    limits.check_items(len(value), "conversations")
    for i, messages in enumerate(value):
        if isinstance(messages, list):
            limits.check_conversation(f"conversation {i}", len(messages), message_chars(messages))
    return value


def within_group(limits: Limits, where: str, context: Any, responses: Any) -> None:
    """K responses to one context: its largest conversation is the context with the longest response."""
    longest = 0
    if isinstance(responses, list):
        longest = max((len(r) for r in responses if isinstance(r, str)), default=0)
    if isinstance(context, list):
        limits.check_conversation(where, len(context) + 1, message_chars(context) + longest)


def groups_within_limits(value: Any, info: ValidationInfo) -> Any:
    """Before validation of a list of ``{"context", "responses"}`` groups: the groups and the
    responses of the whole request, and each group's largest conversation."""
    limits = limits_of(info)
    if limits is None or not isinstance(value, list):
        return value
    groups = [g if isinstance(g, dict) else {} for g in value]
    limits.check_items(len(groups), "groups")
    limits.check_items(sum(len(r) for g in groups if isinstance(r := g.get("responses"), list)), "responses")
    for i, g in enumerate(groups):
        within_group(limits, f"group {i} (context + response)", g.get("context"), g.get("responses"))
    return value


def within_one_conversation(value: Any, info: ValidationInfo) -> Any:
    limits = limits_of(info)
    if limits is not None and isinstance(value, list):
        limits.check_conversation("the conversation", len(value), message_chars(value))
    return value


def texts_within_limits(value: Any, info: ValidationInfo) -> Any:
    """Before validation of one text or a list of texts: their number, and each one's length."""
    limits = limits_of(info)
    if limits is None:
        return value
    if isinstance(value, str):
        limits.check_chars("the text", len(value))
    elif isinstance(value, list):
        limits.check_items(len(value), "texts")
        for i, text in enumerate(value):
            if isinstance(text, str):
                limits.check_chars(f"text {i}", len(text))
    return value
