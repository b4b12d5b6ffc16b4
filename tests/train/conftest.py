"""Fixtures for training tests: a tiny causal LM and a generated, learnable preference task."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch

from rewardkit.train import train
from rewardkit.train.metrics import read_metrics

GOOD, BAD = "abcde", "vwxyz"


def task_record(rng: random.Random, i: int) -> dict:
    """A HelpSteer3-shaped pair: the better response is written in the letters a-e, the worse in
    v-z, so a tiny model can learn it in a few steps; the side and strength are random."""
    n = rng.randint(3, 8)
    good = "".join(rng.choice(GOOD) for _ in range(n))
    bad = "".join(rng.choice(BAD) for _ in range(n))
    pref = rng.choice([-3, -2, -1, 1, 2, 3])
    r1, r2 = (good, bad) if pref < 0 else (bad, good)
    return {
        "context": [{"role": "user", "content": f"q{i}"}],
        "response1": r1,
        "response2": r2,
        "overall_preference": pref,
    }


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """The tiny models run fastest on one thread; on a shared 2-core machine, more threads spin
    against each other and make each step ~10x slower."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="session")
def task(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """train.jsonl (160 pairs + 2 ties) and val.jsonl (64 pairs, other prompts)."""
    d = tmp_path_factory.mktemp("task")
    rng = random.Random(0)
    train = [task_record(rng, i) for i in range(160)]
    train[5]["overall_preference"] = 0
    train[77]["overall_preference"] = 0
    val = [task_record(rng, 1000 + i) for i in range(64)]
    return {"train": write_jsonl(d / "train.jsonl", train), "val": write_jsonl(d / "val.jsonl", val)}


@pytest.fixture(scope="session")
def fast_config(tiny_lm_dir: Path, task: dict[str, Path]):
    """Makes fast settings for the tiny task (high lr, small batches) writing to ``output``;
    tests override what they test."""

    def make(output: Path, **overrides: object) -> dict:
        return {
            "model": str(tiny_lm_dir),
            "data": str(task["train"]),
            "output": str(output),
            "lr": 1e-3,
            "warmup_steps": 1,
            "global_batch_size": 8,
            "token_budget": 256,
            "save_every": 0,
            "eval_every": 0,
            "tensorboard": False,
            "device": "cpu",
            **overrides,
        }

    return make


@pytest.fixture()
def base_config(fast_config, tmp_path: Path) -> dict:
    return fast_config(tmp_path / "run")


@pytest.fixture()
def jsonl(tmp_path: Path):
    """Writes rows to ``tmp_path/name`` as JSONL and returns the path."""
    return lambda name, rows: write_jsonl(tmp_path / name, rows)


@pytest.fixture()
def train_one_and_two(tmp_path: Path, run_command, torchrun_cmd):
    """Trains ``opts`` in this process into ``tmp/one``, then under a 2-process torchrun (the CLI,
    every option through ``--set``) into ``tmp/two``; returns (one's export, two's output dir)."""

    def run(opts: dict) -> tuple[Path, Path]:
        one = train({**opts, "output": str(tmp_path / "one")})
        two = tmp_path / "two"
        args = [*torchrun_cmd(2), "-m", "rewardkit", "train", "--output", str(two), "--no-progress"]
        for key, value in opts.items():
            if key != "output":
                args += ["--set", f"{key}={value}"]
        proc = run_command(args, timeout=240)
        assert proc.returncode == 0, proc.stderr[-4000:]
        return one, two

    return run


@pytest.fixture()
def cut_and_resumed(tmp_path: Path):
    """Trains ``opts`` 4 steps straight into ``tmp/full``, and 2 steps then a resume to 4 into
    ``tmp/cut`` (checkpoints every 2 steps); checks that the resumed run has the same loss curve
    and returns its directory."""

    def run(opts: dict) -> Path:
        common = {**opts, "save_every": 2, "export": False}
        train({**common, "output": str(tmp_path / "full"), "max_steps": 4})
        train({**common, "output": str(tmp_path / "cut"), "max_steps": 2})
        train({**common, "output": str(tmp_path / "cut"), "max_steps": 4, "resume": "latest"})
        full, cut = read_metrics(tmp_path / "full"), read_metrics(tmp_path / "cut")
        assert [r["step"] for r in cut] == [1, 2, 3, 4]
        assert [r["loss"] for r in cut] == pytest.approx([r["loss"] for r in full], abs=1e-6)
        assert [r["grad_norm"] for r in cut] == pytest.approx([r["grad_norm"] for r in full], abs=1e-5)
        return tmp_path / "cut"

    return run
