"""Reward-model training throughput: tokens/s per GPU, MFU and peak memory of rewardkit's trainer step.

Builds a random-weight ``Qwen2ForSequenceClassification`` of real shapes (weights do not change
speed) on the meta device, makes it ready with the trainer's own `parallelize` (LoRA, activation
checkpointing, compile, FSDP2), fills each rank's shards with random values, and times the
trainer's own optimizer step (`rewardkit.train.step.PairStep`: packed chosen+rejected streams,
accumulation to the global batch, AdamW, clipping) on synthetic preference pairs.

One configuration:

    torchrun --nproc-per-node 2 bench/train_bench.py --size 7b --steps 3 --warmup 1 \\
        --global-batch-size 64 --ac selective-op --compile

A sweep of configurations in one process group (the model is rebuilt per configuration: wrapping,
compiling and sharding are not undone), printed as a table and written to ``--out`` (default
``$OUT``) as ``train_bench.json`` after each configuration:

    torchrun --nproc-per-node 2 bench/train_bench.py --size 7b --steps 3 --warmup 1 \\
        --global-batch-size 64 --sweep --time-limit 480
    torchrun --nproc-per-node 2 bench/train_bench.py --size tiny --sweep --steps 1 --warmup 1 \\
        --global-batch-size 8 --median-len 64 --max-len 256 --token-budget 512   # CPU smoke run

A configuration is written ``MODE[+compile][+foreach][+tokens=N][+budget=GIB]``: MODE is an
activation-checkpointing mode (``none``, ``full``, ``selective-op``, ``selective-layer:N``, or
``auto``: what the trainer would choose for a ``budget`` GiB card, default this GPU's), ``compile``
compiles each decoder block, ``foreach`` uses the ``foreach`` AdamW the trainer used before (the
default is the fused kernel the trainer uses on GPUs), ``tokens`` sets the micro-batch token
budget, ``rs=bf16`` reduce-scatters gradients in bf16 instead of fp32 (a diagnostic: not
what the trainer does), ``host`` keeps AdamW's moments on the host between steps
(``offload_optimizer``; ``auto`` decides by itself unless ``host=on``/``host=off`` is given).
Configurations whose computed plan exceeds the device's memory are skipped.

    python bench/train_bench.py --size 32b --plan             # memory plan, computed (no GPU)

``--profile`` runs one more step per configuration under ``torch.profiler`` and adds where that
step's GPU time went (`step_profile`): kernel time by kind (matmul, attention, fused Triton,
communication, other), how long the compute stream sat idle, and how much of the NCCL time no
compute kernel hid.

``--lora-rank R`` trains LoRA adapters (on the attention and MLP projections) and the head, with
the frozen base stored in bf16, as ``rewardkit train --set lora_rank=R`` does.

MFU counts useful FLOPs only (6·N per token + causal attention; activation recompute excluded)
against the card's dense bf16 peak (`rewardkit.train.metrics.PEAK_BF16_TFLOPS`).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import gc
import gzip
import itertools
import json
import os
import re
import resource
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from transformers import AutoModelForSequenceClassification

import common  # bench/common.py (the script's folder is on sys.path)
from rewardkit.distributed import ProcessGroup, join, leave
from rewardkit.engine.attention import VARLEN
from rewardkit.train.activation_checkpointing import ACMode, normalize_ac, parse_ac
from rewardkit.train.data import TokenPairs, plan_micro_batches
from rewardkit.train.lora import LoraSettings, flop_params, trainable_parameters
from rewardkit.train.memory import CARDS, GIB, Shapes, choose_ac, device_budget_gib, plan_memory
from rewardkit.train.metrics import FlopCounter, peak_tflops
from rewardkit.train.modeling import matmul_params
from rewardkit.train.offload import HostMoments
from rewardkit.train.parallelize import decoder_blocks, parallelize
from rewardkit.train.step import PairStep, make_optimizer

# The GPU sweep, most important first (a --time-limit cuts the tail): the trainer as it was (full
# checkpointing, eager and compiled, foreach AdamW); what ``auto`` picks on an 80 GB card, with
# and without the host memory for AdamW's moments, and on this one (on an H200 at 7B: no
# checkpointing, compiled: the reference); then the other modes.
DEFAULT_SWEEP = (
    "full+foreach",
    "full+compile+foreach",
    "auto+compile+budget=75.6",
    "auto+compile+budget=75.6+host=off",
    "auto+compile",
    "selective-op+compile",
    "selective-layer:2+compile",
    "selective-op",
    "selective-layer:2",
    "none+compile",
)


@dataclass(frozen=True, kw_only=True)
class BenchConfig:
    """One configuration of the sweep (see the module docstring for its spelling)."""

    ac: str
    compile: bool = False
    foreach: bool = False
    tokens: int
    budget_gib: float | None = None
    reduce_bf16: bool = False
    host: bool | None = None  # AdamW moments on the host; None: ``auto`` decides (else off)

    @classmethod
    def parse(cls, spec: str, *, tokens: int) -> BenchConfig:
        mode, *flags = spec.strip().split("+")
        values: dict[str, Any] = {"ac": normalize_ac(mode), "tokens": tokens}
        for flag in flags:
            key, _, value = flag.partition("=")
            if key in ("compile", "foreach") and not value:
                values[key] = True
            elif key == "tokens":
                values["tokens"] = int(value)
            elif key == "budget":
                values["budget_gib"] = float(value)
            elif key == "rs" and value in ("bf16", "fp32"):
                values["reduce_bf16"] = value == "bf16"
            elif key == "host" and value in ("", "on", "off"):
                values["host"] = value != "off"
            else:
                raise SystemExit(f"train_bench: unknown flag {flag!r} in configuration {spec!r}")
        return cls(**values)

    def __str__(self) -> str:
        parts = [self.ac, *(["compile"] if self.compile else []), *(["foreach"] if self.foreach else [])]
        parts += ["rs=bf16"] if self.reduce_bf16 else []
        parts += ["host"] if self.host else []
        parts.append(f"tokens={self.tokens}")
        return "+".join(parts)


def model_config(size: str):
    return common.config(size, max_position_embeddings=32768, num_labels=1, pad_token_id=0)


def build_model(size: str) -> torch.nn.Module:
    """The reward model on the meta device (fp32 master weights once allocated)."""
    with torch.device("meta"):
        model = AutoModelForSequenceClassification.from_config(model_config(size), dtype=torch.float32)
    model.config._attn_implementation = VARLEN
    return model


def materialize(root: torch.nn.Module, model: torch.nn.Module, device: torch.device, seed: int) -> None:
    """Fills each rank's (allocated) shards with N(0, 0.02); rebuilds rotary buffers."""
    g = torch.Generator(device=device).manual_seed(seed + dist.get_rank())
    with torch.no_grad():
        for p in root.parameters():
            local = p.to_local() if hasattr(p, "to_local") else p
            local.normal_(0.0, 0.02, generator=g)
    for name, mod in list(model.named_modules()):
        if hasattr(mod, "inv_freq"):  # non-persistent buffers: recompute them on the device
            parent = model.get_submodule(name.rpartition(".")[0]) if "." in name else model
            setattr(parent, name.rpartition(".")[2], type(mod)(model.config).to(device))


