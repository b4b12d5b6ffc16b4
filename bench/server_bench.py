"""Reward server throughput and latency against the offline engine, measured in the same run.

Builds a random-weight ``Qwen2ForSequenceClassification`` of real shapes (weights do not change
speed; 7B/32B are Qwen2.5's, ``tiny`` runs on a CPU), with a byte-level tokenizer and a ChatML
template (so one token per byte of rendered text, no download), draws a fixed workload of
conversations with log-normal token lengths, then times:

  offline   ``rm.engine.score_ids`` on the pre-tokenized workload (the engine's own batching)
  server    the same conversations through the HTTP server started in-process, driven by
            ``--clients`` concurrent clients (one conversation per request; the server also
            tokenizes, parses JSON and answers over a real socket): tokens/s, and the p50/p95/p99
            latency of those requests under that load
  latency   single requests one at a time (low load): p50/p99 over ``--latency-requests``

and prints a table and writes JSON to ``$OUT`` (or ``--out``).

    python bench/server_bench.py --size 7b
    python bench/server_bench.py --size tiny          # CPU smoke run
"""

from __future__ import annotations

import argparse
import datetime
import http.client
import importlib.metadata
import json
import math
import os
import platform
import random
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
from transformers import AutoModelForSequenceClassification

import common  # bench/common.py (the script's folder is on sys.path)
from rewardkit.api import RewardModel
from rewardkit.engine.engine import ScoringEngine
from rewardkit.models.loading import ScoringSpec, dtype_name, template_hash
from rewardkit.models.templating import ChatTokenizer
from rewardkit.models.tiny import CHATML_TEMPLATE, byte_tokenizer
from rewardkit.server import BackgroundServer, ServerConfig, create_app

WORDS = [
    "the",
    "of",
    "reward",
    "model",
    "answer",
    "question",
    "because",
    "therefore",
    "code",
    "proof",
    "value",
    "is",
    "not",
    "a",
    "an",
    "42",
]


def build_rm(size: str, device: torch.device, dtype: torch.dtype, token_budget: int | None) -> RewardModel:
    tok = byte_tokenizer()
    cfg = common.config(size, max_position_embeddings=32768, num_labels=1, pad_token_id=tok.pad_token_id)
    with device:
        model = AutoModelForSequenceClassification.from_config(cfg, dtype=dtype, attn_implementation="sdpa")
    model.eval().requires_grad_(False)
    for p in model.parameters():
        p.data.normal_(0, 0.02)
    engine = ScoringEngine(model, token_budget=token_budget)
    spec = ScoringSpec(
        model=f"random-qwen2-{size}",
        chat_template_sha256=template_hash(CHATML_TEMPLATE),
        max_length=cfg.max_position_embeddings,
        dtype=dtype_name(dtype),
        head_dtype=dtype_name(engine.head_dtype),
    )
    chat = ChatTokenizer(tok, max_length=spec.max_length)
    return RewardModel(model=model, chat=chat, engine=engine, spec=spec)


