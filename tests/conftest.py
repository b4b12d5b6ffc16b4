"""Shared fixtures: tiny random reward models made in-process (never downloaded)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from rewardkit.api import RewardModel
from rewardkit.models.tiny import save_tiny_reward_model

# Tiny models gain nothing from intra-op threads; on a busy 2-core machine OpenMP spin-waiting
# makes them about 10x slower.
torch.set_num_threads(1)

SHARED = Path(__file__).resolve().parents[2] / "shared"
QWEN_TOKENIZER = SHARED / "tokenizers" / "qwen2.5"


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny Qwen2ForSequenceClassification + byte tokenizer + ChatML template on disk."""
    return save_tiny_reward_model(tmp_path_factory.mktemp("tiny-qwen2"), arch="qwen2")


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_reward_model(tmp_path_factory.mktemp("tiny-llama"), arch="llama", seed=1)


@pytest.fixture(scope="session")
def tiny_rm(tiny_model_dir: Path) -> RewardModel:
    """The tiny model loaded on CPU in fp32 (shared: do not mutate)."""
    return RewardModel.load(tiny_model_dir, device="cpu")


@pytest.fixture(scope="session")
def qwen_tokenizer_dir() -> Path:
    """The real Qwen2.5 tokenizer from ../shared (tests using it skip when it is absent)."""
    if not (QWEN_TOKENIZER / "tokenizer.json").is_file():
        pytest.skip("../shared/tokenizers/qwen2.5 not available")
    return QWEN_TOKENIZER
