"""Load a reward model (HF id or local directory) with its tokenizer and scoring spec."""

from __future__ import annotations

import hashlib
import logging
import re
import socket
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import jinja2
import torch
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PretrainedConfig,
    PreTrainedTokenizerBase,
)

from rewardkit.errors import ConfigError, ModelError, RewardkitError

log = logging.getLogger(__name__)

Truncation = Literal["error", "left"]
DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}
# Limits beyond this are tokenizer placeholders ("no limit"), not real context sizes.
_NO_LIMIT = 10**8
SEQUENCE_CLASSIFICATION = "sequence-classification"
_LM_LOGIT = re.compile(r"lm-logit:(\d+)")
# How long to wait for the hub to accept a connection before treating it as unreachable.
HUB_PROBE_TIMEOUT_S = 5.0


def lm_logit_token(head: str) -> int | None:
    """The vocabulary token of an ``lm-logit:TOKEN_ID`` head; ``None`` for ``sequence-classification``.

    Raises:
        ConfigError: ``head`` is neither form.
    """
    if head == SEQUENCE_CLASSIFICATION:
        return None
    m = _LM_LOGIT.fullmatch(head)
    if m is None:
        raise ConfigError(
            f"--reward-head must be '{SEQUENCE_CLASSIFICATION}' or 'lm-logit:TOKEN_ID' "
            f"(e.g. lm-logit:0), got {head!r}"
        )
    return int(m.group(1))


@dataclass(frozen=True, kw_only=True)
class ScoringSpec:
    """Everything that determines a reward, stored with every score file and server response.

    Args:
        model: HF id or local path the weights came from.
        revision: hub revision, if any.
        weights: fingerprint of the safetensors weights (`rewardkit.models.fingerprint`), which
            tells checkpoints apart whatever their path.
        chat_template_sha256: first 16 hex digits of the chat template's sha256.
        max_length: longest tokenized conversation accepted (after truncation).
        truncation: ``error`` (reject over-long records) or ``left`` (drop oldest context).
        dtype: weights and activations dtype.
        head_dtype: dtype the 1-output head runs in (the model's own by default, as the card).
        output_index: which head output is the reward (0 for a 1-output head).
        head: ``sequence-classification`` (row ``output_index`` of the ``score`` head) or
            ``lm-logit:TOKEN_ID`` (a causal LM's next-token logit of TOKEN_ID after the conversation).
        fp8: decoder linear layers run as FP8 GEMMs (``--fp8``; rewards differ from bf16).
    """

    model: str
    revision: str | None = None
    weights: str | None = None
    chat_template_sha256: str
    max_length: int
    truncation: Truncation = "error"
    dtype: str
    head_dtype: str
    output_index: int = 0
    head: str = SEQUENCE_CLASSIFICATION
    fp8: bool = False

    def __post_init__(self) -> None:
        lm_logit_token(self.head)
        if self.truncation not in ("error", "left"):
            raise ConfigError(f"--truncation must be 'error' or 'left', got {self.truncation!r}")
        if self.max_length < 8:
            raise ConfigError(f"--max-length must be at least 8, got {self.max_length}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def template_hash(template: str) -> str:
    return hashlib.sha256(template.encode("utf-8")).hexdigest()[:16]


def resolve_dtype(dtype: str | None, device: torch.device, *, option: str = "--dtype") -> torch.dtype:
    """``auto`` is bf16 on GPU (as the card runs) and fp32 on CPU; ``option`` names the flag in errors."""
    if dtype in (None, "auto"):
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if dtype not in DTYPES:
        raise ConfigError(f"{option} must be auto or one of {', '.join(DTYPES)}, got {dtype!r}")
    return DTYPES[dtype]


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def hub_unreachable(endpoint: str, *, timeout: float = HUB_PROBE_TIMEOUT_S) -> str | None:
    """Why the hub at ``endpoint`` cannot be reached (one TCP connection, through the proxy the
    environment names for it), or None when it can."""
    url = urlsplit(endpoint)
    host, port = url.hostname or "", url.port or (443 if url.scheme == "https" else 80)
    proxy = urllib.request.getproxies().get(url.scheme)
    if proxy and not urllib.request.proxy_bypass(host):
        proxy_url = urlsplit(proxy if "://" in proxy else f"http://{proxy}")
        host, port = proxy_url.hostname or "", proxy_url.port or 80
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as e:
        return f"{host}:{port}: {e}"
    return None


def hub_files_only(name: str, revision: str | None = None) -> bool:
    """Whether hub model ``name`` must load from the local cache only: decided once, before any
    download, so that an offline machine fails at once instead of retrying every file for a minute.

    Offline mode (``HF_HUB_OFFLINE``/``TRANSFORMERS_OFFLINE``) or an unreachable hub means the
    cache; a model that is not cached then fails here.

    Raises:
        ModelError: ``name`` is not a valid hub id, or it is not cached and the hub cannot be used.
    """
    from huggingface_hub import constants, try_to_load_from_cache
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(name)
    except HFValidationError as e:
        raise ModelError(f"--model {name!r} is neither a local directory nor a hub id: {e}") from e
    cached = isinstance(try_to_load_from_cache(name, "config.json", revision=revision), str)
    where = (
        f"not in the local hub cache ({constants.HF_HUB_CACHE}); download it where there is "
        f"network (`hf download {name}`) or pass --model DIR"
    )
    if constants.HF_HUB_OFFLINE:
        if cached:
            return True
        raise ModelError(
            f"offline mode is on (HF_HUB_OFFLINE or TRANSFORMERS_OFFLINE) and {name!r} is {where}"
        )
    reason = hub_unreachable(constants.ENDPOINT)
    if reason is None:
        return False
    if cached:
        log.warning(
            "the hub at %s is unreachable (%s): loading %s from the local cache",
            constants.ENDPOINT,
            reason,
            name,
        )
        return True
    raise ModelError(f"cannot reach the hub at {constants.ENDPOINT} ({reason}), and {name!r} is {where}")


def local_files_only(name: str, revision: str | None = None) -> bool:
    """How ``from_pretrained`` must load ``name``: a local directory (no network: False), or a
    hub id (`hub_files_only`).

    Raises:
        ModelError: ``name`` is an existing file or a missing path, or a hub id that cannot load.
    """
    path = Path(name)
    if path.is_dir():
        return False
    if path.exists():
        raise ModelError(
            f"--model {name} is a file; pass the model's directory (with config.json, the "
            "safetensors weights and the tokenizer) or a hub id"
        )
    if path.is_absolute() or name.startswith((".", "~")):
        # A path, not a hub id: say so rather than report an invalid repository name.
        raise ModelError(f"model directory not found: {name}")
    return hub_files_only(name, revision)


def _check_template(tok: PreTrainedTokenizerBase, source: str, error: type[RewardkitError]) -> None:
    """Renders a two-turn conversation so that a broken template fails at load, naming its line."""
    try:
        tok.apply_chat_template(
            [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}], tokenize=False
        )
    except jinja2.TemplateSyntaxError as e:
        raise error(f"{source}: line {e.lineno}: {e.message}") from None
    except jinja2.TemplateError as e:
        raise error(f"{source} cannot render a user/assistant conversation: {e}") from None


