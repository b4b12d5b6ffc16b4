"""Conversations, preference pairs and response groups, validated on construction.

A reward is defined for a conversation whose last message is the assistant response being judged
(the model card's contract); everything that reaches a model passes through these types.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from rewardkit.errors import InputError

Role = Literal["system", "user", "assistant"]
ROLES: tuple[str, ...] = get_args(Role)


@dataclass(frozen=True, kw_only=True)
class Message:
    """One chat turn."""

    role: Role
    content: str

    def to_dict(self) -> dict[str, str]:
        return {"role": self.role, "content": self.content}


def parse_message(obj: Any, path: str) -> Message:
    """Validates one ``{"role", "content"}`` mapping; ``path`` names it in errors."""
    if isinstance(obj, Message):  # built directly (not parsed): apply the same rules
        obj = obj.to_dict()
    if not isinstance(obj, Mapping):
        raise InputError(
            f"expected an object with 'role' and 'content', got {type(obj).__name__}", field=path
        )
    role, content = obj.get("role"), obj.get("content")
    if role not in ROLES:
        raise InputError(f"role must be one of {', '.join(ROLES)}, got {role!r}", field=f"{path}.role")
    if not isinstance(content, str):
        raise InputError(f"content must be a string, got {type(content).__name__}", field=f"{path}.content")
    if not content.strip():
        raise InputError("content is empty", field=f"{path}.content")
    return Message(role=role, content=content)


def parse_messages(obj: Any, path: str) -> tuple[Message, ...]:
    """Validates a list of messages (no conversation-level rules)."""
    if not isinstance(obj, Sequence) or isinstance(obj, str | bytes):
        raise InputError(f"expected a list of messages, got {type(obj).__name__}", field=path)
    return tuple(parse_message(m, f"{path}[{i}]") for i, m in enumerate(obj))


def check_turns(
    messages: Sequence[Message], path: str, *, final: Role | None = "assistant", offset: int = 0
) -> None:
    """Conversation rules: non-empty, system only first, ends with ``final`` (if given).

    ``offset`` is the index in ``messages`` where the list named ``path`` starts (a response
    checked after its prompt), so that error fields index into ``path`` itself.
    """
    if not messages:
        raise InputError("conversation has no messages", field=path)
    for i, m in enumerate(messages):
        if m.role == "system" and i != 0:
            raise InputError("a system message is allowed only first", field=f"{path}[{i - offset}].role")
    if final is not None and messages[-1].role != final:
        raise InputError(
            f"the last message must be the {final} turn being scored, got role {messages[-1].role!r}",
            field=f"{path}[{len(messages) - 1 - offset}].role",
        )
    if messages[0].role == "system" and len(messages) == 1:
        raise InputError("conversation has only a system message", field=path)


@dataclass(frozen=True)
class Conversation:
    """A validated conversation ending with the assistant turn to score.

    Args:
        messages: the turns; system (optional, first), then user/assistant turns, last assistant.
        id: the record's identifier, carried to outputs.
    """

    messages: tuple[Message, ...]
    id: str | None = None

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
        )

    def to_dicts(self) -> list[dict[str, str]]:
        return [m.to_dict() for m in self.messages]

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
        return (
            Conversation(self.context + self.first, id=self.id),
            Conversation(self.context + self.second, id=self.id),
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
        return ("chosen", "rejected") if self.style == "chosen_rejected" else ("1", "2")


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
