"""What a user gets from ``rewardkit train`` on files, to set beside `train_bench.py`'s numbers for
the same shapes and workload.

1. Saves a random-weight ``Qwen2ForSequenceClassification`` checkpoint of real shapes with the real
   Qwen2.5 tokenizer (`common.save_checkpoint`; weights do not change speed).
2. Writes ``(--warmup + --steps) × --global-batch-size`` HelpSteer3 records (``context``,
   ``response1``, ``response2``, ``overall_preference``) whose conversations have `train_bench.py`'s
   lengths (lognormal, median ``--median-len`` tokens, spread ``--sigma``, clipped to
   [16, ``--max-len``]): windows of real text (RM-Bench's chat and code responses) cut to that
   many tokens.
3. Runs ``torchrun --nproc-per-node N -m rewardkit train --model CKPT --data pairs.jsonl --output RUN
   --max-steps S --global-batch-size B --no-progress [--set KEY=VALUE ...]`` as a user would, and
   reads the run's ``metrics.jsonl`` (a row per step: tokens, seconds, MFU, peak GPU memory) and
   ``run.json`` (what ``auto`` chose). The run is stopped once its last step's row is written: its
   final checkpoint (about 90 GB at 7B) and export are not what is measured.

Prints the steps after ``--warmup`` (those that compiled the blocks) and writes
``train_cli_bench.json`` to ``--out`` (default ``$OUT``).

    python bench/train_cli_bench.py --size 7b --gpus 2 --steps 4 --warmup 2 --global-batch-size 64 \\
        --text .carry/rm-bench --tokenizer .carry/qwen2.5 --work /tmp/train-cli \\
        --set memory_budget_gib=75.6
    python bench/train_cli_bench.py --size tiny --gpus 2 --steps 2 --warmup 1 --global-batch-size 8 \\
        --median-len 64 --max-len 256 --text .carry/rm-bench --tokenizer .carry/qwen2.5 \\
        --work /tmp/train-cli --set device=cpu --set token_budget=512   # CPU smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE)]
import common  # noqa: E402

PROMPT = "Continue this text in the same style."


def corpus(text_dir: Path, tokenizer: Any) -> list[int]:
    """RM-Bench's chat and code responses, joined, as token ids."""
    parts = []
    for file in sorted(text_dir.glob("*.json")):
        if file.name.startswith("safety"):  # harmful requests and replies: not wanted as filler
            continue
        for r in json.loads(file.read_text()):
            parts += [*r["chosen"], *r["rejected"]]
    return tokenizer("\n\n".join(parts), verbose=False)["input_ids"]


def write_pairs(path: Path, lengths: list[int], text: list[int], tokenizer: Any, seed: int) -> list[int]:
    """HelpSteer3 records whose two conversations have ``lengths[2i]`` and ``lengths[2i + 1]``
    tokens (template included); returns the lengths as the template tokenizes them."""
    rng = random.Random(seed)
    context = [{"role": "user", "content": PROMPT}]

    def tokens(conv: list[dict[str, str]]) -> int:
        return len(tokenizer.apply_chat_template(conv, return_dict=True)["input_ids"])

    frame = tokens([*context, {"role": "assistant", "content": ""}])
    made = []
    with open(path, "w", encoding="utf-8") as f:
        for i in range(0, len(lengths), 2):
            responses = []
            for n in lengths[i : i + 2]:
                k = max(1, n - frame)
                start = rng.randrange(len(text) - k)
                responses.append(tokenizer.decode(text[start : start + k]).strip() or "text")
            for r in responses:
                conv = [*context, {"role": "assistant", "content": r}]
                made.append(tokens(conv))
            record = {
                "id": f"pair-{i // 2}",
                "context": context,
                "response1": responses[0],
                "response2": responses[1],
                "overall_preference": rng.choice([-3, -2, -1, 1, 2, 3]),
            }
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
    return made


