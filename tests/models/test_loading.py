"""Loading a reward model: head outputs, chat templates, missing paths, weights format, options."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from transformers import AutoConfig, AutoModelForSequenceClassification

from rewardkit.api import RewardModel
from rewardkit.cli import main
from rewardkit.data.conversation import Conversation
from rewardkit.distributed import resolve_device
from rewardkit.errors import ConfigError, ModelError
from rewardkit.models.loading import (
    ScoringSpec,
    default_max_length,
    resolve_dtype,
    template_hash,
)
from rewardkit.models.reference import reference_scores
from rewardkit.models.tiny import CHATML_TEMPLATE, byte_tokenizer

CONVS = [
    Conversation.from_prompt("What is 1+1?", "1+1=2"),
    Conversation.of(
        [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Capital of France?"},
            {"role": "assistant", "content": "Paris."},
        ]
    ),
]


@pytest.fixture(scope="module")
def two_output_dir(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Path:
    """The tiny Qwen2 architecture with a 2-output head."""
    out = tmp_path_factory.mktemp("two-out")
    config = AutoConfig.from_pretrained(tiny_model_dir, num_labels=2)
    torch.manual_seed(3)
    model = AutoModelForSequenceClassification.from_config(config)
    torch.nn.init.normal_(model.score.weight, std=1.0)
    model.save_pretrained(out)
    byte_tokenizer().save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def no_template_dir(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Path:
    out = tmp_path_factory.mktemp("no-template")
    for f in tiny_model_dir.iterdir():
        if f.name != "chat_template.jinja":
            shutil.copy(f, out / f.name)
    return out


def test_two_output_head_refused_without_output_index(two_output_dir: Path) -> None:
    with pytest.raises(ModelError, match=r"head with 2 outputs; a reward model has 1\. .*--output-index"):
        RewardModel.load(two_output_dir, device="cpu")
    with pytest.raises(ConfigError, match=r"--output-index must be in \[0, 2\), got 2"):
        RewardModel.load(two_output_dir, device="cpu", output_index=2)


def test_two_output_head_with_output_index(two_output_dir: Path) -> None:
    rm = RewardModel.load(two_output_dir, device="cpu", output_index=1)
    assert rm.spec.output_index == 1
    got = rm.score(CONVS)
    assert got == pytest.approx(reference_scores(rm.model, rm.tokenizer, CONVS, output_index=1), abs=1e-5)
    assert got != pytest.approx(reference_scores(rm.model, rm.tokenizer, CONVS, output_index=0), abs=1e-3)


def test_two_output_head_cli(two_output_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["score", "--model", str(two_output_dir), "--prompt", "What is 1+1?", "--response", "1+1=2"]
    assert main(args) == 2
    assert "--output-index" in capsys.readouterr().err
    assert main([*args, "--output-index", "0"]) == 0
    assert '"reward": ' in capsys.readouterr().out


def test_no_chat_template(no_template_dir: Path, tmp_path: Path, tiny_rm: RewardModel) -> None:
    with pytest.raises(ModelError, match="has no chat template; pass --chat-template FILE"):
        RewardModel.load(no_template_dir, device="cpu")
    template = tmp_path / "chatml.jinja"
    template.write_text(CHATML_TEMPLATE, encoding="utf-8")
    rm = RewardModel.load(no_template_dir, device="cpu", chat_template=template)
    assert rm.spec.chat_template_sha256 == template_hash(CHATML_TEMPLATE) == tiny_rm.spec.chat_template_sha256
    assert rm.score(CONVS) == tiny_rm.score(CONVS)  # same weights, same template
    with pytest.raises(ConfigError, match="--chat-template: file not found"):
        RewardModel.load(no_template_dir, device="cpu", chat_template=tmp_path / "missing.jinja")


def test_chat_template_override_changes_the_rendering(tiny_model_dir: Path, tmp_path: Path) -> None:
    template = tmp_path / "plain.jinja"
    template.write_text("{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}", "utf-8")
    rm = RewardModel.load(tiny_model_dir, device="cpu", chat_template=template)
    assert rm.chat.render(CONVS[0].messages) == "user: What is 1+1?\nassistant: 1+1=2\n"
    (enc,) = rm.encode(CONVS[:1])
    assert len(enc.ids) == len("user: What is 1+1?\nassistant: 1+1=2\n")  # one byte, one token


def test_missing_model_path(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "no-such-model"
    with pytest.raises(ModelError, match=f"model directory not found: {missing}"):
        RewardModel.load(missing, device="cpu")
    assert main(["score", "--model", str(missing), "--prompt", "q", "--response", "r"]) == 2
    assert "model directory not found" in capsys.readouterr().err


def test_safetensors_only(tmp_path: Path, tiny_rm: RewardModel) -> None:
    tiny_rm.model.config.save_pretrained(tmp_path)
    torch.save(tiny_rm.model.state_dict(), tmp_path / "pytorch_model.bin")
    tiny_rm.tokenizer.save_pretrained(tmp_path)
    with pytest.raises(ModelError, match=r"safetensors weights only"):
        RewardModel.load(tmp_path, device="cpu")


def test_dtype_options(tiny_model_dir: Path, tiny_rm: RewardModel) -> None:
    assert tiny_rm.spec.dtype == "float32" and tiny_rm.spec.head_dtype == "float32"  # auto on CPU
    rm = RewardModel.load(tiny_model_dir, device="cpu", dtype="bfloat16", head_dtype="float32")
    assert next(rm.model.parameters()).dtype == torch.bfloat16
    assert (rm.spec.dtype, rm.spec.head_dtype) == ("bfloat16", "float32")
    # bf16 keeps ~3 significant digits through two layers; the rewards must still be close.
    assert rm.score(CONVS) == pytest.approx(tiny_rm.score(CONVS), rel=0.05, abs=0.2)
    with pytest.raises(ConfigError, match="--dtype must be auto or one of bfloat16, float16, float32"):
        resolve_dtype("fp8", torch.device("cpu"))
    assert resolve_dtype("auto", torch.device("cuda")) == torch.bfloat16
    assert resolve_dtype(None, torch.device("cpu")) == torch.float32


def test_device_option() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(ConfigError, match="--device"):
        resolve_device("tpu-ish")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="--device cuda: CUDA is not available"):
            resolve_device("cuda")


def test_spec_validation_and_max_length(tiny_model_dir: Path, tiny_rm: RewardModel) -> None:
    assert tiny_rm.spec.max_length == 4096  # min(max_position_embeddings, model_max_length)
    spec = dict(model="m", chat_template_sha256="x", max_length=64, dtype="float32", head_dtype="float32")
    with pytest.raises(ConfigError, match="--truncation must be 'error' or 'left', got 'right'"):
        ScoringSpec(**spec, truncation="right")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="--max-length must be at least 8, got 4"):
        ScoringSpec(**{**spec, "max_length": 4})
    assert ScoringSpec(**spec).to_dict()["max_length"] == 64

    class Config:
        max_position_embeddings = 2048

    tok = byte_tokenizer()
    assert default_max_length(Config(), tok) == 2048
    tok.model_max_length = int(1e30)  # HF's "no limit" placeholder
    assert default_max_length(Config(), tok) == 2048
    Config.max_position_embeddings = None  # type: ignore[assignment]
    with pytest.raises(ModelError, match="pass --max-length"):
        default_max_length(Config(), tok)
    rm = RewardModel.load(tiny_model_dir, device="cpu", max_length=100, truncation="left")
    assert (rm.spec.max_length, rm.chat.max_length, rm.chat.truncation) == (100, 100, "left")


def test_max_length_above_the_model_limit_warns(tiny_model_dir, caplog):
    with caplog.at_level("WARNING", logger="rewardkit.api"):
        rm = RewardModel.load(tiny_model_dir, device="cpu", max_length=8192)
    assert rm.spec.max_length == 8192
    assert "above the model's limit of 4096 tokens" in caplog.text
