"""Running the app under uvicorn: in the foreground (``rewardkit serve``; SIGTERM drains and exits
0) or in a background thread on a pre-bound socket (tests, benchmarks, notebooks).
"""

from __future__ import annotations

import contextlib
import signal
import socket
import threading
import time
from collections.abc import Generator
from typing import Any

import uvicorn
from fastapi import FastAPI


class _Server(uvicorn.Server):
    """uvicorn re-raises a captured signal after its graceful shutdown, so the process would die by
    SIGTERM; a requested shutdown that drained cleanly is a normal exit (0) here."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        with super().capture_signals():
            yield
            captured = getattr(self, "_captured_signals", None)
            if isinstance(captured, list):
                captured[:] = [sig for sig in captured if sig != signal.SIGTERM]


def _config(app: FastAPI, *, shutdown_timeout: float | None, **kw: Any) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        lifespan="on",
        timeout_graceful_shutdown=shutdown_timeout,
        access_log=False,
        log_config=None,  # keep the logging set up by the caller
        **kw,
    )


def run_server(
    app: FastAPI, *, host: str = "127.0.0.1", port: int = 8000, shutdown_timeout: float | None = 60.0
) -> None:
    """Serves until SIGTERM/SIGINT; in-flight requests finish first (up to ``shutdown_timeout`` s)."""
    _Server(_config(app, host=host, port=port, shutdown_timeout=shutdown_timeout)).run()


class BackgroundServer:
    """``app`` served on 127.0.0.1 at a free port from a daemon thread.

    Example:
        >>> with BackgroundServer(create_app(rm)) as srv:  # doctest: +SKIP
        ...     httpx.get(f"{srv.url}/health")
    """

    def __init__(self, app: FastAPI, *, host: str = "127.0.0.1", start_timeout: float = 30.0) -> None:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((host, 0))
        self.host, self.port = self._sock.getsockname()[:2]
        self.url = f"http://{self.host}:{self.port}"
        self.server = _Server(_config(app, shutdown_timeout=30.0, log_level="warning"))
        self._thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self._sock]}, name="rewardkit-server", daemon=True
        )
        self._start_timeout = start_timeout

    def __enter__(self) -> BackgroundServer:
        self._thread.start()
        deadline = time.monotonic() + self._start_timeout
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the background server did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self._thread.join(timeout=30)
        self._sock.close()
