"""Engine planning (token-budget batches, packing) and out-of-memory split-and-retry."""

from __future__ import annotations

import logging
import random

import pytest
import torch

from rewardkit.api import RewardModel
from rewardkit.engine.batching import PackedBatch, best_fit_batches, pack, pool_index, token_budget_batches
from rewardkit.engine.engine import ScoringEngine


@pytest.mark.parametrize("pack", [token_budget_batches, best_fit_batches])
@pytest.mark.parametrize("seed", range(20))
def test_budget_batches_properties(pack, seed: int) -> None:
    rng = random.Random(seed)
    lengths = [rng.randint(1, 300) for _ in range(rng.randint(1, 60))]
    budget = rng.randint(50, 900)
    batches = pack(lengths, budget)
    flat = [i for b in batches for i in b]
    assert sorted(flat) == list(range(len(lengths)))  # every index exactly once
    totals = [sum(lengths[i] for i in b) for b in batches]
    for b, total in zip(batches, totals, strict=True):
        assert b and (total <= budget or len(b) == 1), (b, total, budget)  # no empty batch
        assert [lengths[i] for i in b] == sorted((lengths[i] for i in b), reverse=True)
    if pack is token_budget_batches:  # longest first: lengths never increase along the plan
        assert [lengths[i] for i in flat] == sorted(lengths, reverse=True)
    else:  # fullest first, never more batches than closing at the first misfit, none could merge
        assert totals == sorted(totals, reverse=True)
        assert len(batches) <= len(token_budget_batches(lengths, budget))
        small = sorted(t for t in totals if t <= budget)
        assert len(small) < 2 or small[0] + small[1] > budget


def test_token_budget_batches_worked_example() -> None:
    #            0   1   2   3   4  5
    lengths = [30, 100, 10, 60, 250, 40]
    # sorted: 4(250) 1(100) 3(60) 5(40) 0(30) 2(10); budget 120
    assert token_budget_batches(lengths, 120) == [[4], [1], [3, 5], [0, 2]]
    assert token_budget_batches(lengths, 10_000) == [[4, 1, 3, 5, 0, 2]]
    assert token_budget_batches([], 10) == []
    with pytest.raises(ValueError, match="token budget must be positive"):
        token_budget_batches([1], 0)


def test_best_fit_batches_worked_example() -> None:
    #            0   1   2   3   4  5
    lengths = [30, 100, 10, 60, 250, 40]
    # 250 alone (over 120); 100 opens a batch, 60 another; 40 joins 60 (100 left no room);
    # 30 fits neither 100+30 > 120 nor 60+40+30 > 120: a new batch; 10 goes to the fullest (100).
    assert best_fit_batches(lengths, 120) == [[4], [1, 2], [3, 5], [0]]
    # Closing at the first misfit needs the same here; on mixed lengths best fit needs fewer:
    assert token_budget_batches([60, 50, 20, 10], 70) == [[0], [1, 2], [3]]
    assert best_fit_batches([60, 50, 20, 10], 70) == [[0, 3], [1, 2]]
    assert best_fit_batches([], 10) == []
    with pytest.raises(ValueError, match="token budget must be positive"):
        best_fit_batches([1], 0)


def test_pool_index_matches_hf_rightmost_non_pad() -> None:
    pad = 7
    assert pool_index([1, 2, 3], pad) == 2
    assert pool_index([1, 2, 7], pad) == 1  # ends in the pad id: read the token before it
    assert pool_index([1, 7, 2, 7, 7], pad) == 2
    assert pool_index([7, 7], pad) == 0  # all pad: HF's argmax over zeros gives 0
    assert pool_index([1, 7], None) == 1  # no pad id: the last token


def test_pack_layout() -> None:
    pad = 0
    seqs = [[5, 6, 7], [8, 9], [3, 4, 0, 0], [1]]
    b = pack(seqs, pad)
    assert b.input_ids.tolist() == [5, 6, 7, 8, 9, 3, 4, 0, 0, 1]
    assert b.position_ids.tolist() == [0, 1, 2, 0, 1, 0, 1, 2, 3, 0]
    assert b.cu_seqlens.tolist() == [0, 3, 5, 9, 10]
    assert b.cu_seqlens.dtype == torch.int32
    assert b.max_seqlen == 4
    # Third sequence ends in two pad tokens: its reward is read at its token 4 (stream index 6).
    assert b.read_index.tolist() == [2, 4, 6, 9]
    assert b.num_tokens == 10


