"""Engine throughput and fidelity on one GPU, against the HF baselines measured in the same run.

Builds a random-weight ``Qwen2ForSequenceClassification`` of real shapes (weights do not change
speed) with the HF baseline's own code (``anchor_hf.py``, copied beside this file or into
``.carry/``), then on the same model and workload times:

  card     the model card's loop, one conversation per forward (anchor_hf.run_seed)
  sorted   HF length-sorted padded batches under a 16k-token budget (anchor_hf.run_batches)
  engine   rewardkit's ScoringEngine, packed and padding-free, for each variant asked for

and reports tokens/s, share of the compute floor (FLOPs at the measured 8192³ bf16 matmul
rate, anchor_hf's FLOP count), peak memory, and fidelity against the card loop: max |Δreward|
and, on RM-Bench, the share of chosen/rejected pairs ordered the same way.

    python bench/engine_bench.py --size 32b --workload lognormal rmbench --variants 16k auto+compile
    python bench/engine_bench.py --size 32b --workload rmbench --variants auto+compile auto+compile+fp8
    python bench/engine_bench.py --size 32b --workload --fp8-fidelity
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent / ".carry"), str(HERE)]
import anchor_hf  # noqa: E402  (the HF baseline, carried beside the project)

from rewardkit.engine.engine import ScoringEngine, set_compiled  # noqa: E402


def load_workload(name: str, n: int, tokens: str | None):
    """Token sequences (CPU int64 tensors) and, for RM-Bench, the chosen/rejected pairs."""
    if name == "lognormal":
        return anchor_hf.workload(n, 512, 0.8, 16, 4096), None
    import numpy as np

    z = np.load(tokens)
    offs = np.concatenate([[0], np.cumsum(z["lens"])])
    seqs = [torch.from_numpy(z["ids"][offs[i] : offs[i + 1]].astype("int64")) for i in range(len(z["lens"]))]
    return seqs, z["pairs"]


def timed(fn):
    torch.cuda.synchronize()
    t = time.perf_counter()
    r = fn()
    torch.cuda.synchronize()
    return r, time.perf_counter() - t


def parse_variant(v: str) -> dict:
    """``32k``, ``32k+compile``, ``auto``, ``auto+compile+fp8`` → ScoringEngine options."""
    parts = v.split("+")
    budget = None if parts[0] == "auto" else int(float(parts[0].rstrip("k")) * 1024)
    return {"token_budget": budget, "compile": "compile" in parts[1:], "fp8": "fp8" in parts[1:]}


def pair_agreement(ref: list[float], got: list[float], pairs) -> float:
    same = sum((ref[c] > ref[r]) == (got[c] > got[r]) for c, r in pairs)
    return same / len(pairs)


def bench_workload(model, cfg, peak, name, a, out):
    seqs, pairs = load_workload(name, a.n, a.tokens)
    tokens = sum(len(s) for s in seqs)
    floor_s = anchor_hf.flops(model, cfg, seqs) / peak
    res = {
        "workload": name,
        "n": len(seqs),
        "tokens": tokens,
        "mean_len": tokens / len(seqs),
        "max_len": max(len(s) for s in seqs),
        "floor_tok_s": tokens / floor_s,
    }
    rows = []
    # A whole untimed pass first: each new sequence length loads kernels, and the first pass over
    # a sample of varied lengths runs ~2.4x slower than the next (7B, RM-Bench lengths, H200).
    anchor_hf.run_seed(model, seqs)
    ref, t = timed(lambda: anchor_hf.run_seed(model, seqs))
    rows.append(("card loop (HF, 1/forward)", t, None, 0.0, None))
    order = sorted(range(len(seqs)), key=lambda i: len(seqs[i]))
    batches = anchor_hf.budget_batches([len(seqs[i]) for i in order], 16384)
    torch.cuda.reset_peak_memory_stats()
    srt, t = timed(lambda: anchor_hf.run_batches(model, seqs, order, batches, cfg.pad_token_id))
    rows.append(
        (
            "HF sorted 16k padded",
            t,
            torch.cuda.max_memory_allocated() / 2**30,
            max(abs(x - y) for x, y in zip(ref, srt, strict=True)),
            pair_agreement(ref, srt, pairs) if pairs is not None else None,
        )
    )
    lists = [s.tolist() for s in seqs]
    bf16_engine = None
    # FP8 converts the model in place, for good: those variants run last.
    for v in sorted(a.variants, key=lambda v: parse_variant(v)["fp8"]):
        opts = parse_variant(v)
        try:
            eng = ScoringEngine(model, **opts)
            t0 = time.perf_counter()
            eng.score_ids(lists[: max(8, len(lists) // 8)])  # warm-up (and compilation)
            warm = time.perf_counter() - t0
            torch.cuda.reset_peak_memory_stats()
            got, t = timed(lambda eng=eng: eng.score_ids(lists))
            rows.append(
                (
                    f"engine {v} (budget {eng.token_budget})",
                    t,
                    torch.cuda.max_memory_allocated() / 2**30,
                    max(abs(x - y) for x, y in zip(ref, got, strict=True)),
                    pair_agreement(ref, got, pairs) if pairs is not None else None,
                )
            )
            res[f"warmup_s_{v}"] = warm
            if not opts["fp8"]:
                bf16_engine = got
            elif bf16_engine is not None:
                res[f"{v}_vs_bf16_engine"] = {
                    "max_abs_diff": max(abs(x - y) for x, y in zip(bf16_engine, got, strict=True)),
                    "pair_agreement": pair_agreement(bf16_engine, got, pairs) if pairs is not None else None,
                }
                print(f"{v} vs the bf16 engine: {json.dumps(res[f'{v}_vs_bf16_engine'])}", flush=True)
        except Exception as e:  # report and continue with the next variant
            res[f"error_{v}"] = repr(e)[:400]
            print(f"variant {v} failed: {e!r}"[:400], flush=True)
        finally:
            set_compiled(model, False)  # compiled in place: undo before the next variant
    res["rows"] = [
        dict(
            method=m,
            seconds=t,
            tok_s=tokens / t,
            of_floor=floor_s / t,
            peak_gib=pk,
            max_abs_diff=d,
            pair_agreement=pa,
        )
        for m, t, pk, d, pa in rows
    ]
    res["reward_spread"] = max(ref) - min(ref)
    out[name] = res
    card = rows[0][1]
    print(f"\n== {a.size} {name}: {len(seqs)} seqs, {tokens:,} tokens, floor {res['floor_tok_s']:,.0f} tok/s")
    print(
        f"{'method':40s} {'tok/s':>9s} {'floor':>6s} {'x card':>7s} {'peak GiB':>9s} {'max|Δ|':>8s} {'pairs':>7s}"
    )
    for m, t, pk, d, pa in rows:
        print(
            f"{m:40s} {tokens / t:9,.0f} {floor_s / t:6.1%} {card / t:7.2f} "
            f"{'' if pk is None else f'{pk:9.1f}':>9s} {d:8.4f} {'' if pa is None else f'{pa:7.2%}':>7s}"
        )
    if pairs is not None and a.fidelity:
        try:
            res["fidelity_fp32_head"] = fidelity(model, seqs, lists, pairs)
        except Exception as e:  # keep the throughput results
            res["fidelity_error"] = repr(e)[:400]
            print(f"fidelity failed: {e!r}"[:400], flush=True)


@torch.inference_mode()
def principal_direction(model, seqs, n: int = 256) -> torch.Tensor:
    """First principal component of the final hidden state at each conversation's last token."""
    h = torch.stack([model.model(s[None].cuda()).last_hidden_state[0, -1].float() for s in seqs[:n]])
    h = h - h.mean(0)
    return torch.linalg.svd(h, full_matrices=False).Vh[0]  # (D,)


