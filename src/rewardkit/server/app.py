"""The FastAPI app: native reward routes, health/readiness, models, metrics, and the `Gate` in
front of every route; errors as bounded JSON bodies.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel

from rewardkit import __version__
from rewardkit.api import RewardModel, Scored, sigmoid
from rewardkit.nested import flatten
from rewardkit.server.batcher import BatchFailed, Overloaded, ShuttingDown
from rewardkit.server.compat import add_compat_routes
from rewardkit.server.gate import Gate, InFlight
from rewardkit.server.limits import RequestTooLarge
from rewardkit.server.metrics import ServerMetrics
from rewardkit.server.schemas import (
    CompareRequest,
    CompareResponse,
    GetRewardRequest,
    GroupRewards,
    GroupsRequest,
    GroupsResponse,
    ModelCard,
    ModelList,
    RewardsRequest,
    RewardsResponse,
    Usage,
    VllmRequest,
)
from rewardkit.server.service import (
    RewardService,
    ServerConfig,
    group_item_at,
    item_at,
    items_at,
    json_body,
)

log = logging.getLogger(__name__)

MAX_ERRORS = 10  # validation errors listed in a 422 (``error_count`` says how many there were)
MAX_MESSAGE = 500  # characters of one error message in a response


def _clip(text: str) -> str:
    return text if len(text) <= MAX_MESSAGE else text[:MAX_MESSAGE] + f"... ({len(text)} characters)"


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": _clip(message)}, status_code=status, headers=headers)


def validation_body(errors: Sequence[Any]) -> dict[str, Any]:
    """A 422 body: FastAPI's ``detail`` list, at most `MAX_ERRORS` entries of ``type``, ``loc``
    and ``msg`` (never the input), and ``error_count``."""
    shown = [
        {
            "type": e.get("type", "value_error"),
            "loc": list(e.get("loc", ())),
            "msg": _clip(str(e.get("msg", ""))),
        }
        for e in errors[:MAX_ERRORS]
    ]
    return {"detail": shown, "error_count": len(errors)}


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, e: RequestValidationError) -> JSONResponse:
        return JSONResponse(validation_body(e.errors()), status_code=422)

    @app.exception_handler(RequestTooLarge)
    async def _too_large(_: Request, e: RequestTooLarge) -> JSONResponse:
        return _error(413, str(e))

    @app.exception_handler(Overloaded)
    async def _overloaded(_: Request, e: Overloaded) -> JSONResponse:
        return _error(429, str(e), {"Retry-After": str(e.retry_after)})

    @app.exception_handler(ShuttingDown)
    async def _shutting_down(_: Request, e: ShuttingDown) -> JSONResponse:
        return _error(503, str(e), {"Retry-After": "1"})

    @app.exception_handler(BatchFailed)
    async def _batch_failed(_: Request, e: BatchFailed) -> JSONResponse:
        return _error(500, str(e))


def _document_bodies(app: FastAPI, models: Sequence[type[BaseModel]]) -> None:
    """Adds the request models of routes that parse their own bodies (`json_body`) to the
    OpenAPI document's ``components``."""
    plain = app.openapi

    def openapi() -> dict[str, Any]:
        first = app.openapi_schema is None
        doc = plain()  # built once, then cached by FastAPI
        if first:
            schemas = doc.setdefault("components", {}).setdefault("schemas", {})
            for model in models:
                schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
                schemas.update(schema.pop("$defs", {}))
                schemas[model.__name__] = schema
        return doc

    app.openapi = openapi  # type: ignore[method-assign]


def _columns(scored: Sequence[Scored]) -> dict[str, Any]:
    return {
        "rewards": [x.reward for x in scored],
        "truncated": [x.truncated_tokens > 0 for x in scored],
        "num_tokens": [x.num_tokens for x in scored],
    }


def _usage(scored: Sequence[Scored]) -> Usage:
    return Usage(tokens=sum(x.num_tokens for x in scored))


def _group_columns(scored: Sequence[Scored]) -> dict[str, Any]:
    """One prompt's responses: `_columns`, and the rewards centred within the prompt."""
    r = [x.reward for x in scored]
    mean = sum(r) / len(r)
    return {**_columns(scored), "centered_rewards": [x - mean for x in r]}


