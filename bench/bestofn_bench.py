"""Best-of-N scoring speed: K responses per prompt scored as shared-prompt groups (the prompt
computed once) against the same K conversations scored separately, both with the packed engine.

Builds a random-weight ``Qwen2ForSequenceClassification`` of the asked shape (weights do not change
speed) and, for each K, a workload of prompts of ``--prompt-len`` tokens (uniform in the range)
each with K responses of ``--response-len`` tokens, about ``--tokens`` tokens counted as separate
conversations. Per K it times ``ScoringEngine.score_ids`` over the K·G conversations and
``ScoringEngine.score_groups`` over the G groups (after a warm-up of each, which also compiles),
and reports both, the speed-up, the share of tokens the groups do not recompute, and the largest
reward difference between the two (they compute the same rewards).

    python bench/bestofn_bench.py --size 7b --k 4 8 16               # GPU; JSON to $OUT
    python bench/bestofn_bench.py --size tiny --device cpu --tokens 20000 --k 2 4   # smoke test
"""

from __future__ import annotations

import argparse
import json
import os
import random
import time
from pathlib import Path

import torch

import common  # bench/common.py (the script's folder is on sys.path)
from rewardkit.engine.batching import shared_prefix_len
from rewardkit.engine.engine import ScoringEngine


def build_model(size: str, device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
    from transformers import AutoModelForSequenceClassification

    cfg = common.config(size, num_labels=1, pad_token_id=0, max_position_embeddings=32768)
    torch.manual_seed(0)
    with device:
        model = AutoModelForSequenceClassification.from_config(cfg, dtype=dtype)
    return model.eval().requires_grad_(False)


def workload(
    k: int, tokens: int, prompt_len: tuple[int, int], response_len: tuple[int, int], vocab: int, seed: int
) -> list[list[list[int]]]:
    """Groups of K sequences sharing a prompt, about ``tokens`` tokens as separate conversations.
    Token ids avoid 0 (the pad id), so every sequence ends on a real token."""
    rng = random.Random(seed * 1000 + k)
    hi = min(vocab, 151000)
    groups: list[list[list[int]]] = []
    total = 0
    while total < tokens:
        prompt = [rng.randrange(1, hi) for _ in range(rng.randint(*prompt_len))]
        group = [prompt + [rng.randrange(1, hi) for _ in range(rng.randint(*response_len))] for _ in range(k)]
        groups.append(group)
        total += sum(len(s) for s in group)
    return groups


def timed(fn, device: torch.device):
    if device.type == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    r = fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return r, time.perf_counter() - t


def bench_k(engine: ScoringEngine, groups: list[list[list[int]]], device: torch.device) -> dict:
    flat = [s for g in groups for s in g]
    tokens = sum(len(s) for s in flat)
    prefix = [shared_prefix_len(g) for g in groups]  # what the engine computes once per group
    prompt_tokens = sum(prefix)
    unique = tokens - sum(p * (len(g) - 1) for p, g in zip(prefix, groups, strict=True))
    # Warm-up of both paths on a slice (compiles the layers for the shapes seen).
    engine.score_ids(flat[: 4 * len(groups[0])])
    engine.score_groups(groups[:4])
    sep, t_sep = timed(lambda: engine.score_ids(flat), device)
    grp, t_grp = timed(lambda: engine.score_groups(groups), device)
    grp_flat = [r for g in grp for r in g]
    return {
        "k": len(groups[0]),
        "groups": len(groups),
        "conversations": len(flat),
        "tokens": tokens,
        "mean_prompt_len": prompt_tokens / len(groups),
        "mean_response_len": (tokens - prompt_tokens * len(groups[0])) / len(flat),
        "unique_tokens": unique,
        "separate_s": t_sep,
        "groups_s": t_grp,
        "separate_tok_s": tokens / t_sep,
        "groups_effective_tok_s": tokens / t_grp,
        "speedup": t_sep / t_grp,
        "token_ratio": tokens / unique,
        "max_abs_diff": max(abs(a - b) for a, b in zip(sep, grp_flat, strict=True)),
        "peak_gib": torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", choices=sorted(common.SHAPES), default="7b")
    p.add_argument("--k", type=int, nargs="+", default=[4, 8, 16], help="responses per prompt")
    p.add_argument(
        "--tokens", type=int, default=600_000, help="tokens per K, counted as separate conversations"
    )
    p.add_argument("--prompt-len", type=int, nargs=2, default=[500, 1500], metavar=("MIN", "MAX"))
    p.add_argument("--response-len", type=int, nargs=2, default=[100, 600], metavar=("MIN", "MAX"))
    p.add_argument("--device", default="cuda")
    p.add_argument("--compile", choices=["auto", "on", "off"], default="auto", help="auto: on for CUDA")
    p.add_argument("--token-budget", type=int, default=None, help="default: sized from free memory")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=os.environ.get("OUT", "."), help="directory for bestofn_<size>.json")
    a = p.parse_args()

    device = torch.device(a.device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    model = build_model(a.size, device, dtype)
    compile_ = None if a.compile == "auto" else a.compile == "on"
    engine = ScoringEngine(model, token_budget=a.token_budget, compile=compile_)
    vocab = common.SHAPES[a.size]["vocab_size"]
    rows = []
    for k in a.k:
        groups = workload(k, a.tokens, tuple(a.prompt_len), tuple(a.response_len), vocab, a.seed)
        rows.append(bench_k(engine, groups, device))
        print(json.dumps(rows[-1]), flush=True)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(
        f"\n== best-of-N, {a.size} shapes ({dtype}), {name}, engine budget {engine.token_budget} tokens, "
        f"compile={engine.compiled}; prompts {a.prompt_len[0]}-{a.prompt_len[1]} tokens, "
        f"responses {a.response_len[0]}-{a.response_len[1]}"
    )
    print(
        f"{'K':>3s} {'groups':>6s} {'tokens':>10s} {'separate s':>10s} {'tok/s':>9s} "
        f"{'groups s':>9s} {'eff tok/s':>10s} {'speed-up':>8s} {'tok ratio':>9s} {'max|Δ|':>8s}"
    )
    for r in rows:
        print(
            f"{r['k']:3d} {r['groups']:6d} {r['tokens']:10,d} {r['separate_s']:10.2f} "
            f"{r['separate_tok_s']:9,.0f} {r['groups_s']:9.2f} {r['groups_effective_tok_s']:10,.0f} "
            f"{r['speedup']:7.2f}x {r['token_ratio']:8.2f}x {r['max_abs_diff']:8.4f}"
        )
    out = {
        "size": a.size,
        "device": name,
        "dtype": str(dtype),
        "date": time.strftime("%Y-%m-%d"),
        "torch": torch.__version__,
        "token_budget": engine.token_budget,
        "compiled": engine.compiled,
        "prompt_len": a.prompt_len,
        "response_len": a.response_len,
        "rows": rows,
    }
    path = Path(a.out) / f"bestofn_{a.size}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1), encoding="utf-8")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
