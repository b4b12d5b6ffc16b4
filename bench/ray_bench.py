"""Scaling of ``rewardkit score --ray`` with model replicas: rows/s and tokens/s with 1, 2, ...
replicas on one Ray cluster.

Writes a synthetic JSONL of conversations (word counts lognormal around ``--median-words``), then
scores it with `rewardkit.ray.score_file_ray` once per replica count, on the same cluster (a local
one started here, or ``--address``). Per run: the wall time (actor start-up and model loading
included), the time to the first row, and the steady rate, rows and tokens per second from the
first row to the last (start-up excluded). The speedup is over the first replica count of the
same invocation; every run's rewards must equal the first run's within 1e-5 (fp32 on the CPU).

    python bench/ray_bench.py --replicas 1 2 --records 3000                     # CPU, demo model
    python bench/ray_bench.py --model MODEL --device cuda --replicas 1 2 --records 20000 \\
        --median-words 300 --batch-size 512                                      # one GPU per replica
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import tempfile
import time
from pathlib import Path

import ray

from rewardkit.api import ModelOptions
from rewardkit.demo import DEMO_MODEL_DIR
from rewardkit.ray import score_file_ray

TEXT = "the a reward model scores each answer to the prompt by how helpful and correct it is"


def workload(path: Path, n: int, median_words: int, seed: int) -> None:
    """``n`` conversation records: a system turn, a question, an answer of lognormal length."""
    rng = random.Random(seed)
    with path.open("w", encoding="utf-8") as f:
        for i in range(n):
            words = max(1, min(8 * median_words, round(math.exp(rng.gauss(math.log(median_words), 0.8)))))
            a, b = rng.randint(1, 9), rng.randint(1, 9)
            answer = f"{a}+{b}={a + b + rng.choice([0, 0, 1])}. " + " ".join(
                rng.choices(TEXT.split(), k=words)
            )
            messages = [
                {"role": "system", "content": "Answer briefly."},
                {"role": "user", "content": f"What is {a}+{b}?"},
                {"role": "assistant", "content": answer},
            ]
            f.write(json.dumps({"id": f"r{i}", "messages": messages}) + "\n")


def run(options: ModelOptions, src: Path, out: Path, replicas: int, batch_size: int) -> dict:
    stamps: list[tuple[float, int, int]] = []  # (time, rows so far, tokens so far)
    rows = tokens = 0

    def progress(n: int, t: int) -> None:
        nonlocal rows, tokens
        rows, tokens = rows + n, tokens + t
        stamps.append((time.perf_counter(), rows, tokens))

    t0 = time.perf_counter()
    summary = score_file_ray(
        options, str(src), str(out), replicas=replicas, batch_size=batch_size, quiet=True, progress=progress
    )
    wall = time.perf_counter() - t0
    (t1, r1, k1), (t2, r2, k2) = stamps[0], stamps[-1]
    steady = t2 - t1
    return {
        "replicas": replicas,
        "rows": summary.rows,
        "tokens": summary.tokens,
        "wall_s": wall,
        "first_row_s": t1 - t0,
        "steady_s": steady,
        "steady_rows_per_s": (r2 - r1) / steady if steady > 0 else float("nan"),
        "steady_tokens_per_s": (k2 - k1) / steady if steady > 0 else float("nan"),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=str(DEMO_MODEL_DIR))
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--replicas", type=int, nargs="+", default=[1, 2])
    p.add_argument("--records", type=int, default=3000)
    p.add_argument("--median-words", type=int, default=40)
    p.add_argument("--batch-size", type=int, default=64, help="records per replica call")
    p.add_argument("--address", default=None, help="a running cluster (default: a local one started here)")
    p.add_argument("--num-cpus", type=int, default=None, help="CPUs of the local cluster (default: all)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=os.environ.get("OUT", "."), help="folder for ray_bench.json")
    a = p.parse_args()

    if a.address is None:
        # Workers at the driver's priority (Ray's default niceness, 15, starves them on a busy machine).
        ray.init(address="local", num_cpus=a.num_cpus, _system_config={"worker_niceness": 0})
    else:
        ray.init(address=a.address)
    resources = ray.cluster_resources()
    options = ModelOptions(model=a.model, device=a.device)
    results, first_rewards = [], None
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "in.jsonl"
        workload(src, a.records, a.median_words, a.seed)
        for n in a.replicas:
            out = Path(tmp) / f"out{n}.jsonl"
            results.append(run(options, src, out, n, a.batch_size))
            rewards = [json.loads(line)["reward"] for line in out.read_text(encoding="utf-8").splitlines()]
            first_rewards = first_rewards or rewards
            assert max(abs(x - y) for x, y in zip(rewards, first_rewards, strict=True)) < 1e-5
    ray.shutdown()

    base = results[0]["steady_rows_per_s"]
    print(
        f"cluster: {resources.get('CPU', 0):g} CPU, {resources.get('GPU', 0):g} GPU; model {a.model} on {a.device}"
    )
    print(
        f"{'replicas':>8} {'rows':>6} {'wall s':>7} {'1st row s':>9} {'steady rows/s':>13} {'tok/s':>8} {'speedup':>7}"
    )
    for r in results:
        r["speedup"] = r["steady_rows_per_s"] / base
        print(
            f"{r['replicas']:>8} {r['rows']:>6} {r['wall_s']:>7.1f} {r['first_row_s']:>9.1f} "
            f"{r['steady_rows_per_s']:>13.1f} {r['steady_tokens_per_s']:>8.0f} {r['speedup']:>6.2f}x"
        )
    record = {"args": vars(a), "cluster": resources, "load_average": os.getloadavg(), "results": results}
    Path(a.out).mkdir(parents=True, exist_ok=True)
    (Path(a.out) / "ray_bench.json").write_text(json.dumps(record, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