def create_app(rm: RewardModel, config: ServerConfig | None = None) -> FastAPI:
    """A server for ``rm``: every scoring route goes through one dynamic batcher.

    Args:
        rm: the loaded reward model (one engine; never called on the event loop).
        config: limits, API key, served names.

    ``app.state.service`` is the `RewardService`; ``app.state.in_flight`` the requests being
    handled (the runner answers them with 503 at the shutdown deadline).
    """
    config = config or ServerConfig()
    service = RewardService(rm, config, ServerMetrics())

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        service.start()
        log.info("serving %s (token budget %d)", service.model_name, rm.engine.token_budget)
        try:
            yield
        finally:
            # Runs after uvicorn has finished in-flight requests: drain what is left, stop the worker.
            await service.close()

    app = FastAPI(title="rewardkit reward server", version=__version__, lifespan=lifespan)
    app.state.service = service
    app.state.in_flight = InFlight()
    _install_error_handlers(app)

    @app.get("/health")
    async def health() -> dict[str, str]:
        """Alive (no API key needed)."""
        return {"status": "ok"}

    @app.get("/ready")
    async def ready() -> JSONResponse:
        """The model is loaded and the batcher accepts work (503 while draining)."""
        if service.draining or not service.batcher.accepting:
            return _error(503, "not ready: starting or shutting down")
        return JSONResponse({"status": "ready", "model": service.model_name})

    @app.get("/v1/models")
    async def models() -> ModelList:
        created = int(time.time())
        cards = [
            ModelCard(id=name, created=created, max_model_len=rm.spec.max_length) for name in service.names
        ]
        return ModelList(data=cards)

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(service.metrics.render(), media_type=service.metrics.content_type)

    @app.post("/v1/rewards", openapi_extra=json_body(RewardsRequest))
    async def rewards(request: Request) -> RewardsResponse:
        """One reward per conversation (raw logit of the head; higher is better)."""
        req = await service.parse(request, RewardsRequest)
        service.check_model(req.model)
        scored = await service.score_conversations(req.conversations, items_at("conversations"))
        return RewardsResponse(
            **_columns(scored), usage=_usage(scored), model=service.model_name, spec=service.spec
        )

    @app.post("/v1/rewards/compare", openapi_extra=json_body(CompareRequest))
    async def compare(request: Request) -> CompareResponse:
        """Rewards of K responses to one context, centred within the prompt, and P(i beats j)."""
        req = await service.parse(request, CompareRequest)
        service.check_model(req.model)
        # One group: the context runs once.
        scored = await service.score_conversations(req.conversations, item_at("responses"), group=True)
        r = [x.reward for x in scored]
        return CompareResponse(
            **_group_columns(scored),
            win_prob=[[sigmoid(ri - rj) for rj in r] for ri in r],
            usage=_usage(scored),
            model=service.model_name,
            spec=service.spec,
        )

    @app.post("/v1/rewards/groups", openapi_extra=json_body(GroupsRequest))
    async def groups(request: Request) -> GroupsResponse:
        """Several groups of responses to their context in one request: each group scored as
        ``/v1/rewards/compare`` scores one (its context computed once), all in the same batches."""
        req = await service.parse(request, GroupsRequest)
        service.check_model(req.model)
        convs = [g.conversations for g in req.groups]
        locate = group_item_at([len(c) for c in convs], "groups", "responses")
        scored = await service.score_groups(convs, locate)
        return GroupsResponse(
            groups=[GroupRewards(**_group_columns(s)) for s in scored],
            usage=_usage(flatten(scored)[0]),
            model=service.model_name,
            spec=service.spec,
        )

    add_compat_routes(app, service)
    _document_bodies(app, [RewardsRequest, CompareRequest, GroupsRequest, GetRewardRequest, VllmRequest])
    routes = frozenset(getattr(route, "path", "") for route in app.routes)
    app.add_middleware(Gate, service=service, routes=routes, in_flight=app.state.in_flight)
    return app
