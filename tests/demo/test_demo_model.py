"""The shipped demo reward model: loads offline from the package and judges as documented."""

from __future__ import annotations

import json

import pytest

from rewardkit.api import RewardModel
from rewardkit.data.conversation import Conversation
from rewardkit.demo import DEMO_MODEL_DIR, DEMO_NOTICE, REAL_MODEL
from rewardkit.demo.build import MODEL_FILES
from rewardkit.demo.evaluate import accuracy_by_skill, one_plus_one
from rewardkit.demo.generate import DemoDataConfig, generate

# (correct, total) per skill on the whole generated validation split (seed 0), measured when the
# shipped model was built and recorded in docs/demo-model.md. Recomputed here through the scoring
# path; MARGIN allows for float differences between CPUs flipping a near-tie or two.
DOCUMENTED = {
    "arithmetic": (193, 300),
    "instructions": (222, 300),
    "safety": (296, 296),
    "helpfulness": (220, 260),
}
MARGIN = 0.01


@pytest.fixture(scope="module")
def demo_rm(monkeypatch_module) -> RewardModel:
    return RewardModel.load(DEMO_MODEL_DIR, device="cpu")


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as mp:
        # Offline: any attempt to reach the hub fails instead of downloading.
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.setenv("TRANSFORMERS_OFFLINE", "1")
        yield mp


def test_shipped_files_are_small_safetensors() -> None:
    names = sorted(p.name for p in DEMO_MODEL_DIR.iterdir())
    assert names == sorted(MODEL_FILES)
    assert sum(p.stat().st_size for p in DEMO_MODEL_DIR.iterdir()) <= 10 * 2**20
    config = json.loads((DEMO_MODEL_DIR / "config.json").read_text())
    assert config["architectures"] == ["Qwen2ForSequenceClassification"] and len(config["id2label"]) == 1


def test_loads_offline_with_chatml(demo_rm: RewardModel) -> None:
    assert demo_rm.spec.dtype == "float32" and demo_rm.device.type == "cpu"
    text = demo_rm.chat.render(Conversation.from_prompt("Hi", "Hello!").messages)
    assert text == "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello!<|im_end|>\n"


def test_one_plus_one(demo_rm: RewardModel) -> None:
    right, wrong = one_plus_one(demo_rm)
    assert right > wrong


def test_ranks_held_out_pairs_as_documented(demo_rm: RewardModel) -> None:
    validation = generate(DemoDataConfig(seed=0))["validation"]
    acc = accuracy_by_skill(demo_rm, validation)
    for skill, (correct, total) in DOCUMENTED.items():
        assert acc[skill].total == total
        assert acc[skill].accuracy >= correct / total - MARGIN, (skill, acc[skill])


def test_notice_names_the_real_model() -> None:
    assert REAL_MODEL in DEMO_NOTICE and "\n" not in DEMO_NOTICE
