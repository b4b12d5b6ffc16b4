"""What the start-up of ``rewardkit score`` is made of on a GPU machine, step by step.

Each step runs in a fresh interpreter (so that every import is paid again), on a random-weight
checkpoint of real shapes (`common.save_checkpoint`):

1. the interpreter alone, ``import torch``, the first CUDA tensor, torch with transformers' Qwen2
   modeling code, ``rewardkit.api`` and ``rewardkit.scoring.files`` (what ``rewardkit score``
   imports before it reads a record);
2. safetensors ``load_file`` of the checkpoint straight to the GPU, alone and on a thread while
   transformers imports (what overlapping the two could save);
3. `RewardModel.load`'s steps one after the other in one process (imports, CUDA, tokenizer and
   template, weights, engine, fingerprint, compile warm-up, a first batch), with an empty and then
   a warm compile cache;
4. ``rewardkit score`` on all the conversations, twice with a warm compile cache.

    python bench/startup_bench.py --data .carry/rm-bench --tokenizer .carry/qwen2.5 --size 7b --out $OUT
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE)]
import common  # noqa: E402
import score_bench  # noqa: E402

STAGED = """
import time
t0 = time.perf_counter()
def step(name):
    print(f"{{name}} {{time.perf_counter() - t0:.2f}}", flush=True)
import torch; step("import torch")
import rewardkit.api as api; step("import rewardkit.api")
from rewardkit.engine.engine import ScoringEngine
from rewardkit.models import loading
from rewardkit.models.fingerprint import weights_fingerprint
torch.zeros(1, device="cuda"); step("CUDA init")
chat = api.load_chat_tokenizer({ckpt!r}); step("tokenizer and template")
net, _, _ = loading.load_model({ckpt!r}, device=torch.device("cuda:0"), dtype=torch.bfloat16)
torch.cuda.synchronize(); step("weights (load_model)")
engine = ScoringEngine(net); step("ScoringEngine (torch.compile wrappers)")
weights_fingerprint({ckpt!r}); step("weights fingerprint")
engine.warm_up(); step("compile warm-up")
engine.score_ids([[5] * 300] * 200); torch.cuda.synchronize(); step("first batch (60k tokens)")
"""

OVERLAP = """
import time
t0 = time.perf_counter()
import threading
import torch
at = {{}}
def load():
    torch.zeros(1, device="cuda"); at["cuda"] = time.perf_counter() - t0
    from safetensors.torch import load_file
    global weights
    weights = load_file({path!r}, device="cuda:0"); torch.cuda.synchronize()
    at["weights loaded"] = time.perf_counter() - t0
thread = threading.Thread(target=load); thread.start()
import transformers.models.qwen2.modeling_qwen2
at["transformers imported"] = time.perf_counter() - t0
thread.join(); at["both"] = time.perf_counter() - t0
print({{k: round(v, 2) for k, v in at.items()}})
"""


def fresh(label: str, code: str, env: dict[str, str] | None = None) -> dict:
    """Runs ``code`` in a fresh interpreter: its wall time and what it printed."""
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ, **(env or {})}
    )
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{label} failed:\n{proc.stderr[-3000:]}")
    print(f"{label}: {wall:.2f} s {proc.stdout.strip()}", flush=True)
    return {"label": label, "wall_s": wall, "printed": proc.stdout.strip()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="RM-Bench directory (*_filtered.json)")
    ap.add_argument("--tokenizer", required=True)
    ap.add_argument("--size", default="7b")
    ap.add_argument("--work", default="/tmp/startup-bench")
    ap.add_argument("--out", default=os.environ.get("OUT", "."))
    a = ap.parse_args()
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    ckpt = work / "ckpt"
    if not ckpt.exists():
        score_bench.write_rmbench(Path(a.data), work / "data.jsonl")
        common.save_checkpoint(a.size, Path(a.tokenizer), ckpt, "cuda")
    cache = {"TORCHINDUCTOR_CACHE_DIR": str(work / "inductor")}
    weights = sorted(ckpt.glob("*.safetensors"))
    runs = [
        fresh("interpreter", "pass"),
        fresh("import torch", "import torch"),
        fresh(
            "import torch, first CUDA tensor",
            "import time, torch; t = time.perf_counter(); torch.zeros(1, device='cuda'); "
            "print(f'CUDA init {time.perf_counter() - t:.2f}')",
        ),
        fresh(
            "import torch + transformers Qwen2 modeling",
            "import torch, transformers.models.qwen2.modeling_qwen2",
        ),
        fresh("import rewardkit.api", "import rewardkit.api"),
        fresh("import rewardkit.scoring.files", "import rewardkit.scoring.files"),
    ]
    if len(weights) == 1:  # one file: the 7B checkpoint as save_pretrained writes it
        path = str(weights[0])
        runs.append(
            fresh(
                "load_file to cuda:0",
                "import time, torch; torch.zeros(1, device='cuda'); "
                "from safetensors.torch import load_file; t = time.perf_counter(); "
                f"w = load_file({path!r}, device='cuda:0'); torch.cuda.synchronize(); "
                "print(f'load {time.perf_counter() - t:.2f}')",
            )
        )
        runs.append(fresh("load_file on a thread while transformers imports", OVERLAP.format(path=path)))
    staged = STAGED.format(ckpt=str(ckpt))
    runs.append(fresh("RewardModel.load step by step (empty compile cache)", staged, env=cache))
    runs.append(fresh("RewardModel.load step by step (warm compile cache)", staged, env=cache))
    for label in ("rewardkit score (warm cache)", "rewardkit score (warm cache), again"):
        args = [str(work / "data.jsonl"), "-m", str(ckpt), "-o", str(work / "out.jsonl"), "--overwrite"]
        runs.append(score_bench.run_cli(args, env=cache, label=label))
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "startup_bench.json").write_text(json.dumps(runs, indent=1))


if __name__ == "__main__":
    main()
