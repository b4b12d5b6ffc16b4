"""Metric sinks: metrics.jsonl and TensorBoard agree after a resume (each step once)."""

from __future__ import annotations

from pathlib import Path

import pytest

from rewardkit.train.metrics import FlopCounter, MetricsWriter, read_metrics


def write(out: Path, steps: range, *, truncate_after: int | None, tensorboard: bool) -> None:
    w = MetricsWriter(out, tensorboard=tensorboard, truncate_after=truncate_after)
    for s in steps:
        w.write({"step": s, "loss": 1.0 / s if truncate_after is None else 2.0 / s})
    w.close()


def test_resumed_steps_replace_the_old_ones(tmp_path: Path) -> None:
    """A run logs steps 1..6, is resumed from its step-3 checkpoint and logs 4..6 again."""
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    write(tmp_path, range(1, 7), truncate_after=None, tensorboard=True)
    write(tmp_path, range(4, 7), truncate_after=3, tensorboard=True)

    rows = read_metrics(tmp_path)
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6]
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    scalars = events.Scalars("loss")
    assert [e.step for e in scalars] == [1, 2, 3, 4, 5, 6]
    assert [e.value for e in scalars] == pytest.approx([r["loss"] for r in rows])  # the resumed values


def test_a_new_run_starts_a_fresh_log(tmp_path: Path) -> None:
    write(tmp_path, range(1, 4), truncate_after=None, tensorboard=False)
    write(tmp_path, range(1, 3), truncate_after=None, tensorboard=False)
    assert [r["step"] for r in read_metrics(tmp_path)] == [1, 2]


def test_flops_of_a_packed_batch() -> None:
    class Config:
        num_attention_heads, hidden_size, num_hidden_layers = 4, 64, 2

    flops = FlopCounter(Config(), matmul_params=1000)
    # 6·N per token, plus 6·L·H·hd·s² per sequence.
    assert flops([3, 5]) == 6 * 1000 * 8 + 6 * 2 * 4 * 16 * (9 + 25)
