"""``rewardkit train``: flags, YAML, errors as the user meets them, and the docs' example."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from rewardkit import cli
from rewardkit.train.metrics import read_metrics

DOCS = Path(__file__).resolve().parents[2] / "docs" / "training.md"


def test_cli_train_reports_config_errors(capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main(["train", "--model", "m", "--data", "d.jsonl", "--set", "lr_warmup=3", "--lr", "0"])
    err = capsys.readouterr().err
    assert code == 2
    assert "lr_warmup: unknown option" in err and "lr (--lr): must be positive" in err


def test_cli_train_with_yaml_config(base_config: dict, tmp_path: Path) -> None:
    import yaml

    y = tmp_path / "train.yaml"
    y.write_text(yaml.safe_dump({**base_config, "max_steps": 5, "max_pairs": 16}))
    out = tmp_path / "cli-run"
    code = cli.main(["train", "--config", str(y), "--output", str(out), "--max-steps", "1", "--no-progress"])
    assert code == 0
    assert [r["step"] for r in read_metrics(out)] == [1]  # the flag beat the YAML's max_steps
    assert (out / "final" / "model.safetensors").is_file()


def test_docs_config_error_example_is_what_is_printed(capsys: pytest.CaptureFixture[str]) -> None:
    block = re.search(r"```console\n\$ (rewardkit train .*?)\n(.*?)```", DOCS.read_text(), re.S)
    assert block is not None, "docs/training.md lost its config-error example"
    command, printed = block.group(1), block.group(2)
    assert cli.main(shlex.split(command)[1:]) == 2
    assert capsys.readouterr().err == printed
