"""Tiny random reward models of real architectures, made offline (tests, smoke runs).

``rewardkit init-tiny DIR`` writes one: a 2-layer ``Qwen2ForSequenceClassification`` (or
Llama) with one output, a byte-level BPE tokenizer and a ChatML template. Its rewards are
random functions of the input — it exercises the whole pipeline, it judges nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import (
    LlamaConfig,
    LlamaForCausalLM,
    LlamaForSequenceClassification,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen2ForCausalLM,
    Qwen2ForSequenceClassification,
)

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
Arch = Literal["qwen2", "llama"]


def byte_tokenizer(chat_template: str = CHATML_TEMPLATE) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer (one token per byte, 256 + 3 special tokens)."""
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {ch: i for i, ch in enumerate(alphabet)}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(SPECIAL_TOKENS)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        chat_template=chat_template,
        model_max_length=4096,
    )


def tiny_config(
    arch: Arch = "qwen2",
    *,
    vocab_size: int,
    pad_token_id: int | None = None,
    hidden_size: int = 64,
    layers: int = 2,
    heads: int = 4,
    kv_heads: int = 2,
    max_positions: int = 4096,
    **extra: object,
) -> LlamaConfig | Qwen2Config:
    """A small config of a real architecture (untied embeddings, MLP twice the hidden size)."""
    kw = dict(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        max_position_embeddings=max_positions,
        pad_token_id=pad_token_id,
        tie_word_embeddings=False,
        **extra,
    )
    if arch == "qwen2":
        return Qwen2Config(**kw)
    if arch == "llama":
        return LlamaConfig(**kw)
    raise ValueError(f"arch must be 'qwen2' or 'llama', got {arch!r}")


def tiny_reward_model(
    arch: Arch = "qwen2", *, vocab_size: int, pad_token_id: int, seed: int = 0, **config: object
) -> torch.nn.Module:
    """A random ``*ForSequenceClassification`` with ``num_labels=1``, fp32, on the CPU."""
    cfg = tiny_config(arch, vocab_size=vocab_size, pad_token_id=pad_token_id, num_labels=1, **config)
    torch.manual_seed(seed)
    model = (Qwen2ForSequenceClassification if arch == "qwen2" else LlamaForSequenceClassification)(cfg)
    # A larger head init than HF's default so that rewards spread over a visible range.
    torch.nn.init.normal_(model.score.weight, std=1.0)
    return model.eval()


def tiny_causal_lm(
    arch: Arch = "qwen2", *, vocab_size: int, seed: int = 0, **config: object
) -> torch.nn.Module:
    """A random ``*ForCausalLM`` (e.g. a causal-LM reward checkpoint, or a base model to train)."""
    cfg = tiny_config(arch, vocab_size=vocab_size, **config)
    torch.manual_seed(seed)
    return (Qwen2ForCausalLM if arch == "qwen2" else LlamaForCausalLM)(cfg)


def save_tiny_reward_model(
    path: str | Path, *, arch: Arch = "qwen2", seed: int = 0, **config: object
) -> Path:
    """Writes a tiny model + tokenizer directory loadable by ``RewardModel.load(path)``;
    ``config`` overrides `tiny_config`'s shape (e.g. ``heads``, ``kv_heads``)."""
    out = Path(path)
    tok = byte_tokenizer()
    model = tiny_reward_model(arch, vocab_size=len(tok), pad_token_id=tok.pad_token_id, seed=seed, **config)
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    return out
