"""``rewardkit serve`` as a process: SIGTERM lets the in-flight request finish, then exits 0."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time

import httpx
import pytest

U = {"role": "user", "content": "What is 2+2?"}
A = {"role": "assistant", "content": "four"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def inflight(url: str) -> float:
    for line in httpx.get(f"{url}/metrics", headers={"Authorization": "Bearer k"}).text.splitlines():
        if line.startswith("rewardkit_queue_depth "):
            return float(line.split()[1])
    raise AssertionError("no queue depth metric")


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_sigterm_drains_in_flight_request_and_exits_0(tiny_model_dir, tiny_rm):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    # A 1.5 s batch wait makes a lone request deterministically "in flight" when SIGTERM arrives.
    cmd = [sys.executable, "-m", "rewardkit", "serve", "--model", str(tiny_model_dir), "--device", "cpu"]
    cmd += ["--port", str(port), "--max-wait-ms", "1500"]
    env = {**os.environ, "REWARDKIT_API_KEY": "k"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, proc.stdout.read()
            try:
                if httpx.get(f"{url}/ready", headers={"Authorization": "Bearer k"}).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "server did not become ready"
            time.sleep(0.1)
        assert httpx.get(f"{url}/ready").status_code == 401  # the key came from the environment

        box: dict = {}

        def call() -> None:
            box["r"] = httpx.post(
                f"{url}/v1/rewards",
                json={"conversations": [[U, A]]},
                headers={"Authorization": "Bearer k"},
                timeout=60,
            )

        t = threading.Thread(target=call)
        t.start()
        while inflight(url) < 1:
            time.sleep(0.02)
        sent = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        t.join(60)
        assert box["r"].status_code == 200, box["r"].text
        assert box["r"].json()["rewards"] == pytest.approx(tiny_rm.score([[U, A]]), abs=1e-5)
        assert proc.wait(30) == 0
        assert time.monotonic() - sent < 30
        with pytest.raises(httpx.TransportError):  # no longer accepting
            httpx.get(f"{url}/health")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
