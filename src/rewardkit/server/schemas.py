"""Request and response bodies of the reward server (pydantic, validated declaratively).

Conversations are validated by rewardkit's own rules (`Conversation`: roles, non-empty content,
a system message only first, the last turn the assistant's) *inside* pydantic's validation, so a
validated request already holds the `Conversation` objects that tokenization takes: each message
is validated once, and its errors keep their place in the body
(``["body", "conversations", 3, 1, "role"]``).

Per-request limits (`rewardkit.server.limits`) are checked on the raw JSON before anything is
built from it.

The native routes (``/v1/rewards``, ``/v1/rewards/compare``, ``/v1/rewards/groups``) reject
unknown fields so that a typo fails loudly; the compatibility routes (OpenRLHF ``/get_reward``,
vLLM ``/classify`` and ``/pooling``) accept and ignore the extra fields those clients send.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, Self

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    PrivateAttr,
    ValidationInfo,
    model_validator,
)
from pydantic_core import PydanticCustomError, ValidationError, core_schema

from rewardkit.data.conversation import Conversation, Role
from rewardkit.errors import InputError
from rewardkit.server.limits import (
    groups_within_limits,
    limits_of,
    texts_within_limits,
    within_group,
    within_limits,
    within_one_conversation,
)

NonEmptyStr = Annotated[str, Field(min_length=1)]


# Conversations ------------------------------------------------------------------------------------


class ChatMessage(BaseModel):
    """One turn: ``role`` is system, user or assistant; ``content`` is non-empty text (the
    documented shape; messages are validated by `Conversation`'s rules)."""

    model_config = ConfigDict(extra="forbid")

    role: Role
    content: NonEmptyStr


def invalid_at(loc: tuple[str | int, ...], message: str, title: str = "request") -> ValidationError:
    """A pydantic validation error at ``loc`` (relative to what is being validated)."""
    # The message goes in through the context: a template would read any braces in it.
    error = PydanticCustomError("value_error", "{message}", {"message": message})
    return ValidationError.from_exception_data(title, [{"type": error, "loc": loc, "input": None}])


def field_loc(field: str | None) -> tuple[str | int, ...]:
    """``"messages[2].role"`` → ``(2, "role")``: an `InputError` field within one conversation."""
    path: list[str | int] = []
    for part in (field or "").replace("]", "").replace("[", ".").split("."):
        if part:
            path.append(int(part) if part.isdigit() else part)
    return tuple(path[1:] if path[:1] == ["messages"] else path)


def _strict_messages(value: Any) -> Any:
    """Native routes: a message is exactly ``{"role", "content"}`` (typos fail loudly)."""
    if isinstance(value, list):
        for j, m in enumerate(value):
            if isinstance(m, dict) and not m.keys() <= {"role", "content"}:
                extra = sorted(set(m) - {"role", "content"})[0]
                raise invalid_at((j, extra), "Extra inputs are not permitted")
    return value


def _vllm_messages(value: Any) -> Any:
    """vLLM routes: content may be a list of text parts, joined with newlines as vLLM's
    ``string`` content format does; other fields of a message are ignored."""
    if not isinstance(value, list):
        return value
    out = []
    for j, m in enumerate(value):
        content = m.get("content") if isinstance(m, dict) else None
        if isinstance(content, list):
            texts = []
            for k, part in enumerate(content):
                if (
                    not isinstance(part, dict)
                    or part.get("type") != "text"
                    or not isinstance(part.get("text"), str)
                ):
                    raise invalid_at((j, "content", k), 'expected a text part {"type": "text", "text": ...}')
                texts.append(part["text"])
            content = "\n".join(texts)
        out.append({"role": m.get("role"), "content": content} if isinstance(m, dict) else m)
    return out


def _to_conversation(value: Any) -> Conversation:
    try:
        return Conversation.of(value)
    except InputError as e:
        raise invalid_at(field_loc(e.field), e.message, "Conversation") from None


@dataclass(frozen=True)
class _Messages:
    """A JSON list of messages, documented as a list of `ChatMessage` and validated by ``convert``
    (into a `Conversation`, or checked and kept as it is)."""

    convert: Callable[[list[Any]], Any]

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        convert = self.convert

        def validate(value: Any) -> Any:
            if not isinstance(value, list):
                raise PydanticCustomError("list_type", "Input should be a valid list")
            return convert(value)

        documented = handler.generate_schema(list[ChatMessage])
        return core_schema.no_info_plain_validator_function(validate, json_schema_input_schema=documented)


ConversationIn = Annotated[Conversation, _Messages(lambda v: _to_conversation(_strict_messages(v)))]
VllmConversationIn = Annotated[Conversation, _Messages(lambda v: _to_conversation(_vllm_messages(v)))]
MessagesIn = Annotated[list[dict[str, Any]], _Messages(_strict_messages)]


# Native routes ----------------------------------------------------------------------------------


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore")


class Usage(BaseModel):
    tokens: int


class RewardsRequest(_Strict):
    """``POST /v1/rewards``: conversations, each ending with the assistant turn being judged."""

    model: str | None = None
    conversations: Annotated[list[ConversationIn], BeforeValidator(within_limits), Field(min_length=1)]


class RewardsResponse(BaseModel):
    rewards: list[float]
    truncated: list[bool]
    num_tokens: list[int]
    usage: Usage
    model: str
    spec: dict[str, Any]


class _Responses(_Strict):
    """K responses to one context: ``context + [assistant: response_i]`` for each, validated by
    the same rules as ``/v1/rewards`` (an error is located in ``context`` or ``responses``)."""

    context: MessagesIn
    responses: Annotated[list[NonEmptyStr], Field(min_length=1)]
    _conversations: list[Conversation] = PrivateAttr(default_factory=list)

    @model_validator(mode="after")
    def _build(self) -> Self:
        if not self.context:
            raise invalid_at(("context",), "List should have at least 1 item after validation, not 0")
        n = len(self.context)
        for i, response in enumerate(self.responses):
            try:
                conv = Conversation.of([*self.context, {"role": "assistant", "content": response}])
            except InputError as e:
                loc = field_loc(e.field)
                if loc and isinstance(loc[0], int) and loc[0] < n:
                    raise invalid_at(("context", *loc), e.message) from None
                raise invalid_at(("responses", i), e.message) from None
            self._conversations.append(conv)
        return self

    @property
    def conversations(self) -> list[Conversation]:
        return self._conversations


class CompareRequest(_Responses):
    """``POST /v1/rewards/compare``: K responses to one context, scored as one group."""

    model: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _check_limits(cls, data: Any, info: ValidationInfo) -> Any:
        limits = limits_of(info)
        if limits is None or not isinstance(data, dict):
            return data
        if isinstance(responses := data.get("responses"), list):
            limits.check_items(len(responses), "responses")
        within_group(limits, "context + response", data.get("context"), responses)
        return data


class GroupRewards(BaseModel):
    """The rewards of one group's responses, in order."""

    rewards: list[float]
    centered_rewards: list[float] = Field(description="rewards minus their mean (within this prompt)")
    truncated: list[bool]
    num_tokens: list[int]


class CompareResponse(GroupRewards):
    win_prob: list[list[float]] = Field(description="win_prob[i][j] = P(response i beats j) = σ(r_i − r_j)")
    usage: Usage
    model: str
    spec: dict[str, Any]


class ResponseGroupIn(_Responses):
    """One group of ``POST /v1/rewards/groups``: K responses to one context."""


class GroupsRequest(_Strict):
    """``POST /v1/rewards/groups``: several groups of responses to their context, each scored as
    ``/v1/rewards/compare`` scores one (errors are located in ``groups[g]``). The request's limits
    (``--max-conversations`` counts responses) apply to all of its groups together."""

    model: str | None = None
    groups: Annotated[list[ResponseGroupIn], BeforeValidator(groups_within_limits), Field(min_length=1)]


class GroupsResponse(BaseModel):
    groups: list[GroupRewards]
    usage: Usage = Field(description="tokens of all groups")
    model: str
    spec: dict[str, Any]


# OpenRLHF compatibility -------------------------------------------------------------------------


class GetRewardRequest(_Lenient):
    """OpenRLHF ``/get_reward``: ``query`` holds conversations rendered with the model's chat
    template (prompt + response); ``prompts`` and ``labels`` are accepted and not used."""

    query: Annotated[list[NonEmptyStr], BeforeValidator(texts_within_limits), Field(min_length=1)]
    prompts: list[Any] | None = None
    labels: list[Any] | None = None


class GetRewardResponse(BaseModel):
    rewards: list[float]
    scores: list[float]
    extra_logs: dict[str, list[float]] = Field(description="per-query numbers OpenRLHF logs")
    spec: dict[str, Any] = Field(description="the scoring spec; `completed` lists the queries completed")


# vLLM compatibility -----------------------------------------------------------------------------


class VllmRequest(_Lenient):
    """vLLM ``/classify`` and ``/pooling``: either ``input`` (text, already templated) or chat
    ``messages`` (rendered with the model's chat template).

    ``use_activation`` (``activation`` in vLLM before 0.11.2, still sent by verl): ``true``
    returns σ(reward); ``false`` or absent returns the raw reward (vLLM applies the activation by
    default; a reward model's contract is the raw logit).
    """

    model: str | None = None
    input: Annotated[NonEmptyStr | list[NonEmptyStr] | None, BeforeValidator(texts_within_limits)] = None
    messages: Annotated[VllmConversationIn | None, BeforeValidator(within_one_conversation)] = None
    use_activation: bool | None = None
    activation: bool | None = None

    @model_validator(mode="after")
    def _one_form(self) -> VllmRequest:
        if (self.input is None) == (self.messages is None):
            raise ValueError("send exactly one of 'input' (text) or 'messages' (chat)")
        if isinstance(self.input, list) and not self.input:
            raise ValueError("'input' is an empty list")
        if None not in (self.use_activation, self.activation) and self.use_activation != self.activation:
            raise ValueError("'use_activation' and 'activation' disagree; send one of them")
        return self

    @property
    def sigmoid(self) -> bool:
        return bool(self.use_activation if self.use_activation is not None else self.activation)

    def texts(self) -> list[str] | None:
        if self.input is None:
            return None
        return [self.input] if isinstance(self.input, str) else list(self.input)


class VllmUsage(BaseModel):
    prompt_tokens: int
    total_tokens: int
    completion_tokens: int = 0
    prompt_tokens_details: None = None


def _vllm_id(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(16)}"


class ClassificationData(BaseModel):
    index: int
    label: str | None
    probs: list[float]
    num_classes: int


class ClassificationResponse(BaseModel):
    id: str = Field(default_factory=lambda: _vllm_id("classify"))
    object: str = "list"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    data: list[ClassificationData]
    usage: VllmUsage


class PoolingData(BaseModel):
    index: int
    object: str = "pooling"
    data: list[float]


class PoolingResponse(BaseModel):
    id: str = Field(default_factory=lambda: _vllm_id("pool"))
    object: str = "list"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    data: list[PoolingData]
    usage: VllmUsage


class ModelCard(BaseModel):
    id: str
    object: str = "model"
    created: int
    owned_by: str = "rewardkit"
    max_model_len: int


class ModelList(BaseModel):
    object: str = "list"
    data: list[ModelCard]
