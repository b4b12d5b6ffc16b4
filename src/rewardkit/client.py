"""Clients of the reward server for training loops: sync (`RewardClient`) and async
(`AsyncRewardClient`), with timeouts and retries with backoff on 429, 5xx and connection errors.

Example:
    >>> with RewardClient("http://127.0.0.1:8000", api_key="KEY") as rc:  # doctest: +SKIP
    ...     rc.rewards([[{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}]])
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import dataclass
from operator import itemgetter
from typing import Any

import httpx

from rewardkit.data.conversation import Conversation, Message
from rewardkit.errors import ConfigError, RewardkitError

RETRY_STATUS = frozenset({429, 500, 502, 503, 504})
MessagesLike = Conversation | Sequence[Mapping[str, Any] | Message]


class RewardServerError(RewardkitError):
    """The server answered with an error (after any retries).

    Args:
        status_code: the HTTP status (0 when no response came back).
        detail: the server's ``detail`` (a message, or a list of validation errors).
    """

    def __init__(self, status_code: int, detail: Any) -> None:
        self.status_code = status_code
        self.detail = detail
        super().__init__(f"reward server error {status_code}: {detail}")


@dataclass(frozen=True, kw_only=True)
class RetryPolicy:
    """How failed calls are retried.

    Args:
        max_retries: retries after the first attempt (0 = no retry).
        backoff: first delay in seconds; doubles each retry, with ±25% jitter.
        max_backoff: cap on one delay; a server's ``Retry-After`` is honoured up to this cap too.
    """

    max_retries: int = 4
    backoff: float = 0.5
    max_backoff: float = 30.0

    def __post_init__(self) -> None:
        if self.max_retries < 0:
            raise ConfigError(f"max_retries must be >= 0, got {self.max_retries}")
        if self.backoff < 0 or self.max_backoff < 0:
            raise ConfigError(f"backoff and max_backoff must be >= 0, got {self.backoff}, {self.max_backoff}")

    def delay(self, attempt: int, response: httpx.Response | None) -> float:
        """Seconds to wait before retry ``attempt`` (0-based)."""
        wait = self.backoff * 2**attempt * random.uniform(0.75, 1.25)
        if response is not None:
            after = response.headers.get("retry-after", "")
            if after.replace(".", "", 1).isdigit():
                wait = max(wait, float(after))
        return min(wait, self.max_backoff)


def _messages(conv: MessagesLike) -> list[dict[str, Any]]:
    if isinstance(conv, Conversation):
        return conv.to_dicts()
    return [m.to_dict() if isinstance(m, Message) else dict(m) for m in conv]


def _result(response: httpx.Response) -> dict[str, Any]:
    if response.status_code >= 400:
        try:
            detail = response.json().get("detail", response.text)
        except ValueError:
            detail = response.text
        raise RewardServerError(response.status_code, detail)
    return response.json()


def _headers(api_key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


@dataclass(frozen=True)
class _Call:
    """One API call: what to send, and what to return from the JSON answer."""

    path: str
    body: dict[str, Any]
    pick: Callable[[dict[str, Any]], Any] = lambda body: body


def _rewards(conversations: Sequence[MessagesLike]) -> _Call:
    return _Call(
        "/v1/rewards", {"conversations": [_messages(c) for c in conversations]}, itemgetter("rewards")
    )


def _compare(context: MessagesLike, responses: Sequence[str]) -> _Call:
    return _Call("/v1/rewards/compare", {"context": _messages(context), "responses": list(responses)})


def _groups(groups: Sequence[tuple[MessagesLike, Sequence[str]]]) -> _Call:
    body = {"groups": [{"context": _messages(context), "responses": list(rs)} for context, rs in groups]}
    return _Call("/v1/rewards/groups", body)


def _get_reward(queries: Sequence[str]) -> _Call:
    return _Call("/get_reward", {"query": list(queries)}, itemgetter("rewards"))


# What one call does, attempt by attempt: it yields None to have the request sent (and is sent
# back the response or the transport error), or a delay to sleep before the next attempt; it
# returns the picked result. The sync and async clients only drive it.
Attempts = Generator[float | None, "httpx.Response | httpx.TransportError", Any]


def _attempts(retry: RetryPolicy, call: _Call) -> Attempts:
    for attempt in range(retry.max_retries + 1):
        last = attempt == retry.max_retries
        outcome = yield None
        if isinstance(outcome, httpx.TransportError):
            if last:
                raise RewardServerError(0, f"{type(outcome).__name__}: {outcome}") from outcome
            yield retry.delay(attempt, None)
            continue
        if outcome.status_code in RETRY_STATUS and not last:
            yield retry.delay(attempt, outcome)
            continue
        return call.pick(_result(outcome))
    raise AssertionError("unreachable")


class RewardClient:
    """Blocking client.

    Args:
        base_url: e.g. ``http://127.0.0.1:8000``.
        api_key: sent as ``Authorization: Bearer KEY``.
        timeout: seconds per attempt (connect, read, write).
        retry: retry policy (429, 5xx and connection errors are retried).
        transport: an httpx transport (tests).
    """

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | None = None,
        timeout: float = 120.0,
        retry: RetryPolicy | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.retry = retry or RetryPolicy()
        self._http = httpx.Client(
            base_url=base_url, headers=_headers(api_key), timeout=timeout, transport=transport
        )

    def __enter__(self) -> RewardClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _run(self, call: _Call) -> Any:
        steps = _attempts(self.retry, call)
        step = next(steps)
        while True:
            try:
                if step is None:
                    try:
                        outcome: httpx.Response | httpx.TransportError = self._http.post(
                            call.path, json=call.body
                        )
                    except httpx.TransportError as e:
                        outcome = e
                    step = steps.send(outcome)
                else:
                    time.sleep(step)
                    step = next(steps)
            except StopIteration as done:
                return done.value

    def rewards(self, conversations: Sequence[MessagesLike]) -> list[float]:
        """One reward per conversation (last message: the assistant turn judged)."""
        return self._run(_rewards(conversations))

    def compare(self, context: MessagesLike, responses: Sequence[str]) -> dict[str, Any]:
        """Rewards, centred rewards and the P(i beats j) matrix of responses to one context."""
        return self._run(_compare(context, responses))

    def groups(self, groups: Sequence[tuple[MessagesLike, Sequence[str]]]) -> dict[str, Any]:
        """Several ``(context, responses)`` groups in one request, each scored with its context
        computed once: ``groups[g]`` of the answer has that group's ``rewards``,
        ``centered_rewards``, ``truncated`` and ``num_tokens``; ``usage`` covers them all."""
        return self._run(_groups(groups))

    def get_reward(self, queries: Sequence[str]) -> list[float]:
        """OpenRLHF-style: rewards of conversations rendered with the model's chat template."""
        return self._run(_get_reward(queries))

    def ready(self) -> bool:
        try:
            return self._http.get("/ready").status_code == 200
        except httpx.TransportError:
            return False


