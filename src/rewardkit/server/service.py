"""What every scoring route shares: limits, body parsing and tokenization off the event loop, and
the batcher.

The work a request costs is bounded step by step, cheapest checks first:

1. the body's bytes, while they are read (`Gate`: ``--max-body-bytes``, ``--read-timeout``);
2. strict JSON (no NaN, no lone surrogates, valid UTF-8, nesting under 200) and the request's
   shape, with conversations, messages per conversation and characters counted on the raw JSON
   before anything is built from it (``--max-conversations``, ``--max-messages``,
   ``--max-conversation-chars``), then the request's total characters (``--max-request-chars``);
3. room in the queue (``--max-queue``), then tokenization and its tokens (``--max-request-tokens``).

Parsing and tokenization run on two single-thread lanes with a tokenizer each: requests up to
`SMALL_CHARS` characters on one, larger ones on the other, so that a large request never holds
up a small one (and never the engine, which runs batches on its own thread).
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pydantic_core
from fastapi import HTTPException, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError

from rewardkit.api import RewardModel, Scored
from rewardkit.data.conversation import Conversation
from rewardkit.errors import ConfigError, InputError
from rewardkit.models.templating import Encoded
from rewardkit.nested import flatten, split
from rewardkit.server.batcher import DynamicBatcher, ShuttingDown
from rewardkit.server.limits import LIMITS, Limits, RequestTooLarge
from rewardkit.server.metrics import ServerMetrics
from rewardkit.server.schemas import field_loc

Loc = tuple[str | int, ...]
# Maps (item index, `InputError.field` within that item) to a location in the request body.
Locator = Callable[[int, str | None], Loc]
M = TypeVar("M", bound=BaseModel)
T = TypeVar("T")
Item = TypeVar("Item")  # of a request: a Conversation or a text

# A request of at most this many characters (and messages per conversation) is "small": it is
# parsed and tokenized on its own lane, never behind a large request.
SMALL_CHARS = 32_768
SMALL_MESSAGES = 16
# Characters tokenized per call on a lane.
TOKENIZE_CHARS = 65_536


@dataclass(frozen=True, kw_only=True)
class ServerConfig:
    """Options of ``rewardkit serve``.

    Args:
        api_key: required as ``Authorization: Bearer KEY`` on every route but ``/health``.
        key_in_path: also accept the key as a path prefix, ``/key/KEY/get_reward``, for clients
            that send no header (OpenRLHF).
        served_model_name: names of the model in requests and responses; the first is the one
            answered, all are accepted as ``model`` (default: the model's directory name or hub id).
        max_wait_ms: how long a request may wait for others to share its engine batch.
        max_queue: conversations admitted and not yet answered; beyond it requests get 429.
        max_conversations: conversations (or texts) per request; beyond it 413.
        max_messages: messages per conversation; beyond it 413.
        max_conversation_chars: characters of one conversation (or text); beyond it 413.
        max_request_chars: characters of a whole request; beyond it 413.
        max_request_tokens: tokens per request after tokenization; beyond it 413.
        max_body_bytes: request body, counted as it is read (chunked or not); beyond it 413.
        read_timeout: seconds for a request's head and body to arrive; beyond it 408.
    """

    api_key: str | None = None
    key_in_path: bool = False
    served_model_name: str | Sequence[str] = ()
    max_wait_ms: float = 5.0
    max_queue: int = 4096
    max_conversations: int = 1024
    max_messages: int = 256
    max_conversation_chars: int = 2**20
    max_request_chars: int = 8 * 2**20
    max_request_tokens: int = 2**20
    max_body_bytes: int = 16 * 2**20
    read_timeout: float = 30.0

    def __post_init__(self) -> None:
        names = self.served_model_name
        object.__setattr__(self, "served_model_name", (names,) if isinstance(names, str) else tuple(names))
        errors = []
        if self.max_wait_ms < 0:
            errors.append(f"--max-wait-ms must be >= 0, got {self.max_wait_ms}")
        if self.read_timeout <= 0:
            errors.append(f"--read-timeout must be > 0, got {self.read_timeout}")
        for name in (
            "max_queue",
            "max_conversations",
            "max_messages",
            "max_conversation_chars",
            "max_request_chars",
            "max_request_tokens",
            "max_body_bytes",
        ):
            if getattr(self, name) < 1:
                errors.append(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if self.max_conversations > self.max_queue:
            errors.append(
                f"--max-conversations ({self.max_conversations}) must not exceed --max-queue ({self.max_queue})"
            )
        if self.api_key is not None and not self.api_key.strip():
            errors.append("the API key is empty (--api-key, --api-key-file or $REWARDKIT_API_KEY)")
        if self.key_in_path and self.api_key is None:
            errors.append("--allow-key-in-path needs an API key")
        if any(not name.strip() for name in self.served_model_name):
            errors.append("--served-model-name has an empty name")
        if errors:
            raise ConfigError("; ".join(errors))

    @property
    def limits(self) -> Limits:
        return Limits(
            max_items=self.max_conversations,
            max_messages=self.max_messages,
            max_chars=self.max_conversation_chars,
        )


def served_names(config: ServerConfig, model: str) -> tuple[str, ...]:
    """The names a client sees: ``--served-model-name``, else the model's hub id, or the last
    part of its path for a local directory (a response never shows a filesystem path)."""
    if config.served_model_name:
        return tuple(config.served_model_name)
    return (Path(model).name or model,) if Path(model).exists() else (model,)


def _value_error(loc: Loc, message: str) -> dict[str, Any]:
    """One error of a 422 in FastAPI's own shape, naming the body location."""
    return {"type": "value_error", "loc": loc, "msg": message}


def invalid(loc: Loc, message: str) -> RequestValidationError:
    """A 422 in FastAPI's own error shape, naming the body location."""
    return RequestValidationError([_value_error(loc, message)])


def items_at(*prefix: str) -> Locator:
    """Locations of a list of conversations at ``prefix`` (``body.conversations[i]...``)."""
    return lambda i, field: ("body", *prefix, i, *field_loc(field))


def item_at(*prefix: str, indexed: bool = True) -> Locator:
    """Locations of texts (or responses) at ``prefix``: the item, not a field within it."""
    return lambda i, _: ("body", *prefix, i) if indexed else ("body", *prefix)


def group_item_at(sizes: Sequence[int], groups: str, items: str) -> Locator:
    """Locations of the items of groups of ``sizes`` (``body.groups[g].responses[i]``), by their
    index among all the groups' items in order."""
    owner = [(g, i) for g, n in enumerate(sizes) for i in range(n)]
    return lambda k, _: ("body", groups, owner[k][0], items, owner[k][1])


def json_body(model: type[BaseModel]) -> dict[str, Any]:
    """OpenAPI for a route that parses its body itself (`RewardService.parse`): ``model`` as its
    JSON request body (the schema goes under ``components``, see ``app.document_bodies``)."""
    schema = {"$ref": f"#/components/schemas/{model.__name__}"}
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


def parse_json(body: bytes) -> Any:
    """Strict JSON: valid UTF-8, no NaN or Infinity, no lone surrogates, nesting under 200.

    Raises:
        RequestValidationError: ``json_invalid`` naming where the text went wrong (422).
    """
    try:
        return pydantic_core.from_json(body, allow_inf_nan=False)
    except ValueError as e:
        raise RequestValidationError(
            [{"type": "json_invalid", "loc": ("body",), "msg": f"JSON decode error: {e}"}]
        ) from None


class _Lane:
    """One thread, and a reward model whose tokenizer only this thread uses (the fast tokenizer
    is not safe to call from several threads at once)."""

    def __init__(self, rm: RewardModel, name: str) -> None:
        self.rm = rm
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"rewardkit-{name}")

    async def run(self, fn: Callable[[], Any]) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


