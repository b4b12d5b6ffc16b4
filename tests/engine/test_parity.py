"""Packed engine rewards == the model card's procedure (`reference_scores`, fp32), Qwen2 and Llama."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch

from rewardkit.api import RewardModel
from rewardkit.data.conversation import Conversation, PreferencePair
from rewardkit.engine.batching import token_budget_batches
from rewardkit.errors import InputError
from rewardkit.models.reference import reference_scores

# fp32 on CPU: the packed stream and the per-conversation forward reduce in different orders
# (GEMM blocking over T); the differences seen are ~4e-6 on rewards of magnitude ~20.
ATOL = 1e-5
WORDS = [
    "the",
    "reward",
    "model",
    "scores",
    "answers",
    "quickly",
    ",",
    "with",
    "ünïcödé",
    "数学",
    "🙂",
    "and",
    "42",
    "more",
    "tokens",
    ".\n",
]


def ragged_conversations(
    n: int, seed: int, *, max_words: int = 25, max_rounds: int = 3
) -> list[Conversation]:
    """Multi-turn conversations of very different lengths; every other one has a system turn.

    The first is the shortest possible exchange (25 tokens with the tiny byte tokenizer).
    """
    rng = random.Random(seed)

    def text() -> str:
        return " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, max_words)))

    out = [Conversation.of([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "ok"}])]
    for i in range(1, n):
        msgs = [{"role": "system", "content": text()}] if i % 2 else []
        for _ in range(rng.randint(1, max_rounds)):
            msgs += [{"role": "user", "content": text()}, {"role": "assistant", "content": text()}]
        out.append(Conversation.of(msgs, id=str(i)))
    return out


@pytest.fixture(scope="module", params=["qwen2", "llama"])
def rm(request: pytest.FixtureRequest, tiny_rm: RewardModel, tiny_llama_dir: Path) -> RewardModel:
    return tiny_rm if request.param == "qwen2" else RewardModel.load(tiny_llama_dir, device="cpu")


def _reference(rm: RewardModel, convs: list[Conversation]) -> list[float]:
    return reference_scores(rm.model, rm.tokenizer, convs, output_index=rm.spec.output_index)


def test_ragged_batch_matches_reference(rm: RewardModel) -> None:
    convs = ragged_conversations(16, seed=0)
    lengths = [len(e.ids) for e in rm.encode(convs)]
    assert min(lengths) < 40 and max(lengths) > 10 * min(lengths)  # genuinely ragged
    assert len(token_budget_batches(lengths, rm.engine.token_budget)) == 1  # one packed stream
    assert any(c.messages[0].role == "system" for c in convs)
    assert any(c.messages[0].role != "system" for c in convs)
    got = rm.score(convs)
    want = _reference(rm, convs)
    assert got == pytest.approx(want, abs=ATOL)
    assert len(set(round(x, 3) for x in want)) == len(want)  # distinct rewards: order matters


def test_budget_smaller_than_a_conversation(rm: RewardModel, tmp_path: Path) -> None:
    small = RewardModel.load(rm.spec.model, device="cpu", token_budget=64)
    convs = ragged_conversations(10, seed=1)
    lengths = [len(e.ids) for e in small.encode(convs)]
    batches = token_budget_batches(lengths, 64)
    assert any(len(b) == 1 and lengths[b[0]] > 64 for b in batches)  # over-budget: alone
    assert small.score(convs) == pytest.approx(_reference(rm, convs), abs=ATOL)


def test_one_conversation(rm: RewardModel) -> None:
    conv = [{"role": "user", "content": "What is 1+1?"}, {"role": "assistant", "content": "1+1=2"}]
    (got,) = rm.score([conv])
    (want,) = _reference(rm, [Conversation.of(conv)])
    assert got == pytest.approx(want, abs=ATOL)
    assert rm.score([]) == []


def test_many_short_conversations(rm: RewardModel) -> None:
    convs = ragged_conversations(150, seed=2, max_words=3, max_rounds=1)
    assert rm.score(convs) == pytest.approx(_reference(rm, convs), abs=ATOL)


def test_score_pairs(rm: RewardModel) -> None:
    convs = ragged_conversations(6, seed=3)
    pairs = [
        PreferencePair(context=a.messages[:-1], first=a.messages[-1:], second=b.messages[-1:])
        for a, b in zip(convs[0::2], convs[1::2], strict=True)
    ]
    got = rm.score_pairs(pairs)
    flat = _reference(rm, [c for p in pairs for c in p.conversations()])
    assert [x for ab in got for x in ab] == pytest.approx(flat, abs=ATOL)


def test_left_truncation_scores_the_kept_conversation(tiny_model_dir: Path, tiny_rm: RewardModel) -> None:
    limit = 150
    rm = RewardModel.load(tiny_model_dir, device="cpu", max_length=limit, truncation="left")
    assert rm.spec.max_length == limit and rm.spec.truncation == "left"
    convs = [c for c in ragged_conversations(30, seed=4) if len(c) >= 5][:6]
    encoded = [e for e in rm.encode(convs) if not isinstance(e, InputError)]
    assert all(len(e.ids) <= limit for e in encoded)
    assert any(e.truncated_turns > 0 for e in encoded) and any(e.truncated for e in encoded)
    scored = rm.score_encoded(encoded)
    with torch.inference_mode():  # the card's forward on exactly the ids that were kept
        want = [tiny_rm.model(input_ids=torch.tensor([e.ids])).logits[0][0].item() for e in encoded]
    assert [s.reward for s in scored] == pytest.approx(want, abs=ATOL)
    assert [(s.truncated_turns, s.truncated_tokens) for s in scored] == [
        (e.truncated_turns, e.truncated_tokens) for e in encoded
    ]


def test_api_errors_name_the_item(tiny_rm: RewardModel) -> None:
    ok = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]
    with pytest.raises(InputError, match=r"field '\[1\]\.messages\[1\]\.role'"):
        tiny_rm.score([ok, [{"role": "user", "content": "q"}, {"role": "user", "content": "a"}]])
    short = RewardModel(
        model=tiny_rm.model,
        chat=type(tiny_rm.chat)(tiny_rm.tokenizer, max_length=10),
        engine=tiny_rm.engine,
        spec=tiny_rm.spec,
    )
    with pytest.raises(InputError, match=r"field '\[0\]\.messages': conversation is \d+ tokens"):
        short.score([ok])
