"""``--resume`` continues only the run that wrote the checkpoint: data, model, loss and schedule."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from rewardkit import cli
from rewardkit.errors import ConfigError
from rewardkit.train import train
from rewardkit.train.data import TokenPairs
from rewardkit.train.fingerprint import data_digest, differences
from rewardkit.train.metrics import read_metrics


def test_data_digest_is_content() -> None:
    a = TokenPairs(chosen=[[1, 2], [3]], rejected=[[4], [5, 6]], strength=[1.0, 2.0])
    same = TokenPairs(chosen=[[1, 2], [3]], rejected=[[4], [5, 6]], strength=[1.0, 2.0])
    flipped = TokenPairs(chosen=[[4], [3]], rejected=[[1, 2], [5, 6]], strength=[1.0, 2.0])
    regrouped = TokenPairs(chosen=[[1], [3]], rejected=[[2, 4], [5, 6]], strength=[1.0, 2.0])
    assert data_digest(a) == data_digest(same)
    assert len({data_digest(a), data_digest(flipped), data_digest(regrouped)}) == 3
    assert differences({"loss": "bt", "new": 1}, {"loss": "margin_bt", "old": 2}) == [
        "loss: checkpoint 'bt', now 'margin_bt'"
    ]


@pytest.fixture()
def first_run(base_config: dict, tmp_path: Path) -> dict:
    """Two steps of a run with a checkpoint; returns its options."""
    opts = {**base_config, "max_pairs": 16, "max_steps": 2, "save_every": 2, "export": False}
    train(opts)
    return opts


def test_resume_refuses_relabelled_data_of_the_same_size(first_run: dict, tmp_path: Path) -> None:
    rows = [json.loads(line) for line in Path(first_run["data"]).read_text().splitlines()]
    for r in rows:
        r["overall_preference"] = -r["overall_preference"]  # every label flipped
    flipped = tmp_path / "flipped.jsonl"
    flipped.write_text("".join(json.dumps(r) + "\n" for r in rows))
    again = {**first_run, "max_steps": 3, "resume": "latest"}
    with pytest.raises(
        ConfigError, match=r"was written by another run \(data: checkpoint [0-9a-f]{12}, now [0-9a-f]{12}\)"
    ):
        train({**again, "data": str(flipped)})
    # The same file under another path is the same data.
    copy = tmp_path / "elsewhere" / "train.jsonl"
    copy.parent.mkdir()
    shutil.copy(first_run["data"], copy)
    train({**again, "data": str(copy)})
    assert [r["step"] for r in read_metrics(first_run["output"])] == [1, 2, 3]


def test_resume_refuses_another_loss_or_model_unless_forced(
    first_run: dict, tiny_model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["train", "--output", first_run["output"], "--resume", "--no-progress", "--max-steps", "3"]
    for key, value in first_run.items():
        if key not in ("output", "max_steps"):
            args += ["--set", f"{key}={value}"]
    assert cli.main([*args, "--loss", "margin_bt"]) == 2
    err = capsys.readouterr().err
    assert "loss: checkpoint 'scaled_bt', now 'margin_bt'" in err and "--force-resume" in err
    assert cli.main([*args, "--set", f"model={tiny_model_dir}"]) == 2
    assert "model: checkpoint " in capsys.readouterr().err
    assert cli.main([*args, "--loss", "margin_bt", "--force-resume"]) == 0
    assert [r["step"] for r in read_metrics(first_run["output"])] == [1, 2, 3]
