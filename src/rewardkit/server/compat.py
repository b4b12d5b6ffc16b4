"""Routes in the shapes RLHF trainers already speak: OpenRLHF ``/get_reward`` and vLLM
``/classify`` and ``/pooling``. They score through the same batcher as ``/v1/rewards``.
"""

from __future__ import annotations

from collections.abc import Sequence

from fastapi import FastAPI

from rewardkit.api import Scored, sigmoid
from rewardkit.server import schemas as s
from rewardkit.server.service import RewardService, conversations_locator, single_locator


def _reward_label(service: RewardService) -> str | None:
    if service.rm.spec.head != "sequence-classification":
        return None
    labels = getattr(service.rm.model.config, "id2label", None) or {}
    return labels.get(service.rm.spec.output_index)


async def _score_vllm(service: RewardService, req: s.VllmRequest) -> tuple[list[float], int]:
    """Rewards (σ-activated if ``use_activation``) and prompt tokens of a vLLM-style request."""
    service.check_model(req.model)
    texts = req.texts()
    scored: Sequence[Scored]
    if texts is not None:
        one = isinstance(req.input, str)
        locate = single_locator(("body", "input")) if one else conversations_locator(("body", "input"))
        scored = await service.score_texts(texts, locate)
    else:
        assert req.messages is not None
        raw = [[{"role": m.role, "content": m.text()} for m in req.messages]]
        locate = single_locator(("body", "messages"))
        scored = await service.score_conversations(service.parse_conversations(raw, locate), locate)
    values = [x.reward for x in scored]
    if req.use_activation:
        values = [sigmoid(v) for v in values]
    return values, sum(x.num_tokens for x in scored)


def add_compat_routes(app: FastAPI, service: RewardService) -> None:
    """Registers ``/get_reward``, ``/classify`` and ``/pooling`` on ``app``."""

    @app.post("/get_reward")
    async def get_reward(req: s.GetRewardRequest) -> s.GetRewardResponse:
        """OpenRLHF remote reward model: ``query`` texts are already templated (prompt + response)
        and are tokenized as-is, with no special tokens added."""
        scored = await service.score_texts(req.query, conversations_locator(("body", "query")))
        rewards = [x.reward for x in scored]
        return s.GetRewardResponse(
            rewards=rewards,
            scores=rewards,
            extra_logs={
                "num_tokens": [float(x.num_tokens) for x in scored],
                "truncated": [float(x.truncated_tokens > 0) for x in scored],
            },
        )

    @app.post("/classify")
    async def classify(req: s.VllmRequest) -> s.ClassificationResponse:
        """vLLM classify: ``probs`` holds the one head output (raw unless ``use_activation``)."""
        values, tokens = await _score_vllm(service, req)
        label = _reward_label(service)
        return s.ClassificationResponse(
            model=service.model_name,
            data=[
                s.ClassificationData(index=i, label=label, probs=[v], num_classes=1)
                for i, v in enumerate(values)
            ],
            usage=s.VllmUsage(prompt_tokens=tokens, total_tokens=tokens),
        )

    @app.post("/pooling")
    async def pooling(req: s.VllmRequest) -> s.PoolingResponse:
        """vLLM pooling: ``data`` holds the one head output (raw unless ``use_activation``)."""
        values, tokens = await _score_vllm(service, req)
        return s.PoolingResponse(
            model=service.model_name,
            data=[s.PoolingData(index=i, data=[v]) for i, v in enumerate(values)],
            usage=s.VllmUsage(prompt_tokens=tokens, total_tokens=tokens),
        )
