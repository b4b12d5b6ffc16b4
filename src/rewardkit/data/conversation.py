"""Conversations, preference pairs and response groups, validated on construction.

A reward is defined for a conversation whose last message is the assistant response being judged
(the model card's contract); everything that reaches a model passes through these types.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from rewardkit.errors import InputError, InputErrors

Role = Literal["system", "user", "assistant"]
ROLES: tuple[str, ...] = get_args(Role)


@dataclass(frozen=True, kw_only=True)
class Message:
    """One chat turn."""

    role: Role
    content: str

    def to_dict(self) -> dict[str, str]:
        return {"role": self.role, "content": self.content}


def _text_part(obj: Any, path: str) -> str:
    if not isinstance(obj, Mapping):
        raise InputError(
            f'expected a text part {{"type": "text", "text": ...}}, got {type(obj).__name__}', field=path
        )
    if obj.get("type") != "text":
        raise InputError(f"only text parts can be scored, got type {obj.get('type')!r}", field=f"{path}.type")
    text = obj.get("text")
    if not isinstance(text, str):
        raise InputError(f"text must be a string, got {type(text).__name__}", field=f"{path}.text")
    return text


def content_text(obj: Any, path: str) -> str:
    """A message's content as text: a string, or an OpenAI list of content parts
    (``[{"type": "text", "text": ...}, ...]``) joined with newlines, as vLLM's chat scoring does.

    Raises:
        InputError: naming ``path`` (or the part), for every part that is not a text part.
    """
    if isinstance(obj, str):
        return obj
    if not isinstance(obj, Sequence) or isinstance(obj, bytes):
        raise InputError(
            f"content must be a string or a list of text parts, got {type(obj).__name__}", field=path
        )
    if not obj:
        raise InputError("content is an empty list of parts", field=path)
    found = InputErrors()
    texts = [found.check(_text_part, part, f"{path}[{j}]") for j, part in enumerate(obj)]
    found.raise_if_any()
    return "\n".join(t for t in texts if t is not None)


def _role(obj: Any, path: str) -> Role:
    if obj not in ROLES:
        raise InputError(f"role must be one of {', '.join(ROLES)}, got {obj!r}", field=path)
    return obj


def _content(obj: Any, path: str) -> str:
    text = content_text(obj, path)
    if not text.strip():
        raise InputError("content is empty", field=path)
    return text


def parse_message(obj: Any, path: str) -> Message:
    """Validates one ``{"role", "content"}`` mapping; ``path`` names it in errors, which report
    the role and the content together."""
    if isinstance(obj, Message):  # built directly (not parsed): apply the same rules
        obj = obj.to_dict()
    if not isinstance(obj, Mapping):
        raise InputError(
            f"expected an object with 'role' and 'content', got {type(obj).__name__}", field=path
        )
    found = InputErrors()
    role = found.check(_role, obj.get("role"), f"{path}.role")
    content = found.check(_content, obj.get("content"), f"{path}.content")
    found.raise_if_any()
    return Message(role=role, content=content)  # type: ignore[arg-type]


def parse_messages(obj: Any, path: str) -> tuple[Message, ...]:
    """Validates a list of messages (no conversation-level rules); reports every bad message."""
    if not isinstance(obj, Sequence) or isinstance(obj, str | bytes):
        raise InputError(f"expected a list of messages, got {type(obj).__name__}", field=path)
    found = InputErrors()
    messages = [found.check(parse_message, m, f"{path}[{i}]") for i, m in enumerate(obj)]
    found.raise_if_any()
    return tuple(messages)  # type: ignore[arg-type]


def check_turns(
    messages: Sequence[Message], path: str, *, final: Role | None = "assistant", offset: int = 0
) -> None:
    """Conversation rules: non-empty, system only first, ends with ``final`` (if given); every
    broken rule is reported.

    ``offset`` is the index in ``messages`` where the list named ``path`` starts (a response
    checked after its prompt), so that error fields index into ``path`` itself.
    """
    if not messages:
        raise InputError("conversation has no messages", field=path)
    errors = [
        InputError("a system message is allowed only first", field=f"{path}[{i - offset}].role")
        for i, m in enumerate(messages)
        if m.role == "system" and i != 0
    ]
    if final is not None and messages[-1].role != final:
        errors.append(
            InputError(
                f"the last message must be the {final} turn being scored, got role {messages[-1].role!r}",
                field=f"{path}[{len(messages) - 1 - offset}].role",
            )
        )
    elif messages[0].role == "system" and len(messages) == 1:
        errors.append(InputError("conversation has only a system message", field=path))
    if errors:
        raise InputError.combine(errors)


@dataclass(frozen=True)
class Conversation:
    """A validated conversation ending with the assistant turn to score.

    Args:
        messages: the turns; system (optional, first), then user/assistant turns, last assistant.
        id: the record's identifier, carried to outputs.
        source_field: the record field holding the turn(s) scored (``messages``; ``response``;
            a pair's ``chosen``/``rejected`` or ``response1``/``response2``), named by errors about
            the conversation as a whole (its length).
    """

    messages: tuple[Message, ...]
    id: str | None = None
    source_field: str = field(default="messages", compare=False, kw_only=True)

    def __post_init__(self) -> None:
        object.__setattr__(self, "messages", parse_messages(self.messages, "messages"))
        check_turns(self.messages, "messages")

    @classmethod
    def of(cls, obj: Conversation | Sequence[Mapping[str, Any] | Message], id: str | None = None):
        """Accepts a Conversation or a list of ``{"role", "content"}`` dicts."""
        return obj if isinstance(obj, Conversation) else cls(tuple(obj), id=id)  # type: ignore[arg-type]

    @classmethod
    def from_prompt(cls, prompt: str, response: str, id: str | None = None) -> Conversation:
        return cls(
            (Message(role="user", content=prompt), Message(role="assistant", content=response)),
            id=id,
            source_field="response",
        )

    def to_dicts(self) -> list[dict[str, str]]:
        return [m.to_dict() for m in self.messages]

    def turn_field(self, index: int) -> str:
        """The record field of message ``index``, for errors: ``messages[i].content`` in a
        ``messages`` record, else the field holding the response (``chosen``, ``response2``, ...)."""
        if self.source_field == "messages":
            return f"messages[{index}].content"
        return self.source_field

    def __len__(self) -> int:
        return len(self.messages)


PairStyle = Literal["chosen_rejected", "helpsteer"]


@dataclass(frozen=True, kw_only=True)
class PreferencePair:
    """Two responses to one context, kept in the source's order.

    Args:
        context: turns before the responses (may be empty when the responses are whole
            conversations).
        first: the first response's turns (``chosen``, or HelpSteer's ``response1``).
        second: the second response's turns (``rejected``, or ``response2``).
        preference: HelpSteer's sign convention: < 0 means ``first`` is better, > 0 ``second``,
            0 a tie; its magnitude is the preference strength. Chosen/rejected pairs use -1.
        style: how outputs name the two rewards (``reward_chosen``/``reward_rejected`` or
            ``reward_1``/``reward_2``).
    """

    context: tuple[Message, ...]
    first: tuple[Message, ...]
    second: tuple[Message, ...]
    preference: float = -1.0
    style: PairStyle = "chosen_rejected"
    id: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict, compare=False)

    def conversations(self) -> tuple[Conversation, Conversation]:
        first, second = self.fields
        return (
            Conversation(self.context + self.first, id=self.id, source_field=first),
            Conversation(self.context + self.second, id=self.id, source_field=second),
        )

    @property
    def is_tie(self) -> bool:
        return self.preference == 0

    @property
    def strength(self) -> float:
        return abs(self.preference)

    @property
    def chosen(self) -> Conversation:
        a, b = self.conversations()
        return b if self.preference > 0 else a

    @property
    def rejected(self) -> Conversation:
        a, b = self.conversations()
        return a if self.preference > 0 else b

    @property
    def names(self) -> tuple[str, str]:
        """How outputs name the two rewards (``reward_<name>``)."""
        return ("chosen", "rejected") if self.style == "chosen_rejected" else ("1", "2")

    @property
    def fields(self) -> tuple[str, str]:
        """The record fields of the two responses, named in errors."""
        return ("chosen", "rejected") if self.style == "chosen_rejected" else ("response1", "response2")


@dataclass(frozen=True, kw_only=True)
class ResponseGroup:
    """K responses to one context (best-of-N samples, RL rollouts), kept in the source's order.

    Scored as one shared-prompt group: the context's tokens are computed once for all K.

    Args:
        context: the turns before each response (ends with a user turn).
        responses: each response's turns (usually one assistant message).
        conversational: whether the source gave the prompt or a response as a list of messages
            (TRL's "conversational" format) rather than as plain strings ("standard"); outputs
            built from the group (best response, preference pairs) use the same form.
        id: the record's identifier, carried to outputs.
    """

    context: tuple[Message, ...]
    responses: tuple[tuple[Message, ...], ...]
    conversational: bool = False
    id: str | None = None

    def conversations(self) -> tuple[Conversation, ...]:
        return tuple(Conversation(self.context + r, id=self.id) for r in self.responses)

    def __len__(self) -> int:
        return len(self.responses)
