"""Tensor-parallel scoring: throughput and peak memory per GPU, and parity with the unsharded model.

Run one process per GPU under torchrun; every rank loads its shard through
`rewardkit.models.loading.load_model(tensor_parallel=True)` (transformers' ``tp_plan="auto"``), rank 0
scores through the engine under `Lockstep.leading`, the others follow.

Throughput (``--shape llama-70b`` / ``32b``): the checkpoint directory holds the config and
one small weight only; transformers initialises every missing weight randomly, on each rank's
shard, so a 70B model needs no 141 GB file (random weights do not change speed). Workload:
lognormal lengths (median 512, σ 0.8, clipped to [16, 4096]) of random token ids.

Heads (``--head``): Qwen shapes are sequence classifiers (Qwen-2.5-Nemotron-32B-Reward's
layout, ``score`` head); Llama shapes are causal LMs whose config declares ``reward_token_id: 0``
(Llama-3.3-Nemotron-70B-Reward's layout, the ``lm-logit:0`` head), unless ``--head`` says otherwise.

Parity (``--parity``, e.g. ``--shape 7b``): rank 0 builds a random model of the shape on its
GPU, saves it (safetensors), and every rank loads the saved weights sharded. Both sides run the
head in fp32 (as ``bench/engine_bench.py``'s fidelity check) and report max/median |Δ| against
the unsharded engine on rank 0, the reward spread, and whether every pair of consecutive
conversations whose reference margin exceeds 2·max|Δ| is ordered the same. For scale, the same
figures for the unsharded engine against the card's one-conversation-per-forward loop (the bf16
noise between two correct implementations).

One rank without ``--parity`` is the baseline: the unsharded engine, model built on the GPU.
``--hf-baseline N`` also times HF's own forward on the same (sharded) model in the same process:
the card's loop on the first N conversations and length-sorted padded 16k-token batches.

    torchrun --nproc-per-node 4 bench/tp_bench.py --shape llama-70b --conversations 1024 --compile --token-budget 65536 --hf-baseline 64
    torchrun --nproc-per-node 2 bench/tp_bench.py --shape 32b --conversations 512 --hf-baseline 64
    torchrun --nproc-per-node 1 bench/tp_bench.py --shape 32b --conversations 512 --hf-baseline 64
    torchrun --nproc-per-node 2 bench/tp_bench.py --shape 7b --parity --conversations 256
    torchrun --nproc-per-node 2 bench/tp_bench.py --shape tiny --device cpu --parity --conversations 32   # smoke
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import tempfile
import time
from pathlib import Path

import torch
import torch.distributed as dist

import common  # bench/common.py (the script's folder is on sys.path)
from rewardkit.distributed import join, leave, rank_from_env
from rewardkit.engine.engine import ScoringEngine, apply_head, set_compiled
from rewardkit.engine.tensor_parallel import Lockstep, tensor_parallel_engine
from rewardkit.models.loading import SEQUENCE_CLASSIFICATION, attention_implementation, load_model


def default_head(shape: str) -> str:
    return "lm-logit" if common.arch(shape) == "llama" else "seq-cls"


HF_BUDGET = 16384  # padded tokens per HF batch, as bench/engine_bench.py's "HF sorted 16k padded"


def head_spec(head: str) -> str:
    """The scoring spec's head for a ``--head`` choice (the Nemotron-70B layout reads token 0)."""
    return "lm-logit:0" if head == "lm-logit" else SEQUENCE_CLASSIFICATION


def config(shape: str, head: str):
    name = "Llama" if common.arch(shape) == "llama" else "Qwen2"
    if head == "lm-logit":  # a causal LM whose config names its reward token
        return common.config(
            shape, reward_token_id=0, max_position_embeddings=32768, architectures=[f"{name}ForCausalLM"]
        )
    return common.config(
        shape,
        num_labels=1,
        pad_token_id=0,
        max_position_embeddings=32768,
        architectures=[f"{name}ForSequenceClassification"],
    )


def head_only_checkpoint(shape: str, head: str, path: Path) -> None:
    """Config + one small weight (the 1-output head, or the final norm of a causal LM); the rest
    is left for transformers to initialise."""
    from safetensors.torch import save_file

    cfg = config(shape, head)
    cfg.save_pretrained(path)
    if head == "lm-logit":
        w = {"model.norm.weight": torch.ones(cfg.hidden_size)}
    else:
        w = {
            "score.weight": torch.randn(1, cfg.hidden_size, generator=torch.Generator().manual_seed(0)) * 0.02
        }
    w = {k: v.to(torch.bfloat16) for k, v in w.items()}
    save_file(w, str(path / "model.safetensors"), metadata={"format": "pt"})


