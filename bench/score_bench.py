"""What a user gets from ``rewardkit score`` on a GPU, against the engine alone and the model card's
loop on the same checkpoint and data, in one run.

1. Writes every RM-Bench conversation (file order: each prompt's 3 chosen then 3 rejected
   responses) as OpenAI-messages JSONL, and saves a random-weight ``Qwen2ForSequenceClassification``
   checkpoint of real shapes with the real Qwen2.5 tokenizer (weights do not change speed).
2. Runs ``rewardkit score data.jsonl -m CKPT -o out.jsonl`` as a user would (a subprocess): with an
   empty compile cache, again with it warm, with ``--no-compile``, and with ``--devices`` when
   several GPUs are given; each run's own summary gives its load, scan, compile and scoring times.
3. In this process, on the same checkpoint: the engine alone (all conversations tokenized first,
   then one ``score_ids`` call, compiled and warm), and the card loop (HF, one conversation per
   forward; ``anchor_hf.run_seed``) on an even sample of the conversations.

Prints a table (tok/s and share of the compute floor: FLOPs at the measured 8192³ bf16 matmul
rate, anchor_hf's count) and writes ``score_bench.json``.

    python bench/score_bench.py --data .carry/rm-bench --tokenizer .carry/qwen2.5 --size 7b \\
        --devices 0,1 --work /tmp/score-bench --out $OUT
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent / ".carry"), str(HERE)]
import anchor_hf  # noqa: E402  (the HF baseline, carried beside the project)

import common  # noqa: E402
from rewardkit.api import RewardModel  # noqa: E402
from rewardkit.data.conversation import Conversation  # noqa: E402
from rewardkit.engine.engine import ScoringEngine  # noqa: E402


def write_rmbench(data: Path, path: Path, limit: int | None = None) -> list[Conversation]:
    """Every RM-Bench conversation (of the first ``limit`` prompts of each file), in file order,
    as ``{"id", "messages"}`` JSONL."""
    convs = []
    with open(path, "w", encoding="utf-8") as f:
        for file in sorted(data.glob("*.json")):
            for r in json.loads(file.read_text())[:limit]:
                for k, resp in enumerate([*r["chosen"], *r["rejected"]]):
                    conv = Conversation.from_prompt(r["prompt"], resp)
                    convs.append(conv)
                    row = {"id": f"{r['id']}-{k}", "messages": conv.to_dicts()}
                    f.write(json.dumps(row, ensure_ascii=False) + "\n")
    return convs


_TIME = re.compile(r"(start up|load|scan|compile|score|first row|total) ([\d.]+) s")


def run_cli(args: list[str], *, env: dict[str, str], label: str) -> dict:
    """``python -m rewardkit score ARGS``: wall time, and the times and token shares it prints."""
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "rewardkit", "score", *args, "--no-progress"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
    )
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{label} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    out = {"label": label, "wall_s": wall}
    for line in proc.stderr.splitlines():
        if line.startswith("time:"):
            out.update({k.replace(" ", "_") + "_s": float(v) for k, v in _TIME.findall(line)})
            # What the program's own times leave out: the interpreter's start and the exit.
            out["outside_s"] = wall - out.get("start_up_s", 0.0) - out.get("total_s", 0.0)
        if line.startswith("tokens per rank:"):
            out["rank_tokens"] = [int(x.replace(",", "")) for x in re.findall(r": ([\d,]+) \(", line)]
        m = re.match(r"scored (\d+) rows \(([\d,]+) tokens\)", line)
        if m:
            out["rows"], out["tokens"] = int(m.group(1)), int(m.group(2).replace(",", ""))
    print(f"{label}: {wall:.1f} s\n  " + "\n  ".join(proc.stderr.strip().splitlines()[-4:]), flush=True)
    return out


def timed(fn):
    """``(fn(), seconds)``, with the GPU's queued work finished on both sides."""
    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    sync()
    t = time.perf_counter()
    r = fn()
    sync()
    return r, time.perf_counter() - t


