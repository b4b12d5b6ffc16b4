"""Data-parallel scoring: blocks shared out by tokens as ranks go, merge into input order,
per-block resume (gloo, 2 processes)."""

from __future__ import annotations

import bisect
import itertools
import json
import os
import random
import re
from pathlib import Path

import pytest

from rewardkit.cli import main
from rewardkit.data.io import index_blocks, iter_raw
from rewardkit.data.outputs import block_path, meta_path, parts_dir, parts_meta_path
from rewardkit.distributed import LAUNCHED_DEVICES_ENV, launch_local
from rewardkit.scoring.jobs import FIXED_SHARE, _block_bytes, take_runs

ATOL = 1e-5  # fp32 packed in different batches on each rank; see test_parity.py
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _convs(n: int) -> list[dict]:
    return [
        {
            "id": f"c{i}",
            "messages": [
                {"role": "user", "content": "Question " + "?" * (i % 5 + 1)},
                {"role": "assistant", "content": "Answer " + "!" * (3 * i % 11 + 1)},
            ],
        }
        for i in range(n)
    ]


def _write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _rows(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines()]


def _one_process(src: Path, out: Path, model: Path) -> list[dict]:
    assert main(["score", str(src), "-o", str(out), "--model", str(model), "--no-progress"]) == 0
    return _rows(out)


def _assert_same(got: list[dict], want: list[dict], skip: int = 0) -> None:
    """Same rows in the same order; rewards equal within the packing tolerance."""
    assert [r["id"] for r in got] == [r["id"] for r in want]
    for g, w in zip(got[skip:], want[skip:], strict=True):
        assert g.keys() == w.keys()
        for k, v in w.items():
            if k.startswith("reward") or k == "p_first_better":
                assert g[k] == pytest.approx(v, abs=ATOL), k
            else:
                assert g[k] == v, k


@pytest.mark.parametrize("target", [1, 40, 100, 10_000])
def test_blocks_cover_the_file_in_order(tmp_path: Path, target: int) -> None:
    lines = [json.dumps(c) for c in _convs(23)]
    lines[5] = ""  # a blank line still counts
    src = tmp_path / "in.jsonl"
    src.write_text("\n".join(lines) + "\n", encoding="utf-8")
    blocks = index_blocks(src, target_bytes=target)
    assert [b.index for b in blocks] == list(range(len(blocks)))
    assert blocks[0].start == 0 and blocks[-1].end == src.stat().st_size
    assert all(a.end == b.start for a, b in itertools.pairwise(blocks))
    by_block = [n for b in blocks for n, _ in iter_raw(src, block=b)]
    assert by_block == [n for n, _ in iter_raw(src)] == [n for n in range(1, 24) if n != 6]
    if target == 1:
        assert len(blocks) == 23  # one line each


class _Counter:
    """`SharedCounter` in one process."""

    def __init__(self) -> None:
        self.values: dict[str, int] = {}

    def add(self, key: str, n: int) -> int:
        self.values[key] = self.values.get(key, 0) + n
        return self.values[key]


@pytest.mark.parametrize("seed", range(10))
def test_runs_are_taken_once_and_shrink(seed: int) -> None:
    """Ranks taking runs in turn (in any interleaving) take every block once; `FIXED_SHARE` of the
    cost is split evenly, and the runs taken as ranks go shrink towards the end."""
    rng = random.Random(seed)
    costs = sorted(rng.randint(1, 500) for _ in range(rng.randint(20, 300)))  # short, then long
    world = rng.choice([2, 3])
    counter = _Counter()
    ranks = [take_runs(counter, "k", costs, r, world, max_cost=10**9) for r in range(world)]
    taken: list[tuple[int, range]] = []
    live = dict(enumerate(ranks))
    while live:
        r = rng.choice(list(live))
        run = next(live[r], None)
        if run is None:
            del live[r]
        else:
            taken.append((r, run))
    assert sorted(i for _, run in taken for i in run) == list(range(len(costs)))
    total = sum(costs)
    per_rank = [sum(costs[i] for r2, run in taken if r2 == r for i in run) for r in range(world)]
    assert min(per_rank) >= FIXED_SHARE * total / world - max(costs)  # its even part
    assert max(per_rank) <= (FIXED_SHARE / world + 1 - FIXED_SHARE) * total + max(costs)
    split = bisect.bisect_left(list(itertools.accumulate(costs)), FIXED_SHARE * total) + 1
    shared = [sum(costs[i] for i in run) for _, run in taken if run.start >= split]  # taken as ranks go
    assert shared and max(shared) <= (1 - FIXED_SHARE) * total / (2 * world) + max(costs)
    assert shared[-1] <= shared[0] + max(costs)


