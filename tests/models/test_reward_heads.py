"""Reward heads: a causal LM's next-token logit (``lm-logit:TOKEN_ID``) == the card's one-token
``generate`` procedure, auto-detection from the checkpoint, errors, and the head in the spec."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch

from rewardkit.api import RewardModel
from rewardkit.cli import main
from rewardkit.data.conversation import Conversation
from rewardkit.errors import ConfigError, ModelError
from rewardkit.models.reference import generate_reference_scores, reference_scores
from rewardkit.models.tiny import byte_tokenizer, tiny_causal_lm

# fp32 on CPU: the packed stream and generate's per-conversation forward reduce in different
# orders (GEMM blocking over T); logits here have magnitude ~10 and differ by ~1e-6.
ATOL = 1e-5
WORDS = ["the", "reward", "model", "scores", "answers", ",", "ünïcödé", "数学", "🙂", "42", ".\n"]
OTHER_TOKEN = 200  # a byte token, not a special one


def conversations(n: int, seed: int, *, max_words: int = 30) -> list[Conversation]:
    """Ragged conversations: 1–2 rounds, every other one with a system turn."""
    rng = random.Random(seed)

    def text() -> str:
        return " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, max_words)))

    out = []
    for i in range(n):
        msgs = [{"role": "system", "content": text()}] if i % 2 else []
        for _ in range(rng.randint(1, 2)):
            msgs += [{"role": "user", "content": text()}, {"role": "assistant", "content": text()}]
        out.append(Conversation.of(msgs))
    return out


def save_causal_lm(path: Path, **config_extra: object) -> Path:
    """A 2-layer random ``LlamaForCausalLM`` + the tiny byte tokenizer, saved as safetensors."""
    tok = byte_tokenizer()
    model = tiny_causal_lm(
        "llama",
        vocab_size=len(tok),
        pad_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id,
        seed=11,
        **config_extra,
    )
    torch.nn.init.normal_(model.lm_head.weight, std=1.0)  # logits over a visible range
    model.save_pretrained(path, safe_serialization=True)
    tok.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def causal_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_causal_lm(tmp_path_factory.mktemp("tiny-causal"))


@pytest.fixture(scope="module")
def convs() -> list[Conversation]:
    return conversations(10, seed=5)


@pytest.fixture(scope="module")
def expected(causal_dir: Path, convs: list[Conversation]) -> dict[int, list[float]]:
    """The card's generate procedure, per token id, on the plain HF model."""
    rm = RewardModel.load(causal_dir, device="cpu", reward_head="lm-logit:0")
    return {t: generate_reference_scores(rm.model, rm.tokenizer, convs, token_id=t) for t in (0, OTHER_TOKEN)}


@pytest.mark.parametrize("token", [0, OTHER_TOKEN])
def test_lm_logit_matches_generate(
    token: int, causal_dir: Path, convs: list[Conversation], expected: dict[int, list[float]]
) -> None:
    want = torch.tensor(expected[token])
    assert want.abs().max() > 1.0  # the head is not ~0 everywhere
    rm = RewardModel.load(causal_dir, device="cpu", reward_head=f"lm-logit:{token}")
    single = torch.tensor([rm.score([c])[0] for c in convs])
    torch.testing.assert_close(single, want, atol=ATOL, rtol=0)
    packed = torch.tensor(rm.score(convs))  # one packed batch (the CPU budget is 8192 tokens)
    torch.testing.assert_close(packed, want, atol=ATOL, rtol=0)
    grouped = rm.score_groups([convs[:3], convs[3:4], convs[4:]])  # shared-prefix packing
    torch.testing.assert_close(torch.tensor([r for g in grouped for r in g]), want, atol=ATOL, rtol=0)


def test_lm_logit_chunked_long_path(
    causal_dir: Path, convs: list[Conversation], expected: dict[int, list[float]]
) -> None:
    budget = 350  # the conversations are 142–461 byte tokens
    rm = RewardModel.load(causal_dir, device="cpu", reward_head="lm-logit:0", token_budget=budget)
    lens = [len(e.ids) for e in rm.encode(convs)]  # type: ignore[union-attr]
    assert min(lens) <= budget < max(lens)  # both packed batches and the chunked path run
    got = torch.tensor(rm.score(convs))
    torch.testing.assert_close(got, torch.tensor(expected[0]), atol=ATOL, rtol=0)


def test_lm_logit_reads_the_last_token_even_if_it_is_padding(causal_dir: Path) -> None:
    """Unlike a sequence classifier (last non-pad token), a causal LM's next token follows the
    conversation's last token, whatever it is."""
    rm = RewardModel.load(causal_dir, device="cpu", reward_head="lm-logit:0")
    (enc,) = rm.chat.encode_texts(["<|im_start|>user\nhi<|im_end|>\n<|endoftext|>"])
    assert enc.ids[-1] == rm.tokenizer.pad_token_id  # type: ignore[union-attr]
    with torch.inference_mode():
        want = rm.model(torch.tensor([enc.ids])).logits[0, -1, 0].item()  # type: ignore[union-attr]
    assert rm.score_encoded([enc])[0].reward == pytest.approx(want, abs=ATOL)  # type: ignore[list-item]


