"""The FastAPI app: native reward routes, health/readiness, models, metrics, and the gate
(API key, body size, request metrics) in front of every route.
"""

from __future__ import annotations

import hmac
import logging
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from rewardkit import __version__
from rewardkit.api import RewardModel, Scored, sigmoid
from rewardkit.server import schemas as s
from rewardkit.server.batcher import BatchFailed, Overloaded, ShuttingDown
from rewardkit.server.compat import add_compat_routes
from rewardkit.server.metrics import ServerMetrics
from rewardkit.server.service import (
    RequestTooLarge,
    RewardService,
    ServerConfig,
    compare_locator,
    conversations_locator,
)

log = logging.getLogger(__name__)

OPEN_ROUTES = frozenset({"/health"})


class Gate:
    """ASGI middleware: API key (every route but ``/health``), body size cap, request metrics.

    Args:
        app: the wrapped app.
        service: gives the config (key, body cap) and metrics.
        routes: paths recorded under their own name in metrics (others as ``other``).
    """

    def __init__(self, app: ASGIApp, *, service: RewardService, routes: frozenset[str]) -> None:
        self.app = app
        self.config = service.config
        self.metrics = service.metrics
        self.routes = routes
        self._key = None if service.config.api_key is None else service.config.api_key.encode()

    def _authorized(self, headers: Sequence[tuple[bytes, bytes]]) -> bool:
        if self._key is None:
            return True
        for name, value in headers:
            if name == b"authorization":
                scheme, _, token = value.partition(b" ")
                return scheme.lower() == b"bearer" and hmac.compare_digest(token.strip(), self._key)
        return False

    def _body_too_large(self, headers: Sequence[tuple[bytes, bytes]]) -> bool:
        for name, value in headers:
            if name == b"content-length":
                return value.isdigit() and int(value) > self.config.max_body_bytes
        return False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        route = path if path in self.routes else "other"
        headers = scope["headers"]
        start = time.perf_counter()
        status = 500  # what the client gets if the app raises before responding

        async def send_and_record(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        self.metrics.inflight.inc()
        try:
            if path not in OPEN_ROUTES and not self._authorized(headers):
                reply = JSONResponse(
                    {"detail": "missing or wrong API key: send the header 'Authorization: Bearer KEY'"},
                    status_code=401,
                    headers={"WWW-Authenticate": "Bearer"},
                )
                await reply(scope, receive, send_and_record)
            elif self._body_too_large(headers):
                reply = JSONResponse(
                    {"detail": f"request body over {self.config.max_body_bytes} bytes (--max-body-bytes)"},
                    status_code=413,
                )
                await reply(scope, receive, send_and_record)
            else:
                await self.app(scope, receive, send_and_record)
        finally:
            self.metrics.inflight.dec()
            self.metrics.observe_request(route, status, time.perf_counter() - start)


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": message}, status_code=status, headers=headers)


def _install_error_handlers(app: FastAPI) -> None:
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


def _columns(scored: Sequence[Scored]) -> dict[str, Any]:
    return {
        "rewards": [x.reward for x in scored],
        "truncated": [x.truncated_tokens > 0 for x in scored],
        "num_tokens": [x.num_tokens for x in scored],
        "usage": s.Usage(tokens=sum(x.num_tokens for x in scored)),
    }


def create_app(rm: RewardModel, config: ServerConfig | None = None) -> FastAPI:
    """A server for ``rm``: every scoring route goes through one dynamic batcher.

    Args:
        rm: the loaded reward model (one engine; never called on the event loop).
        config: limits, API key, served name.
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
    spec = rm.spec.to_dict()
    _install_error_handlers(app)

    @app.get("/health")
    async def health() -> dict[str, str]:
        """Alive (no API key needed)."""
        return {"status": "ok"}

    @app.get("/ready")
    async def ready() -> JSONResponse:
        """The model is loaded and the batcher accepts work (503 while draining)."""
        if not service.batcher.accepting:
            return _error(503, "not ready: starting or shutting down")
        return JSONResponse({"status": "ready", "model": service.model_name})

    @app.get("/v1/models")
    async def models() -> s.ModelList:
        card = s.ModelCard(id=service.model_name, created=int(time.time()), max_model_len=rm.spec.max_length)
        return s.ModelList(data=[card])

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(service.metrics.render(), media_type=service.metrics.content_type)

    @app.post("/v1/rewards")
    async def rewards(req: s.RewardsRequest) -> s.RewardsResponse:
        """One reward per conversation (raw logit of the head; higher is better)."""
        service.check_model(req.model)
        locate = conversations_locator(("body", "conversations"))
        convs = service.parse_conversations([[m.model_dump() for m in c] for c in req.conversations], locate)
        scored = await service.score_conversations(convs, locate)
        return s.RewardsResponse(**_columns(scored), model=service.model_name, spec=spec)

    @app.post("/v1/rewards/compare")
    async def compare(req: s.CompareRequest) -> s.CompareResponse:
        """Rewards of K responses to one context, centred within the prompt, and P(i beats j)."""
        service.check_model(req.model)
        context = [m.model_dump() for m in req.context]
        locate = compare_locator(len(context))
        raw = [[*context, {"role": "assistant", "content": r}] for r in req.responses]
        convs = service.parse_conversations(raw, locate)
        scored = await service.score_conversations(convs, locate, group=True)  # the context runs once
        r = [x.reward for x in scored]
        mean = sum(r) / len(r)
        return s.CompareResponse(
            **_columns(scored),
            centered_rewards=[x - mean for x in r],
            win_prob=[[sigmoid(ri - rj) for rj in r] for ri in r],
            model=service.model_name,
            spec=spec,
        )

    add_compat_routes(app, service)
    routes = frozenset(getattr(route, "path", "") for route in app.routes)
    app.add_middleware(Gate, service=service, routes=routes)
    return app
