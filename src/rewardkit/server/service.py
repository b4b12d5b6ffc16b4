"""What every scoring route shares: limits, validation errors as HTTP locations, tokenization off
the event loop, and the batcher.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from fastapi import HTTPException
from fastapi.exceptions import RequestValidationError

from rewardkit.api import RewardModel, Scored
from rewardkit.data.conversation import Conversation
from rewardkit.errors import ConfigError, InputError
from rewardkit.models.templating import Encoded
from rewardkit.server.batcher import DynamicBatcher
from rewardkit.server.metrics import ServerMetrics

Loc = tuple[str | int, ...]
# Maps (item index, InputError.field relative to that item) to a location in the request body.
Locator = Callable[[int, str | None], Loc]


@dataclass(frozen=True, kw_only=True)
class ServerConfig:
    """Options of ``rewardkit serve``.

    Args:
        api_key: required as ``Authorization: Bearer KEY`` on every route but ``/health``.
        served_model_name: the model name in responses and ``/v1/models`` (default: the spec's).
        max_wait_ms: how long a request may wait for others to share its engine batch.
        max_queue: conversations admitted and not yet answered; beyond it requests get 429.
        max_conversations: conversations per request; beyond it 413.
        max_request_tokens: tokens per request after tokenization; beyond it 413.
        max_body_bytes: request body size (by ``Content-Length``); beyond it 413.
    """

    api_key: str | None = None
    served_model_name: str | None = None
    max_wait_ms: float = 5.0
    max_queue: int = 4096
    max_conversations: int = 1024
    max_request_tokens: int = 2**20
    max_body_bytes: int = 64 * 2**20

    def __post_init__(self) -> None:
        errors = []
        if self.max_wait_ms < 0:
            errors.append(f"--max-wait-ms must be >= 0, got {self.max_wait_ms}")
        for name in ("max_queue", "max_conversations", "max_request_tokens", "max_body_bytes"):
            if getattr(self, name) < 1:
                errors.append(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if self.max_conversations > self.max_queue:
            errors.append(
                f"--max-conversations ({self.max_conversations}) must not exceed --max-queue ({self.max_queue})"
            )
        if self.api_key is not None and not self.api_key.strip():
            errors.append("--api-key is empty")
        if errors:
            raise ConfigError("; ".join(errors))


class RequestTooLarge(Exception):
    """A per-request cap was exceeded (HTTP 413)."""


_FIELD_PART = re.compile(r"([A-Za-z_]\w*)|\[(\d+)\]")


def field_path(field: str | None) -> Loc:
    """``"messages[2].role"`` → ``("messages", 2, "role")``."""
    if not field:
        return ()
    return tuple(name if name else int(idx) for name, idx in _FIELD_PART.findall(field))


def invalid(loc: Loc, message: str) -> RequestValidationError:
    """A 422 in FastAPI's own error shape, naming the body location."""
    return RequestValidationError([{"type": "value_error", "loc": loc, "msg": message, "input": None}])


def conversations_locator(prefix: Loc) -> Locator:
    """Locations for ``prefix[i]`` = a list of messages (the ``messages`` name is dropped)."""

    def locate(i: int, field: str | None) -> Loc:
        path = field_path(field)
        return (*prefix, i, *path[1:]) if path[:1] == ("messages",) else (*prefix, i, *path)

    return locate


def single_locator(prefix: Loc) -> Locator:
    """Locations for a request holding one item at ``prefix`` (no index)."""

    def locate(_: int, field: str | None) -> Loc:
        path = field_path(field)
        return (*prefix, *path[1:]) if path[:1] == ("messages",) else (*prefix, *path)

    return locate


def compare_locator(context_len: int) -> Locator:
    """Locations for compare requests: conversation ``i`` = context + response ``i``."""

    def locate(i: int, field: str | None) -> Loc:
        path = field_path(field)
        if len(path) >= 2 and path[0] == "messages" and isinstance(path[1], int) and path[1] < context_len:
            return ("body", "context", *path[1:])
        return ("body", "responses", i)

    return locate


class RewardService:
    """Scores requests through the batcher; raises HTTP-mappable errors.

    Args:
        rm: the one reward model behind the server.
        config: limits.
        metrics: where request-level results are recorded.
    """

    def __init__(self, rm: RewardModel, config: ServerConfig, metrics: ServerMetrics) -> None:
        self.rm = rm
        self.config = config
        self.metrics = metrics
        self.model_name = config.served_model_name or rm.spec.model
        self.batcher = DynamicBatcher(
            rm.score_encoded,
            token_budget=rm.engine.token_budget,
            max_wait_ms=config.max_wait_ms,
            max_pending=config.max_queue,
            metrics=metrics,
        )
        # One thread: the fast tokenizer is not safe to call from several threads at once.
        self._tokenizer_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rewardkit-tokenize")

    def start(self) -> None:
        self.batcher.start()

    async def close(self) -> None:
        await self.batcher.close()
        self._tokenizer_pool.shutdown(wait=True)

    def check_model(self, requested: str | None) -> None:
        """404 unless ``requested`` is absent or the served model's name."""
        if requested is not None and requested != self.model_name:
            raise HTTPException(
                404, f"model {requested!r} is not served here; this server has {self.model_name!r}"
            )

    @staticmethod
    def parse_conversations(raw: Sequence[Sequence[dict[str, Any]]], locate: Locator) -> list[Conversation]:
        """Applies the conversation rules (system first, last turn assistant, ...) → 422 at the field."""
        out = []
        for i, messages in enumerate(raw):
            try:
                out.append(Conversation.of(messages))
            except InputError as e:
                raise invalid(locate(i, e.field), e.message) from e
        return out

    async def score_conversations(
        self, conversations: Sequence[Conversation], locate: Locator, *, group: bool = False
    ) -> list[Scored]:
        """``group``: the conversations share a prompt, computed once (same rewards)."""
        return await self._score(len(conversations), lambda: self.rm.encode(conversations), locate, group)

    async def score_texts(self, texts: Sequence[str], locate: Locator) -> list[Scored]:
        """Already-templated texts, tokenized as-is (no special tokens added)."""
        return await self._score(len(texts), lambda: self.rm.chat.encode_texts(texts), locate)

    async def _score(
        self, n: int, encode: Callable[[], list[Encoded | InputError]], locate: Locator, group: bool = False
    ) -> list[Scored]:
        cfg = self.config
        if n > cfg.max_conversations:
            raise RequestTooLarge(
                f"request has {n} conversations, over the limit of {cfg.max_conversations} "
                "(server option --max-conversations); split it"
            )
        with self.batcher.admit(n):
            loop = asyncio.get_running_loop()
            encoded = await loop.run_in_executor(self._tokenizer_pool, encode)
            for i, e in enumerate(encoded):
                if isinstance(e, InputError):
                    field = None if e.field in (None, f"[{i}]") else e.field
                    raise invalid(locate(i, field), e.message)
            ok: list[Encoded] = encoded  # type: ignore[assignment]
            tokens = sum(len(e.ids) for e in ok)
            if tokens > cfg.max_request_tokens:
                raise RequestTooLarge(
                    f"request has {tokens} tokens, over the limit of {cfg.max_request_tokens} "
                    "(server option --max-request-tokens); split it"
                )
            scored = await self.batcher.submit(ok, group=group)
        self.metrics.observe_results([s.reward for s in scored], sum(s.truncated_tokens > 0 for s in scored))
        return scored
