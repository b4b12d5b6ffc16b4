"""Running the app under uvicorn: in the foreground (``rewardkit serve``) or in a background thread
on a pre-bound socket (tests, benchmarks, notebooks).

Shutdown (SIGTERM or SIGINT alike): the listening socket closes, ``/ready`` answers 503, and the
requests in flight — including those still queued in the batcher — are finished for up to
``shutdown_timeout`` seconds. Those still unfinished then are answered 503, and the drain counts as
incomplete (`run_server` returns False; ``rewardkit serve`` exits 1). A second SIGINT stops at once
(also incomplete).

uvicorn times out only idle keep-alive connections (and any byte restarts that); here a request's
head must also arrive within the read timeout of the connection opening or of its previous answer,
and its body within the read timeout too (`Gate`), so unfinished requests cannot hold connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import threading
import time
from collections.abc import Generator
from typing import Any

import uvicorn
from fastapi import FastAPI
from uvicorn.protocols.http.h11_impl import H11Protocol

from rewardkit.errors import ConfigError
from rewardkit.server.gate import InFlight
from rewardkit.server.service import RewardService

log = logging.getLogger(__name__)

# uvicorn's own deadline comes this long after ours, so that the 503 answers go out first.
CUT_GRACE_S = 5.0


def _protocol(head_timeout: float) -> type[H11Protocol]:
    """uvicorn's h11 protocol, closing a connection whose next request head is not complete
    within ``head_timeout`` seconds."""

    class HeadTimeoutProtocol(H11Protocol):
        _head_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm()

        def on_response_complete(self) -> None:
            self._arm()  # before: the next (pipelined) request may start inside
            super().on_response_complete()

        def handle_events(self) -> None:
            super().handle_events()
            if self.cycle is not None and not self.cycle.response_complete:
                self._disarm()  # a request's head has arrived; the Gate times its body

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _arm(self) -> None:
            self._disarm()
            self._head_timer = self.loop.call_later(head_timeout, self._expire)

        def _disarm(self) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None

        def _expire(self) -> None:
            self._head_timer = None
            if not self.transport.is_closing():
                self.transport.close()

    return HeadTimeoutProtocol


class _Server(uvicorn.Server):
    """uvicorn with rewardkit's drain (see the module docstring)."""

    def __init__(self, app: FastAPI, *, shutdown_timeout: float | None, **kw: Any) -> None:
        service: RewardService = app.state.service
        super().__init__(
            uvicorn.Config(
                app,
                lifespan="on",
                http=_protocol(service.config.read_timeout),
                timeout_graceful_shutdown=None
                if shutdown_timeout is None
                else shutdown_timeout + CUT_GRACE_S,
                access_log=False,  # an access log would hold keys given in the path
                log_config=None,  # keep the logging set up by the caller
                **kw,
            )
        )
        self.service = service
        self.in_flight: InFlight = app.state.in_flight
        self.shutdown_timeout = shutdown_timeout
        self.cut = 0

    @property
    def drained(self) -> bool:
        """Every request in flight at shutdown was finished."""
        return self.cut == 0 and not self.force_exit

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        # uvicorn re-raises the signal that stopped it, so the process would die by it; here both
        # stop the server the same way, and the exit status says whether the drain finished.
        with super().capture_signals():
            yield
            captured = getattr(self, "_captured_signals", None)
            if isinstance(captured, list):
                captured[:] = [sig for sig in captured if sig not in (signal.SIGTERM, signal.SIGINT)]

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        self.service.draining = True
        timer = None
        if self.shutdown_timeout is not None:
            timer = asyncio.get_running_loop().call_later(self.shutdown_timeout, self._cut)
        try:
            await super().shutdown(sockets)
        finally:
            if timer is not None:
                timer.cancel()

    def _cut(self) -> None:
        self.cut += self.in_flight.cut()
        if self.cut:
            log.error(
                "%d request(s) still unfinished after --shutdown-timeout %g s: answered 503",
                self.cut,
                self.shutdown_timeout,
            )


def bind(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port`` (not yet listening), so that a busy port fails at once.

    Raises:
        ConfigError: the address cannot be used (in use, not permitted, unknown host).
    """
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(family, kind, proto)
    except OSError as e:
        raise ConfigError(f"cannot listen on {host}:{port} (--host): {e.strerror or e}") from e
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as e:
        sock.close()
        raise ConfigError(
            f"cannot listen on {host}:{port}: {e.strerror or e} (choose another --port, or stop what uses it)"
        ) from e
    return sock


def run_server(app: FastAPI, *, sock: socket.socket, shutdown_timeout: float | None = 60.0) -> bool:
    """Serves ``app`` on ``sock`` (see `bind`) until SIGTERM/SIGINT; returns whether every
    request in flight then was finished within ``shutdown_timeout`` seconds."""
    server = _Server(app, shutdown_timeout=shutdown_timeout)
    server.run(sockets=[sock])
    return server.drained


class BackgroundServer:
    """``app`` served on 127.0.0.1 at a free port from a daemon thread.

    Example:
        >>> with BackgroundServer(create_app(rm)) as srv:  # doctest: +SKIP
        ...     httpx.get(f"{srv.url}/health")
    """

    def __init__(
        self,
        app: FastAPI,
        *,
        host: str = "127.0.0.1",
        start_timeout: float = 30.0,
        shutdown_timeout: float | None = 30.0,
    ) -> None:
        self._sock = bind(host, 0)
        self.host, self.port = self._sock.getsockname()[:2]
        self.url = f"http://{self.host}:{self.port}"
        self.server = _Server(app, shutdown_timeout=shutdown_timeout, log_level="warning")
        self._thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self._sock]}, name="rewardkit-server", daemon=True
        )
        self._start_timeout = start_timeout

    @property
    def drained(self) -> bool:
        """After exit: every request in flight at shutdown was finished."""
        return self.server.drained

    def __enter__(self) -> BackgroundServer:
        self._thread.start()
        deadline = time.monotonic() + self._start_timeout
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the background server did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self, timeout: float = 60.0) -> None:
        """Shuts the server down as a signal would, and waits for it."""
        self.server.should_exit = True
        self._thread.join(timeout=timeout)
        self._sock.close()