class AsyncRewardClient:
    """The same calls as `RewardClient`, awaitable (share one client across tasks)."""

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | None = None,
        timeout: float = 120.0,
        retry: RetryPolicy | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        max_connections: int = 256,
    ) -> None:
        self.retry = retry or RetryPolicy()
        self._http = httpx.AsyncClient(
            base_url=base_url,
            headers=_headers(api_key),
            timeout=timeout,
            transport=transport,
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
        )

    async def __aenter__(self) -> AsyncRewardClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _run(self, call: _Call) -> Any:
        steps = _attempts(self.retry, call)
        step = next(steps)
        while True:
            try:
                if step is None:
                    try:
                        outcome: httpx.Response | httpx.TransportError = await self._http.post(
                            call.path, json=call.body
                        )
                    except httpx.TransportError as e:
                        outcome = e
                    step = steps.send(outcome)
                else:
                    await asyncio.sleep(step)
                    step = next(steps)
            except StopIteration as done:
                return done.value

    async def rewards(self, conversations: Sequence[MessagesLike]) -> list[float]:
        return await self._run(_rewards(conversations))

    async def compare(self, context: MessagesLike, responses: Sequence[str]) -> dict[str, Any]:
        return await self._run(_compare(context, responses))

    async def groups(self, groups: Sequence[tuple[MessagesLike, Sequence[str]]]) -> dict[str, Any]:
        return await self._run(_groups(groups))

    async def get_reward(self, queries: Sequence[str]) -> list[float]:
        return await self._run(_get_reward(queries))

    async def ready(self) -> bool:
        try:
            return (await self._http.get("/ready")).status_code == 200
        except httpx.TransportError:
            return False