def test_equal_ranks_split_short_then_long_evenly() -> None:
    """Ranks of equal speed (taking turns) end with about equal cost of a short-then-long input."""
    costs = [10] * 300 + [400] * 60
    counter = _Counter()
    runs = [take_runs(counter, "k", costs, r, 2, max_cost=10**9) for r in range(2)]
    done = [0, 0]
    live = {0, 1}
    while live:
        r = min(live, key=lambda r: done[r])  # the rank that is free first takes the next run
        run = next(runs[r], None)
        if run is None:
            live.discard(r)
        else:
            done[r] += sum(costs[i] for i in run)
    assert max(done) / sum(done) <= 0.52


@pytest.mark.skipif(
    __import__("torch").cuda.is_available(), reason="checks the message on a machine without GPUs"
)
def test_devices_without_gpus_is_a_clear_error(
    tmp_path: Path, tiny_model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = _write(tmp_path / "in.jsonl", _convs(2))
    args = ["score", str(src), "-o", str(tmp_path / "o.jsonl"), "--model", str(tiny_model_dir)]
    assert main([*args, "--devices", "0,1"]) == 2
    assert "error: --devices 0,1: no CUDA GPU is visible on this machine" in capsys.readouterr().err
    assert not (tmp_path / "o.jsonl").exists()


def test_one_rank_job_through_the_cli(
    tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The CLI's rank path in-process (world of 1, gloo): output and meta as a plain run's."""
    src = _write(tmp_path / "in.jsonl", _convs(5))
    want = _one_process(src, tmp_path / "one.jsonl", tiny_model_dir)
    env = {"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1"}
    for k, v in {**env, "MASTER_PORT": str(29500 + os.getpid() % 1000)}.items():
        monkeypatch.setenv(k, v)
    out = tmp_path / "out.jsonl"
    args = ["score", str(src), "-o", str(out), "--model", str(tiny_model_dir), "--no-progress"]
    capsys.readouterr()
    assert main(args) == 0
    assert "ranks=1" in capsys.readouterr().err
    _assert_same(_rows(out), want)
    meta = tmp_path / "out.jsonl.meta.json"
    assert json.loads(meta.read_text()) == json.loads((tmp_path / "one.jsonl.meta.json").read_text())
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["in.jsonl", "one.jsonl", "one.jsonl.meta.json", "out.jsonl", "out.jsonl.meta.json"]
    )
    # Done already: nothing rescored, no parts left behind.
    assert main(args) == 0
    assert "scored 0 rows (0 tokens), 5 resumed" in capsys.readouterr().err
    # Invalid input: reported once (rank 0), exit 2, output untouched.
    _write(src, [*_convs(5), {"id": "x", "messages": []}])
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("1 invalid record(s); nothing was scored") == 1 and f"{src}:6:" in err
    _assert_same(_rows(out), want)


def _short_then_long(n: int) -> list[dict]:
    """Conversations in file order as real files often are: all the short ones, then the long."""
    rows = []
    for i in range(n):
        words = 3 if i < n // 2 else 60
        rows.append(
            {
                "id": f"c{i}",
                "messages": [
                    {"role": "user", "content": f"Question {i}: " + "why " * words},
                    {"role": "assistant", "content": "Because " + "so " * words},
                ],
            }
        )
    return rows


def test_torchrun_two_ranks_balance_tokens_and_resume_blocks(
    tmp_path: Path, tiny_model_dir: Path, run_command, torchrun_cmd
) -> None:
    src = _write(tmp_path / "in.jsonl", _short_then_long(600))
    want = _one_process(src, tmp_path / "one.jsonl", tiny_model_dir)
    out = tmp_path / "out.jsonl"
    args = ["score", str(src), "-o", str(out), "--model", str(tiny_model_dir), "--no-progress"]
    cmd = [*torchrun_cmd(2), "-m", "rewardkit", *args]
    proc = run_command(cmd, timeout=240)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.count("rewardkit score: model=") == 1  # rank 0 only
    _assert_same(_rows(out), want)
    assert json.loads(meta_path(out).read_text()) == json.loads(meta_path(tmp_path / "one.jsonl").read_text())
    # Work is shared by tokens: a split by records would give one rank ~95% of them.
    (line,) = [x for x in proc.stderr.splitlines() if x.startswith("tokens per rank:")]
    shares = [int(p) for p in re.findall(r"\((\d+)%\)", line)]
    assert len(shares) == 2 and max(shares) <= 55, line

    # A job killed half-way leaves some blocks written (each whole); a rerun, with any number of
    # ranks, scores only the others and keeps what was written.
    blocks = index_blocks(src, target_bytes=_block_bytes(src, 2))
    lines = out.read_text(encoding="utf-8").splitlines(keepends=True)
    parts_dir(out).mkdir()
    parts_meta_path(out).write_text(meta_path(out).read_text())
    row = 0
    for b in blocks:
        n = sum(1 for _ in iter_raw(src, block=b))
        if b.index % 2 == 0:
            block_rows = [
                json.dumps({**json.loads(lines[row]), "reward": 999.0}) + "\n",
                *lines[row + 1 : row + n],
            ]
            block_path(out, b.index).write_text("".join(block_rows), encoding="utf-8")
        row += n
    kept = sum(1 for b in blocks if b.index % 2 == 0 for _ in iter_raw(src, block=b))
    out.unlink()
    meta_path(out).unlink()
    proc = run_command([*torchrun_cmd(2), "-m", "rewardkit", *args], timeout=240)
    assert proc.returncode == 0, proc.stderr
    assert f"resuming: {kept} rows already in {out}" in proc.stderr
    got = _rows(out)
    marked = [r["id"] for r in got if r["reward"] == 999.0]
    assert len(marked) == sum(1 for b in blocks if b.index % 2 == 0)  # kept, not rescored
    _assert_same([r for r in got if r["reward"] != 999.0], [w for w in want if w["id"] not in marked])
    assert [r["id"] for r in got] == [w["id"] for w in want]
    assert not parts_dir(out).exists()


def test_devices_launcher_pairs(
    tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`--devices` runs torch's launcher over the same command line, one rank per device (here on
    CPU); a failing rank fails the job with its exit code and leaves no output behind."""
    pairs = [dict(p) for p in _rows(EXAMPLES / "pairs.jsonl") * 3]  # 6 pairs: 3 per rank
    for i, p in enumerate(pairs):
        p["id"] = f"p{i}"
    src = _write(tmp_path / "pairs.jsonl", pairs)
    want = _one_process(src, tmp_path / "one.jsonl", tiny_model_dir)
    out = tmp_path / "out.jsonl"
    argv = ["score", str(src), "-o", str(out), "--model", str(tiny_model_dir), "--device", "cpu"]
    argv.append("--no-progress")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # inherited by the ranks
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert launch_local(argv, [0, 1]) == 0
    assert LAUNCHED_DEVICES_ENV not in os.environ and "CUDA_VISIBLE_DEVICES" not in os.environ
    got = _rows(out)
    assert [r["id"] for r in got] == [f"p{i}" for i in range(6)]
    _assert_same(got, want)
    assert {"reward_chosen", "reward_rejected", "p_first_better"} <= got[0].keys()
    assert not parts_dir(out).exists()

    bad = tmp_path / "bad.jsonl"
    _write(bad, [*pairs, {"id": "x", "chosen": "no prompt"}])
    argv[1], argv[3] = str(bad), str(tmp_path / "bad-out.jsonl")
    assert launch_local(argv, [0, 1]) == 2
    assert not (tmp_path / "bad-out.jsonl").exists()


def test_devices_inside_torchrun_is_refused(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    for k, v in {"RANK": "0", "WORLD_SIZE": "2", "LOCAL_RANK": "0"}.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv(LAUNCHED_DEVICES_ENV, raising=False)
    assert main(["score", "in.jsonl", "-o", "out.jsonl", "--devices", "0,1"]) == 2
    assert "--devices cannot be combined with torchrun" in capsys.readouterr().err
