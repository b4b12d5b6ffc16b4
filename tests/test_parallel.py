"""Data-parallel scoring: rank shards, merge into input order, per-part resume (gloo, 2 processes)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from rewardkit.api import RewardModel
from rewardkit.cli import main
from rewardkit.data.io import part_path
from rewardkit.distributed import LAUNCHED_DEVICES_ENV, launch_local, parse_devices, rank_from_env
from rewardkit.errors import ConfigError
from rewardkit.scoring import InvalidInputError, score_file_sharded
from rewardkit.scoring.files import shard_bounds

ATOL = 1e-5  # fp32 packed in different batches on each rank; see test_parity.py
EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


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


def test_shard_bounds_cover_input_in_order() -> None:
    assert [shard_bounds(10, r, 3) for r in range(3)] == [(0, 3), (3, 6), (6, 10)]
    assert [shard_bounds(1, r, 2) for r in range(2)] == [(0, 0), (0, 1)]
    for n in range(0, 30):
        for w in range(1, 6):
            blocks = [shard_bounds(n, r, w) for r in range(w)]
            assert [i for lo, hi in blocks for i in range(lo, hi)] == list(range(n))
            assert max(hi - lo for lo, hi in blocks) - min(hi - lo for lo, hi in blocks) <= 1
    assert part_path("/d/out.jsonl", 1, 4) == Path("/d/out.jsonl.rank1-of-4")


def test_rank_env_and_devices() -> None:
    assert rank_from_env({}) is None
    r = rank_from_env({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1"})
    assert (r.rank, r.world_size, r.local_rank, r.is_main) == (3, 4, 1, False)
    with pytest.raises(ConfigError, match="RANK=4 is outside WORLD_SIZE=4"):
        rank_from_env({"RANK": "4", "WORLD_SIZE": "4"})
    assert parse_devices("all", 4) == [0, 1, 2, 3]
    assert parse_devices("2, 0", 4) == [2, 0]
    with pytest.raises(ConfigError, match=r"--devices 0,5: this machine has 4 GPU\(s\) \(0-3\); 5 do not"):
        parse_devices("0,5", 4)
    with pytest.raises(ConfigError, match="--devices lists a GPU twice"):
        parse_devices("1,1", 4)
    with pytest.raises(ConfigError, match="--devices must be 'all' or GPU indices"):
        parse_devices("gpu0", 4)
    with pytest.raises(ConfigError, match="--devices all: no CUDA GPU is visible"):
        parse_devices("all", 0)


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


def test_invalid_records_fail_on_every_rank_before_writing(tmp_path: Path, tiny_rm: RewardModel) -> None:
    rows = _convs(4)
    rows[2]["messages"][1]["role"] = "bot"
    src = _write(tmp_path / "in.jsonl", rows)
    out = tmp_path / "out.jsonl"
    for rank in (0, 1):  # rank 1's own shard is valid; it still sees rank 0's bad record
        with pytest.raises(InvalidInputError, match=rf"{src}:3: field 'messages\[1\].role'"):
            score_file_sharded(tiny_rm, src, out, rank=rank, world_size=2)
    assert list(tmp_path.iterdir()) == [src]


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


def test_torchrun_two_ranks_resume_truncated_part(
    tmp_path: Path, tiny_model_dir: Path, tiny_rm: RewardModel, run_command, torchrun_cmd
) -> None:
    src = _write(tmp_path / "in.jsonl", _convs(9))
    want = _one_process(src, tmp_path / "one.jsonl", tiny_model_dir)
    out = tmp_path / "out.jsonl"
    # The parts a killed 2-rank job leaves: rank 0 done (row 0 marked to tell it was kept),
    # rank 1 killed in the middle of its second row.
    for rank in (0, 1):
        score_file_sharded(tiny_rm, src, out, rank=rank, world_size=2)
    p0, p1 = part_path(out, 0, 2), part_path(out, 1, 2)
    lines0 = p0.read_text(encoding="utf-8").splitlines(keepends=True)
    lines1 = p1.read_text(encoding="utf-8").splitlines(keepends=True)
    assert (len(lines0), len(lines1)) == (4, 5)  # blocks [0, 4) and [4, 9)
    p0.write_text(json.dumps({**json.loads(lines0[0]), "reward": 999.0}) + "\n" + "".join(lines0[1:]))
    p1.write_text(lines1[0] + lines1[1][: len(lines1[1]) // 2], encoding="utf-8")

    args = ["score", str(src), "-o", str(out), "--model", str(tiny_model_dir)]
    cmd = [*torchrun_cmd(2), "-m", "rewardkit", *args]
    proc = run_command(cmd, timeout=180)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.count("rewardkit score: model=") == 1  # rank 0 only
    assert f"resuming: 4 rows already in {out}" in proc.stderr  # rank 0's count
    got = _rows(out)
    assert got[0]["reward"] == 999.0  # kept, not rescored
    _assert_same(got, want, skip=1)
    assert not p0.exists() and not p1.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["in.jsonl", "one.jsonl", "one.jsonl.meta.json", "out.jsonl", "out.jsonl.meta.json"]
    )


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
    assert not part_path(out, 0, 2).exists() and not part_path(out, 1, 2).exists()

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
