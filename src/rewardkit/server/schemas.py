"""Request and response bodies of the reward server (pydantic, validated declaratively).

The native routes (``/v1/rewards``, ``/v1/rewards/compare``) reject unknown fields so that a typo
fails loudly; the compatibility routes (OpenRLHF ``/get_reward``, vLLM ``/classify`` and
``/pooling``) accept and ignore the extra fields those clients send.
"""

from __future__ import annotations

import secrets
import time
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from rewardkit.data.conversation import Role

NonEmptyStr = Annotated[str, Field(min_length=1)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore")


class ChatMessage(_Strict):
    """One turn: ``role`` is system, user or assistant; ``content`` is non-empty text."""

    role: Role
    content: NonEmptyStr


class Usage(BaseModel):
    tokens: int


class RewardsRequest(_Strict):
    """``POST /v1/rewards``: conversations, each ending with the assistant turn being judged."""

    model: str | None = None
    conversations: list[list[ChatMessage]] = Field(min_length=1)


class RewardsResponse(BaseModel):
    rewards: list[float]
    truncated: list[bool]
    num_tokens: list[int]
    usage: Usage
    model: str
    spec: dict[str, Any]


class CompareRequest(_Strict):
    """``POST /v1/rewards/compare``: K responses to one context."""

    model: str | None = None
    context: list[ChatMessage] = Field(min_length=1)
    responses: list[NonEmptyStr] = Field(min_length=1)


class CompareResponse(BaseModel):
    rewards: list[float]
    centered_rewards: list[float] = Field(description="rewards minus their mean (within this prompt)")
    win_prob: list[list[float]] = Field(description="win_prob[i][j] = P(response i beats j) = σ(r_i − r_j)")
    truncated: list[bool]
    num_tokens: list[int]
    usage: Usage
    model: str
    spec: dict[str, Any]


class GetRewardRequest(_Lenient):
    """OpenRLHF ``/get_reward``: ``query`` holds already-templated texts (prompt + response);
    ``prompts`` and ``labels`` are accepted for compatibility and not used by a reward model."""

    query: list[NonEmptyStr] = Field(min_length=1)
    prompts: list[Any] | None = None
    labels: list[Any] | None = None


class GetRewardResponse(BaseModel):
    rewards: list[float]
    scores: list[float]
    extra_logs: dict[str, list[float]]


# vLLM compatibility ----------------------------------------------------------------------------


class TextPart(_Lenient):
    type: Literal["text"]
    text: str


class VllmMessage(_Lenient):
    """An OpenAI chat message: ``content`` is a string or a list of text parts."""

    role: Role
    content: str | list[TextPart]

    def text(self) -> str:
        # vLLM's "string" content format joins text parts with newlines.
        return self.content if isinstance(self.content, str) else "\n".join(p.text for p in self.content)


class VllmRequest(_Lenient):
    """vLLM ``/classify`` and ``/pooling``: either ``input`` (text, already templated) or chat
    ``messages`` (rendered with the model's chat template).

    ``use_activation``: ``true`` returns σ(reward); ``false`` or absent returns the raw reward
    (vLLM applies the activation by default; a reward model's contract is the raw logit).
    """

    model: str | None = None
    input: NonEmptyStr | list[NonEmptyStr] | None = None
    messages: list[VllmMessage] | None = None
    use_activation: bool | None = None

    @model_validator(mode="after")
    def _one_form(self) -> VllmRequest:
        if (self.input is None) == (self.messages is None):
            raise ValueError("send exactly one of 'input' (text) or 'messages' (chat)")
        if isinstance(self.input, list) and not self.input:
            raise ValueError("'input' is an empty list")
        return self

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
