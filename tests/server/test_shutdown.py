"""Shutdown: SIGTERM and SIGINT let the in-flight request finish and ``rewardkit serve`` exit 0;
a request still unfinished at ``--shutdown-timeout`` gets 503 and the exit status is 1."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from rewardkit.server.command import DRAIN_INCOMPLETE

U = {"role": "user", "content": "What is 2+2?"}
A = {"role": "assistant", "content": "four"}
KEY = {"Authorization": "Bearer k"}

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")


def queue_depth(url: str) -> float:
    for line in httpx.get(f"{url}/metrics", headers=KEY).text.splitlines():
        if line.startswith("rewardkit_queue_depth "):
            return float(line.split()[1])
    raise AssertionError("no queue depth metric")


def serve_and_signal(model: Path, port: int, sig: signal.Signals, *flags: str) -> tuple[httpx.Response, int]:
    """Starts the server (key from the environment), sends one request, signals the server while
    the request waits in the batcher; returns the request's answer and the exit status."""
    url = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "rewardkit", "serve", "--model", str(model), "--device", "cpu"]
    cmd += ["--port", str(port), *flags]
    env = {**os.environ, "REWARDKIT_API_KEY": "k", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
            try:
                if httpx.get(f"{url}/ready", headers=KEY).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "server did not become ready"
            time.sleep(0.1)
        assert httpx.get(f"{url}/ready").status_code == 401  # the key came from the environment

        box: dict = {}

        def call() -> None:
            box["r"] = httpx.post(
                f"{url}/v1/rewards", json={"conversations": [[U, A]]}, headers=KEY, timeout=120
            )

        t = threading.Thread(target=call)
        t.start()
        while queue_depth(url) < 1:
            time.sleep(0.02)
        proc.send_signal(sig)
        t.join(120)
        code = proc.wait(60)
        with pytest.raises(httpx.TransportError):  # no longer accepting
            httpx.get(f"{url}/health")
        return box["r"], code
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_drains_in_flight_request_and_exits_0(tiny_model_dir, tiny_rm, free_port_fn, sig):
    # A 1.5 s batch wait makes a lone request deterministically "in flight" when the signal arrives.
    r, code = serve_and_signal(tiny_model_dir, free_port_fn(), sig, "--max-wait-ms", "1500")
    assert r.status_code == 200, r.text
    assert r.json()["rewards"] == pytest.approx(tiny_rm.score([[U, A]]), abs=1e-5)
    assert code == 0


def test_drain_past_the_timeout_is_503(serve, tiny_rm):
    """In-process: a request still queued at the shutdown deadline gets 503; the drain is incomplete."""
    with serve(tiny_rm, max_wait_ms=60_000) as srv, httpx.Client(base_url=srv.url, timeout=60) as http:
        box: dict = {}
        t = threading.Thread(
            target=lambda: box.update(r=http.post("/v1/rewards", json={"conversations": [[U, A]]}))
        )
        t.start()
        while srv.server.service.batcher.pending < 1:  # type: ignore[attr-defined]
            time.sleep(0.02)
        srv.server.shutdown_timeout = 0.5
        srv.stop()
        t.join(60)
    assert box["r"].status_code == 503
    assert "--shutdown-timeout" in box["r"].json()["detail"]
    assert not srv.drained


def test_an_incomplete_drain_is_exit_status_1(tiny_model_dir, monkeypatch: pytest.MonkeyPatch):
    from rewardkit.cli import main
    from rewardkit.server import runner

    monkeypatch.setattr(runner, "run_server", lambda app, **kw: False)
    assert (
        main(["serve", "--model", str(tiny_model_dir), "--device", "cpu", "--port", "0"])
        == DRAIN_INCOMPLETE
        != 0
    )
