"""Reward-model training throughput: tokens/s per GPU, MFU and peak memory of rewardkit's trainer step.

Builds a random-weight ``Qwen2ForSequenceClassification`` of real shapes (weights do not change
speed) directly on the meta device, shards it with the trainer's FSDP2 function, and times the
trainer's own optimizer step (`rewardkit.train.step.PairStep`: packed chosen+rejected streams,
accumulation to the global batch, AdamW, clipping) on synthetic preference pairs.

    torchrun --nproc-per-node 4 bench/train_bench.py --size 7b --steps 8
    torchrun --nproc-per-node 4 bench/train_bench.py --size 32b --lora-rank 16 --steps 1 --warmup 1
    python bench/train_bench.py --size tiny --steps 2 --global-batch-size 8   # CPU smoke run
    python bench/train_bench.py --size 32b --plan             # memory plan, computed (no GPU)

``--lora-rank R`` trains LoRA adapters (on the attention and MLP projections) and the head, with
the frozen base stored in bf16, as ``rewardkit train --set lora_rank=R`` does.

MFU counts useful FLOPs only (6·N per token + causal attention; activation recompute excluded)
against the card's dense bf16 peak (`rewardkit.train.metrics.PEAK_BF16_TFLOPS`).
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist
from transformers import AutoModelForSequenceClassification

import common  # bench/common.py (the script's folder is on sys.path)
from rewardkit.distributed import join, leave
from rewardkit.engine.attention import VARLEN
from rewardkit.engine.engine import set_compiled
from rewardkit.train.data import TokenPairs
from rewardkit.train.distributed import PairRewards, shard_model
from rewardkit.train.lora import (
    DEFAULT_TARGET_MODULES,
    LoraSettings,
    apply_lora,
    flop_params,
    trainable_parameters,
)
from rewardkit.train.metrics import FlopCounter, peak_tflops
from rewardkit.train.modeling import enable_activation_checkpointing, matmul_params
from rewardkit.train.step import PairStep, make_optimizer


def model_config(size: str):
    return common.config(size, max_position_embeddings=32768, num_labels=1, pad_token_id=0)


def build_model(size: str, device: torch.device) -> torch.nn.Module:
    """Random fp32 master weights, allocated shard by shard (no full copy anywhere)."""
    cfg = model_config(size)
    with torch.device("meta"):
        model = AutoModelForSequenceClassification.from_config(cfg, dtype=torch.float32)
    model.config._attn_implementation = VARLEN
    return model


def materialize(root: torch.nn.Module, model: torch.nn.Module, device: torch.device, seed: int) -> None:
    """Allocates each rank's shards and fills them with N(0, 0.02); rebuilds rotary buffers."""
    root.to_empty(device=device)
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
    lens = (
        torch.exp(math.log(median) + sigma * torch.randn(2 * n_pairs, generator=g)).clamp(16, max_len).long()
    )
    seqs = [torch.randint(1, vocab, (int(n),), generator=g).tolist() for n in lens]
    return TokenPairs(chosen=seqs[0::2], rejected=seqs[1::2], strength=[1.0] * n_pairs)


