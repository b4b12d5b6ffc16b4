"""Sharded checkpoints: resuming continues the same loss curve; a new run does not overwrite one."""

from __future__ import annotations

from pathlib import Path

import pytest

from rewardkit.train import train


def test_resume_continues_the_same_loss_curve(base_config: dict, cut_and_resumed) -> None:
    cut = cut_and_resumed({**base_config, "max_pairs": 48})
    assert sorted(p.name for p in (cut / "checkpoints").iterdir()) == ["step-000002", "step-000004"]


def test_resume_refuses_other_data_order(base_config: dict, tmp_path: Path) -> None:
    from rewardkit.errors import ConfigError

    common = {**base_config, "max_pairs": 16, "output": str(tmp_path / "r"), "export": False}
    train({**common, "max_steps": 1})
    with pytest.raises(ConfigError, match=r"already holds checkpoints \(step-000001\); pass --resume"):
        train({**common, "max_steps": 2})
    with pytest.raises(ConfigError, match=r"global_batch_size: checkpoint 8, now 4"):
        train({**common, "max_steps": 2, "global_batch_size": 4, "resume": "latest"})