def test_pad_ending_sequence_matches_hf(tiny_rm: RewardModel) -> None:
    """A sequence that ends in the pad id is read where HF reads it (rightmost non-pad token)."""
    pad = tiny_rm.engine.pad_token_id
    assert pad is not None
    seqs = [[10, 20, 30, pad], [40, 50, pad, 60, pad, pad], [70, 80, 90, 100, 110]]
    got = tiny_rm.engine.score_ids(seqs)
    with torch.inference_mode():
        want = [tiny_rm.model(input_ids=torch.tensor([s])).logits[0][0].item() for s in seqs]
    assert got == pytest.approx(want, abs=1e-5)


def _oom_above(limit: int):
    """A hook that raises a simulated out-of-memory on packed batches of more than ``limit``."""

    def oom(batch: PackedBatch) -> None:
        if int(batch.cu_seqlens.numel()) - 1 > limit:
            raise torch.OutOfMemoryError("simulated")

    return oom


def _engine(rm: RewardModel, budget: int) -> ScoringEngine:
    return ScoringEngine(rm.model, token_budget=budget)


def test_oom_split_and_retry(tiny_rm: RewardModel, hooked_engine, caplog: pytest.LogCaptureFixture) -> None:
    rng = random.Random(0)
    seqs = [[rng.randrange(0, 256) for _ in range(rng.randint(3, 40))] for _ in range(23)]
    normal = _engine(tiny_rm, 10_000).score_ids(seqs)
    engine = hooked_engine(tiny_rm.model, _oom_above(4), token_budget=10_000)
    fake = engine.forward
    with caplog.at_level(logging.WARNING, logger="rewardkit.engine.engine"):
        got = engine.score_ids(seqs)
    assert got == pytest.approx(normal, abs=1e-5)
    assert fake.calls[0] == 23  # the planned batch was tried first
    assert max(n for n in fake.calls if n <= 4) <= 4
    # 23 → 11+12 → 5+6+6+6 → 2+3+3+3+3+3+3+3: every sequence scored once in the end.
    assert sum(n for n in fake.calls if n <= 4) == 23
    assert any("out of memory" in r.getMessage() and "splitting" in r.getMessage() for r in caplog.records)


def test_oom_on_single_sequence_is_raised(tiny_rm: RewardModel, hooked_engine) -> None:
    engine = hooked_engine(tiny_rm.model, _oom_above(0), token_budget=10_000)
    with pytest.raises(torch.OutOfMemoryError):
        engine.score_ids([[1, 2, 3], [4, 5]])


def test_score_ids_progress_and_empty(tiny_rm: RewardModel) -> None:
    engine = _engine(tiny_rm, 10)
    seen: list[tuple[int, int]] = []
    out = engine.score_ids([[1] * 6, [2] * 3, [3] * 4, [4] * 12], progress=lambda n, t: seen.append((n, t)))
    assert len(out) == 4
    # Longest first under a budget of 10: [12] alone (over budget), then 6+4, then 3.
    assert seen == [(1, 12), (2, 10), (1, 3)]
    assert engine.score_ids([]) == []
    with pytest.raises(ValueError, match="empty token sequence"):
        engine.score_ids([[1], []])


def test_small_models_run_on_one_cpu_thread(tiny_rm: RewardModel) -> None:
    """Splitting a tiny model's short operations over threads only adds waiting (see cpu_threads);
    torch's own setting is left as it was."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        engine = ScoringEngine(tiny_rm.model, token_budget=512)
        assert engine.forward.threads == 1
        seen = []
        hook = tiny_rm.model.model.register_forward_pre_hook(lambda *_: seen.append(torch.get_num_threads()))
        try:
            engine.score_ids([[1, 2, 3]])
        finally:
            hook.remove()
        assert seen == [1] and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