def peak_memory_gib(device: torch.device) -> float:
    """Peak device memory of this process (CUDA allocator), or peak RSS on CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


# ---- memory plan (computed from the shapes, not measured) ----------------------------------------

GIB = 2**30
# Usable memory of a card, less 4 GiB for the CUDA context, NCCL buffers and allocator slack.
CARDS = {"H100 80GB": 79.6 - 4, "H200 141GB": 139.8 - 4}


def param_counts(size: str, lora_rank: int = 0) -> dict[str, int]:
    """Parameters of the reward model (``*ForSequenceClassification``: embedding, decoder, final
    norm, 1-output head), of the causal LM it comes from, and of LoRA adapters on the attention
    and MLP projections."""
    c = common.SHAPES[size]
    h, i, v, n_layers = c["hidden_size"], c["intermediate_size"], c["vocab_size"], c["num_hidden_layers"]
    kv = h // c["num_attention_heads"] * c["num_key_value_heads"]
    shapes = {  # (in, out) of each linear layer of a decoder layer
        "q_proj": (h, h), "k_proj": (h, kv), "v_proj": (h, kv), "o_proj": (h, h),
        "gate_proj": (h, i), "up_proj": (h, i), "down_proj": (i, h),
    }  # fmt: skip
    layer = sum(a * b for a, b in shapes.values()) + h + 2 * kv + 2 * h  # + q/k/v biases, 2 norms
    body = v * h + n_layers * layer + h
    adapters = n_layers * sum(
        lora_rank * (a + b) for name, (a, b) in shapes.items() if name in DEFAULT_TARGET_MODULES
    )
    return {
        "reward_model": body + h,
        "causal_lm": body + v * h,
        "layer": layer,
        "embedding": v * h,
        "adapters": adapters,
        "trainable": adapters + h if lora_rank else body + h,
    }


def activation_bytes_per_token_layer(size: str, lora_rank: int = 0) -> int:
    """Bytes autograd keeps per token for one decoder layer in bf16 with varlen (flash) attention:
    2 RMSNorms (fp32 input + bf16 normalised, 6h each) and their bf16 outputs (2h each), q and
    attention output (2h each), k and v (2kv each), the MLP's gate, SiLU, up and product (2i each),
    and the LoRA A outputs (2r for each of 7 projections)."""
    c = common.SHAPES[size]
    h, i = c["hidden_size"], c["intermediate_size"]
    kv = h // c["num_attention_heads"] * c["num_key_value_heads"]
    return 2 * 6 * h + 2 * 2 * h + 2 * 2 * h + 2 * 2 * kv + 4 * 2 * i + 7 * 2 * lora_rank


def memory_plan(size: str, world: int, lora_rank: int, tokens: int, checkpointing: bool) -> dict[str, float]:
    """GiB per GPU of one configuration under FSDP2 + bf16 mixed precision (computed)."""
    pc = param_counts(size, lora_rank)
    c = common.SHAPES[size]
    h, i, n_layers = c["hidden_size"], c["intermediate_size"], c["num_hidden_layers"]
    n, t = pc["reward_model"], pc["trainable"]
    out: dict[str, float] = {}
    out["bf16 frozen"] = 2 * (n - h) / world if lora_rank else 0.0  # all but the head
    out["fp32 master"] = 4 * t / world
    out["fp32 grads"] = 4 * t / world
    out["fp32 AdamW"] = 8 * t / world
    # FSDP2 working set: the root (embedding, norm, head) stays gathered in bf16 for the step; two
    # layers gathered at a time (current + prefetch); in backward, a layer's bf16 gradient and its
    # fp32 copy for the reduce-scatter, and the embedding's (full fine-tuning only).
    gathered = 2 * (pc["embedding"] + 2 * h) + 2 * 2 * pc["layer"]
    if not lora_rank:
        gathered += (2 + 4) * pc["layer"] + (2 + 4) * pc["embedding"]
    out["FSDP working"] = gathered
    per_layer = activation_bytes_per_token_layer(size, lora_rank) * tokens
    # With checkpointing: each layer's bf16 input is kept, plus one layer's activations during its
    # recompute; without: every layer's activations. Plus gradients in flight in one layer's MLP
    # and the final norm.
    act = n_layers * 2 * h * tokens + per_layer if checkpointing else n_layers * per_layer
    out["activations"] = act + 2 * 2 * i * tokens + 8 * h * tokens
    return {k: v / GIB for k, v in out.items()}


def print_plan(size: str, micro_batch_tokens: int) -> None:
    """The memory plan as a markdown table (what ``docs/training.md`` shows)."""
    pc = param_counts(size)
    print(
        f"{size}: reward model {pc['reward_model'] / 1e9:.2f}B parameters "
        f"(causal LM {pc['causal_lm'] / 1e9:.2f}B; its LM head is replaced by a 1-output head); "
        f"micro-batch {micro_batch_tokens} tokens; GiB per GPU, computed, not measured"
    )
    for r in (16, 64):
        print(f"LoRA rank {r}: {param_counts(size, r)['adapters'] / 1e6:.1f}M adapter parameters")
    rows = [("full FT", w, 0) for w in (4, 8)] + [(f"LoRA r{r}", 4, r) for r in (16, 64)]
    cols = ("bf16 frozen", "fp32 master", "fp32 grads", "fp32 AdamW", "FSDP working", "activations", "total")
    print(f"| approach | GPUs | AC | {' | '.join(cols)} | fits (card - 4 GiB) |")
    print("|---|---:|---|" + "---:|" * len(cols) + "---|")
    for name, world, r in rows:
        for ac in (True, False):
            p = memory_plan(size, world, r, micro_batch_tokens, ac)
            total = sum(p.values())
            fits = [card for card, budget in CARDS.items() if total <= budget]
            vals = " | ".join(f"{v:.1f}" for v in (*p.values(), total))
            print(f"| {name} | {world} | {'on' if ac else 'off'} | {vals} | {', '.join(fits) or 'neither'} |")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", choices=sorted(common.SHAPES), default="7b")
    ap.add_argument("--steps", type=int, default=6, help="timed optimizer steps")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    ap.add_argument("--global-batch-size", type=int, default=128, help="pairs per step over all ranks")
    ap.add_argument("--micro-batch-tokens", type=int, default=16384)
    ap.add_argument("--median-len", type=int, default=1024, help="median tokens of one conversation")
    ap.add_argument("--sigma", type=float, default=0.6, help="lognormal spread of lengths")
    ap.add_argument("--max-len", type=int, default=4096)
    ap.add_argument("--no-ac", action="store_true", help="no activation checkpointing")
    ap.add_argument("--compile", action="store_true", help="torch.compile each decoder layer (the engine's)")
    ap.add_argument("--fp32", action="store_true", help="no bf16 mixed precision")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--lora-rank", type=int, default=0, help="train LoRA adapters of this rank (0: full)")
    ap.add_argument("--plan", action="store_true", help="print the computed memory plan and exit (no GPU)")
    ap.add_argument("--json", default=None, help="write the result here (rank 0)")
    args = ap.parse_args()
    if args.plan:
        print_plan(args.size, args.micro_batch_tokens)
        return 0

    env = join(args.device)
    cuda = env.device.type == "cuda"
    bf16 = cuda and not args.fp32
    model = build_model(args.size, env.device)
    if args.lora_rank:
        with torch.device("meta"):
            apply_lora(
                model, LoraSettings(rank=args.lora_rank), frozen_dtype=torch.bfloat16 if bf16 else None
            )
    n = matmul_params(model)
    flops = FlopCounter(model.config, flop_params(model, n) if args.lora_rank else n)
    model.train()
    if args.compile:
        set_compiled(model, True)
    if not args.no_ac:
        enable_activation_checkpointing(model)
    root = PairRewards(model)
    shard_model(root, model, device=env.device, param_dtype=torch.bfloat16 if bf16 else None)
    materialize(root, model, env.device, seed=0)
    opt, sched = make_optimizer(
        trainable_parameters(root),
        lr=1e-4 if args.lora_rank else 2e-6,
        betas=(0.9, 0.98),
        eps=1e-8,
        weight_decay=0.1,
        warmup_steps=10,
    )
    step = PairStep(
        root, opt, sched, device=env.device, rank=env.rank, world=env.world_size, loss_name="bt",
        reward_centering=0.0, token_budget=args.micro_batch_tokens, pad_token_id=None, flops=flops,
        grad_clip=1.0,
    )  # fmt: skip
    total = args.warmup + args.steps
    data = workload(
        args.global_batch_size * total, median=args.median_len, sigma=args.sigma, max_len=args.max_len,
        vocab=model.config.vocab_size, seed=1,
    )  # fmt: skip
    stats = []
    for i in range(total):
        if i == args.warmup and cuda:
            torch.cuda.reset_peak_memory_stats(env.device)
        batch = list(range(i * args.global_batch_size, (i + 1) * args.global_batch_size))
        s = step.train(data, batch)
        if i >= args.warmup:
            stats.append(s)
        if env.is_main:
            print(
                f"step {i + 1}/{total}: {s.seconds:.2f}s {s.tokens} tokens loss {s.loss:.4f}", file=sys.stderr
            )
    mem = torch.tensor([peak_memory_gib(env.device)], dtype=torch.float64, device=env.device)
    dist.all_reduce(mem, op=dist.ReduceOp.MAX)
    seconds = sum(s.seconds for s in stats)
    tokens = sum(s.tokens for s in stats)
    peak = peak_tflops(env.device) if bf16 else None
    result = {
        "size": args.size,
        "params": matmul_params(model) + model.get_input_embeddings().weight.numel(),
        "lora_rank": args.lora_rank,
        "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "world": env.world_size,
        "device": torch.cuda.get_device_name(env.device) if cuda else "cpu",
        "torch": torch.__version__,
        "precision": "bf16-mixed" if bf16 else "fp32",
        "activation_checkpointing": not args.no_ac,
        "compile": args.compile,
        "global_batch_size": args.global_batch_size,
        "micro_batch_tokens": args.micro_batch_tokens,
        "median_len": args.median_len,
        "timed_steps": len(stats),
        "tokens_per_step": tokens / len(stats),
        "seconds_per_step": seconds / len(stats),
        "tokens_per_s_per_gpu": tokens / seconds / env.world_size,
        "tflops_per_gpu": sum(s.flops for s in stats) / seconds / env.world_size / 1e12,
        "mfu": sum(s.flops for s in stats) / seconds / env.world_size / (peak * 1e12) if peak else None,
        "peak_memory_gib": mem.item(),
        "date": time.strftime("%Y-%m-%d"),
    }
    if env.is_main:
        width = max(map(len, result))
        for k, v in result.items():
            print(f"{k:<{width}}  {v:,.4g}" if isinstance(v, float) else f"{k:<{width}}  {v}")
        if args.json:
            Path(args.json).parent.mkdir(parents=True, exist_ok=True)
            Path(args.json).write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    leave(env)
    return 0


if __name__ == "__main__":
    sys.exit(main())
