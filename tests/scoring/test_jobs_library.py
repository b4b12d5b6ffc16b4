"""The multi-rank workflows called from Python, as a user's script run by torchrun (2 gloo ranks):
`score_file_on_ranks` writes the output a one-process run writes, and `run_tensor_parallel` runs
the caller's work on rank 0 with the model sharded over both ranks.

The module is also that script: ``torchrun --nproc-per-node 2 test_jobs_library.py MODEL IN OUT``;
it joins the process group once, and both workflows run inside it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from rewardkit.api import ModelOptions, RewardModel
from rewardkit.scoring import run_tensor_parallel, score_file, score_file_on_ranks

ATOL = 1e-5  # fp32 on CPU; other batches and sharded matmuls only change the summation order


def _script(model_dir: str, src: str, out: str) -> None:
    from rewardkit.distributed import process_group

    torch.set_num_threads(1)
    options = ModelOptions(model=model_dir, device="cpu")
    convs = [[{"role": "user", "content": "What is 1+1?"}, {"role": "assistant", "content": a}] for a in "23"]
    # The script joins the group once; each workflow uses it as it is and leaves it open.
    with process_group("cpu"):
        summary = score_file_on_ranks(options, src, out)
        rewards = run_tensor_parallel(options, lambda rm: rm.score(convs))
    if summary.rank_tokens and rewards is not None:  # rank 0
        Path(f"{out}.result.json").write_text(json.dumps({"tp": rewards, "rank_tokens": summary.rank_tokens}))


def test_ranked_scoring_and_tensor_parallel_from_python(
    tmp_path: Path, tp_model_dir: Path, run_command, torchrun_cmd
) -> None:
    rows = [
        {"id": f"c{i}", "prompt": f"Question {i}? " * (1 + i % 7), "response": f"Answer {i}. " * (1 + i % 11)}
        for i in range(40)
    ]
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    out = tmp_path / "out.jsonl"
    proc = run_command([*torchrun_cmd(2), __file__, str(tp_model_dir), str(src), str(out)], timeout=240)
    assert proc.returncode == 0, proc.stderr[-4000:]
    rm = RewardModel.load(tp_model_dir, device="cpu")
    score_file(rm, src, tmp_path / "one.jsonl")
    got = [json.loads(x) for x in out.read_text().splitlines()]
    want = [json.loads(x) for x in (tmp_path / "one.jsonl").read_text().splitlines()]
    assert [r["id"] for r in got] == [r["id"] for r in want]
    assert [r["reward"] for r in got] == pytest.approx([r["reward"] for r in want], abs=ATOL)
    result = json.loads(Path(f"{out}.result.json").read_text())
    assert len(result["rank_tokens"]) == 2 and min(result["rank_tokens"]) > 0
    convs = [[{"role": "user", "content": "What is 1+1?"}, {"role": "assistant", "content": a}] for a in "23"]
    assert result["tp"] == pytest.approx(rm.score(convs), abs=ATOL)


if __name__ == "__main__":
    _script(*sys.argv[1:4])