@contextmanager
def fp32_head(model):
    """The ``score`` head in fp32, fed fp32 hidden states, for the duration; yields its (fp32)
    random weight. Restored to the random bf16 head afterwards."""
    head = model.score
    head.float()
    random_w = head.weight.data.clone()
    hook = head.register_forward_pre_hook(lambda _m, args: (args[0].float(),))
    try:
        yield random_w
    finally:
        hook.remove()
        head.weight.data = random_w
        head.to(torch.bfloat16)


def ordering(ref: list[float], got: list[float], pairs) -> dict:
    """How far ``got`` is from ``ref`` and whether it orders the pairs the same, overall and on
    the pairs whose ``ref`` margin exceeds twice the largest difference."""
    d = (torch.tensor(got) - torch.tensor(ref)).abs()
    noise = float(d.max())
    margin = [abs(ref[c] - ref[r]) for c, r in pairs]
    clear = [p for p, m in zip(pairs, margin, strict=True) if m > 2 * noise]
    return {
        "reward_std": float(torch.tensor(ref).std()),
        "max_abs_diff": noise,
        "median_abs_diff": float(d.median()),
        "pair_agreement": pair_agreement(ref, got, pairs),
        "median_pair_margin": float(torch.tensor(margin).median()),
        "pairs_margin_over_2x_max_diff": len(clear),
        "agreement_on_those": pair_agreement(ref, got, clear) if clear else None,
    }