def _own_tokenizer(rm: RewardModel) -> RewardModel:
    """``rm`` sharing model and engine, with a tokenizer of its own."""
    clone = copy.copy(rm)
    clone.chat = copy.deepcopy(rm.chat)
    return clone


class RewardService:
    """Parses, validates, tokenizes and scores requests; raises HTTP-mappable errors.

    Args:
        rm: the one reward model behind the server.
        config: limits and names.
        metrics: where request-level results are recorded.
    """

    def __init__(self, rm: RewardModel, config: ServerConfig, metrics: ServerMetrics) -> None:
        self.rm = rm
        self.config = config
        self.metrics = metrics
        self.names = served_names(config, rm.spec.model)
        self.model_name = self.names[0]
        # The spec in responses, with the served name in place of the model's path or id.
        self.spec = dataclasses.replace(rm.spec, model=self.model_name).to_dict()
        self.batcher = DynamicBatcher(
            rm.score_encoded,
            token_budget=rm.engine.token_budget,
            max_wait_ms=config.max_wait_ms,
            max_pending=config.max_queue,
            metrics=metrics,
        )
        self._small = _Lane(_own_tokenizer(rm), "small")
        self._large = _Lane(rm, "large")
        self.draining = False

    def start(self) -> None:
        self.batcher.start()

    async def close(self) -> None:
        await self.batcher.close()
        self._small.close()
        self._large.close()

    def check_model(self, requested: str | None) -> None:
        """404 unless ``requested`` is absent or one of the served names."""
        if requested is not None and requested not in self.names:
            shown = requested if len(requested) <= 100 else requested[:100] + "..."
            raise HTTPException(
                404,
                f"model {shown!r} is not served here; this server has {self.model_name!r} "
                "(more names: --served-model-name NAME ...)",
            )

    async def parse(self, request: Request, model: type[M]) -> M:
        """The request's body as ``model``, parsed and validated off the event loop.

        Raises:
            RequestValidationError: malformed JSON or a body ``model`` rejects (422).
            RequestTooLarge: a per-request limit (413).
            ShuttingDown: the server is draining (503).
        """
        if self.draining:
            raise ShuttingDown("the server is shutting down")
        body = await request.body()  # already read, within limits, by the Gate
        lane = self._lane(len(body), 1)

        def validate() -> M:
            obj = parse_json(body)
            try:
                return model.model_validate(obj, context={LIMITS: self.config.limits})
            except ValidationError as e:
                errors = e.errors(include_url=False, include_input=False)
                raise RequestValidationError([{**x, "loc": ("body", *x["loc"])} for x in errors]) from None

        return await lane.run(validate)

    async def score_conversations(
        self, conversations: Sequence[Conversation], locate: Locator, *, group: bool = False
    ) -> list[Scored]:
        """``group``: the conversations share a prompt, computed once (same rewards)."""
        return await self._conversations(conversations, locate, [len(conversations)] if group else None)

    async def score_groups(
        self, groups: Sequence[Sequence[Conversation]], locate: Locator
    ) -> list[list[Scored]]:
        """Each group's conversations share a prompt, computed once; all groups are checked,
        tokenized and bounded together as one request, then scored in the same batches.
        ``locate`` takes an index among all the groups' conversations in order."""
        flat, sizes = flatten(groups)
        return split(await self._conversations(flat, locate, sizes), sizes)

    async def _conversations(
        self, conversations: Sequence[Conversation], locate: Locator, groups: Sequence[int] | None
    ) -> list[Scored]:
        sizes = [sum(len(m.content) for m in c.messages) for c in conversations]
        longest = max(len(c.messages) for c in conversations)
        return await self._score(conversations, sizes, longest, RewardModel.encode, locate, groups)

    async def score_texts(self, texts: Sequence[str], locate: Locator) -> list[Scored]:
        """Already-templated texts, tokenized as they are (no special tokens added)."""
        return await self._score(texts, [len(t) for t in texts], 1, RewardModel.encode_texts, locate)

    async def off_loop(self, chars: int, fn: Callable[[], T]) -> T:
        """``fn()`` on the tokenizer lane for a request of ``chars`` characters."""
        return await self._lane(chars, 1).run(fn)

    def _lane(self, chars: int, messages: int) -> _Lane:
        return self._small if chars <= SMALL_CHARS and messages <= SMALL_MESSAGES else self._large

    async def _score(
        self,
        items: Sequence[Item],
        sizes: Sequence[int],
        messages: int,
        encode: Callable[[RewardModel, Sequence[Item]], Sequence[Encoded | InputError]],
        locate: Locator,
        groups: Sequence[int] | None = None,
    ) -> list[Scored]:
        """Tokenizes ``items`` (of ``sizes`` characters) with ``encode(rm, items)`` and scores them,
        each alone or, given ``groups`` (sizes of consecutive runs), as shared-prompt groups.

        Raises:
            RequestValidationError: every item that cannot be tokenized, located by ``locate``
                (nothing is scored).
        """
        cfg = self.config
        if sum(sizes) > cfg.max_request_chars:
            raise RequestTooLarge(
                f"request has {sum(sizes)} characters, over the limit of {cfg.max_request_chars} "
                "(server option --max-request-chars); split it"
            )
        lane = self._lane(sum(sizes), messages)

        def tokenize() -> list[Encoded | InputError]:
            # In pieces: the tokenizer's threads are shared by both lanes, and a piece at a time
            # lets a small request's tokenization in between.
            out: list[Encoded | InputError] = []
            for piece in pieces(sizes, TOKENIZE_CHARS):
                out.extend(encode(lane.rm, items[piece]))
            return out

        with self.batcher.admit(len(items)):
            encoded = await lane.run(tokenize)
            errors = [
                _value_error(locate(i, e.field), e.message)
                for i, e in enumerate(encoded)
                if isinstance(e, InputError)
            ]
            if errors:
                raise RequestValidationError(errors)
            ok: list[Encoded] = encoded  # type: ignore[assignment]
            tokens = sum(len(e.ids) for e in ok)
            if tokens > cfg.max_request_tokens:
                raise RequestTooLarge(
                    f"request has {tokens} tokens, over the limit of {cfg.max_request_tokens} "
                    "(server option --max-request-tokens); split it"
                )
            scored = await (self.batcher.submit(ok) if groups is None else self._submit_groups(ok, groups))
        self.metrics.observe_results([s.reward for s in scored], sum(s.truncated_tokens > 0 for s in scored))
        return scored

    async def _submit_groups(self, encoded: Sequence[Encoded], sizes: Sequence[int]) -> list[Scored]:
        """Each group a job of the batcher, all queued at once (so they share batches, and a
        group that fits the budget is never split); when one fails, or the request is cancelled
        (its client went away), the others leave the queue."""
        jobs = [asyncio.ensure_future(self.batcher.submit(g, group=True)) for g in split(encoded, sizes)]
        try:
            return flatten(await asyncio.gather(*jobs))[0]
        finally:
            for job in jobs:
                job.cancel()


def pieces(sizes: Sequence[int], most: int) -> Iterator[slice]:
    """Consecutive slices of items whose ``sizes`` add up to at most ``most`` (one item at least)."""
    start, total = 0, 0
    for i, size in enumerate(sizes):
        if i > start and total + size > most:
            yield slice(start, i)
            start, total = i, 0
        total += size
    if start < len(sizes):
        yield slice(start, len(sizes))
