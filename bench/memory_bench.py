"""Peak resident memory of ``rewardkit score`` against the length of its input (CPU, demo model).

Generates JSONL files of N conversations (about ``--words`` words each) and runs
``rewardkit score FILE -o OUT --device cpu`` on each as a subprocess, reading the child's peak
resident set size (``getrusage``); a one-record run gives the baseline (interpreter, libraries,
model). Prints a table and writes ``memory_bench.json``.

    python bench/memory_bench.py --records 20000 200000 1000000 --out $OUT
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

WORDS = [
    "the",
    "a",
    "reward",
    "model",
    "scores",
    "each",
    "answer",
    "to",
    "a",
    "prompt",
    "higher",
    "when",
    "it",
    "is",
    "helpful",
    "and",
    "correct",
]


def write_input(path: Path, n: int, words: int, seed: int = 0) -> int:
    """``n`` prompt/response conversations; returns the file's size in bytes."""
    rng = random.Random(seed)
    with open(path, "w", encoding="utf-8") as f:
        for i in range(n):
            q = " ".join(rng.choices(WORDS, k=words // 3))
            a = " ".join(rng.choices(WORDS, k=words - words // 3))
            f.write(
                json.dumps(
                    {
                        "id": i,
                        "messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}],
                    }
                )
                + "\n"
            )
    return path.stat().st_size


def peak_rss(cmd: list[str]) -> tuple[float, float, str]:
    """Runs ``cmd`` in a fresh wrapper process; returns (peak RSS MiB, seconds, last stderr lines)."""
    wrapper = (
        "import resource, subprocess, sys; p = subprocess.run(sys.argv[1:], capture_output=True, text=True); "
        "sys.stderr.write(p.stderr[-600:]); "
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(p.returncode)"
    )
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", wrapper, *cmd], capture_output=True, text=True)
    secs = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr}")
    return int(proc.stdout.strip()) / 1024, secs, proc.stderr


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, nargs="+", default=[20000, 200000])
    ap.add_argument("--words", type=int, default=90, help="words per conversation (~180 tokens)")
    ap.add_argument("--work", default="/tmp/memory-bench")
    ap.add_argument("--out", default=os.environ.get("OUT", "."))
    a = ap.parse_args()
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    rows = []
    for n in [1, *a.records]:
        src = work / f"in-{n}.jsonl"
        size = write_input(src, n, a.words)
        out = work / f"out-{n}.jsonl"
        cmd = [sys.executable, "-m", "rewardkit", "score", str(src), "-o", str(out), "--device", "cpu"]
        rss, secs, err = peak_rss([*cmd, "--overwrite", "--no-progress"])
        tokens = next((line for line in err.splitlines() if line.startswith("scored")), "")
        rows.append(
            {"records": n, "input_mb": size / 2**20, "peak_rss_mib": rss, "seconds": secs, "summary": tokens}
        )
        print(
            f"{n:>9,} records ({size / 2**20:,.0f} MB): peak RSS {rss:,.0f} MiB in {secs:,.0f} s  {tokens}",
            flush=True,
        )
    base = rows[0]["peak_rss_mib"]
    print("| records | input | peak RSS | above the one-record run | seconds |")
    print("|---:|---:|---:|---:|---:|")
    for r in rows[1:]:
        print(
            f"| {r['records']:,} | {r['input_mb']:,.0f} MB | {r['peak_rss_mib']:,.0f} MiB | "
            f"{r['peak_rss_mib'] - base:,.0f} MiB | {r['seconds']:,.0f} |"
        )
    Path(a.out).mkdir(parents=True, exist_ok=True)
    (Path(a.out) / "memory_bench.json").write_text(
        json.dumps({"baseline_mib": base, "runs": rows[1:]}, indent=1)
    )


if __name__ == "__main__":
    main()