def load_tokenizer(
    name: str,
    *,
    revision: str | None = None,
    chat_template: str | Path | None = None,
    trust_remote_code: bool = False,
) -> tuple[PreTrainedTokenizerBase, str]:
    """The checkpoint's own tokenizer and chat template (or the template file given).

    Raises:
        ModelError: the model cannot be found (see `local_files_only`), has no chat template,
            or its template does not render.
        ConfigError: the ``chat_template`` file is missing or does not render (naming its line).
    """
    files_only = local_files_only(name, revision)
    try:
        tok = AutoTokenizer.from_pretrained(
            name, revision=revision, trust_remote_code=trust_remote_code, local_files_only=files_only
        )
    except (OSError, ValueError) as e:
        raise ModelError(f"cannot load the tokenizer of {name!r}: {e}") from e
    if chat_template is not None:
        path = Path(chat_template)
        if not path.is_file():
            raise ConfigError(f"--chat-template: file not found: {path}")
        template = path.read_text(encoding="utf-8")
        source, error = f"--chat-template {path}", ConfigError
    else:
        template = tok.chat_template
        source, error = f"the chat template of {name!r}", ModelError
    if not isinstance(template, str) or not template.strip():
        raise ModelError(
            f"{name!r} has no chat template; pass --chat-template FILE (a Jinja template such as "
            "the model's tokenizer_config.json 'chat_template')"
        )
    tok.chat_template = template
    _check_template(tok, source, error)
    return tok, template


def model_length_limit(model_config: Any, tokenizer: PreTrainedTokenizerBase) -> int | None:
    """The smaller of the model's position limit and the tokenizer's stated maximum (None if
    neither states one)."""
    limits = [getattr(model_config, "max_position_embeddings", None), tokenizer.model_max_length]
    real = [int(x) for x in limits if isinstance(x, int | float) and 0 < x < _NO_LIMIT]
    return min(real) if real else None