def unsharded_model(shape: str, head: str, device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
    """A random model of the shape built on ``device`` (the one-GPU baseline: ``--nproc-per-node 1``)."""
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    auto = AutoModelForCausalLM if head == "lm-logit" else AutoModelForSequenceClassification
    torch.manual_seed(0)
    with device:
        model = auto.from_config(config(shape, head), dtype=dtype)
    return model.eval().requires_grad_(False)


@torch.inference_mode()
def hf_padded(
    model: torch.nn.Module,
    head: str,
    seqs: list[list[int]],
    budget: int,
    head_dtype: torch.dtype | None = None,
) -> list[float]:
    """HF transformers' own decoder forward on the same (sharded) model, batched as one would by
    hand: length-sorted, left-padded batches of at most ``budget`` padded tokens, with the
    attention mask and position ids that ``generate`` builds, and the reward row applied to the
    last position (for a causal LM what the card's one-token ``generate`` reads; the full-vocabulary
    projection is skipped, as ``logits_to_keep=1`` nearly does). A budget below two conversations
    gives the card's loop: one conversation per forward, no padding. Every rank runs the same
    batches (the layers' collectives pair up). ``head_dtype``: as the engine's."""
    device = model.get_input_embeddings().weight.device
    order = sorted(range(len(seqs)), key=lambda i: len(seqs[i]))
    out = [0.0] * len(seqs)
    i = 0
    with attention_implementation(model, "sdpa"):
        while i < len(order):
            j = i + 1
            while j < len(order) and len(seqs[order[j]]) * (j - i + 1) <= budget:
                j += 1
            rows = order[i:j]
            width = len(seqs[rows[-1]])
            ids = torch.zeros(len(rows), width, dtype=torch.long)
            mask = torch.zeros(len(rows), width, dtype=torch.long)
            for r, k in enumerate(rows):
                ids[r, width - len(seqs[k]) :] = torch.tensor(seqs[k])
                mask[r, width - len(seqs[k]) :] = 1
            kw = {
                "input_ids": ids.to(device),
                "attention_mask": mask.to(device),
                "position_ids": (mask.cumsum(1) - 1).clamp(min=0).to(device),
            }
            hidden = model.model(**kw).last_hidden_state[:, -1]
            rewards = apply_head(model, hidden, head=head, head_dtype=head_dtype)
            for k, v in zip(rows, rewards.float().tolist(), strict=True):
                out[k] = v
            i = j
    return out


def full_checkpoint(
    shape: str, head: str, path: Path, device: torch.device, dtype: torch.dtype
) -> tuple[torch.nn.Module, str]:
    """A random model of the shape, saved to ``path``; returned (on ``device``) as the reference,
    with its head spec."""
    model = unsharded_model(shape, head, device, dtype)
    if head == "lm-logit":
        torch.nn.init.normal_(model.lm_head.weight[:1], std=1.0)  # rewards spread beyond bf16 steps
    else:
        torch.nn.init.normal_(model.score.weight, std=1.0)
    model.save_pretrained(path)
    return model.eval().requires_grad_(False), head_spec(head)


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


def hf_baseline(
    model: torch.nn.Module, head: str, seqs: list[list[int]], n_card: int, budget: int, device: torch.device
) -> dict:
    """`hf_padded` timings on every rank: the card's loop on the first ``n_card`` conversations,
    then sorted padded batches of at most ``budget`` tokens on all (with their rewards and peak
    memory)."""
    set_compiled(model, False)  # HF's forward runs eager, as written
    res: dict = {"budget": budget}
    for name, part, b in (("card_loop", seqs[:n_card], 1), ("sorted_padded", seqs, budget)):
        hf_padded(model, head, part, b)  # a whole pass first: each new shape loads kernels
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        dist.barrier()
        sync(device)
        t0 = time.perf_counter()
        got = hf_padded(model, head, part, b)
        sync(device)
        wall = time.perf_counter() - t0
        res[name] = {"n": len(part), "wall_s": wall, "tokens_per_s": sum(map(len, part)) / wall}
    res["sorted_padded"]["peak_gib"] = peak_gib(device)
    res["rewards"] = got
    return res


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shape", choices=sorted(common.SHAPES), default="7b")
    p.add_argument("--conversations", type=int, default=2048, help="conversations in the workload")
    p.add_argument("--token-budget", type=int, default=16384)
    p.add_argument(
        "--head",
        choices=["seq-cls", "lm-logit"],
        default=None,
        help="reward head layout (default: lm-logit for Llama shapes, seq-cls for Qwen shapes)",
    )
    p.add_argument("--parity", action="store_true", help="compare with the unsharded model (must fit rank 0)")
    p.add_argument("--compile", action="store_true", help="torch.compile the decoder layers")
    p.add_argument(
        "--hf-baseline",
        type=int,
        default=0,
        metavar="N",
        help="also time HF's own forward on the same model: the card's loop on the first N "
        "conversations and length-sorted padded batches (16k tokens) on all",
    )
    p.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    p.add_argument("--dir", default=None, help="where to write the checkpoint (default: a temp dir)")
    p.add_argument("--out", default=os.environ.get("OUT", "."), help="directory for tp_bench.json")
    a = p.parse_args()
    a.head = a.head or default_head(a.shape)

    rank = rank_from_env()
    if rank is None:
        raise SystemExit("run under torchrun --nproc-per-node N")
    device = torch.device(f"cuda:{rank.local_rank}" if a.device == "cuda" else "cpu")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    group = join(device, rank=rank)
    seqs = common.lognormal_workload(a.conversations, common.SHAPES[a.shape]["vocab_size"])
    tmp = (
        Path(a.dir or tempfile.gettempdir())
        / f"rewardkit-tp-{a.shape}-{a.head}-{'full' if a.parity else 'head'}"
    )
    unsharded = rank.world_size == 1 and not a.parity  # the one-GPU baseline: no checkpoint
    ref_model = ref_head = None
    if rank.is_main and not unsharded:
        tmp.mkdir(parents=True, exist_ok=True)
        if a.parity:
            ref_model, ref_head = full_checkpoint(a.shape, a.head, tmp, device, dtype)
        else:
            head_only_checkpoint(a.shape, a.head, tmp)
    dist.barrier()

    t0 = time.perf_counter()
    head_dtype = torch.float32 if a.parity else None
    if unsharded:  # the engine on the model built on this GPU
        model = unsharded_model(a.shape, a.head, device, dtype)
        head = head_spec(a.head)
        engine = ScoringEngine(
            model, head=head, token_budget=a.token_budget, head_dtype=head_dtype, compile=a.compile
        )
    else:
        model, idx, head = load_model(str(tmp), device=device, dtype=dtype, tensor_parallel=True)
        engine = tensor_parallel_engine(
            model,
            head=head,
            output_index=idx,
            token_budget=a.token_budget,
            head_dtype=head_dtype,
            compile=a.compile,
        )
    sync(device)
    load_s = time.perf_counter() - t0
    lockstep = engine.forward if isinstance(engine.forward, Lockstep) else None  # None: one GPU
    result: dict = {}
    if rank.is_main:
        with lockstep.leading() if lockstep is not None else contextlib.nullcontext():
            engine.score_ids(seqs[:16])  # warm-up (and compilation)
            sync(device)
            t0 = time.perf_counter()
            rewards = engine.score_ids(seqs)
            sync(device)
            wall = time.perf_counter() - t0
        tokens = sum(map(len, seqs))
        result = {
            "shape": a.shape,
            "head": head,
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
                ref_model,
                head=ref_head,
                token_budget=a.token_budget,
                head_dtype=torch.float32,
                compile=a.compile,
            ).score_ids(seqs)
            result["parity"] = parity(ref, rewards)
            # the bf16 noise floor: the unsharded engine against the card's procedure
            card = hf_padded(ref_model, ref_head, seqs, 1, head_dtype=torch.float32)
            result["unsharded_vs_card_loop"] = parity(card, ref)
    else:
        assert lockstep is not None
        lockstep.follow()
    peaks = [None] * rank.world_size
    dist.all_gather_object(peaks, peak_gib(device))
    if a.hf_baseline:
        result["hf"] = hf_baseline(model, head, seqs, a.hf_baseline, HF_BUDGET, device)
        if rank.is_main:
            result["hf"]["max_abs_diff_vs_engine"] = max(
                abs(x - y) for x, y in zip(result["hf"].pop("rewards"), rewards, strict=True)
            )
    if rank.is_main:
        result["peak_gib_per_rank"] = peaks
        print(json.dumps(result, indent=2))
        Path(a.out).mkdir(parents=True, exist_ok=True)
        (Path(a.out) / f"tp_bench-{a.shape}-{rank.world_size}.json").write_text(json.dumps(result, indent=2))
    del model, engine, lockstep, ref_model  # the sharded model goes before the group
    leave(group)


if __name__ == "__main__":
    main()
