"""The streaming pipeline: windows keep input order and rewards, a kill inside the pipeline
resumes, invalid records far into a file write nothing, and memory does not grow with the input."""

from __future__ import annotations

import json
import random
import tracemalloc
from collections.abc import Sequence
from pathlib import Path

import pytest
import torch

from rewardkit import api
from rewardkit.api import ModelOptions, RewardModel
from rewardkit.data.conversation import Conversation
from rewardkit.engine.batching import PackedBatch
from rewardkit.engine.engine import Forward, ScoringEngine
from rewardkit.scoring.files import InvalidInputError, score_file
from rewardkit.scoring.pipeline import score_stream, windows

ATOL = 1e-5  # fp32 packed in other batches; see tests/engine/test_parity.py


def _conv(i: int, rng: random.Random) -> dict:
    q = " ".join(f"q{i}w{j}" for j in range(rng.randint(1, 40)))
    a = " ".join(f"a{j}" for j in range(rng.randint(1, 60)))
    return {"id": f"c{i}", "messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}


def _write(path: Path, rows: Sequence[dict | str]) -> Path:
    path.write_text(
        "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8"
    )
    return path


def _rows(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines()]


def test_windows_keep_input_order_and_rewards(tiny_rm: RewardModel) -> None:
    """Small windows sort each window by length on its own: rows still come out in input order,
    with the rewards of one engine call over everything."""
    rng = random.Random(0)
    convs = [Conversation.of(_conv(i, rng)["messages"]) for i in range(60)]
    want = tiny_rm.score(convs)
    keys, got = [], []
    for window in score_stream(tiny_rm, ((i, [c]) for i, c in enumerate(convs)), window_tokens=300):
        for key, scored in window:
            keys.append(key)
            got.append(scored[0].reward)
    assert keys == list(range(60))
    assert got == pytest.approx(want, abs=ATOL)


def test_windows_are_cut_by_tokens() -> None:
    units = [(i, [type("E", (), {"ids": [0] * n})()]) for i, n in enumerate([5, 5, 5, 20, 1, 1])]
    cut = [w.keys for w in windows(units, max_tokens=10)]  # type: ignore[arg-type]
    assert cut == [[0, 1], [2], [3], [4, 5]]  # a unit over the limit gets a window of its own


class _Die(RuntimeError):
    pass


def test_a_kill_inside_the_pipeline_resumes(tmp_path: Path, tiny_rm: RewardModel, hooked_rm) -> None:
    rng = random.Random(1)
    src = _write(tmp_path / "in.jsonl", [_conv(i, rng) for i in range(40)])
    whole = tmp_path / "whole.jsonl"
    score_file(tiny_rm, src, whole)
    calls = []

    def die_on_fourth(_batch: PackedBatch) -> None:
        calls.append(1)
        if len(calls) == 4:
            raise _Die

    out = tmp_path / "out.jsonl"
    with pytest.raises(_Die):
        score_file(hooked_rm(die_on_fourth), src, out, window_tokens=200)
    partial = _rows(out)
    assert 0 < len(partial) < 40  # windows already written stay
    summary = score_file(tiny_rm, src, out, window_tokens=200)
    assert (summary.resumed, summary.rows) == (len(partial), 40 - len(partial))
    got, want = _rows(out), _rows(whole)
    assert [r["id"] for r in got] == [r["id"] for r in want]
    assert [r["reward"] for r in got] == pytest.approx([r["reward"] for r in want], abs=ATOL)


def test_an_invalid_record_far_into_a_file_writes_nothing(tmp_path: Path, tiny_rm: RewardModel) -> None:
    rng = random.Random(2)
    rows: list[dict | str] = [_conv(i, rng) for i in range(3000)]
    rows[2900] = "{broken"
    src = _write(tmp_path / "in.jsonl", rows)
    out = tmp_path / "out.jsonl"
    with pytest.raises(InvalidInputError, match=rf"{src}:2901: malformed JSON"):
        score_file(tiny_rm, src, out, window_tokens=500)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.jsonl"]


class _Zero:
    """A `Forward` that skips the model (rewards 0): the rest of the pipeline runs for real."""

    def __init__(self, inner: Forward) -> None:
        pass

    def packed(self, batch: PackedBatch) -> torch.Tensor:
        return torch.zeros(batch.read_index.numel())

    def long(self, ids: Sequence[int]) -> torch.Tensor:
        return torch.zeros(1)


def _peak_bytes(rm: RewardModel, src: Path, out: Path) -> int:
    tracemalloc.start()
    try:
        summary = score_file(rm, src, out, overwrite=True, window_tokens=2048)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
        assert summary.rows > 0


def test_memory_does_not_grow_with_the_input(tmp_path: Path, tiny_rm: RewardModel) -> None:
    """Peak Python memory scoring 5× more records stays about the same (holding every record's
    token ids, even as int32 arrays, would make it grow about 5×). Both inputs span many windows."""
    engine = ScoringEngine(tiny_rm.model, token_budget=512, wrap_forward=_Zero)
    rm = RewardModel(model=tiny_rm.model, chat=tiny_rm.chat, engine=engine, spec=tiny_rm.spec)
    rows = [
        {"messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": "a"}]}
        for i in range(5_000)
    ]
    small = _write(tmp_path / "small.jsonl", rows[:1_000])
    large = _write(tmp_path / "large.jsonl", rows)
    _peak_bytes(rm, small, tmp_path / "warm.jsonl")  # first-use caches out of the way
    peak_small = _peak_bytes(rm, small, tmp_path / "small-out.jsonl")
    peak_large = _peak_bytes(rm, large, tmp_path / "large-out.jsonl")
    assert len(_rows(tmp_path / "large-out.jsonl")) == 5_000
    assert peak_large < 1.5 * peak_small, (peak_small, peak_large)


def test_options_load_the_tokenizer_once(
    tmp_path: Path, tiny_model_dir: Path, tiny_rm: RewardModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Scoring from `ModelOptions` reads the tokenizer and template once (the scan's copy is the
    model's), and writes what a loaded model writes."""
    rng = random.Random(5)
    src = _write(tmp_path / "in.jsonl", [_conv(i, rng) for i in range(20)])
    score_file(tiny_rm, src, tmp_path / "loaded.jsonl")
    calls: list[str] = []
    real = api.load_tokenizer

    def counted(name: str, **kwargs):
        calls.append(name)
        return real(name, **kwargs)

    monkeypatch.setattr(api, "load_tokenizer", counted)
    score_file(ModelOptions(model=str(tiny_model_dir), device="cpu"), src, tmp_path / "options.jsonl")
    assert calls == [str(tiny_model_dir)]
    assert _rows(tmp_path / "options.jsonl") == _rows(tmp_path / "loaded.jsonl")
