"""The Python examples of docs/integrations/openrlhf.md and verl.md, run as written against a live
server. verl is not installed here: the one class the example imports from it is stood in for
(``RewardManagerBase``: keeps ``config`` and ``tokenizer``), and ``data`` is shaped as verl's
reward loop passes it (one item; ``responses``, ``attention_mask``, ``raw_prompt``)."""

from __future__ import annotations

import asyncio
import re
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

DOCS = Path(__file__).resolve().parents[2] / "docs" / "integrations"
CHAT = [{"role": "user", "content": "What is 1+1?"}]
RESPONSE = "1+1=2"


def python_block(page: str) -> str:
    (code,) = re.findall(r"```python\n(.*?)```", (DOCS / page).read_text(), flags=re.S)
    return code


@pytest.fixture
def keyed_server(serve, tiny_rm, monkeypatch: pytest.MonkeyPatch):
    with serve(tiny_rm, api_key="k") as srv:
        monkeypatch.setenv("REWARDKIT_URL", srv.url)
        monkeypatch.setenv("REWARDKIT_API_KEY", "k")
        yield srv


@pytest.fixture
def card(tiny_rm) -> float:
    return tiny_rm.score([[*CHAT, {"role": "assistant", "content": RESPONSE}]])[0]


def test_openrlhf_reward_func(keyed_server, tiny_rm, card):
    namespace: dict = {}
    exec(python_block("openrlhf.md"), namespace)
    tok = tiny_rm.tokenizer
    query = (
        tok.apply_chat_template(CHAT, tokenize=False, add_generation_prompt=True) + RESPONSE + "<|im_end|>"
    )
    out = namespace["reward_func"]([query], ["prompt"], [""])
    assert out["rewards"] == pytest.approx([card], abs=1e-5) and out["scores"] == out["rewards"]


class _Item:
    def __init__(self, batch: dict, non_tensor_batch: dict) -> None:
        self.batch, self.non_tensor_batch = batch, non_tensor_batch


def test_verl_reward_manager(keyed_server, tiny_rm, card, monkeypatch: pytest.MonkeyPatch):
    class RewardManagerBase:
        def __init__(self, config, tokenizer):
            self.config, self.tokenizer = config, tokenizer

    base = types.ModuleType("verl.experimental.reward_loop.reward_manager.base")
    base.RewardManagerBase = RewardManagerBase  # type: ignore[attr-defined]
    for name in (
        "verl",
        "verl.experimental",
        "verl.experimental.reward_loop",
        "verl.experimental.reward_loop.reward_manager",
    ):
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    monkeypatch.setitem(sys.modules, base.__name__, base)
    namespace: dict = {}
    exec(python_block("verl.md"), namespace)

    tok = tiny_rm.tokenizer
    prompt_ids = tok.apply_chat_template(CHAT, tokenize=True, add_generation_prompt=True)
    if not isinstance(prompt_ids, list):  # transformers 5 returns a BatchEncoding
        prompt_ids = prompt_ids["input_ids"]
    valid = tok(RESPONSE + tok.eos_token, add_special_tokens=False)["input_ids"]
    pad = 4  # responses are right-padded to the batch's response length
    responses = torch.tensor(valid + [tok.pad_token_id] * pad)
    mask = torch.tensor([1] * (len(prompt_ids) + len(valid)) + [0] * pad)
    item = _Item(
        {"responses": responses, "attention_mask": mask}, {"raw_prompt": np.array(CHAT, dtype=object)}
    )

    manager = namespace["RewardkitRewardManager"](config={}, tokenizer=tok)
    out = asyncio.run(manager.run_single([item]))
    assert out["reward_score"] == pytest.approx(card, abs=1e-5)
