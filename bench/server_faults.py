"""The reward server under hostile and careless clients: every case of the fault table in
docs/server.md against a live ``rewardkit serve`` (the demo model on the CPU, 127.0.0.1 only),
with a small request sent alongside all the time.

Per case it prints the answer(s), how long the case took, and the slowest answer to the concurrent
small request, and whether that stayed under ``--bound`` seconds. Every case is bounded in size
and time, and nothing connects anywhere but 127.0.0.1. JSON goes to ``$OUT`` (or ``--out``).

    python bench/server_faults.py                  # the table's sizes (a few minutes on a CPU)
    python bench/server_faults.py --cases paths    # some cases only

``tests/server/test_faults.py`` runs the same cases, scaled down, against an in-process server.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import select
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

HOST = "127.0.0.1"  # the only address this script talks to
U = {"role": "user", "content": "What is 1+1?"}
A = {"role": "assistant", "content": "1+1=2"}
SMALL = json.dumps({"conversations": [[U, A]]}).encode()


# HTTP on raw sockets (malformed, chunked, unfinished and oversized requests) ----------------------


@dataclass
class Answer:
    status: int | None  # None: the connection closed without an answer
    body: bytes = b""
    sent: int = 0  # body bytes sent before the answer came


def head(method: str, path: str, *, length: int | None = None, chunked: bool = False) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {HOST}", "Content-Type: application/json"]
    lines += [f"Content-Length: {length}"] if length is not None else []
    lines += ["Transfer-Encoding: chunked"] if chunked else []
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _parse(data: bytes) -> tuple[int | None, bytes, bool]:
    """(status, body, complete) of what was read of one response."""
    top, sep, rest = data.partition(b"\r\n\r\n")
    if not sep:
        return None, b"", False
    status = int(top.split(b" ", 2)[1])
    length = next(
        (
            int(line.split(b":")[1])
            for line in top.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        ),
        0,
    )
    return status, rest[:length], len(rest) >= length


def exchange(port: int, head_bytes: bytes, body: Iterable[bytes] = (), *, timeout: float = 60.0) -> Answer:
    """Sends a request, reading while sending: an answer before the body is all sent stops it."""
    deadline = time.monotonic() + timeout
    received, sent = b"", 0
    with socket.create_connection((HOST, port), timeout=timeout) as sock:
        sock.setblocking(False)
        pieces = iter([head_bytes, *body])
        pending, writing = b"", True
        while time.monotonic() < deadline:
            if writing and not pending:
                pending = next(pieces, b"")
            wants_write = [sock] if writing and pending else []
            readable, writable, _ = select.select(
                [sock], wants_write, [], max(0.0, deadline - time.monotonic())
            )
            if readable:
                try:
                    data = sock.recv(1 << 16)
                except ConnectionError:
                    data = b""
                if not data:
                    break
                received += data
                if _parse(received)[2]:
                    break
            elif writable:
                try:
                    n = sock.send(pending[: 1 << 16])
                except (BrokenPipeError, ConnectionResetError):
                    # The server stopped reading (an early answer, then its close): what it
                    # answered may already be here, so read on instead of giving up.
                    writing = False
                    continue
                sent += n
                pending = pending[n:]
    status, payload, _ = _parse(received)
    return Answer(status, payload, max(0, sent - len(head_bytes)))


def post(port: int, path: str, payload: bytes, *, timeout: float = 120.0) -> Answer:
    return exchange(port, head("POST", path, length=len(payload)), [payload], timeout=timeout)


def chunked(payload: bytes, size: int = 1 << 16) -> Iterator[bytes]:
    for i in range(0, len(payload), size):
        part = payload[i : i + size]
        yield f"{len(part):x}\r\n".encode() + part + b"\r\n"
    yield b"0\r\n\r\n"


# The small request sent alongside every case --------------------------------------------------------


class Probe:
    """Sends the small request every ``every`` seconds from a thread; records each latency."""

    def __init__(self, port: int, every: float = 0.05) -> None:
        self.port, self.every = port, every
        self.latencies: list[float] = []
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        conn = http.client.HTTPConnection(HOST, self.port, timeout=60)
        while not self._stop.is_set():
            start = time.perf_counter()
            try:
                conn.request("POST", "/v1/rewards", body=SMALL, headers={"Content-Type": "application/json"})
                r = conn.getresponse()
                r.read()
                if r.status not in (200, 429):  # 429: the queue is full (and said so at once)
                    self.failures.append(str(r.status))
            except (OSError, http.client.HTTPException) as e:
                self.failures.append(type(e).__name__)
                conn.close()
                conn = http.client.HTTPConnection(HOST, self.port, timeout=60)
            self.latencies.append(time.perf_counter() - start)
            self._stop.wait(self.every)
        conn.close()

    def __enter__(self) -> Probe:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(120)

    @property
    def worst(self) -> float:
        return max(self.latencies, default=float("nan"))


# The cases ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Sizes:
    """Request sizes of the cases (the table's by default; `tests/server/test_faults.py` scales
    them down together with the server's limits)."""

    huge_turn_words: int = 10_000_000  # "word " × this in one assistant turn (50 MB)
    long_turn_chars: int = 1_500_000  # one turn under the body limit, over --max-conversation-chars
    left_turns: tuple[int, ...] = (2_000, 4_000)  # turns of one conversation, over --max-messages
    left_ok_turns: int = 200  # turns of one conversation over --max-length (truncated, scored)
    classify_items: int = 1_000_000  # /classify input [0, 1, ...]
    many_conversations: int = 1_024
    many_messages: int = 1_000  # per conversation: over --max-body-bytes as a whole
    scored_messages: int = 100  # per conversation: a large request that is scored
    chunked_bytes: int = 2_000_000  # sent chunked to a server with --max-body-bytes 1048576
    disconnects: int = 16  # requests whose clients go away
    disconnect_conversations: int = 256  # conversations of each
    disconnect_after: float = 1.0
    unfinished: int = 1_200  # connections that stop in the middle of a body
    nesting: int = 100_000


@dataclass
class Outcome:
    status: str
    seconds: float = 0.0
    detail: str = ""
    ok: bool = True  # the answer was the one expected


def _conv(turns: int, content: str) -> list[dict[str, str]]:
    """``turns`` alternating turns ending with the assistant's."""
    roles = ("user", "assistant")
    return [{"role": roles[(turns - i) % 2], "content": content} for i in range(turns)]


def _body(conversations: list[list[dict[str, str]]]) -> bytes:
    return json.dumps({"conversations": conversations}).encode()


# Each case builds its request first and returns what sends it: the client's own work (a 50 MB
# json.dumps) would otherwise slow the probe, which shares its process.
Case = Callable[[int], Outcome]


def huge_turn(s: Sizes) -> Case:
    data = _body([[U, {"role": "assistant", "content": "word " * s.huge_turn_words}]])

    def run(port: int) -> Outcome:
        a = post(port, "/v1/rewards", data)
        return Outcome(
            f"{a.status}", detail=f"{len(data) / 1e6:.1f} MB, {a.sent} bytes read", ok=a.status == 413
        )

    return run


def long_turn(s: Sizes) -> Case:
    data = _body([[U, {"role": "assistant", "content": "w" * s.long_turn_chars}]])

    def run(port: int) -> Outcome:
        a = post(port, "/v1/rewards", data)
        return Outcome(f"{a.status}", detail=f"{len(data) / 1e6:.1f} MB", ok=a.status == 413)

    return run


def left_turns(s: Sizes) -> Case:
    bodies = [_body([_conv(n, "hi there")]) for n in s.left_turns]

    def run(port: int) -> Outcome:
        answers = [post(port, "/v1/rewards", b) for b in bodies]
        return Outcome(" / ".join(str(a.status) for a in answers), ok=all(a.status == 413 for a in answers))

    return run


def left_truncated(s: Sizes) -> Case:
    data = _body([_conv(s.left_ok_turns, "a short turn of a long conversation, " * 3)])

    def run(port: int) -> Outcome:
        a = post(port, "/v1/rewards", data)
        truncated = a.status == 200 and json.loads(a.body)["truncated"] == [True]
        return Outcome(f"{a.status}", detail=f"{s.left_ok_turns} turns, truncated: {truncated}", ok=truncated)

    return run


def classify_items(s: Sizes) -> Case:
    data = json.dumps({"input": list(range(s.classify_items))}).encode()

    def run(port: int) -> Outcome:
        a = post(port, "/classify", data)
        ok = a.status == 413 and len(a.body) < 10_000
        return Outcome(f"{a.status}", detail=f"{len(data) / 1e6:.1f} MB, answer {len(a.body)} bytes", ok=ok)

    return run


def many_messages(s: Sizes) -> Case:
    data = _body([_conv(s.many_messages, "w")] * s.many_conversations)

    def run(port: int) -> Outcome:
        a = post(port, "/v1/rewards", data)
        return Outcome(f"{a.status}", detail=f"{len(data) / 2**20:.1f} MiB", ok=a.status == 413)

    return run


def many_scored(s: Sizes) -> Case:
    data = _body([_conv(s.scored_messages, "w")] * s.many_conversations)

    def run(port: int) -> Outcome:
        a = post(port, "/v1/rewards", data, timeout=600)
        tokens = sum(json.loads(a.body)["num_tokens"]) if a.status == 200 else 0
        detail = f"{len(data) / 2**20:.1f} MiB, {tokens} tokens scored"
        return Outcome(f"{a.status}", detail=detail, ok=a.status == 200)

    return run


def chunked_body(s: Sizes) -> Case:
    data = _body([[U, {"role": "assistant", "content": "c" * s.chunked_bytes}]])

    def run(port: int) -> Outcome:
        a = exchange(port, head("POST", "/v1/rewards", chunked=True), chunked(data))
        return Outcome(f"{a.status}", detail=f"{len(data) / 1e6:.1f} MB, chunked", ok=a.status == 413)

    return run


def scored_conversations(port: int) -> float:
    """The server's count of conversations scored (its Prometheus metrics)."""
    text = exchange(port, head("GET", "/metrics")).body.decode()
    return next(
        float(x.split()[1]) for x in text.splitlines() if x.startswith("rewardkit_scored_conversations_total")
    )


def disconnects(s: Sizes) -> Case:
    """Clients that give up: their conversations leave the queue, and a live request gets in."""
    conv = [U, {"role": "assistant", "content": "a longer answer to keep the engine busy " * 8}]
    data = _body([conv] * s.disconnect_conversations)

    def run(port: int) -> Outcome:
        def give_up() -> None:
            with contextlib.suppress(OSError):
                post(port, "/v1/rewards", data, timeout=s.disconnect_after)

        before = scored_conversations(port)
        threads = [threading.Thread(target=give_up) for _ in range(s.disconnects)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        live = post(port, "/v1/rewards", SMALL, timeout=60)
        time.sleep(2 * s.disconnect_after)  # what was already in a batch finishes
        sent = s.disconnects * s.disconnect_conversations
        scored = scored_conversations(port) - before - 1  # less the live request
        ok = live.status == 200 and scored < sent
        return Outcome(f"live request after: {live.status}", detail=f"{scored:.0f} of {sent} scored", ok=ok)

    return run


ROUTES = ("/v1/rewards", "/v1/rewards/compare", "/get_reward", "/classify", "/pooling")
_TEXT_BODIES = {
    "/v1/rewards": '{"conversations": [[{"role": "user", "content": "%s"}, {"role": "assistant", "content": "a"}]]}',
    "/v1/rewards/compare": '{"context": [{"role": "user", "content": "q"}], "responses": ["%s"]}',
    "/get_reward": '{"query": ["%s"]}',
    "/classify": '{"input": "%s"}',
    "/pooling": '{"input": ["%s"]}',
}
BAD_BODIES: dict[str, Callable[[str], bytes]] = {
    "lone surrogate": lambda route: (_TEXT_BODIES[route] % "\\ud800").encode(),
    "NaN": lambda route: b'{"conversations": NaN, "query": NaN, "input": NaN}',
    "invalid UTF-8": lambda route: (_TEXT_BODIES[route] % "@@").encode().replace(b"@@", b"\xff\xfe"),
    "deep nesting": lambda route: b"[" * 100_000 + b"]" * 100_000,
}


def malformed(*names: str) -> Case:
    """Each body on every scoring route, on one kept-alive connection that must stay usable."""

    def run(port: int) -> Outcome:
        conn = http.client.HTTPConnection(HOST, port, timeout=60)
        seen: dict[int, int] = {}
        ok = True
        for name in names:
            for route in ROUTES:
                conn.request(
                    "POST", route, body=BAD_BODIES[name](route), headers={"Content-Type": "application/json"}
                )
                r = conn.getresponse()
                body = r.read()
                seen[r.status] = seen.get(r.status, 0) + 1
                ok &= (
                    r.status == 422
                    and r.getheader("content-type") == "application/json"
                    and b"detail" in body
                )
                conn.request("POST", "/v1/rewards", body=SMALL, headers={"Content-Type": "application/json"})
                r = conn.getresponse()
                r.read()
                ok &= r.status == 200  # the same connection, still serving
        conn.close()
        status = ", ".join(f"{k} ×{v}" for k, v in sorted(seen.items()))
        return Outcome(status, detail="then 200 on the same connection", ok=ok)

    return run


def no_paths(forbidden: str) -> Case:
    """404 bodies, /v1/models and spec.model never show the model's filesystem path."""

    def run(port: int) -> Outcome:
        bodies = [
            post(
                port, "/v1/rewards", json.dumps({"model": "other", "conversations": [[U, A]]}).encode()
            ).body,
            post(port, "/v1/rewards", SMALL).body,
            exchange(port, head("GET", "/v1/models")).body,
            exchange(port, head("GET", "/no/such/route")).body,
        ]
        leaked = [b for b in bodies if forbidden.encode() in b]
        model = json.loads(bodies[1])["spec"]["model"]
        detail = f"{len(leaked)} of {len(bodies)} bodies show the path"
        return Outcome(f"spec.model = {model!r}", detail=detail, ok=not leaked)

    return run


def unfinished(s: Sizes, read_timeout: float) -> Case:
    """Connections that send a head and part of a body, then nothing: closed by the server."""

    def run(port: int) -> Outcome:
        socks = []
        for _ in range(s.unfinished):
            sock = socket.create_connection((HOST, port), timeout=10)
            sock.sendall(head("POST", "/v1/rewards", length=1000) + b'{"conversations": [')
            socks.append(sock)
        deadline = time.monotonic() + read_timeout + 30
        statuses: dict[str, int] = {}
        for sock in socks:
            sock.settimeout(max(0.1, deadline - time.monotonic()))
            try:
                data = sock.recv(1 << 16)
                key = str(_parse(data)[0]) if data else "closed"
            except TimeoutError:
                key = "still open"
            except ConnectionError:
                key = "closed"
            statuses[key] = statuses.get(key, 0) + 1
            sock.close()
        return Outcome(
            ", ".join(f"{k} ×{v}" for k, v in sorted(statuses.items())), ok="still open" not in statuses
        )

    return run


def _timed(case: Case, port: int) -> Outcome:
    start = time.perf_counter()
    out = case(port)
    out.seconds = time.perf_counter() - start
    return out


# The live server ---------------------------------------------------------------------------------------


COMMON_FLAGS: list[str] = []  # given to every server (--token-budget)


@contextmanager
def serve(*flags: str, start_timeout: float = 300.0) -> Iterator[tuple[int, subprocess.Popen[str]]]:
    """``rewardkit serve`` (demo model, CPU) on a free 127.0.0.1 port."""
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        port = probe.getsockname()[1]
    cmd = [
        sys.executable,
        "-m",
        "rewardkit",
        "serve",
        "--device",
        "cpu",
        "--host",
        HOST,
        "--port",
        str(port),
        *flags,
    ]
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.monotonic() + start_timeout
        while exchange_ok(port) is False:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"server did not start: {proc.stderr.read() if proc.stderr else ''}")
            time.sleep(0.2)
        yield port, proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def exchange_ok(port: int) -> bool:
    try:
        return exchange(port, head("GET", "/ready"), timeout=5).status == 200
    except OSError:
        return False


def drain(flags: Iterable[str], data: bytes, sig: signal.Signals) -> Outcome:
    """A request in flight when ``sig`` arrives: its answer, and the exit status."""
    with serve(*flags) as (port, proc):
        box: dict[str, Answer] = {}
        t = threading.Thread(target=lambda: box.update(a=post(port, "/v1/rewards", data)))
        t.start()
        time.sleep(1.0)  # queued (or being scored)
        proc.send_signal(sig)
        t.join(120)
        code = proc.wait(120)
    a = box.get("a", Answer(None))
    return Outcome(f"{a.status}, exit {code}", ok=(a.status, code) in ((200, 0), (503, 1)))


# Running it --------------------------------------------------------------------------------------------


@dataclass
class Row:
    case: str
    table_row: str
    status: str
    seconds: float
    probe_worst_s: float = float("nan")
    probe_median_s: float = float("nan")
    probe_requests: int = 0
    probe_failures: list[str] = field(default_factory=list)
    under_bound: bool = True
    expected: bool = True
    detail: str = ""


def run_case(port: int, name: str, table_row: str, case: Case, bound: float) -> Row:
    """``case`` against the server on ``port`` with the probe running alongside."""
    with Probe(port) as probe:
        out = _timed(case, port)
    return Row(
        name,
        table_row,
        out.status,
        out.seconds,
        probe.worst,
        statistics.median(probe.latencies) if probe.latencies else float("nan"),
        len(probe.latencies),
        probe.failures,
        under_bound=probe.worst <= bound and not probe.failures,
        expected=out.ok,
        detail=out.detail,
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--bound", type=float, default=1.0, help="latency bound of the concurrent small request (s)"
    )
    ap.add_argument("--cases", nargs="*", default=None, help="run only these cases")
    ap.add_argument(
        "--token-budget",
        type=int,
        default=1024,
        help="engine batch tokens of every server: a small request can wait for one batch, and a "
        "full batch of the CPU default (8192) takes the demo model over a second on one core",
    )
    ap.add_argument("--out", default=os.environ.get("OUT", "."))
    a = ap.parse_args()
    COMMON_FLAGS[:] = ["--token-budget", str(a.token_budget)]
    s = Sizes()
    from rewardkit.demo import DEMO_MODEL_DIR

    rows: list[Row] = []

    def show(r: Row) -> None:
        rows.append(r)
        print(
            f"{r.case:<16} {r.status:<30} {r.seconds:7.2f} s  probe p50 {r.probe_median_s:6.3f} s, max {r.probe_worst_s:6.3f} s  {r.detail}",
            flush=True,
        )

    def cases(port: int, todo: list[tuple[str, str, Callable[[], Case]]]) -> None:
        for name, row, make in todo:
            if a.cases is None or name in a.cases:
                show(run_case(port, name, row, make(), a.bound))

    def wanted(*names: str) -> bool:
        return a.cases is None or any(n in a.cases for n in names)

    if wanted("huge_turn", "long_turn", "classify_items", "many_messages", "many_scored", "disconnects"):
        with serve() as (port, _):
            cases(
                port,
                [
                    ("huge_turn", "one assistant turn of 10M × 'word ' (50 MB)", lambda: huge_turn(s)),
                    ("long_turn", "one assistant turn of 1.5M characters", lambda: long_turn(s)),
                    (
                        "classify_items",
                        "/classify {'input': [0, …, 999999]} (7.9 MB)",
                        lambda: classify_items(s),
                    ),
                    (
                        "many_messages",
                        "1,024 conversations × 1,000 messages (35 MiB)",
                        lambda: many_messages(s),
                    ),
                    ("many_scored", "1,024 conversations × 100 messages, scored", lambda: many_scored(s)),
                    (
                        "disconnects",
                        "16 × 256-conversation requests, clients leave after 1 s",
                        lambda: disconnects(s),
                    ),
                    (
                        "surrogate_nan",
                        "lone surrogate (every route), NaN",
                        lambda: malformed("lone surrogate", "NaN"),
                    ),
                    (
                        "utf8_nesting",
                        "invalid UTF-8, deep nesting",
                        lambda: malformed("invalid UTF-8", "deep nesting"),
                    ),
                    ("paths", "404 bodies, /v1/models, spec.model", lambda: no_paths(str(DEMO_MODEL_DIR))),
                ],
            )
    if wanted("left_turns", "left_truncated"):
        with serve("--truncation", "left") as (port, _):
            cases(
                port,
                [
                    ("left_turns", "--truncation left, 2,000 / 4,000 short turns", lambda: left_turns(s)),
                    (
                        "left_truncated",
                        f"--truncation left, {s.left_ok_turns} turns",
                        lambda: left_truncated(s),
                    ),
                ],
            )
    if wanted("chunked", "unfinished"):
        with serve("--max-body-bytes", "1048576", "--read-timeout", "5") as (port, _):
            cases(
                port,
                [
                    ("chunked", "--max-body-bytes 1048576, 2 MB sent chunked", lambda: chunked_body(s)),
                    ("unfinished", "1,200 connections with unfinished bodies", lambda: unfinished(s, 5.0)),
                ],
            )
    if wanted("paths_named"):
        with serve("--served-model-name", "my-rm") as (port, _):
            cases(
                port,
                [
                    (
                        "paths_named",
                        "the same, --served-model-name my-rm",
                        lambda: no_paths(str(DEMO_MODEL_DIR)),
                    )
                ],
            )
    for name, row, flags, data, sig in [
        (
            "drain_cut",
            "drain longer than --shutdown-timeout 2",
            ["--shutdown-timeout", "2"],
            _body([_conv(100, "w")] * 1024),
            signal.SIGTERM,
        ),
        ("drain_sigint", "SIGINT with a request in flight", ["--max-wait-ms", "3000"], SMALL, signal.SIGINT),
    ]:
        if wanted(name):
            start = time.perf_counter()
            out = drain(flags, data, sig)
            show(Row(name, row, out.status, time.perf_counter() - start, expected=out.ok))

    print(
        f"\n{'case':<16}{'status':<30}{'time':>9}{'probe p50':>11}{'probe max':>11}  under {a.bound:g} s  expected"
    )
    for r in rows:
        print(
            f"{r.case:<16}{r.status:<30}{r.seconds:8.2f}s{r.probe_median_s:10.3f}s{r.probe_worst_s:10.3f}s  "
            f"{r.under_bound!s:<11}{r.expected}"
        )
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "server_faults.json"
    meta = {
        "python": sys.version.split()[0],
        "cpus": os.cpu_count(),
        "load_average": os.getloadavg(),
        "bound_s": a.bound,
        "token_budget": a.token_budget,
        "sizes": asdict(s),
    }
    path.write_text(json.dumps({**meta, "rows": [asdict(r) for r in rows]}, indent=1))
    print(f"wrote {path}")
    failed = [r.case for r in rows if not (r.expected and r.under_bound)]
    print(f"not as expected: {', '.join(failed)}" if failed else "every case as expected")


if __name__ == "__main__":
    main()
