"""Routes in the shapes RLHF trainers already speak: OpenRLHF ``/get_reward`` and vLLM
``/classify`` and ``/pooling`` (what verl's reward loop posts). They score through the same
batcher as ``/v1/rewards``.
"""

from __future__ import annotations

from collections.abc import Sequence

from fastapi import FastAPI, Request

from rewardkit.api import Scored, sigmoid
from rewardkit.errors import InputError
from rewardkit.server.rendered import Rendered, RenderedConversations
from rewardkit.server.schemas import (
    ClassificationData,
    ClassificationResponse,
    GetRewardRequest,
    GetRewardResponse,
    PoolingData,
    PoolingResponse,
    VllmRequest,
    VllmUsage,
)
from rewardkit.server.service import RewardService, invalid, item_at, items_at, json_body


def _reward_label(service: RewardService) -> str | None:
    if service.rm.spec.head != "sequence-classification":
        return None
    labels = getattr(service.rm.model.config, "id2label", None) or {}
    return labels.get(service.rm.spec.output_index)


async def _score_vllm(service: RewardService, request: Request) -> tuple[list[float], int]:
    """Rewards (σ-activated if asked) and prompt tokens of a vLLM-style request."""
    req = await service.parse(request, VllmRequest)
    service.check_model(req.model)
    texts = req.texts()
    scored: Sequence[Scored]
    if texts is not None:
        locate = item_at("input", indexed=isinstance(req.input, list))
        scored = await service.score_texts(texts, locate)
    else:
        assert req.messages is not None
        scored = await service.score_conversations([req.messages], items_at("messages"))
    values = [x.reward for x in scored]
    if req.sigmoid:
        values = [sigmoid(v) for v in values]
    return values, sum(x.num_tokens for x in scored)


def add_compat_routes(app: FastAPI, service: RewardService) -> None:
    """Registers ``/get_reward``, ``/classify`` and ``/pooling`` on ``app``."""
    rendered = RenderedConversations(service.rm.chat.render)

    @app.post("/get_reward", openapi_extra=json_body(GetRewardRequest))
    async def get_reward(request: Request) -> GetRewardResponse:
        """OpenRLHF remote reward model. Each ``query`` must be a conversation rendered with the
        model's chat template; one that lacks the end the template writes after the last turn
        (OpenRLHF's ``decode(prompt + response)``) is completed, and ``spec.completed`` says so."""
        req = await service.parse(request, GetRewardRequest)

        def read_back() -> list[Rendered]:
            found = []
            for i, query in enumerate(req.query):
                try:
                    found.append(rendered.parse(query))
                except InputError as e:
                    raise invalid(("body", "query", i), e.message) from None
            return found

        found = await service.off_loop(sum(len(q) for q in req.query), read_back)
        conversations = [f.conversation for f in found]
        scored = await service.score_conversations(conversations, item_at("query"))
        completions = {i: f.appended for i, f in enumerate(found) if f.appended}
        rewards = [x.reward for x in scored]
        return GetRewardResponse(
            rewards=rewards,
            scores=rewards,
            extra_logs={
                "num_tokens": [float(x.num_tokens) for x in scored],
                "truncated": [float(x.truncated_tokens > 0) for x in scored],
                "completed": [float(i in completions) for i in range(len(scored))],
            },
            spec={
                **service.spec,
                "completed": [{"query": i, "appended": a} for i, a in sorted(completions.items())],
            },
        )

    @app.post("/classify", openapi_extra=json_body(VllmRequest))
    async def classify(request: Request) -> ClassificationResponse:
        """vLLM classify: ``probs`` holds the one head output (raw unless ``use_activation``)."""
        values, tokens = await _score_vllm(service, request)
        label = _reward_label(service)
        return ClassificationResponse(
            model=service.model_name,
            data=[
                ClassificationData(index=i, label=label, probs=[v], num_classes=1)
                for i, v in enumerate(values)
            ],
            usage=VllmUsage(prompt_tokens=tokens, total_tokens=tokens),
        )

    @app.post("/pooling", openapi_extra=json_body(VllmRequest))
    async def pooling(request: Request) -> PoolingResponse:
        """vLLM pooling: ``data`` holds the one head output (raw unless ``use_activation``)."""
        values, tokens = await _score_vllm(service, request)
        return PoolingResponse(
            model=service.model_name,
            data=[PoolingData(index=i, data=[v]) for i, v in enumerate(values)],
            usage=VllmUsage(prompt_tokens=tokens, total_tokens=tokens),
        )