def workload(
    n: int, median: float, sigma: float, lo: int, hi: int, seed: int = 0
) -> list[list[dict[str, str]]]:
    """Conversations whose rendered length (≈ tokens, one per byte) is log-normal."""
    rng = random.Random(seed)

    def text(chars: int) -> str:
        out: list[str] = []
        while sum(len(w) + 1 for w in out) < chars:
            out.append(rng.choice(WORDS))
        return " ".join(out)[: max(1, chars)]

    convs = []
    for _ in range(n):
        target = int(min(hi, max(lo, round(math.exp(math.log(median) + sigma * rng.gauss(0, 1))))))
        body = max(2, target - 40)  # the ChatML frame of two turns is about 40 bytes
        convs.append(
            [
                {"role": "user", "content": text(body // 3)},
                {"role": "assistant", "content": text(body - body // 3)},
            ]
        )
    return convs


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def post(conn: http.client.HTTPConnection, body: dict) -> dict:
    conn.request("POST", "/v1/rewards", body=json.dumps(body), headers={"Content-Type": "application/json"})
    r = conn.getresponse()
    data = json.loads(r.read())
    if r.status != 200:
        raise RuntimeError(f"server answered {r.status}: {data}")
    return data


def drive(host: str, port: int, convs: list, clients: int) -> tuple[list[float], list[float], float]:
    """``clients`` threads, each with a kept-alive connection, pull conversations off a shared
    counter and score them one per request. Returns rewards in workload order, each request's
    latency (s) and wall seconds."""
    rewards: list[float] = [math.nan] * len(convs)
    latencies: list[float] = [math.nan] * len(convs)
    lock = threading.Lock()
    cursor = iter(range(len(convs)))

    def client() -> None:
        conn = http.client.HTTPConnection(host, port, timeout=600)
        while True:
            with lock:
                i = next(cursor, None)
            if i is None:
                break
            start = time.perf_counter()
            rewards[i] = post(conn, {"conversations": [convs[i]]})["rewards"][0]
            latencies[i] = time.perf_counter() - start
        conn.close()

    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        for f in [pool.submit(client) for _ in range(clients)]:
            f.result()
    return rewards, latencies, time.perf_counter() - start


PACKAGES = ("fastapi", "starlette", "uvicorn", "uvloop", "pydantic", "h11", "httpx")


def _version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def percentile(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, math.ceil(q * len(s)) - 1))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", choices=sorted(common.SHAPES), default="7b")
    ap.add_argument("--n", type=int, default=None, help="conversations (default 1024; tiny 256)")
    ap.add_argument("--median", type=float, default=None, help="median tokens (default 512; tiny 128)")
    ap.add_argument("--sigma", type=float, default=0.8)
    ap.add_argument("--lo", type=int, default=48)
    ap.add_argument("--hi", type=int, default=None, help="longest conversation (default 4096; tiny 1024)")
    ap.add_argument("--clients", type=int, default=64)
    ap.add_argument("--max-wait-ms", type=float, default=5.0)
    ap.add_argument("--token-budget", type=int, default=None, help="engine batch tokens (default: auto)")
    ap.add_argument("--latency-requests", type=int, default=None, help="default 100; tiny 30")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--out", default=os.environ.get("OUT", "."))
    a = ap.parse_args()
    tiny = a.size == "tiny"
    n = a.n or (256 if tiny else 1024)
    median = a.median or (128 if tiny else 512)
    hi = a.hi or (1024 if tiny else 4096)
    lat_n = a.latency_requests or (30 if tiny else 100)
    device = torch.device(a.device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32

    rm = build_rm(a.size, device, dtype, a.token_budget)
    convs = workload(n, median, a.sigma, a.lo, hi)
    encoded = rm.encode(convs)
    ids = [e.ids for e in encoded]  # type: ignore[union-attr]
    tokens = sum(len(s) for s in ids)
    res: dict = {
        "size": a.size,
        "device": torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else platform.processor() or "cpu",
        "dtype": dtype_name(dtype),
        "torch": torch.__version__,
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "n": n,
        "tokens": tokens,
        "mean_len": tokens / n,
        "max_len": max(len(s) for s in ids),
        "clients": a.clients,
        "max_wait_ms": a.max_wait_ms,
        "token_budget": rm.engine.token_budget,
        "packages": {name: _version(name) for name in PACKAGES},
    }

    # 1. Offline engine (after a warm-up on a slice of the workload).
    rm.engine.score_ids(ids[:16])
    sync(device)
    start = time.perf_counter()
    offline = rm.engine.score_ids(ids)
    sync(device)
    res["offline_s"] = time.perf_counter() - start

    app = create_app(
        rm,
        ServerConfig(max_wait_ms=a.max_wait_ms, max_queue=max(4096, 4 * a.clients), max_conversations=1024),
    )
    with BackgroundServer(app) as srv:
        # 2. Throughput under concurrent load (warm-up: one round of the clients).
        drive(srv.host, srv.port, convs[: a.clients], a.clients)
        served, loaded, res["server_s"] = drive(srv.host, srv.port, convs, a.clients)
        # 3. Latency of lone requests at low load: the median-length conversations, one at a time.
        by_len = sorted(range(n), key=lambda i: len(ids[i]))
        pick = by_len[n // 2 - lat_n // 2 : n // 2 - lat_n // 2 + lat_n]
        conn = http.client.HTTPConnection(srv.host, srv.port, timeout=600)
        lat = []
        for i in pick:
            t = time.perf_counter()
            post(conn, {"conversations": [convs[i]]})
            lat.append(time.perf_counter() - t)
        conn.close()
        # The engine alone on the same lone conversations, for the latency floor.
        eng = []
        for i in pick:
            t = time.perf_counter()
            rm.engine.score_ids([ids[i]])
            eng.append(time.perf_counter() - t)

    res["offline_tok_s"] = tokens / res["offline_s"]
    res["server_tok_s"] = tokens / res["server_s"]
    res["server_vs_offline"] = res["server_tok_s"] / res["offline_tok_s"]
    res["server_req_s"] = n / res["server_s"]
    res["max_abs_diff_server_vs_offline"] = max(abs(x - y) for x, y in zip(served, offline, strict=True))
    res["reward_spread"] = max(offline) - min(offline)
    for q in (50, 95, 99):
        res[f"loaded_latency_p{q}_ms"] = 1000 * percentile(loaded, q / 100)
    res["latency_len_median"] = statistics.median(len(ids[i]) for i in pick)
    res["latency_p50_ms"] = 1000 * percentile(lat, 0.5)
    res["latency_p99_ms"] = 1000 * percentile(lat, 0.99)
    res["engine_latency_p50_ms"] = 1000 * percentile(eng, 0.5)

    rows = [
        ("offline engine", f"{res['offline_tok_s']:,.0f} tok/s", f"{res['offline_s']:.2f} s", "1.00"),
        (
            f"server, {a.clients} clients",
            f"{res['server_tok_s']:,.0f} tok/s",
            f"{res['server_s']:.2f} s",
            f"{res['server_vs_offline']:.2f}",
        ),
    ]
    print(f"\n{a.size} on {res['device']} ({res['dtype']}): {n} conversations, {tokens:,} tokens")
    print(f"{'path':<22}{'throughput':>18}{'wall':>12}{'vs offline':>12}")
    for r in rows:
        print(f"{r[0]:<22}{r[1]:>18}{r[2]:>12}{r[3]:>12}")
    print(
        f"requests under {a.clients} clients: p50 {res['loaded_latency_p50_ms']:.1f} ms, "
        f"p95 {res['loaded_latency_p95_ms']:.1f} ms, p99 {res['loaded_latency_p99_ms']:.1f} ms"
    )
    print(
        f"lone requests (~{res['latency_len_median']:.0f} tokens): p50 {res['latency_p50_ms']:.1f} ms, "
        f"p99 {res['latency_p99_ms']:.1f} ms (engine alone p50 {res['engine_latency_p50_ms']:.1f} ms; "
        f"batch wait {a.max_wait_ms} ms)"
    )
    print(
        f"max |server - offline| = {res['max_abs_diff_server_vs_offline']:.3g} "
        f"(reward spread {res['reward_spread']:.3g})"
    )
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"server_bench_{a.size}.json"
    path.write_text(json.dumps(res, indent=1))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
