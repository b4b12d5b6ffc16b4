"""Data-parallel scaling of the engine: tokens/s with 1, 2, 4 ... replicas, one process per GPU.

Each replica is a process on its own GPU (torch.multiprocessing, spawn) that builds a
random-weight ``Qwen2ForSequenceClassification`` of the asked shape (weights do not change
speed), takes its contiguous shard of one synthetic workload (`shard_bounds`, as
``rewardkit score --devices`` does), warms up, waits at a barrier, then scores its shard with
``ScoringEngine``. Throughput is all tokens over the slowest replica's time; the speedup is
over the 1-replica run of the same workload in the same invocation.

    python bench/parallel_bench.py --size 7b --replicas 1 2 4 --n 4096
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch
import torch.multiprocessing as mp

import common  # bench/common.py (the script's folder is on sys.path)
from rewardkit.engine.engine import ScoringEngine
from rewardkit.scoring.files import shard_bounds


def build_model(size: str, device: torch.device) -> torch.nn.Module:
    from transformers import AutoModelForSequenceClassification

    cfg = common.config(size, num_labels=1, pad_token_id=0, max_position_embeddings=32768)
    with device:
        model = AutoModelForSequenceClassification.from_config(cfg, dtype=torch.bfloat16)
    return model.eval().requires_grad_(False)


def replica(rank: int, world: int, a: argparse.Namespace, barrier, results) -> None:
    device = torch.device("cuda", rank)
    torch.cuda.set_device(device)
    torch.manual_seed(0)
    model = build_model(a.size, device)
    seqs = common.lognormal_workload(a.n, common.SHAPES[a.size]["vocab_size"], a.seed)
    lo, hi = shard_bounds(len(seqs), rank, world)
    mine = seqs[lo:hi]
    engine = ScoringEngine(model, token_budget=a.token_budget)
    engine.score_ids(mine[: max(8, len(mine) // 8)])  # warm-up (and compilation on CUDA)
    torch.cuda.synchronize()
    barrier.wait()
    t = time.perf_counter()
    engine.score_ids(mine)
    torch.cuda.synchronize()
    results[rank] = {
        "seconds": time.perf_counter() - t,
        "tokens": sum(len(s) for s in mine),
        "seqs": len(mine),
        "token_budget": engine.token_budget,
        "peak_gib": torch.cuda.max_memory_allocated(device) / 2**30,
    }


def run(world: int, a: argparse.Namespace) -> dict:
    ctx = mp.get_context("spawn")
    with ctx.Manager() as manager:
        barrier, results = manager.Barrier(world), manager.dict()
        procs = [ctx.Process(target=replica, args=(r, world, a, barrier, results)) for r in range(world)]
        for p in procs:
            p.start()
        for p in procs:
            p.join()
        failed = [r for r, p in enumerate(procs) if p.exitcode != 0]
        if failed:
            raise RuntimeError(f"replica(s) {failed} of {world} failed")
        per = [dict(results[r]) for r in range(world)]
    wall = max(r["seconds"] for r in per)
    tokens = sum(r["tokens"] for r in per)
    return {"replicas": world, "seconds": wall, "tokens": tokens, "tok_s": tokens / wall, "per_replica": per}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", choices=sorted(common.SHAPES), default="7b")
    p.add_argument("--replicas", type=int, nargs="+", default=[1, 2, 4])
    p.add_argument("--n", type=int, default=4096, help="conversations in the workload")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--token-budget", type=int, default=None, help="default: sized from free memory")
    p.add_argument("--out", default=os.environ.get("OUT", "."), help="directory for parallel_bench.json")
    a = p.parse_args()
    gpus = torch.cuda.device_count()
    todo = [w for w in a.replicas if w <= gpus]
    if not todo:
        raise SystemExit(f"no replica count in {a.replicas} fits the {gpus} GPU(s) here")
    rows = []
    for w in todo:
        rows.append(run(w, a))
        print(f"{w} replica(s): {rows[-1]['tok_s']:,.0f} tok/s", flush=True)
    base = next((r["tok_s"] for r in rows if r["replicas"] == 1), None)
    for r in rows:
        r["speedup"] = None if base is None else r["tok_s"] / base
    tokens = rows[0]["tokens"]
    print(f"\n== {a.size}, {a.n} conversations, {tokens:,} tokens, {torch.cuda.get_device_name(0)}")
    print(f"{'replicas':>8s} {'seconds':>8s} {'tok/s':>11s} {'speedup':>8s} {'peak GiB':>9s}")
    for r in rows:
        peak = max(x["peak_gib"] for x in r["per_replica"])
        sp = "" if r["speedup"] is None else f"{r['speedup']:.2f}x"
        print(f"{r['replicas']:8d} {r['seconds']:8.2f} {r['tok_s']:11,.0f} {sp:>8s} {peak:9.1f}")
    out = {
        "size": a.size,
        "n": a.n,
        "tokens": tokens,
        "device": torch.cuda.get_device_name(0),
        "gpus": gpus,
        "date": time.strftime("%Y-%m-%d"),
        "torch": torch.__version__,
        "rows": rows,
    }
    path = Path(a.out) / "parallel_bench.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1), encoding="utf-8")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