def default_max_length(model_config: Any, tokenizer: PreTrainedTokenizerBase) -> int:
    """`model_length_limit`, required."""
    limit = model_length_limit(model_config, tokenizer)
    if limit is None:
        raise ModelError("the model states no maximum length; pass --max-length")
    return limit


def declared_reward_head(config: PretrainedConfig) -> str | None:
    """The head a checkpoint's ``config.json`` declares: ``reward_head`` (a head spec such as
    ``"lm-logit:0"``) or ``reward_token_id`` (an int, same as ``lm-logit:<id>``); ``None`` if neither."""
    head = getattr(config, "reward_head", None)
    token = getattr(config, "reward_token_id", None)
    if token is not None:
        if not isinstance(token, int) or isinstance(token, bool) or token < 0:
            raise ModelError(
                f"config.json 'reward_token_id' must be a vocabulary id (int >= 0), got {token!r}"
            )
        if head is not None and head != f"lm-logit:{token}":
            raise ModelError(
                f"config.json declares 'reward_head' {head!r} and 'reward_token_id' {token}, which disagree"
            )
        return f"lm-logit:{token}"
    if head is not None and not isinstance(head, str):
        raise ModelError(f"config.json 'reward_head' must be a string such as 'lm-logit:0', got {head!r}")
    return head


def resolve_reward_head(name: str, config: PretrainedConfig, reward_head: str | None) -> str:
    """The head to score with: ``reward_head`` if given, else the one the config declares, else
    ``sequence-classification`` — checked against the checkpoint's architecture.

    Raises:
        ConfigError: ``reward_head`` is malformed.
        ModelError: a causal LM with no head given or declared, or a head the architecture lacks.
    """
    archs = [str(a) for a in getattr(config, "architectures", None) or []]
    arch = ", ".join(archs) or "unknown architecture"
    causal = any(a.endswith("ForCausalLM") for a in archs)
    seq_cls = any(a.endswith("ForSequenceClassification") for a in archs)
    if reward_head is not None:
        head, source = reward_head, f"--reward-head {reward_head}"
        lm_logit_token(head)
    else:
        declared = declared_reward_head(config)
        if declared is None and causal and not seq_cls:
            raise ModelError(
                f"{name!r} is a causal LM ({arch}) whose config declares no reward head; pass "
                "--reward-head lm-logit:TOKEN_ID (the vocabulary token whose next-position logit is the "
                "reward, e.g. lm-logit:0 for the Llama-3.x-Nemotron-70B-Reward checkpoints) or add "
                '"reward_token_id": TOKEN_ID to its config.json'
            )
        head, source = declared or SEQUENCE_CLASSIFICATION, "its config.json"
        try:
            lm_logit_token(head)
        except ConfigError as e:
            raise ModelError(f"{name!r}: config.json 'reward_head': {e}") from e
    token = lm_logit_token(head)
    if token is None and causal and not seq_cls:
        raise ModelError(
            f"{name!r} is a causal LM ({arch}) with no sequence-classification head ({source}); "
            "pass --reward-head lm-logit:TOKEN_ID"
        )
    if token is not None and seq_cls and not causal:
        raise ModelError(
            f"{name!r} is {arch}, which has no LM head for the {head} head ({source}); "
            f"use --reward-head {SEQUENCE_CLASSIFICATION}"
        )
    vocab = getattr(config, "vocab_size", None)
    if token is not None and isinstance(vocab, int) and not token < vocab:
        error = ConfigError if reward_head is not None else ModelError
        raise error(f"{source}: token id {token} is outside the vocabulary of {name!r} ({vocab} tokens)")
    return head


def load_hf_config(
    name: str,
    *,
    revision: str | None = None,
    trust_remote_code: bool = False,
    files_only: bool | None = None,
) -> Any:
    """The checkpoint's ``config.json``; ``files_only`` as `local_files_only` decides by default."""
    if files_only is None:
        files_only = local_files_only(name, revision)
    try:
        return AutoConfig.from_pretrained(
            name, revision=revision, trust_remote_code=trust_remote_code, local_files_only=files_only
        )
    except (OSError, ValueError) as e:
        raise ModelError(f"cannot load the config of {name!r}: {e}") from e


