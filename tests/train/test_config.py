"""Training options: YAML < flags < --set, every problem named and reported at once."""

from __future__ import annotations

from pathlib import Path

import pytest

from rewardkit.errors import ConfigError
from rewardkit.train.config import TrainConfig, load_config

REQUIRED = {"model": "m", "data": "d.jsonl", "output": "out"}


def test_defaults_are_the_helpsteer3_recipe() -> None:
    c = TrainConfig(**REQUIRED)
    assert (c.global_batch_size, c.lr, c.epochs, c.weight_decay) == (128, 2e-6, 1.0, 0.1)
    assert (c.adam_betas, c.grad_clip, c.loss) == ((0.9, 0.98), 1.0, None)


def test_precedence_yaml_flags_set(tmp_path: Path) -> None:
    y = tmp_path / "c.yaml"
    y.write_text("model: from-yaml\ndata: d.jsonl\noutput: o\nlr: 2e-5\nseed: 3\nwarmup_steps: 4\n")
    c = load_config(y, flags={"lr": 1e-4, "seed": None}, sets=["warmup_steps=7", "adam_betas=[0.9, 0.95]"])
    assert c.model == "from-yaml"
    assert c.lr == 1e-4  # flag beats YAML
    assert c.seed == 3  # an unset flag (None) leaves YAML's value
    assert c.warmup_steps == 7  # --set beats YAML
    assert c.adam_betas == (0.9, 0.95)


def test_yaml_scientific_notation_is_a_float(tmp_path: Path) -> None:
    y = tmp_path / "c.yaml"
    y.write_text("model: m\ndata: d\noutput: o\nlr: 2e-6\n")  # YAML 1.1 reads this as a string
    assert load_config(y).lr == 2e-6


def test_every_problem_reported_at_once() -> None:
    with pytest.raises(ConfigError) as e:
        load_config(
            flags={"data": "d", "output": "o", "lr": -1.0},
            sets=["lerning_rate=1", "global_batch_size=0", "loss=hinge", "warmup_steps=ten"],
        )
    msg = str(e.value)
    assert msg.startswith("6 problems")
    assert "lerning_rate: unknown option" in msg
    assert "model (--model): required" in msg
    assert "lr (--lr): must be positive, got -1.0" in msg
    assert "global_batch_size (--global-batch-size): must be at least 1, got 0" in msg
    assert "loss (--loss): must be one of bt, scaled_bt, margin_bt, got 'hinge'" in msg
    assert "warmup_steps (--set warmup_steps=...): must be an integer, got 'ten'" in msg


def test_unknown_key_suggests_the_close_one() -> None:
    with pytest.raises(ConfigError, match="max_step: unknown option; did you mean 'max_steps'"):
        TrainConfig.from_dict({**REQUIRED, "max_step": 3})


def test_conflicting_options_named() -> None:
    with pytest.raises(ConfigError, match=r"val_data \(--val-data\) and val_fraction"):
        TrainConfig(**REQUIRED, val_data="v.jsonl", val_fraction=0.1)


def test_bad_set_syntax_and_missing_yaml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="expected key=value"):
        load_config(flags=REQUIRED, sets=["lr"])
    with pytest.raises(ConfigError, match="--config: file not found"):
        load_config(tmp_path / "nope.yaml")
    y = tmp_path / "list.yaml"
    y.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_config(y)


def test_direct_construction_checks_types() -> None:
    with pytest.raises(ConfigError, match="epochs \\(--epochs\\): must be a number, got 'one'"):
        TrainConfig(**REQUIRED, epochs="one")  # type: ignore[arg-type]


def test_token_budget_and_its_old_name(tmp_path: Path) -> None:
    y = tmp_path / "old.yaml"
    y.write_text("model: m\ndata: d\noutput: o\nmicro_batch_tokens: 4096\n")
    assert load_config(y).token_budget == 4096  # existing YAML files keep working
    assert load_config(y, flags={"token_budget": 2048}).token_budget == 2048  # the flag wins
    assert load_config(y, sets=["micro_batch_tokens=1024"]).token_budget == 1024
    assert TrainConfig.from_dict({**REQUIRED, "micro_batch_tokens": 512}).token_budget == 512
    with pytest.raises(ConfigError, match=r"token_budget \(--token-budget\) and micro_batch_tokens"):
        TrainConfig.from_dict({**REQUIRED, "micro_batch_tokens": 512, "token_budget": 256})


def test_cli_accepts_both_flag_spellings() -> None:
    from rewardkit.cli import build_parser

    parser = build_parser()
    for flag in ("--token-budget", "--micro-batch-tokens"):
        args = parser.parse_args(["train", flag, "2048", "--activation-checkpointing", "selective-op"])
        assert args.token_budget == 2048 and args.activation_checkpointing == "selective-op"


def test_activation_checkpointing_accepts_the_old_booleans(tmp_path: Path) -> None:
    y = tmp_path / "c.yaml"
    y.write_text("model: m\ndata: d\noutput: o\nactivation_checkpointing: true\n")
    assert load_config(y).activation_checkpointing == "full"
    assert load_config(y, sets=["activation_checkpointing=false"]).activation_checkpointing == "none"
    assert load_config(y, sets=["activation_checkpointing=selective-layer:4"]).activation_checkpointing == (
        "selective-layer:4"
    )
    assert TrainConfig(**REQUIRED).activation_checkpointing == "auto"