def fidelity(model, seqs, lists, pairs) -> dict:
    """Engine vs the card loop with the head in fp32 on both sides, for two heads.

    With random weights, rewards of different responses differ by about the bf16 step of the
    rewards themselves, so a bf16 head output makes most pairs near-ties; an fp32 head (applied
    to the same bf16 hidden states) removes that last rounding, leaving the body's numerics.
    ``random``: the random head. ``principal``: the head set to the first principal component of
    the pooled hidden states — a direction along which responses differ, as a trained head reads
    one — which gives the ordering test margins above the bf16 noise of the body.
    """
    out: dict = {}
    with fp32_head(model) as random_w:
        for head_name, w in (("random", random_w), ("principal", principal_direction(model, seqs)[None])):
            model.score.weight.data = w.float().cuda()
            ref = anchor_hf.run_seed(model, seqs)
            res = {}
            for name, comp in (("engine_eager", False), ("engine_compiled", True)):
                got = ScoringEngine(model, head_dtype=torch.float32, compile=comp).score_ids(lists)
                res[name] = ordering(ref, got, pairs)
                set_compiled(model, False)
            out[head_name] = res
            print(f"fidelity (fp32 {head_name} head): {json.dumps(res)}", flush=True)
    return out


def fp8_fidelity(model, seqs, lists, pairs) -> dict:
    """FP8 against bf16 on RM-Bench pairs, both engines compiled, the head in fp32 on both sides,
    for the random head and the principal-direction head (see `fidelity`). Converts the model
    to FP8 in place: run it last."""
    got: dict = {}
    with fp32_head(model) as random_w:
        heads = {"random": random_w, "principal": principal_direction(model, seqs)[None].float().cuda()}
        for fp8 in (False, True):
            for name, w in heads.items():
                model.score.weight.data = w
                got[name, fp8] = ScoringEngine(
                    model, head_dtype=torch.float32, compile=True, fp8=fp8
                ).score_ids(lists)
                set_compiled(model, False)
    out = {name: ordering(got[name, False], got[name, True], pairs) for name in heads}
    for name, r in out.items():
        print(f"fp8 vs bf16 (fp32 {name} head): {json.dumps(r)}", flush=True)
    return out


def long_conversation(model, lengths, chunk, out):
    """Single long conversations: the layer-major chunked path (chunks of ``chunk`` tokens)
    and, where it fits, the one-pass forward; time, tokens/s, peak memory, reward difference."""
    g = torch.Generator().manual_seed(1)
    res = {}
    for L in lengths:
        ids = torch.randint(0, 151000, (L,), generator=g).tolist()
        row = {}
        for mode, budget in (("chunked", chunk), ("one_pass", L)):
            eng = ScoringEngine(model, token_budget=budget, compile=False)
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
            try:
                (r,), t = timed(lambda eng=eng, ids=ids: eng.score_ids([ids]))
                row[mode] = {
                    "seconds": t,
                    "tok_s": L / t,
                    "reward": r,
                    "peak_gib": torch.cuda.max_memory_allocated() / 2**30,
                }
            except torch.OutOfMemoryError:
                row[mode] = {"error": "out of memory"}
        if "reward" in row.get("one_pass", {}):
            row["abs_diff"] = abs(row["chunked"]["reward"] - row["one_pass"]["reward"])
        res[L] = row
        print(f"long {L:,} tokens: {json.dumps(row)}", flush=True)
    out["long"] = res