@torch.inference_mode()
def cpu_card_loop(model: torch.nn.Module, seqs: list[torch.Tensor]) -> list[float]:
    """anchor_hf.run_seed (one conversation per forward, ``.item()``) for CPU smoke runs."""
    return [model(s[None]).logits[0][0].item() for s in seqs]


def rewards(path: Path) -> list[float]:
    return [json.loads(x)["reward"] for x in path.read_text().splitlines()]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True, help="RM-Bench directory (*_filtered.json)")
    ap.add_argument("--tokenizer", required=True)
    ap.add_argument("--size", choices=sorted(common.SHAPES), default="7b")
    ap.add_argument("--devices", default=None, help="also run --devices with these GPUs, e.g. 0,1")
    ap.add_argument("--card-n", type=int, default=256, help="conversations in the card loop's sample")
    ap.add_argument("--limit", type=int, default=None, help="prompts per RM-Bench file (smoke runs)")
    ap.add_argument("--work", default="/tmp/score-bench")
    ap.add_argument(
        "--skip",
        nargs="*",
        default=[],
        choices=["cold", "warm", "eager", "devices", "engine-eager"],
        help="runs to leave out (without cold, a short run fills the compile cache for warm)",
    )
    ap.add_argument("--cli-only", action="store_true", help="no engine-alone and card-loop runs")
    ap.add_argument("--out", default=os.environ.get("OUT", "."))
    a = ap.parse_args()
    work = Path(a.work)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    device = "cuda" if torch.cuda.is_available() else "cpu"

    t0 = time.perf_counter()
    convs = write_rmbench(Path(a.data), work / "data.jsonl", a.limit)
    ckpt = work / "ckpt"
    common.save_checkpoint(a.size, Path(a.tokenizer), ckpt, device)
    print(
        f"{len(convs)} conversations; checkpoint {a.size} written in {time.perf_counter() - t0:.0f} s",
        flush=True,
    )

    cache = {"TORCHINDUCTOR_CACHE_DIR": str(work / "inductor")}
    base = [str(work / "data.jsonl"), "-m", str(ckpt)]
    out_dir = Path(a.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    runs: list[dict] = []

    def cli(name: str, *extra: str, label: str) -> None:
        runs.append(run_cli([*base, "-o", str(work / f"{name}.jsonl"), *extra], env=cache, label=label))
        (out_dir / "score_bench_cli.json").write_text(json.dumps(runs, indent=1))  # kept if cut short

    if "cold" not in a.skip:
        cli("cold", label="rewardkit score (cold cache)")
    elif "warm" not in a.skip:  # fill the compile cache as an earlier run would have
        head = work / "head.jsonl"
        head.write_text("".join((work / "data.jsonl").read_text().splitlines(keepends=True)[:32]))
        run_cli(
            [str(head), "-m", str(ckpt), "-o", str(work / "head.out.jsonl")], env=cache, label="fill cache"
        )
    if "warm" not in a.skip:
        cli("warm", label="rewardkit score (warm cache)")
    if "eager" not in a.skip:
        cli("eager", "--no-compile", label="rewardkit score --no-compile")
    if a.devices and "devices" not in a.skip:
        cli("devices", "--devices", a.devices, label=f"rewardkit score --devices {a.devices}")

    if a.cli_only:
        print(json.dumps(runs, indent=1))
        return
    # The engine alone and the card loop, on the same checkpoint and conversations.
    rm = RewardModel.load(ckpt, compile=False)
    ids = [e.ids for e in rm.encode(convs)]
    seqs = [torch.tensor(x) for x in ids]
    tokens = sum(map(len, ids))
    peak = anchor_hf.matmul_peak(torch.bfloat16) if device == "cuda" else 1e12
    floor_s = anchor_hf.flops(rm.model, rm.model.config, seqs) / peak
    step = max(1, len(seqs) // a.card_n)
    sample = list(range(0, len(seqs), step))[: a.card_n]
    run_seed = anchor_hf.run_seed if device == "cuda" else cpu_card_loop
    # Timed on a second pass: the first over a sample of varied lengths loads kernels for each
    # new shape and runs ~2.4x slower (7B, H200).
    run_seed(rm.model, [seqs[i] for i in sample])
    card, card_s = timed(lambda: run_seed(rm.model, [seqs[i] for i in sample]))
    card_tokens = sum(len(seqs[i]) for i in sample)
    engines = {}
    for name in ("compiled",) if "engine-eager" in a.skip else ("eager", "compiled"):
        compiled = name == "compiled"
        eng = ScoringEngine(rm.model, compile=compiled)
        eng.score_ids(ids[:64])  # warm-up (and compilation)
        got, secs = timed(lambda eng=eng: eng.score_ids(ids))
        engines[name] = {"seconds": secs, "tokens_per_s": tokens / secs, "rewards": got}
    best = engines["compiled"]
    ref = best["rewards"]

    res = {
        "size": a.size,
        "device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
        "conversations": len(convs),
        "tokens": tokens,
        "floor_tokens_per_s": tokens / floor_s,
        "token_budget": rm.engine.token_budget,
        "card_loop": {"n": len(sample), "tokens": card_tokens, "tokens_per_s": card_tokens / card_s},
        "card_vs_engine_max_abs_diff": max(abs(card[k] - ref[i]) for k, i in enumerate(sample)),
        "engine": {k: {kk: vv for kk, vv in v.items() if kk != "rewards"} for k, v in engines.items()},
        "cli": runs,
        "date": time.strftime("%Y-%m-%d"),
        "torch": torch.__version__,
    }
    for name in ("cold", "warm", "eager", "devices"):
        path = work / f"{name}.jsonl"
        if path.exists():
            res.setdefault("cli_max_abs_diff_vs_engine", {})[name] = max(
                abs(x - y) for x, y in zip(rewards(path), ref, strict=True)
            )

    floor = res["floor_tokens_per_s"]
    engine_s = best["seconds"]

    def row(way: str, tps: float, wall: float | None = None) -> str:
        rel = f"{wall / engine_s:.2f}×" if wall else ""
        return f"| {way} | {tps:,.0f} | {tps / floor:.0%} | {wall or 0:.1f} | {rel} |"

    lines = [
        f"{a.size}, {len(convs)} RM-Bench conversations, {tokens:,} tokens, floor {floor:,.0f} tok/s, "
        f"{res['device']}",
        "| way | tok/s | % of floor | seconds | × engine-alone time |",
        "|---|---:|---:|---:|---:|",
        row("card loop (HF, one conversation per forward; even sample)", res["card_loop"]["tokens_per_s"]),
        *(
            [row("engine alone, eager", engines["eager"]["tokens_per_s"], engines["eager"]["seconds"])]
            if "eager" in engines
            else []
        ),
        row("engine alone, compiled (warm)", best["tokens_per_s"], engine_s),
    ]
    for r in runs:
        if "score_s" in r:
            lines.append(row(f"{r['label']}: scoring phase", r["tokens"] / r["score_s"], r["score_s"]))
        lines.append(row(f"{r['label']}: wall clock", tokens / r["wall_s"], r["wall_s"]))
    phases = ("start_up", "load", "scan", "compile", "score", "total", "outside", "wall")
    lines += [
        "",
        "where each run's wall clock goes (s; scan runs beside load; outside = interpreter start and exit)",
        "| run | " + " | ".join(p.replace("_", " ") for p in phases) + " |",
        "|---|" + "---:|" * len(phases),
    ]
    lines += [
        f"| {r['label']} | " + " | ".join(f"{r.get(p + '_s', 0):.1f}" for p in phases) + " |" for r in runs
    ]
    print("\n".join(lines))
    print(json.dumps({k: v for k, v in res.items() if k != "cli"}, indent=1))
    Path(a.out).mkdir(parents=True, exist_ok=True)
    (Path(a.out) / "score_bench.json").write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