def test_lm_logit_never_runs_the_vocabulary_projection(
    causal_dir: Path, convs: list[Conversation], expected: dict[int, list[float]]
) -> None:
    rm = RewardModel.load(causal_dir, device="cpu", reward_head="lm-logit:0", token_budget=64)

    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("the full (T, V) projection ran")

    rm.model.lm_head.forward = forbidden  # type: ignore[method-assign]
    torch.testing.assert_close(torch.tensor(rm.score(convs)), torch.tensor(expected[0]), atol=ATOL, rtol=0)


@pytest.mark.parametrize(
    "declared", [{"reward_token_id": OTHER_TOKEN}, {"reward_head": f"lm-logit:{OTHER_TOKEN}"}]
)
def test_head_declared_in_config_is_detected(
    declared: dict[str, object],
    tmp_path: Path,
    convs: list[Conversation],
    expected: dict[int, list[float]],
) -> None:
    path = save_causal_lm(tmp_path / "declared", **declared)
    rm = RewardModel.load(path, device="cpu")
    assert rm.spec.head == f"lm-logit:{OTHER_TOKEN}"
    torch.testing.assert_close(
        torch.tensor(rm.score(convs)), torch.tensor(expected[OTHER_TOKEN]), atol=ATOL, rtol=0
    )
    # The flag overrides what the config declares.
    assert RewardModel.load(path, device="cpu", reward_head="lm-logit:0").spec.head == "lm-logit:0"


def test_causal_lm_without_a_declared_head_is_refused(
    causal_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(ModelError, match=r"causal LM \(LlamaForCausalLM\).*--reward-head lm-logit:TOKEN_ID"):
        RewardModel.load(causal_dir, device="cpu")
    args = ["score", "--model", str(causal_dir), "--prompt", "q", "--response", "r"]
    assert main(args) == 2
    assert "--reward-head lm-logit:TOKEN_ID" in capsys.readouterr().err
    assert main([*args, "--reward-head", "lm-logit:0"]) == 0
    assert '"reward": ' in capsys.readouterr().out


def test_sequence_classification_is_detected(tiny_model_dir: Path, tiny_rm: RewardModel) -> None:
    assert tiny_rm.spec.head == "sequence-classification"
    assert tiny_rm.spec.to_dict()["head"] == "sequence-classification"
    conv = conversations(1, seed=1)
    want = reference_scores(tiny_rm.model, tiny_rm.tokenizer, conv)
    explicit = RewardModel.load(tiny_model_dir, device="cpu", reward_head="sequence-classification")
    assert explicit.score(conv) == pytest.approx(want, abs=ATOL)


@pytest.mark.parametrize(
    ("model", "kwargs", "error", "message"),
    [
        (
            "seq",
            {"reward_head": "lm-logit:0"},
            ModelError,
            "no LM head.*--reward-head sequence-classification",
        ),
        ("causal", {"reward_head": "sequence-classification"}, ModelError, "no sequence-classification head"),
        ("causal", {"reward_head": "lm-logit:x"}, ConfigError, "--reward-head must be .*got 'lm-logit:x'"),
        ("causal", {"reward_head": "lm_logit:0"}, ConfigError, "--reward-head must be"),
        ("causal", {"reward_head": "lm-logit:259"}, ConfigError, "token id 259 is outside the vocabulary"),
        ("causal", {"reward_head": "lm-logit:0", "output_index": 1}, ConfigError, "--output-index applies"),
    ],
)
def test_bad_heads(
    model: str,
    kwargs: dict[str, object],
    error: type[Exception],
    message: str,
    causal_dir: Path,
    tiny_model_dir: Path,
) -> None:
    path = causal_dir if model == "causal" else tiny_model_dir
    with pytest.raises(error, match=message):
        RewardModel.load(path, device="cpu", **kwargs)  # type: ignore[arg-type]


def test_bad_declared_head(tmp_path: Path) -> None:
    path = save_causal_lm(tmp_path / "bad", reward_head="logit-0")
    with pytest.raises(ModelError, match=r"config\.json 'reward_head'"):
        RewardModel.load(path, device="cpu")


def test_head_recorded_in_score_file_metadata(causal_dir: Path, tmp_path: Path) -> None:
    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps({"prompt": "What is 1+1?", "response": "2"}) + "\n", encoding="utf-8")
    out = tmp_path / "out.jsonl"
    args = ["score", str(src), "-o", str(out), "--model", str(causal_dir), "--reward-head", "lm-logit:0"]
    assert main([*args, "--no-progress"]) == 0
    meta = json.loads((tmp_path / "out.jsonl.meta.json").read_text(encoding="utf-8"))
    assert meta["spec"]["head"] == "lm-logit:0"
    rm = RewardModel.load(causal_dir, device="cpu", reward_head="lm-logit:0")
    conv = Conversation.from_prompt("What is 1+1?", "2")
    (want,) = generate_reference_scores(rm.model, rm.tokenizer, [conv], token_id=0)
    (row,) = [json.loads(x) for x in out.read_text(encoding="utf-8").splitlines()]
    assert row["reward"] == pytest.approx(want, abs=ATOL)
