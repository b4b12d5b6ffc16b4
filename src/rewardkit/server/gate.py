"""The ASGI middleware in front of every route: the API key, the request body, the client going
away, the shutdown deadline, and request metrics.

- **Key**: every route but ``/health`` needs ``Authorization: Bearer KEY``; with
  ``--allow-key-in-path``, ``/key/KEY/<route>`` also works (for clients that send no header).
- **Body**: read here, whole, before any route sees it: beyond ``--max-body-bytes`` (counted as
  the bytes arrive, whatever the framing) the answer is 413, and a body not complete within
  ``--read-timeout`` seconds is 408; both close the connection.
- **Client gone**: when the client disconnects before its answer, the request is cancelled, which
  frees its queue room and drops its conversations from the batcher (`DynamicBatcher.submit`).
- **Shutdown**: `InFlight.cut` answers every request still in flight with 503 (the drain deadline).
- Any error a route did not turn into an answer is a 500 with a JSON body, never a dropped socket.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from rewardkit.server.service import RewardService

log = logging.getLogger(__name__)

OPEN_ROUTES = frozenset({"/health"})
KEY_PREFIX = "/key/"
CLIENT_GONE = 499  # recorded in metrics for requests whose client disconnected (nginx's code)


@dataclass(kw_only=True, eq=False)
class _Flight:
    """One request being handled."""

    task: asyncio.Task[object]
    started: bool = False  # the response has started
    cut: bool = False  # cancelled by the shutdown deadline
    gone: bool = False  # cancelled because the client went away


class InFlight:
    """The requests being handled, so that the shutdown deadline can answer them (`cut`)."""

    def __init__(self) -> None:
        self.flights: set[_Flight] = set()

    def cut(self) -> int:
        """Answers every request in flight with 503 now; returns how many there were."""
        flights = [f for f in self.flights if not f.task.done()]
        for f in flights:
            f.cut = True
            f.task.cancel()
        return len(flights)


class _BodyError(Exception):
    def __init__(self, status: int, message: str) -> None:
        self.status, self.message = status, message


class _ClientGone(Exception):
    pass


class Gate:
    """ASGI middleware (see the module docstring).

    Args:
        app: the wrapped app.
        service: gives the config (key, limits) and metrics.
        routes: paths recorded under their own name in metrics (others as ``other``).
        in_flight: where requests being handled are registered.
    """

    def __init__(
        self, app: ASGIApp, *, service: RewardService, routes: frozenset[str], in_flight: InFlight
    ) -> None:
        self.app = app
        self.config = service.config
        self.metrics = service.metrics
        self.routes = routes
        self.in_flight = in_flight
        self._key = None if service.config.api_key is None else service.config.api_key.encode()

    def _header_key(self, headers: Sequence[tuple[bytes, bytes]]) -> bytes | None:
        for name, value in headers:
            if name == b"authorization":
                scheme, _, token = value.partition(b" ")
                return token.strip() if scheme.lower() == b"bearer" else None
        return None

    def _path_key(self, scope: Scope) -> tuple[Scope, bytes | None]:
        """Takes ``/key/KEY`` off the front of the path (when allowed)."""
        path: str = scope["path"]
        if not (self.config.key_in_path and path.startswith(KEY_PREFIX)):
            return scope, None
        key, _, rest = path[len(KEY_PREFIX) :].partition("/")
        raw = scope.get("raw_path") or path.encode()
        raw_rest = raw[len(KEY_PREFIX) :].partition(b"/")[2]
        return {**scope, "path": "/" + rest, "raw_path": b"/" + raw_rest}, key.encode()

    def _authorized(self, key: bytes | None) -> bool:
        return self._key is None or (key is not None and hmac.compare_digest(key, self._key))

    async def _read_body(self, scope: Scope, receive: Receive) -> bytes:
        """The whole body, within the byte limit and the read timeout.

        Raises:
            _BodyError: 413 or 408.
            _ClientGone: the client disconnected first.
        """
        limit = self.config.max_body_bytes
        too_large = _BodyError(413, f"request body over {limit} bytes (server option --max-body-bytes)")
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit() and int(value) > limit:
                raise too_large
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.read_timeout
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            try:
                message = await asyncio.wait_for(receive(), max(0.0, deadline - loop.time()))
            except TimeoutError:
                raise _BodyError(
                    408,
                    f"request body not received within {self.config.read_timeout:g} s "
                    "(server option --read-timeout)",
                ) from None
            if message["type"] == "http.disconnect":
                raise _ClientGone
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise too_large
            chunks.append(chunk)
            more = message.get("more_body", False)
        return b"".join(chunks)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        scope, path_key = self._path_key(scope)
        path = scope["path"]
        route = path if path in self.routes else "other"
        start = time.perf_counter()
        flight = _Flight(task=asyncio.current_task())  # type: ignore[arg-type]
        status = 500

        async def send_and_record(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                flight.started = True
            await send(message)

        async def reply(code: int, detail: str, headers: dict[str, str] | None = None) -> None:
            if not flight.started:
                await JSONResponse({"detail": detail}, status_code=code, headers=headers)(
                    scope, receive, send_and_record
                )

        self.metrics.inflight.inc()
        self.in_flight.flights.add(flight)
        try:
            if path not in OPEN_ROUTES and not self._authorized(
                path_key or self._header_key(scope["headers"])
            ):
                await reply(
                    401,
                    "missing or wrong API key: send the header 'Authorization: Bearer KEY'",
                    {"WWW-Authenticate": "Bearer"},
                )
                return
            try:
                body = await self._read_body(scope, receive)
            except _BodyError as e:
                await reply(e.status, e.message, {"Connection": "close"})
                return
            await self._handle(scope, receive, send_and_record, body, flight)
        except asyncio.CancelledError:
            if not (flight.cut or flight.gone):
                raise  # the server's own cancellation: let it through
            flight.task.uncancel()
            if flight.gone:
                status = CLIENT_GONE
            else:
                await reply(503, "the server shut down before this request finished (--shutdown-timeout)")
        except _ClientGone:
            status = CLIENT_GONE
        except Exception:
            log.exception("unhandled error on %s", path)
            await reply(500, "internal server error (logged by the server)", {"Connection": "close"})
        finally:
            self.in_flight.flights.discard(flight)
            self.metrics.inflight.dec()
            self.metrics.observe_request(route, status, time.perf_counter() - start)

    async def _handle(self, scope: Scope, receive: Receive, send: Send, body: bytes, flight: _Flight) -> None:
        """Runs the app on the read body, cancelling it if the client goes away first."""
        gone = asyncio.Event()
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            await gone.wait()
            return {"type": "http.disconnect"}

        async def watch() -> None:
            # After the body, the server's receive() returns only when the client disconnects
            # (or the response is complete).
            if (await receive())["type"] == "http.disconnect" and not flight.started:
                flight.gone = True
                gone.set()
                flight.task.cancel()

        watcher = asyncio.create_task(watch())
        try:
            await self.app(scope, replay, send)
        finally:
            watcher.cancel()
