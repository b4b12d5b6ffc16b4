"""Loading a reward model: head outputs, chat templates, missing paths, weights format, options."""

from __future__ import annotations

import shutil
import socket
import time
from pathlib import Path

import pytest
import torch
from huggingface_hub import constants as hub_constants
from transformers import AutoConfig, AutoModelForSequenceClassification

from rewardkit.api import RewardModel
from rewardkit.cli import main
from rewardkit.data.conversation import Conversation
from rewardkit.errors import ConfigError, InputError, ModelError
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


def test_head_dtype_errors_name_the_head_dtype_flag(
    tiny_model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(ConfigError, match=r"^--head-dtype must be auto or one of .*got 'bogus'"):
        RewardModel.load(tiny_model_dir, device="cpu", head_dtype="bogus")
    args = [
        "score",
        "--model",
        str(tiny_model_dir),
        "--head-dtype",
        "bogus",
        "--prompt",
        "q",
        "--response",
        "r",
    ]
    assert main(args) == 2
    assert "error: --head-dtype must be" in capsys.readouterr().err


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


BROKEN_TEMPLATE = "{% for m in messages %}\n{{ m['role'] }}: {{ m['content'] }}\n{% endfor %\n"


def test_chat_template_syntax_error_names_the_file_and_line(
    tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "broken.jinja"
    path.write_text(BROKEN_TEMPLATE, encoding="utf-8")
    with pytest.raises(ConfigError, match=rf"^--chat-template {path}: line 3: "):
        RewardModel.load(tiny_model_dir, device="cpu", chat_template=path)
    args = [
        "score",
        "--model",
        str(tiny_model_dir),
        "--chat-template",
        str(path),
        "--prompt",
        "q",
        "--response",
        "r",
    ]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert f"error: --chat-template {path}: line 3: " in err and "Traceback" not in err
    unknown_filter = tmp_path / "filter.jinja"
    unknown_filter.write_text("{% for m in messages %}\n{{ m['content'] | shout }}{% endfor %}", "utf-8")
    with pytest.raises(ConfigError, match="line 2: No filter named 'shout'"):
        RewardModel.load(tiny_model_dir, device="cpu", chat_template=unknown_filter)


def test_broken_checkpoint_template_is_a_model_error(tiny_model_dir: Path, tmp_path: Path) -> None:
    for f in tiny_model_dir.iterdir():
        shutil.copy(f, tmp_path / f.name)
    (tmp_path / "chat_template.jinja").write_text(BROKEN_TEMPLATE, encoding="utf-8")
    with pytest.raises(ModelError, match=f"^the chat template of '{tmp_path}': line 3: "):
        RewardModel.load(tmp_path, device="cpu")


def test_a_template_that_refuses_a_conversation_fails_that_conversation(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    path = tmp_path / "no-system.jinja"
    path.write_text(
        "{% for m in messages %}{% if m['role'] == 'system' %}{{ raise_exception('no system role') }}"
        "{% endif %}{{ m['content'] }}{% endfor %}",
        "utf-8",
    )
    rm = RewardModel.load(tiny_model_dir, device="cpu", chat_template=path)
    ok, refused = rm.encode([CONVS[0], CONVS[1]])
    assert not isinstance(ok, InputError)
    assert isinstance(
        refused, InputError
    ) and "the chat template cannot render this conversation: no system role" in str(refused)


def test_a_file_as_model_fails_at_once(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(b"not a directory")
    start = time.perf_counter()
    with pytest.raises(ModelError, match=f"--model {weights} is a file; pass the model's directory"):
        RewardModel.load(weights, device="cpu")
    assert main(["score", "--model", str(weights), "--prompt", "q", "--response", "r"]) == 2
    assert time.perf_counter() - start < 5  # no hub lookups (they retried for a minute)
    assert "is a file" in capsys.readouterr().err


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens once it is closed


@pytest.fixture
def offline_hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """An empty hub cache, and a hub endpoint that refuses connections (no network)."""
    for var in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(hub_constants, "ENDPOINT", f"http://127.0.0.1:{_closed_port()}")
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", False)
    cache = tmp_path / "hub-cache"
    cache.mkdir()
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(cache))
    return cache


def test_unreachable_hub_fails_fast_once(offline_hub: Path, capsys: pytest.CaptureFixture[str]) -> None:
    start = time.perf_counter()
    assert main(["score", "--model", "someorg/some-reward-model", "--prompt", "q", "--response", "r"]) == 2
    assert time.perf_counter() - start < 10  # the hub client's retries took 64 s
    err = capsys.readouterr().err
    assert err.count("error:") == 1 and "Retrying" not in err and "thrown while requesting" not in err
    assert "cannot reach the hub at http://127.0.0.1:" in err
    assert f"'someorg/some-reward-model' is not in the local hub cache ({offline_hub})" in err


def test_no_network_at_all_fails_fast(offline_hub: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def unreachable(*args: object, **kwargs: object) -> None:
        raise OSError(101, "Network is unreachable")

    monkeypatch.setattr(socket, "create_connection", unreachable)
    with pytest.raises(ModelError, match="Network is unreachable"):
        RewardModel.load("someorg/some-reward-model", device="cpu")


def test_offline_mode_fails_fast(offline_hub: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ModelError, match=r"^offline mode is on .* not in the local hub cache"):
        RewardModel.load("someorg/some-reward-model", device="cpu")


def test_cached_model_loads_when_the_hub_is_unreachable(
    offline_hub: Path, tiny_model_dir: Path, tiny_rm: RewardModel, caplog: pytest.LogCaptureFixture
) -> None:
    commit = "0" * 40
    snapshot = offline_hub / "models--someorg--tiny-rm" / "snapshots" / commit
    shutil.copytree(tiny_model_dir, snapshot)
    (offline_hub / "models--someorg--tiny-rm" / "refs").mkdir()
    (offline_hub / "models--someorg--tiny-rm" / "refs" / "main").write_text(commit)
    with caplog.at_level("WARNING", logger="rewardkit.models.loading"):
        rm = RewardModel.load("someorg/tiny-rm", device="cpu")
    assert "unreachable" in caplog.text and "loading someorg/tiny-rm from the local cache" in caplog.text
    assert rm.score(CONVS) == tiny_rm.score(CONVS)
