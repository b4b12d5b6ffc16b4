"""Setting up a run: the run directory, and what a failed setup leaves behind."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rewardkit import cli
from rewardkit.errors import InputError
from rewardkit.train import TrainConfig, Trainer, train
from rewardkit.train.step import PairStep


def test_output_under_a_regular_file_is_a_config_error(
    base_config: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    args = ["train", "--no-progress", "--max-steps", "1"]
    args += [f"--set={k}={v}" for k, v in base_config.items() if k != "output"]
    assert cli.main([*args, "--output", str(blocker / "run")]) == 2
    assert (
        f"output (--output): {blocker / 'run'} is under {blocker}, which is a file" in capsys.readouterr().err
    )
    assert cli.main([*args, "--output", str(blocker)]) == 2
    assert f"output (--output): {blocker} is a file" in capsys.readouterr().err


def test_a_run_that_fails_in_setup_creates_no_output(base_config: dict, jsonl, tmp_path: Path) -> None:
    long = jsonl("long.jsonl", [{"prompt": "hi", "chosen": "x" * 600, "rejected": "y"}] * 2)
    out = tmp_path / "never"
    with pytest.raises(InputError, match=r"long.jsonl:1: field 'chosen'"):
        train({**base_config, "data": str(long), "output": str(out), "truncation": "error", "max_length": 64})
    assert not out.exists()


def test_a_run_that_fails_before_writing_anything_leaves_no_directory(
    base_config: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def boom(self, data, batch):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(PairStep, "train", boom)
    out = tmp_path / "failed"
    with pytest.raises(RuntimeError, match="out of memory"):
        train({**base_config, "output": str(out), "max_steps": 1})
    assert not out.exists()
    existing = tmp_path / "existing"
    existing.mkdir()
    with pytest.raises(RuntimeError):
        train({**base_config, "output": str(existing), "max_steps": 1})
    assert existing.is_dir()  # not this run's to remove


def test_run_json_records_the_resolved_settings(base_config: dict, tmp_path: Path) -> None:
    """``auto`` checkpointing is resolved by the memory plan when a budget is given (on a GPU: the
    card's memory), and the run records what it chose."""
    cfg = {**base_config, "output": str(tmp_path / "r"), "max_pairs": 8, "max_steps": 1, "export": False}
    for budget, expected in ((1e-9, "full"), (1e3, "none")):
        t = Trainer(TrainConfig(**cfg, memory_budget_gib=budget))
        try:
            t.setup()
            assert t.cfg.activation_checkpointing == expected
        finally:
            t.close()
        run = json.loads((tmp_path / "r" / "run.json").read_text())
        assert run["config"]["activation_checkpointing"] == expected
        assert run["settings"]["memory_plan"]["activation_checkpointing"] == expected
        assert run["settings"]["memory_plan"]["fits"] is (budget > 1)
        # The micro-batch the run uses is the one the plan was made for (here: the budget asked for).
        plan = run["settings"]["memory_plan"]
        assert run["config"]["token_budget"] == plan["micro_batch_tokens"] == plan["token_budget"]
    cpu = Trainer(TrainConfig(**cfg))
    try:
        cpu.setup()  # no budget on a CPU: memory is not planned, nothing is recomputed
        assert (cpu.cfg.activation_checkpointing, cpu.cfg.compile) == ("none", False)
    finally:
        cpu.close()