def workload(n_pairs: int, *, median: int, sigma: float, max_len: int, vocab: int, seed: int) -> TokenPairs:
    """Pairs of random-token conversations, lengths lognormal (a shared prompt is not modelled)."""
    g = torch.Generator().manual_seed(seed)
    lens = common.lognormal_lengths(2 * n_pairs, median=median, sigma=sigma, max_len=max_len, generator=g)
    seqs = [torch.randint(1, vocab, (n,), generator=g).tolist() for n in lens]
    return TokenPairs(chosen=seqs[0::2], rejected=seqs[1::2], strength=[1.0] * n_pairs)


def peak_rss_gib() -> float:
    """Peak resident memory of this process (for CPU runs)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def device_capacity_gib(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    return torch.cuda.get_device_properties(device).total_memory / GIB


# ---- memory plan (computed from the shapes, not measured) ----------------------------------------


def print_plan(size: str, token_budget: int, gpus: list[int]) -> None:
    """The memory plan as a markdown table (what ``docs/training.md`` shows): full fine-tuning on
    each of ``gpus``, LoRA on the first, for each checkpointing mode."""
    model = build_model(size)
    base = Shapes.of(model)
    print(
        f"{size}: reward model {base.params / 1e9:.2f}B parameters; micro-batch {token_budget} tokens; "
        "fused AdamW; GiB per GPU, computed, not measured"
    )
    for r in (16, 64):
        print(f"LoRA rank {r}: {Shapes.of(model, lora_rank=r).adapters / 1e6:.1f}M adapter parameters")
    modes = [(ACMode("full"), False), (ACMode("selective-op"), False), (ACMode("none"), False)]
    modes.append((ACMode("none"), True))
    rows = [("full FT", w, 0) for w in gpus] + [(f"LoRA r{r}", gpus[0], r) for r in (16, 64)]
    cols = list(plan_memory(base, world_size=1, tokens=1, ac=modes[0][0]).columns())
    print(f"| approach | GPUs | AC | compiled | {' | '.join(cols)} | fits (card - 4 GiB) |")
    print("|---|---:|---|---|" + "---:|" * len(cols) + "---|")
    for name, world, r in rows:
        s = Shapes.of(model, lora_rank=r)
        for mode, compiled in modes:
            p = plan_memory(s, world_size=world, tokens=token_budget, ac=mode, compiled=compiled)
            fits = [card for card, budget in CARDS.items() if p.total <= budget]
            vals = " | ".join(f"{v:.1f}" for v in p.columns().values())
            yes = "yes" if compiled else "no"
            print(f"| {name} | {world} | {mode} | {yes} | {vals} | {', '.join(fits) or 'neither'} |")


# ---- one configuration ---------------------------------------------------------------------------


def resolve(
    bc: BenchConfig, shapes: Shapes, env: ProcessGroup, longest: int
) -> tuple[BenchConfig, ACMode, dict[str, Any]]:
    """The configuration as it runs (``auto``: the mode and micro-batch the trainer would choose),
    its mode, and its plan."""
    kw: dict[str, Any] = {
        "world_size": env.world_size,
        "compiled": bc.compile,
        "fused_optimizer": not bc.foreach,
    }
    if bc.ac == "auto":
        budget = bc.budget_gib or device_budget_gib(env.device) or 1e9
        choice = choose_ac(
            shapes, tokens=bc.tokens, budget_gib=budget, longest=longest, host_moments=bc.host, **kw
        )
        resolved = dataclasses.replace(bc, tokens=choice.tokens, host=choice.plan.host_moments)
        return resolved, choice.mode, choice.to_dict()
    mode = parse_ac(bc.ac)
    bc = dataclasses.replace(bc, host=bool(bc.host))
    plan = plan_memory(shapes, ac=mode, tokens=max(bc.tokens, longest), host_moments=bc.host, **kw)
    return bc, mode, plan.to_dict()


# Kernel kinds by name (the first that matches): NCCL's, cuBLAS/CUTLASS GEMMs, flash attention,
# Triton kernels inductor generated; the rest is "other".
KERNEL_KINDS = (
    ("communication", re.compile(r"nccl", re.I)),
    ("matmul", re.compile(r"gemm|cutlass|nvjet|xmma|cublas", re.I)),
    ("attention", re.compile(r"flash|fmha|attention", re.I)),
    ("fused (triton)", re.compile(r"^triton_", re.I)),
)
COLLECTIVE = re.compile(r"(AllGather|ReduceScatter|AllReduce|Broadcast|SendRecv)", re.I)


def _union(spans: list[tuple[float, float]]) -> list[tuple[float, float]]:
    out: list[tuple[float, float]] = []
    for a, b in sorted(spans):
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out


def _length(spans: list[tuple[float, float]]) -> float:
    return sum(b - a for a, b in spans)


def _overlap(x: list[tuple[float, float]], y: list[tuple[float, float]]) -> float:
    """Total length of the intersection of two unions of disjoint sorted spans."""
    total, i, j = 0.0, 0, 0
    while i < len(x) and j < len(y):
        total += max(0.0, min(x[i][1], y[j][1]) - max(x[i][0], y[j][0]))
        if x[i][1] < y[j][1]:
            i += 1
        else:
            j += 1
    return total


def step_profile(events: list[dict[str, Any]], step_seconds: float) -> dict[str, Any]:
    """Where one step's GPU time went, from a chrome trace's kernel events (times in µs).

    ``kernels_s``: summed kernel time by kind (kinds on different streams overlap);
    ``communication_s``: NCCL kernel time by collective; ``compute_idle_s``: the step's wall time
    minus the time the compute stream (the one with the most non-NCCL kernel time: an NCCL kernel
    waiting for the other rank can span longer) ran any kernel, and ``idle_gaps``: how
    much of it came in gaps of ≥ 1 ms, how many, and the longest (the first kernel's start to the
    last one's end bounds the GPU part of the step); ``exposed_communication_s``: NCCL kernel time
    during which no kernel ran on the compute stream (communication that no computation hid).
    """
    kernels = [e for e in events if e.get("cat") == "kernel" and "dur" in e]
    by_kind: dict[str, float] = {}
    by_collective: dict[str, float] = {}
    streams: dict[Any, list[tuple[float, float]]] = {}
    work: dict[Any, float] = {}  # non-NCCL kernel time by stream
    comm: list[tuple[float, float]] = []
    for e in kernels:
        name = e.get("name", "")
        kind = next((k for k, pat in KERNEL_KINDS if pat.search(name)), "other")
        by_kind[kind] = by_kind.get(kind, 0.0) + e["dur"] / 1e6
        span = (e["ts"] / 1e6, (e["ts"] + e["dur"]) / 1e6)
        stream = e.get("args", {}).get("stream")
        streams.setdefault(stream, []).append(span)
        work[stream] = work.get(stream, 0.0) + (0.0 if kind == "communication" else e["dur"])
        if kind == "communication":
            comm.append(span)
            m = COLLECTIVE.search(name)
            op = m.group(1) if m else "other"
            by_collective[op] = by_collective.get(op, 0.0) + e["dur"] / 1e6
    if not kernels:
        return {"step_s": step_seconds, "kernels": 0}
    compute_stream = max(work, key=lambda k: work[k])
    busy = _union(streams[compute_stream])
    gaps = [b[0] - a[1] for a, b in itertools.pairwise(busy) if b[0] - a[1] >= 1e-3]
    comm_spans = _union(comm)
    return {
        "step_s": step_seconds,
        "kernels": len(kernels),
        "kernels_s": {k: round(v, 4) for k, v in sorted(by_kind.items(), key=lambda kv: -kv[1])},
        "communication_s": {k: round(v, 4) for k, v in sorted(by_collective.items(), key=lambda kv: -kv[1])},
        "compute_busy_s": _length(busy),
        "compute_idle_s": step_seconds - _length(busy),
        "gpu_span_s": busy[-1][1] - busy[0][0],
        "idle_gaps": {
            "over_1ms_s": round(sum(gaps), 4),
            "count": len(gaps),
            "longest_s": round(max(gaps, default=0.0), 4),
        },
        "exposed_communication_s": _length(comm_spans) - _overlap(comm_spans, busy),
    }


def profiled_step(
    step: PairStep, data: TokenPairs, batch: list[int], device: torch.device, trace: Path | None = None
) -> dict[str, Any]:
    """One optimizer step under ``torch.profiler`` (on every rank), summarized by `step_profile`;
    the chrome trace is kept, gzipped, at ``trace`` when given."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU, *([ProfilerActivity.CUDA] if device.type == "cuda" else [])]
    with profile(activities=activities) as prof:
        s = step.train(data, batch)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "trace.json"
        prof.export_chrome_trace(str(path))
        raw = path.read_bytes()
    if trace is not None:
        trace.parent.mkdir(parents=True, exist_ok=True)
        trace.write_bytes(gzip.compress(raw, compresslevel=6))
    return step_profile(json.loads(raw)["traceEvents"], s.seconds)


def run_config(
    bc: BenchConfig, mode: ACMode, args: argparse.Namespace, env: ProcessGroup, data: TokenPairs
) -> dict[str, Any]:
    """Builds, shards and times one configuration; returns its measurements (all ranks)."""
    t0 = time.perf_counter()
    cuda = env.device.type == "cuda"
    bf16 = cuda and not args.fp32
    leftover = torch.cuda.memory_allocated(env.device) / GIB if cuda else 0.0  # from earlier configurations
    model = build_model(args.size)
    lora = LoraSettings(rank=args.lora_rank) if args.lora_rank else None
    root = parallelize(
        model,
        device=env.device,
        ac=mode,
        compile=bc.compile,
        lora=lora,
        param_dtype=torch.bfloat16 if bf16 else None,
        reduce_dtype=torch.bfloat16 if bc.reduce_bf16 and bf16 else torch.float32,
    )
    materialize(root, model, env.device, seed=0)
    n = matmul_params(model)
    flops = FlopCounter(model.config, flop_params(model, n) if lora else n)
    opt, sched = make_optimizer(
        trainable_parameters(root),
        lr=1e-4 if lora else 2e-6,
        betas=(0.9, 0.98),
        eps=1e-8,
        weight_decay=0.1,
        warmup_steps=10,
        fused=not bc.foreach and cuda,
    )
    host = HostMoments(opt, decoder_blocks(model), device=env.device) if bc.host else None
    step = PairStep(
        root, opt, sched, device=env.device, rank=env.rank, world_size=env.world_size, loss_name="bt",
        reward_centering=0.0, token_budget=bc.tokens, pad_token_id=None, flops=flops, grad_clip=1.0,
        host_moments=host,
    )  # fmt: skip
    setup_seconds = time.perf_counter() - t0
    before = torch.cuda.memory_allocated(env.device) / GIB if cuda else 0.0
    stats = []
    timed: list[list[int]] = []
    repeated = 0
    total = args.warmup + args.steps
    for i in range(total):
        batch = list(range(i * args.global_batch_size, (i + 1) * args.global_batch_size))
        for _ in range(1 + RETRIES * (i >= args.warmup)):
            before = compiles(env)
            s = step.train(data, batch)
            recompiled = compiles(env) > before
            if env.is_main:
                print(
                    f"  step {i + 1}/{total}: {s.seconds:.2f}s {s.tokens} tokens loss {s.loss:.4f}"
                    + (" (compiled during the step)" if recompiled else "")
                    + (": run again" if recompiled and i >= args.warmup else ""),
                    file=sys.stderr,
                )
            if not recompiled:
                break
        if i >= args.warmup:
            stats.append(s)
            timed.append(batch)
            repeated += recompiled
    if args.profile:
        batch = list(range(total * args.global_batch_size, (total + 1) * args.global_batch_size))
        trace = (
            Path(args.trace) / f"trace-{re.sub(r'[^A-Za-z0-9._-]', '_', str(bc))}.json.gz"
            if args.trace and env.is_main
            else None
        )
        profiled = profiled_step(step, data, batch, env.device, trace)
    # Each step measures its own peak (all ranks); on CPU, the process's peak RSS.
    mem = max(s.peak_memory_gib for s in stats) if cuda else peak_rss_gib()
    seconds = sum(s.seconds for s in stats)
    tokens = sum(s.tokens for s in stats)
    flops_total = sum(s.flops for s in stats)
    peak = peak_tflops(env.device) if bf16 else None
    if host is not None:
        host.close()
    del step, opt, sched, root, model, host
    return {
        "params": n + (model_config(args.size).vocab_size * model_config(args.size).hidden_size),
        "lora_rank": args.lora_rank,
        "precision": "bf16-mixed" if bf16 else "fp32",
        "activation_checkpointing": str(mode),
        "compile": bc.compile,
        "optimizer": "foreach" if bc.foreach or not cuda else "fused",
        "offload_optimizer": bool(bc.host),
        "token_budget": bc.tokens,
        "timed_steps": len(stats),
        "timed_steps_with_compilation": repeated,
        "graph_breaks_so_far": graph_breaks(),
        "micro_batches_per_step": sum(
            len(
                plan_micro_batches(
                    b, data.lengths, rank=env.rank, world_size=env.world_size, token_budget=bc.tokens
                )
            )
            for b in timed
        )
        / len(timed),
        "tokens_per_step": tokens / len(stats),
        "seconds_per_step": seconds / len(stats),
        "losses": [s.loss for s in stats],
        "grad_norms": [s.grad_norm for s in stats],
        "tokens_per_s_per_gpu": tokens / seconds / env.world_size,
        "tflops_per_gpu": flops_total / seconds / env.world_size / 1e12,
        "mfu": flops_total / seconds / env.world_size / (peak * 1e12) if peak else None,
        "peak_memory_gib": mem,
        "allocated_before_gib": leftover,
        "allocated_after_setup_gib": before,
        "setup_seconds": setup_seconds,
        "wall_seconds": time.perf_counter() - t0,
        **({"profile": profiled} if args.profile else {}),
    }


# A timed step during which any rank compiled (a shape that broke a guard) is run again, at most
# this many times, so compile time stays out of the timings.
RETRIES = 2


def graph_breaks() -> int:
    """Graph breaks dynamo has counted in this process so far (all configurations)."""
    from torch._dynamo.utils import counters

    return sum(counters["graph_break"].values())


@functools.cache
def host_group() -> Any:
    """A gloo group over the ranks, for numbers the host keeps: reading one back from the GPU
    would wait for every copy queued before it (AdamW's moments going to the host) and hide
    their cost between the timed steps."""
    return dist.new_group(backend="gloo")


def compiles(env: ProcessGroup) -> int:
    """Graphs compiled so far, the most of any rank (a recompile on one rank stalls all)."""
    from torch._dynamo.utils import counters

    n = torch.tensor([sum(counters["stats"].values())])
    dist.all_reduce(n, op=dist.ReduceOp.MAX, group=host_group())
    return int(n.item())


def release(env: ProcessGroup) -> None:
    """Frees one configuration's model, optimizer and compiled code before the next."""
    gc.collect()
    torch._dynamo.reset()
    if env.device.type == "cuda":
        torch.cuda.empty_cache()


# ---- the table -----------------------------------------------------------------------------------

COLUMNS = (
    "configuration",
    "AC",
    "compiled",
    "AdamW",
    "tokens",
    "tok/s/GPU",
    "MFU",
    "peak GiB",
    "plan GiB",
    "≤ 75.6",
)


def table_row(r: dict[str, Any]) -> str:
    if "skipped" in r:
        return f"| {r['configuration']} | {r.get('activation_checkpointing', '')} | | | | skipped: {r['skipped']} | | | | |"
    mfu = f"{r['mfu']:.1%}" if r.get("mfu") is not None else "—"
    fits = "yes" if r["peak_memory_gib"] <= CARDS["H100 80GB"] else "no"
    name = r["configuration"] + (f" (= {r['same_as']})" if "same_as" in r else "")
    cells = (
        name,
        r["activation_checkpointing"],
        "yes" if r["compile"] else "no",
        r["optimizer"] + (", host" if r.get("offload_optimizer") else ""),
        str(r["token_budget"]),
        f"{r['tokens_per_s_per_gpu']:,.0f}",
        mfu,
        f"{r['peak_memory_gib']:.1f}",
        f"{r['planned_gib']:.1f}",
        fits,
    )
    return "| " + " | ".join(cells) + " |"


def print_table(results: list[dict[str, Any]]) -> None:
    print("| " + " | ".join(COLUMNS) + " |")
    print("|---|---|---|---|---:|---:|---:|---:|---:|---|")
    for r in results:
        print(table_row(r))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", choices=sorted(common.SHAPES), default="7b")
    ap.add_argument("--steps", type=int, default=6, help="timed optimizer steps")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    ap.add_argument("--global-batch-size", type=int, default=128, help="pairs per step over all ranks")
    ap.add_argument("--token-budget", "--micro-batch-tokens", dest="token_budget", type=int, default=16384)
    ap.add_argument("--median-len", type=int, default=1024, help="median tokens of one conversation")
    ap.add_argument("--sigma", type=float, default=0.6, help="lognormal spread of lengths")
    ap.add_argument("--max-len", type=int, default=4096)
    ap.add_argument("--ac", default="full", help="activation checkpointing mode (one configuration)")
    ap.add_argument("--no-ac", action="store_true", help="same as --ac none")
    ap.add_argument("--compile", action="store_true", help="torch.compile each decoder block")
    ap.add_argument("--foreach", action="store_true", help="foreach AdamW instead of the fused kernel")
    ap.add_argument("--sweep", action="store_true", help="run --configs (default: the GPU sweep)")
    ap.add_argument("--configs", nargs="+", default=list(DEFAULT_SWEEP), help="configurations for --sweep")
    ap.add_argument("--time-limit", type=float, default=None, help="start no configuration after this many s")
    ap.add_argument("--fp32", action="store_true", help="no bf16 mixed precision")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--lora-rank", type=int, default=0, help="train LoRA adapters of this rank (0: full)")
    ap.add_argument("--plan", action="store_true", help="print the computed memory plan and exit (no GPU)")
    ap.add_argument("--plan-gpus", type=int, nargs="+", default=[4, 8], help="GPU counts --plan shows")
    ap.add_argument(
        "--out", default=os.environ.get("OUT"), help="directory for train_bench.json (default $OUT)"
    )
    ap.add_argument("--json", default=None, help="write the results to this file instead")
    ap.add_argument("--profile", action="store_true", help="one more step under torch.profiler (see above)")
    ap.add_argument(
        "--trace", default=None, help="with --profile: keep rank 0's chrome traces (gzipped) here"
    )
    args = ap.parse_args()
    if args.plan:
        print_plan(args.size, args.token_budget, args.plan_gpus)
        return 0
    specs = args.configs if args.sweep else ["none" if args.no_ac else args.ac]
    if not args.sweep:
        specs = [specs[0] + ("+compile" if args.compile else "") + ("+foreach" if args.foreach else "")]
    configs = [BenchConfig.parse(s, tokens=args.token_budget) for s in specs]
    out = Path(args.json) if args.json else Path(args.out or ".") / "train_bench.json"

    env = join(args.device)
    start = time.perf_counter()
    shapes = Shapes.of(build_model(args.size), lora_rank=args.lora_rank)
    data = workload(
        args.global_batch_size * (args.warmup + args.steps + int(args.profile)), median=args.median_len, sigma=args.sigma,
        max_len=args.max_len, vocab=model_config(args.size).vocab_size, seed=1,
    )  # fmt: skip
    capacity = device_capacity_gib(env.device)
    header = {
        "size": args.size,
        "world_size": env.world_size,
        "device": torch.cuda.get_device_name(env.device) if env.device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "date": time.strftime("%Y-%m-%d"),
        "command": " ".join(sys.argv),
        "global_batch_size": args.global_batch_size,
        "steps": args.steps,
        "warmup": args.warmup,
        "workload": {"median_len": args.median_len, "sigma": args.sigma, "max_len": args.max_len},
        "longest_pair": max(data.lengths),
    }
    results: list[dict[str, Any]] = []
    done: dict[tuple, dict[str, Any]] = {}
    for spec, bc in zip(specs, configs, strict=True):
        late = args.time_limit is not None and time.perf_counter() - start > args.time_limit
        flag = torch.tensor([int(late)], device=env.device)
        dist.broadcast(flag, src=0)  # every rank stops at the same configuration
        bc, mode, plan = resolve(bc, shapes, env, max(data.lengths))
        row: dict[str, Any] = {"configuration": spec, **plan}
        key = (str(mode), bc.compile, bc.foreach, bc.tokens, bc.reduce_bf16, bc.host)
        if flag.item():
            row["skipped"] = f"time limit {args.time_limit:.0f} s"
        elif key in done:
            row |= {k: v for k, v in done[key].items() if k not in row} | {
                "same_as": done[key]["configuration"]
            }
        elif capacity is not None and plan["planned_gib"] > capacity:
            row["skipped"] = f"plan {plan['planned_gib']:.0f} GiB > {capacity:.0f} GiB"
        else:
            if env.is_main:
                print(f"== {spec}: {mode}{' (auto)' if bc.ac == 'auto' else ''}", file=sys.stderr)
            row |= run_config(bc, mode, args, env, data)
            done[key] = row
            release(env)
        row["activation_checkpointing"] = str(mode)
        results.append(row)
        if env.is_main:
            print(table_row(row), file=sys.stderr)
            if "profile" in row:
                print(f"  profiled step: {json.dumps(row['profile'])}", file=sys.stderr)
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps({**header, "results": results}, indent=1) + "\n", encoding="utf-8")
    if env.is_main:
        print(f"{args.size} on {env.world_size} × {header['device']}, {args.global_batch_size} pairs per step, "
              f"longest pair {header['longest_pair']} tokens, {time.perf_counter() - start:.0f} s; wrote {out}")  # fmt: skip
        print_table(results)
    leave(env)
    return 0


if __name__ == "__main__":
    sys.exit(main())
