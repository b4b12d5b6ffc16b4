"""Chunked prefill for long sequences and shared-prefix group scoring equal the reference."""

from __future__ import annotations

import random

import pytest
import torch

from rewardkit.data.conversation import Conversation
from rewardkit.engine.batching import group_cost, pack_groups, shared_prefix_len
from rewardkit.engine.engine import ScoringEngine, chunked_reward
from rewardkit.models.reference import reference_scores

TOL = 1e-5  # fp32 on CPU: only summation order differs from the reference


def _conv(rng: random.Random, turns: int, words: int, system: bool) -> Conversation:
    msgs = [{"role": "system", "content": "Be brief. " * rng.randint(1, 5)}] if system else []
    for t in range(turns):
        msgs.append({"role": "user", "content": " ".join(f"q{t}w{i}" for i in range(rng.randint(1, words)))})
        msgs.append(
            {"role": "assistant", "content": " ".join(f"a{t}w{i}" for i in range(rng.randint(1, words)))}
        )
    return Conversation.of(msgs)


@pytest.fixture(scope="module")
def ragged(tiny_rm):
    rng = random.Random(3)
    convs = [_conv(rng, rng.randint(1, 4), 60, system=i % 2 == 0) for i in range(6)]
    convs += [_conv(rng, 1, 3, system=False) for _ in range(3)]  # short ones in the same run
    ref = reference_scores(tiny_rm.model, tiny_rm.tokenizer, convs)
    ids = [e.ids for e in tiny_rm.encode(convs)]
    return convs, ids, ref


def _close(a, b) -> None:
    assert len(a) == len(b)
    assert max(abs(x - y) for x, y in zip(a, b, strict=True)) < TOL


@pytest.mark.parametrize("budget", [16, 97, 256])
def test_chunked_equals_reference(tiny_rm, ragged, budget):
    _, ids, ref = ragged
    assert max(len(s) for s in ids) > 2 * budget  # the long ones really are chunked
    got = ScoringEngine(tiny_rm.model, token_budget=budget, compile=False).score_ids(ids)
    _close(got, ref)


def test_chunk_boundary_on_last_token(tiny_rm, ragged):
    _, ids, ref = ragged
    longest = max(range(len(ids)), key=lambda i: len(ids[i]))
    n = len(ids[longest])
    for chunk in (n - 1, n // 2 + (n % 2 == 0), 1 + (n - 1) // 3):  # last chunk of 1 token, etc.
        with torch.inference_mode():
            r = chunked_reward(tiny_rm.model, ids[longest], chunk, pad_token_id=tiny_rm.engine.pad_token_id)
        assert abs(r.item() - ref[longest]) < TOL, chunk


def test_groups_equal_independent_scoring(tiny_rm):
    rng = random.Random(5)
    groups = []
    for g in range(4):
        context = _conv(rng, rng.randint(1, 3), 30, system=g % 2 == 0).messages[:-1]
        groups.append(
            [
                Conversation((*context, _conv(rng, 1, 20, False).messages[-1]))
                for _ in range(rng.randint(1, 5))
            ]
        )
    flat = [c for g in groups for c in g]
    ref = reference_scores(tiny_rm.model, tiny_rm.tokenizer, flat)
    got = tiny_rm.score_groups(groups)
    assert [len(g) for g in got] == [len(g) for g in groups]
    _close([r for g in got for r in g], ref)


def test_group_edge_cases(tiny_rm):
    a = Conversation.from_prompt("What is 1+1?", "2")
    b = Conversation.from_prompt("What is 1+1?", "2, because one and one make two.")
    c = Conversation.from_prompt("Name a colour.", "Blue.")
    groups = [[a, b, a], [c], [a, c]]  # identical members, a singleton, no shared text
    ref = reference_scores(tiny_rm.model, tiny_rm.tokenizer, [x for g in groups for x in g])
    _close([r for g in tiny_rm.score_groups(groups) for r in g], ref)
    # A budget smaller than a group: its members are scored separately, same rewards.
    eng = ScoringEngine(tiny_rm.model, token_budget=60, compile=False)
    ids = [[e.ids for e in tiny_rm.encode(g)] for g in groups]
    _close([r for g in eng.score_groups(ids) for r in g], ref)


def test_pack_groups_layout():
    prompt = [1, 2, 3, 4]
    group = [[*prompt, 7, 8], [*prompt, 9]]
    assert shared_prefix_len(group) == 4
    assert shared_prefix_len([[1, 2], [1, 2]]) == 1  # each member keeps a token of its own
    assert group_cost(group) == 4 + 2 + 1
    b = pack_groups([group, [[5, 6]]], pad_token_id=None)
    assert b.input_ids.tolist() == [1, 2, 3, 4, 7, 8, 9, 5, 6]
    assert b.position_ids.tolist() == [0, 1, 2, 3, 4, 5, 4, 0, 1]
    assert b.cu_seqlens.tolist() == [0, 4, 6, 7, 9]  # queries: prompt, suffix 1, suffix 2, singleton
    assert b.keys is not None
    assert b.keys.cu_seqlens_k.tolist() == [0, 4, 10, 15, 17]  # suffixes see the prompt first
    assert b.keys.gather.tolist() == [0, 1, 2, 3, 0, 1, 2, 3, 4, 5, 0, 1, 2, 3, 6, 7, 8]
    assert b.read_index.tolist() == [5, 6, 8]


def test_pair_file_scoring_uses_groups_and_matches_reference(tiny_rm, tmp_path):
    import json

    from rewardkit.scoring import score_file

    rows = [
        {"prompt": "What is 1+1?", "chosen": "1+1=2", "rejected": "1+1=3"},
        {"prompt": "Name a prime.", "chosen": "Seven is prime.", "rejected": "Nine is prime."},
    ]
    src = tmp_path / "pairs.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "out.jsonl"
    score_file(tiny_rm, src, out)
    got = [json.loads(line) for line in out.read_text().splitlines()]
    convs = [Conversation.from_prompt(r["prompt"], r[k]) for r in rows for k in ("chosen", "rejected")]
    ref = reference_scores(tiny_rm.model, tiny_rm.tokenizer, convs)
    _close([x for g in got for x in (g["reward_chosen"], g["reward_rejected"])], ref)
