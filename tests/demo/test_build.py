"""Pieces of the demo build: tokenizer training, model construction, installing the files."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from rewardkit.api import RewardModel
from rewardkit.demo.build import (
    MODEL_FILES,
    DemoModelConfig,
    corpus,
    init_model,
    install,
    train_tokenizer,
    write_initial_model,
)
from rewardkit.demo.generate import DemoDataConfig, generate, write_splits

SMALL = DemoDataConfig(seed=3, train_pairs_per_skill=150, validation_pairs_per_skill=10)


@pytest.fixture(scope="module")
def tokenizer():
    records = generate(SMALL)["train"]
    return train_tokenizer(corpus(records), vocab_size=600, max_length=512)


def test_tokenizer_is_chatml_byte_level_bpe(tokenizer) -> None:
    assert tokenizer.convert_tokens_to_ids(["<|endoftext|>", "<|im_start|>", "<|im_end|>"]) == [0, 1, 2]
    assert tokenizer.pad_token_id == 0 and tokenizer.eos_token == "<|im_end|>"
    assert 300 < len(tokenizer) <= 600  # 256 bytes + 3 specials + learned merges
    messages = [{"role": "user", "content": "What is 12+7?"}, {"role": "assistant", "content": "19"}]
    text = tokenizer.apply_chat_template(messages, tokenize=False)
    assert text == "<|im_start|>user\nWhat is 12+7?<|im_end|>\n<|im_start|>assistant\n19<|im_end|>\n"
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert ids.count(1) == 2 and ids.count(2) == 2
    # Digits are one token each, so "12" and "19" are spelled out.
    pieces = tokenizer.convert_ids_to_tokens(tokenizer("12+7=19", add_special_tokens=False)["input_ids"])
    assert pieces == ["1", "2", "+", "7", "=", "1", "9"]
    # Byte-level: any text round-trips, including characters never seen in training.
    for s in ("Grüße, 世界! 🙂", "tab\there"):
        assert tokenizer.decode(tokenizer(s, add_special_tokens=False)["input_ids"]) == s


def test_init_model_shape_and_near_tie_head(tokenizer) -> None:
    cfg = DemoModelConfig(vocab_size=600, hidden_size=64, layers=2, heads=4, kv_heads=2, intermediate_size=96)
    model = init_model(tokenizer, cfg, seed=0)
    c = model.config
    assert type(model).__name__ == "Qwen2ForSequenceClassification"
    assert (c.num_labels, c.hidden_size, c.num_hidden_layers, c.intermediate_size) == (1, 64, 2, 96)
    assert c.vocab_size == len(tokenizer) and c.pad_token_id == tokenizer.pad_token_id
    assert model.score.weight.shape == (1, 64) and model.score.weight.abs().max() < 0.15
    same = init_model(tokenizer, cfg, seed=0)
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), same.parameters(), strict=True))


def test_default_size_fits_the_package_budget() -> None:
    cfg = DemoModelConfig()
    d, i, kv = cfg.hidden_size, cfg.intermediate_size, cfg.kv_heads * (cfg.hidden_size // cfg.heads)
    per_layer = 2 * d * d + 2 * d * kv + 2 * kv + d + 3 * d * i + 2 * d  # q,o; k,v (+ biases); mlp; norms
    params = cfg.vocab_size * d + cfg.layers * per_layer + d + d
    assert params * 4 <= 10 * 2**20


def test_initial_model_loads_through_the_scoring_path(tmp_path: Path) -> None:
    paths = write_splits(tmp_path / "data", SMALL)
    cfg = DemoModelConfig(vocab_size=500, hidden_size=32, layers=1, heads=2, kv_heads=1, intermediate_size=64)
    init = write_initial_model(tmp_path / "init", paths, cfg, seed=0)
    dest = install(init, tmp_path / "installed")
    assert sorted(p.name for p in dest.iterdir()) == sorted(MODEL_FILES)
    rm = RewardModel.load(dest, device="cpu")
    assert rm.spec.max_length == 2048 and rm.model.config.num_labels == 1
    rewards = rm.score([[{"role": "user", "content": "What is 1+1?"}, {"role": "assistant", "content": "2"}]])
    assert len(rewards) == 1 and abs(rewards[0]) < 5
