"""Tensor-parallel scoring: throughput and peak memory per GPU, and parity with the unsharded model.

Run one process per GPU under torchrun; every rank loads its shard through
`rewardkit.engine.tensor_parallel.load_sharded_model` (transformers' ``tp_plan="auto"``), rank 0
scores through the engine under `Lockstep.lead`, the others follow.

Throughput (``--shape llama-70b`` / ``32b``): the checkpoint directory holds the config and
the head weight only; transformers initialises every missing weight randomly, on each rank's
shard, so a 70B model needs no 141 GB file (random weights do not change speed). Workload:
lognormal lengths (median 512, σ 0.8, clipped to [16, 4096]) of random token ids.

Parity (``--parity``, e.g. ``--shape 7b``): rank 0 builds a random model of the shape on its
GPU, saves it (safetensors), and every rank loads the saved weights sharded. Both sides run the
head in fp32 (as ``bench/engine_bench.py``'s fidelity check) and report max/median |Δ| against
the unsharded engine on rank 0, the reward spread, and whether every pair of consecutive
conversations whose reference margin exceeds 2·max|Δ| is ordered the same.

    torchrun --nproc-per-node 4 bench/tp_bench.py --shape llama-70b --conversations 2048
    torchrun --nproc-per-node 2 bench/tp_bench.py --shape 32b --conversations 2048
    torchrun --nproc-per-node 2 bench/tp_bench.py --shape 7b --parity --conversations 256
    torchrun --nproc-per-node 2 bench/tp_bench.py --shape tiny --device cpu --parity --conversations 32   # smoke
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import torch
import torch.distributed as dist

import common  # bench/common.py (the script's folder is on sys.path)
from rewardkit.engine.engine import ScoringEngine
from rewardkit.engine.parallel import destroy_process_group, init_process_group, rank_from_env
from rewardkit.engine.tensor_parallel import Lockstep, load_sharded_model, tensor_parallel_engine


def config(shape: str):
    name = "Llama" if common.arch(shape) == "llama" else "Qwen2"
    return common.config(
        shape,
        num_labels=1,
        pad_token_id=0,
        max_position_embeddings=32768,
        architectures=[f"{name}ForSequenceClassification"],
    )


def head_only_checkpoint(shape: str, path: Path) -> None:
    """Config + the 1-output head; the body is left for transformers to initialise."""
    from safetensors.torch import save_file

    cfg = config(shape)
    cfg.save_pretrained(path)
    w = torch.randn(1, cfg.hidden_size, generator=torch.Generator().manual_seed(0)) * 0.02
    save_file(
        {"score.weight": w.to(torch.bfloat16)}, str(path / "model.safetensors"), metadata={"format": "pt"}
    )


def full_checkpoint(shape: str, path: Path, device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
    """A random model of the shape, saved to ``path``; returned (on ``device``) as the reference."""
    from transformers import AutoModelForSequenceClassification

    torch.manual_seed(0)
    with device:
        model = AutoModelForSequenceClassification.from_config(config(shape), dtype=dtype)
    torch.nn.init.normal_(model.score.weight, std=1.0)  # rewards spread beyond bf16 steps
    model.save_pretrained(path)
    return model.eval().requires_grad_(False)


def peak_gib(device: torch.device) -> float:
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def parity(ref: list[float], got: list[float]) -> dict:
    d = (torch.tensor(got) - torch.tensor(ref)).abs()
    noise = float(d.max())
    pairs = [(i, i + 1) for i in range(0, len(ref) - 1, 2)]
    clear = [(a, b) for a, b in pairs if abs(ref[a] - ref[b]) > 2 * noise]
    same = [(ref[a] > ref[b]) == (got[a] > got[b]) for a, b in clear]
    return {
        "max_abs_diff": noise,
        "median_abs_diff": float(d.median()),
        "reward_std": float(torch.tensor(ref).std()),
        "pairs_margin_over_2x_max_diff": len(clear),
        "agreement_on_those": sum(same) / len(same) if same else None,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shape", choices=sorted(common.SHAPES), default="7b")
    p.add_argument("--conversations", type=int, default=2048, help="conversations in the workload")
    p.add_argument("--token-budget", type=int, default=16384)
    p.add_argument("--parity", action="store_true", help="compare with the unsharded model (must fit rank 0)")
    p.add_argument("--compile", action="store_true", help="torch.compile the decoder layers")
    p.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    p.add_argument("--dir", default=None, help="where to write the checkpoint (default: a temp dir)")
    p.add_argument("--out", default=os.environ.get("OUT", "."), help="directory for tp_bench.json")
    a = p.parse_args()

    rank = rank_from_env()
    if rank is None:
        raise SystemExit("run under torchrun --nproc-per-node N")
    device = torch.device(f"cuda:{rank.local_rank}" if a.device == "cuda" else "cpu")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    init_process_group(rank, device)
    seqs = common.lognormal_workload(a.conversations, common.SHAPES[a.shape]["vocab_size"])
    tmp = Path(a.dir or tempfile.gettempdir()) / f"rewardkit-tp-{a.shape}-{'full' if a.parity else 'head'}"
    ref_model = None
    if rank.is_main:
        tmp.mkdir(parents=True, exist_ok=True)
        if a.parity:
            ref_model = full_checkpoint(a.shape, tmp, device, dtype)
        else:
            head_only_checkpoint(a.shape, tmp)
    dist.barrier()

    t0 = time.perf_counter()
    model, idx, head = load_sharded_model(str(tmp), dtype=dtype)
    sync(device)
    load_s = time.perf_counter() - t0
    head_dtype = torch.float32 if a.parity else None
    engine = tensor_parallel_engine(
        model,
        head=head,
        output_index=idx,
        token_budget=a.token_budget,
        head_dtype=head_dtype,
        compile=a.compile,
    )
    lockstep = Lockstep(engine)
    result: dict = {}
    if rank.is_main:
        with lockstep.lead():
            engine.score_ids(seqs[:16])  # warm-up (and compilation)
            sync(device)
            t0 = time.perf_counter()
            rewards = engine.score_ids(seqs)
            sync(device)
            wall = time.perf_counter() - t0
        tokens = sum(map(len, seqs))
        result = {
            "shape": a.shape,
            "ranks": rank.world_size,
            "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
            "dtype": str(dtype),
            "compile": a.compile,
            "n": a.conversations,
            "tokens": tokens,
            "token_budget": engine.token_budget,
            "load_s": load_s,
            "wall_s": wall,
            "tokens_per_s": tokens / wall,
            "conversations_per_s": a.conversations / wall,
        }
        if ref_model is not None:
            ref = ScoringEngine(
                ref_model, token_budget=a.token_budget, head_dtype=torch.float32, compile=a.compile
            ).score_ids(seqs)
            result["parity"] = parity(ref, rewards)
    else:
        lockstep.follow()
    peaks = [None] * rank.world_size
    dist.all_gather_object(peaks, peak_gib(device))
    if rank.is_main:
        result["peak_gib_per_rank"] = peaks
        print(json.dumps(result, indent=2))
        Path(a.out).mkdir(parents=True, exist_ok=True)
        (Path(a.out) / f"tp_bench-{a.shape}-{rank.world_size}.json").write_text(json.dumps(result, indent=2))
    del model, engine, lockstep, ref_model  # the sharded model goes before the group
    destroy_process_group()


if __name__ == "__main__":
    main()