def group_scoring(model, out, k=8, prompt_len=1024, resp_len=256, n_groups=32):
    """K responses per prompt: per-conversation engine vs shared-prefix groups (same rewards)."""
    g = torch.Generator().manual_seed(2)
    groups = []
    for _ in range(n_groups):
        prompt = torch.randint(0, 151000, (prompt_len,), generator=g).tolist()
        groups.append(
            [prompt + torch.randint(0, 151000, (resp_len,), generator=g).tolist() for _ in range(k)]
        )
    flat = [s for grp in groups for s in grp]
    tokens = sum(len(s) for s in flat)
    res = {"k": k, "prompt_len": prompt_len, "resp_len": resp_len, "groups": n_groups, "tokens": tokens}
    for compiled in (False, True):
        eng = ScoringEngine(model, compile=compiled)
        try:
            eng.score_ids(flat[:16])
            eng.score_groups(groups[:2])
            per, t_per = timed(lambda eng=eng: eng.score_ids(flat))
            grp, t_grp = timed(lambda eng=eng: eng.score_groups(groups))
            grp = [r for gg in grp for r in gg]
            res["compiled" if compiled else "eager"] = {
                "per_conversation_s": t_per,
                "groups_s": t_grp,
                "speedup": t_per / t_grp,
                "per_conversation_tok_s": tokens / t_per,
                "groups_effective_tok_s": tokens / t_grp,
                "max_abs_diff": max(abs(a - b) for a, b in zip(per, grp, strict=True)),
            }
        except Exception as e:
            res["compiled" if compiled else "eager"] = {"error": repr(e)[:400]}
        finally:
            set_compiled(model, False)
        print(
            f"groups (compile={compiled}): {json.dumps(res.get('compiled' if compiled else 'eager'))}",
            flush=True,
        )
    out["groups"] = res


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", default="32b", choices=sorted(anchor_hf.SIZES))
    ap.add_argument("--workload", nargs="*", default=["lognormal"], choices=["lognormal", "rmbench"])
    ap.add_argument("--tokens", default=str(HERE.parent / ".carry" / "rmbench_tokens.npz"))
    ap.add_argument("--n", type=int, default=256, help="lognormal sequences (anchor_hf's default)")
    ap.add_argument("--variants", nargs="+", default=["16k", "32k"])
    ap.add_argument("--fidelity-only", action="store_true", help="only the RM-Bench fidelity pass")
    ap.add_argument("--fidelity", action="store_true", help="fp32-head fidelity pass on RM-Bench pairs")
    ap.add_argument(
        "--fp8-fidelity",
        action="store_true",
        help="fp32-head FP8-vs-bf16 pair agreement on RM-Bench (converts the model: runs last)",
    )
    ap.add_argument("--long", nargs="*", type=int, default=[], help="single-conversation lengths")
    ap.add_argument("--long-chunk", type=int, default=16384, help="chunk size of the chunked path")
    ap.add_argument("--groups", action="store_true", help="K=8 shared-prompt group scoring")
    ap.add_argument(
        "--memory-cap-gib",
        type=float,
        default=None,
        help="cap GPU memory for --long (e.g. 79 to stand for an 80 GB H100 on an H200)",
    )
    ap.add_argument("--out", default=os.environ.get("OUT", "."))
    a = ap.parse_args()
    if any(parse_variant(v)["fp8"] for v in a.variants) and (
        len(a.workload) > 1 or a.groups or a.long or a.fidelity_only or a.fp8_fidelity
    ):
        ap.error("fp8 variants convert the model in place: give them one workload and nothing else")

    import transformers

    peak = anchor_hf.matmul_peak(torch.bfloat16)
    model, cfg = anchor_hf.build(a.size, torch.bfloat16, "sdpa")
    out = {
        "device": torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "size": a.size,
        "matmul_tflops": peak / 1e12,
        "date": time.strftime("%Y-%m-%d"),
        "weights_gib": torch.cuda.memory_allocated() / 2**30,
    }
    print(json.dumps(out), flush=True)
    for w in a.workload:
        bench_workload(model, cfg, peak, w, a, out)
    if a.fidelity_only:
        seqs, pairs = load_workload("rmbench", a.n, a.tokens)
        out["fidelity_fp32_head"] = fidelity(model, seqs, [s.tolist() for s in seqs], pairs)
    if a.groups:
        group_scoring(model, out)
    if a.long:
        if a.memory_cap_gib:  # only for the long conversations: the others size to free memory
            total = torch.cuda.get_device_properties(0).total_memory
            torch.cuda.set_per_process_memory_fraction(min(1.0, a.memory_cap_gib * 2**30 / total))
        long_conversation(model, a.long, a.long_chunk, out)
        torch.cuda.set_per_process_memory_fraction(1.0)
    if a.fp8_fidelity:
        seqs, pairs = load_workload("rmbench", a.n, a.tokens)
        out["fp8_fidelity"] = fp8_fidelity(model, seqs, [s.tolist() for s in seqs], pairs)
    Path(a.out).mkdir(parents=True, exist_ok=True)
    (Path(a.out) / f"engine_{a.size}.json").write_text(json.dumps(out, indent=1, default=str))


if __name__ == "__main__":
    main()