def resolve_output(
    name: str, config: Any, reward_head: str | None, output_index: int | None
) -> tuple[str, int]:
    """The reward head and which of its outputs is the reward, checked against the config.

    Raises:
        ModelError: a head the checkpoint lacks, or several outputs and no ``output_index``.
        ConfigError: an ``output_index`` the head does not have.
    """
    head = resolve_reward_head(name, config, reward_head)
    lm_logit = lm_logit_token(head) is not None
    if lm_logit and output_index not in (None, 0):
        raise ConfigError(
            f"--output-index applies to the {SEQUENCE_CLASSIFICATION} head; the {head} head's "
            "token is set in --reward-head"
        )
    n_out = 1 if lm_logit else int(config.num_labels)
    if output_index is None:
        if n_out != 1:
            raise ModelError(
                f"{name!r} has a head with {n_out} outputs; a reward model has 1. "
                "Pass --output-index I to use output I as the reward"
            )
        output_index = 0
    if not 0 <= output_index < n_out:
        raise ConfigError(f"--output-index must be in [0, {n_out}), got {output_index}")
    return head, output_index


def from_pretrained(
    name: str,
    config: Any,
    head: str,
    *,
    revision: str | None = None,
    dtype: torch.dtype,
    trust_remote_code: bool = False,
    **kwargs: Any,
) -> torch.nn.Module:
    """``AutoModelForSequenceClassification`` (or ``AutoModelForCausalLM`` for an ``lm-logit``
    head) from safetensors only; ``kwargs`` go to ``from_pretrained`` (e.g. a tensor-parallel
    ``distributed_config``)."""
    lm_logit = lm_logit_token(head) is not None
    auto = AutoModelForCausalLM if lm_logit else AutoModelForSequenceClassification
    kind = "causal-LM" if lm_logit else "sequence-classification"
    try:
        return auto.from_pretrained(
            name,
            config=config,
            revision=revision,
            dtype=dtype,
            use_safetensors=True,
            trust_remote_code=trust_remote_code,
            attn_implementation="sdpa",
            **kwargs,
        )
    except (OSError, ValueError) as e:
        raise ModelError(
            f"cannot load {name!r} as a {kind} reward model (safetensors weights only): {e}"
        ) from e


def load_model(
    name: str,
    *,
    revision: str | None = None,
    device: torch.device,
    dtype: torch.dtype,
    trust_remote_code: bool = False,
    output_index: int | None = None,
    reward_head: str | None = None,
    tensor_parallel: bool = False,
) -> tuple[torch.nn.Module, int, str]:
    """Loads the reward model from safetensors; returns (model, output index, reward head).

    A ``*ForSequenceClassification`` checkpoint loads with ``AutoModelForSequenceClassification``
    (head ``sequence-classification``); a ``*ForCausalLM`` one with ``AutoModelForCausalLM`` and an
    ``lm-logit:TOKEN_ID`` head, given as ``reward_head`` or declared in its config (see
    `resolve_reward_head`).

    With ``tensor_parallel``, every rank of the joined process group loads its shard (transformers'
    ``tp_plan="auto"``, weights read from safetensors straight into each rank's shard on
    ``device``); see `rewardkit.engine.tensor_parallel`.

    Raises:
        ModelError: no safetensors weights, a head the checkpoint lacks, or a head with several
            outputs and no ``output_index``.
        ConfigError: tensor parallel outside a process group, or shapes that do not split over it.
    """
    files_only = local_files_only(name, revision)
    config = load_hf_config(
        name, revision=revision, trust_remote_code=trust_remote_code, files_only=files_only
    )
    head, output_index = resolve_output(name, config, reward_head, output_index)
    extra: dict[str, Any] = {"local_files_only": files_only}
    if tensor_parallel:
        from rewardkit.engine.tensor_parallel import sharding_options

        extra.update(sharding_options(config))
    else:  # safetensors read straight onto the device
        extra["device_map"] = str(device)
    model = from_pretrained(
        name, config, head, revision=revision, dtype=dtype, trust_remote_code=trust_remote_code, **extra
    )
    if tensor_parallel:
        from rewardkit.engine.tensor_parallel import finish_sharded

        finish_sharded(model, head)
    model.eval().requires_grad_(False)
    log.info("loaded %s (%s, %s, head %s)", name, device, dtype_name(dtype), head)
    return model, output_index, head


@contextmanager
def attention_implementation(model: torch.nn.Module, name: str) -> Iterator[None]:
    """Temporarily switches the attention function HF modeling code dispatches to."""
    config = model.config
    old = config._attn_implementation
    config._attn_implementation = name
    try:
        yield
    finally:
        config._attn_implementation = old
