"""Sharded checkpoints: resuming continues the same loss curve; a new run does not overwrite one."""

from __future__ import annotations

from pathlib import Path

import pytest

from rewardkit.train import train
from rewardkit.train.metrics import read_metrics


def test_resume_continues_the_same_loss_curve(base_config: dict, tmp_path: Path) -> None:
    common = {**base_config, "max_pairs": 48, "save_every": 2, "export": False}
    train({**common, "output": str(tmp_path / "full"), "max_steps": 4})
    train({**common, "output": str(tmp_path / "cut"), "max_steps": 2})
    train({**common, "output": str(tmp_path / "cut"), "max_steps": 4, "resume": "latest"})
    full, cut = read_metrics(tmp_path / "full"), read_metrics(tmp_path / "cut")
    assert [r["step"] for r in cut] == [1, 2, 3, 4]
    assert [r["loss"] for r in cut] == pytest.approx([r["loss"] for r in full], abs=1e-6)
    assert [r["grad_norm"] for r in cut] == pytest.approx([r["grad_norm"] for r in full], abs=1e-5)
    assert sorted(p.name for p in (tmp_path / "cut" / "checkpoints").iterdir()) == [
        "step-000002",
        "step-000004",
    ]


def test_resume_refuses_other_data_order(base_config: dict, tmp_path: Path) -> None:
    from rewardkit.errors import ConfigError

    common = {**base_config, "max_pairs": 16, "output": str(tmp_path / "r"), "export": False}
    train({**common, "max_steps": 1})
    with pytest.raises(ConfigError, match=r"already holds checkpoints \(step-000001\); pass --resume"):
        train({**common, "max_steps": 2})
    with pytest.raises(ConfigError, match=r"global_batch_size: checkpoint 8, now 4"):
        train({**common, "max_steps": 2, "global_batch_size": 4, "resume": "latest"})