def step_rows(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    text = path.read_text()
    lines = text.splitlines()[: None if text.endswith("\n") else -1]  # a row being written is left out
    return [r for r in map(json.loads, lines) if "tokens" in r]


def run_train(args: list[str], *, gpus: int, steps: int, run_dir: Path, log: Path, timeout: float) -> dict:
    """``torchrun -m rewardkit train ARGS``, stopped once ``steps`` step rows are written."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(gpus), "-m", "rewardkit"]
    print("$ " + " ".join(["torchrun", *cmd[3:], "train", *args]), flush=True)
    t0 = time.perf_counter()
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [*cmd, "train", *args], stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
        first = None
        try:
            while True:
                rows = step_rows(run_dir / "metrics.jsonl")
                if rows and first is None:
                    first = time.perf_counter() - t0
                if len(rows) >= steps or proc.poll() is not None or time.perf_counter() - t0 > timeout:
                    break
                time.sleep(0.2)
        finally:
            wall = time.perf_counter() - t0
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
    rows = step_rows(run_dir / "metrics.jsonl")
    if len(rows) < steps:
        tail = "\n".join(log.read_text().splitlines()[-40:])
        raise SystemExit(f"rewardkit train wrote {len(rows)} of {steps} steps in {wall:.0f} s:\n{tail}")
    return {"rows": rows[:steps], "first_row_s": first, "wall_s": wall}


def summary(rows: list[dict[str, Any]], gpus: int) -> dict[str, Any]:
    seconds = sum(r["seconds"] for r in rows)
    tokens = sum(r["tokens"] for r in rows)
    out = {
        "timed_steps": len(rows),
        "seconds_per_step": seconds / len(rows),
        "tokens_per_step": tokens / len(rows),
        "tokens_per_s_per_gpu": tokens / seconds / gpus,
        "losses": [r["loss"] for r in rows],
    }
    if all("mfu" in r for r in rows):  # the FLOPs of a step are mfu × seconds × peak
        out["mfu"] = sum(r["mfu"] * r["seconds"] for r in rows) / seconds
    if all("peak_memory_gib" in r for r in rows):
        out["peak_memory_gib"] = max(r["peak_memory_gib"] for r in rows)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", default="7b", choices=sorted(common.SHAPES))
    ap.add_argument("--gpus", type=int, default=max(1, torch.cuda.device_count()), help="processes")
    ap.add_argument("--steps", type=int, default=4, help="timed optimizer steps")
    ap.add_argument("--warmup", type=int, default=2, help="steps first, not timed (compilation)")
    ap.add_argument("--global-batch-size", type=int, default=64)
    ap.add_argument("--median-len", type=int, default=1024, help="median tokens of one conversation")
    ap.add_argument("--sigma", type=float, default=0.6, help="lognormal spread of lengths")
    ap.add_argument("--max-len", type=int, default=4096)
    ap.add_argument("--text", required=True, help="RM-Bench directory (*_filtered.json): the text")
    ap.add_argument("--tokenizer", required=True, help="Qwen2.5 tokenizer directory")
    ap.add_argument("--work", required=True, help="scratch directory: checkpoint, data, run")
    ap.add_argument("--set", dest="sets", action="append", default=[], help="passed to rewardkit train")
    ap.add_argument("--timeout", type=float, default=540.0, help="seconds before the run is stopped")
    ap.add_argument("--out", default=os.environ.get("OUT", "."))
    a = ap.parse_args()

    from transformers import AutoTokenizer

    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    tok = AutoTokenizer.from_pretrained(a.tokenizer)
    steps = a.warmup + a.steps
    g = torch.Generator().manual_seed(1)
    lengths = common.lognormal_lengths(
        2 * steps * a.global_batch_size, median=a.median_len, sigma=a.sigma, max_len=a.max_len, generator=g
    )
    made = write_pairs(work / "pairs.jsonl", lengths, corpus(Path(a.text), tok), tok, seed=1)
    ckpt = work / f"ckpt-{a.size}"
    if not (ckpt / "config.json").exists():
        common.save_checkpoint(
            a.size, Path(a.tokenizer), ckpt, "cuda" if torch.cuda.is_available() else "cpu"
        )
    made_s = time.perf_counter() - t0
    print(
        f"{len(made) // 2} pairs (median {sorted(made)[len(made) // 2]} tokens), {a.size} checkpoint: {made_s:.0f} s"
    )

    run_dir = work / "run"
    args = [
        "--model", str(ckpt), "--data", str(work / "pairs.jsonl"), "--output", str(run_dir),
        "--max-steps", str(steps), "--global-batch-size", str(a.global_batch_size), "--no-progress",
        *(x for kv in a.sets for x in ("--set", kv)),
    ]  # fmt: skip
    shutil.rmtree(run_dir, ignore_errors=True)
    got = run_train(
        args, gpus=a.gpus, steps=steps, run_dir=run_dir, log=work / "train.log", timeout=a.timeout
    )
    run = json.loads((run_dir / "run.json").read_text())
    result = {
        "command": "rewardkit train " + " ".join(args),
        "size": a.size,
        "gpus": a.gpus,
        "workload": {
            "median_len": a.median_len,
            "sigma": a.sigma,
            "max_len": a.max_len,
            "pairs": len(made) // 2,
        },
        "settings": run["settings"],
        "token_budget": run["config"]["token_budget"],
        "start_to_first_step_s": got["first_row_s"],
        "warmup_steps": [r["seconds"] for r in got["rows"][: a.warmup]],
        **summary(got["rows"][a.warmup :], a.gpus),
    }
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "train_cli_bench.json").write_text(json.dumps(result, indent=1) + "\n")
    s = result["settings"]
    print(
        f"rewardkit train, {a.size} on {a.gpus}: {s['activation_checkpointing']} at {result['token_budget']:,} "
        f"tokens, AdamW moments on the {'host' if s.get('offload_optimizer') else 'device'}, compile {s['compile']}: "
        f"{result['seconds_per_step']:.2f} s/step, {result['tokens_per_s_per_gpu']:,.0f} tok/s/GPU"
        + (f", MFU {result['mfu']:.1%}" if "mfu" in result else "")
        + (f", peak {result['peak_memory_gib']:.1f} GiB" if "peak_memory_gib" in result else "")
        + f"; first step row after {result['start_to_first_step_s']:.0f} s, warm-up steps "
        + ", ".join(f"{x:.1f}" for x in result["warmup_steps"])
        + " s",
        flush=True,
    )


if __name__ == "__main__":
    main()
