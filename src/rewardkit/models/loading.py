"""Load a reward model (HF id or local directory) with its tokenizer and scoring spec."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer, PreTrainedTokenizerBase

from rewardkit.errors import ConfigError, ModelError

log = logging.getLogger(__name__)

Truncation = Literal["error", "left"]
DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}
# Limits beyond this are tokenizer placeholders ("no limit"), not real context sizes.
_NO_LIMIT = 10**8


@dataclass(frozen=True, kw_only=True)
class ScoringSpec:
    """Everything that determines a reward, stored with every score file and server response.

    Args:
        model: HF id or local path the weights came from.
        revision: hub revision, if any.
        chat_template_sha256: first 16 hex digits of the chat template's sha256.
        max_length: longest tokenized conversation accepted (after truncation).
        truncation: ``error`` (reject over-long records) or ``left`` (drop oldest context).
        dtype: weights and activations dtype.
        head_dtype: dtype the 1-output head runs in (the model's own by default, as the card).
        output_index: which head output is the reward (0 for a 1-output head).
    """

    model: str
    revision: str | None = None
    chat_template_sha256: str
    max_length: int
    truncation: Truncation = "error"
    dtype: str
    head_dtype: str
    output_index: int = 0

    def __post_init__(self) -> None:
        if self.truncation not in ("error", "left"):
            raise ConfigError(f"--truncation must be 'error' or 'left', got {self.truncation!r}")
        if self.max_length < 8:
            raise ConfigError(f"--max-length must be at least 8, got {self.max_length}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def template_hash(template: str) -> str:
    return hashlib.sha256(template.encode("utf-8")).hexdigest()[:16]


def resolve_device(device: str | None) -> torch.device:
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as e:
        raise ConfigError(f"--device: {e}") from e
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device {device}: CUDA is not available on this machine")
    return dev


def resolve_dtype(dtype: str | None, device: torch.device) -> torch.dtype:
    """``auto`` is bf16 on GPU (as the card runs) and fp32 on CPU."""
    if dtype in (None, "auto"):
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if dtype not in DTYPES:
        raise ConfigError(f"--dtype must be auto or one of {', '.join(DTYPES)}, got {dtype!r}")
    return DTYPES[dtype]


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def load_tokenizer(
    name: str,
    *,
    revision: str | None = None,
    chat_template: str | Path | None = None,
    trust_remote_code: bool = False,
) -> tuple[PreTrainedTokenizerBase, str]:
    """The checkpoint's own tokenizer and chat template (or the template file given)."""
    if (Path(name).is_absolute() or name.startswith((".", "~"))) and not Path(name).exists():
        # A path, not a hub id: say so rather than report an invalid repository name.
        raise ModelError(f"model directory not found: {name}")
    try:
        tok = AutoTokenizer.from_pretrained(name, revision=revision, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as e:
        raise ModelError(f"cannot load the tokenizer of {name!r}: {e}") from e
    if chat_template is not None:
        path = Path(chat_template)
        if not path.is_file():
            raise ConfigError(f"--chat-template: file not found: {path}")
        template = path.read_text(encoding="utf-8")
    else:
        template = tok.chat_template
    if not isinstance(template, str) or not template.strip():
        raise ModelError(
            f"{name!r} has no chat template; pass --chat-template FILE (a Jinja template such as "
            "the model's tokenizer_config.json 'chat_template')"
        )
    tok.chat_template = template
    return tok, template


def default_max_length(model_config: Any, tokenizer: PreTrainedTokenizerBase) -> int:
    """The smaller of the model's position limit and the tokenizer's stated maximum."""
    limits = [getattr(model_config, "max_position_embeddings", None), tokenizer.model_max_length]
    real = [int(x) for x in limits if isinstance(x, int | float) and 0 < x < _NO_LIMIT]
    if not real:
        raise ModelError("the model states no maximum length; pass --max-length")
    return min(real)


def load_model(
    name: str,
    *,
    revision: str | None = None,
    device: torch.device,
    dtype: torch.dtype,
    trust_remote_code: bool = False,
    output_index: int | None = None,
) -> tuple[torch.nn.Module, int]:
    """Loads ``AutoModelForSequenceClassification`` from safetensors; returns (model, output index).

    Raises:
        ModelError: no safetensors weights, or a head with several outputs and no ``output_index``.
    """
    try:
        model = AutoModelForSequenceClassification.from_pretrained(
            name,
            revision=revision,
            dtype=dtype,
            use_safetensors=True,
            trust_remote_code=trust_remote_code,
            attn_implementation="sdpa",
        )
    except (OSError, ValueError) as e:
        raise ModelError(
            f"cannot load {name!r} as a sequence-classification reward model (safetensors weights only): {e}"
        ) from e
    n_out = int(model.config.num_labels)
    if output_index is None:
        if n_out != 1:
            raise ModelError(
                f"{name!r} has a head with {n_out} outputs; a reward model has 1. "
                "Pass --output-index I to use output I as the reward"
            )
        output_index = 0
    if not 0 <= output_index < n_out:
        raise ConfigError(f"--output-index must be in [0, {n_out}), got {output_index}")
    model.to(device).eval()
    model.requires_grad_(False)
    log.info("loaded %s (%s, %s, %d head outputs)", name, device, dtype_name(dtype), n_out)
    return model, output_index
