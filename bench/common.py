"""Shared pieces of the GPU benchmarks: model shapes (random weights of these shapes stand in for
the real checkpoints; speed does not depend on weight values) and a synthetic workload."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def _shape(d: int, inter: int, layers: int, heads: int, kv: int, vocab: int) -> dict[str, int]:
    return dict(
        hidden_size=d,
        intermediate_size=inter,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv,
        vocab_size=vocab,
    )


SHAPES: dict[str, dict[str, int]] = {
    # Qwen2.5-*-Instruct
    "0.5b": _shape(896, 4864, 24, 14, 2, 151936),
    "1.5b": _shape(1536, 8960, 28, 12, 2, 151936),
    "7b": _shape(3584, 18944, 28, 28, 4, 152064),
    "14b": _shape(5120, 13824, 48, 40, 8, 152064),
    "32b": _shape(5120, 27648, 64, 40, 8, 152064),
    # Llama-3.3-70B(-Instruct), the body of Llama-3.3-Nemotron-70B-Reward
    "llama-70b": _shape(8192, 28672, 80, 64, 8, 128256),
    # CPU smoke runs (heads divisible by 2 for tensor parallel)
    "tiny": _shape(64, 128, 2, 8, 4, 1000),
}


def arch(name: str) -> str:
    """``llama`` or ``qwen2``."""
    return "llama" if name.startswith("llama") else "qwen2"


def config(name: str, **extra: Any):
    """A transformers config of the shape (Qwen2.5's rope and norm settings for Qwen shapes)."""
    from transformers import LlamaConfig, Qwen2Config

    if arch(name) == "llama":
        return LlamaConfig(**SHAPES[name], rope_theta=5e5, tie_word_embeddings=False, **extra)
    return Qwen2Config(**SHAPES[name], rope_theta=1e6, rms_norm_eps=1e-6, tie_word_embeddings=False, **extra)


def lognormal_workload(n: int, vocab: int, seed: int = 0) -> list[list[int]]:
    """``n`` random token sequences with lognormal lengths (median 512, σ 0.8, clipped to
    [16, 4096]), ids below ``min(vocab, 151000)``."""
    import torch

    g = torch.Generator().manual_seed(seed)
    lens = lognormal_lengths(n, median=512, sigma=0.8, max_len=4096, generator=g)
    return [torch.randint(0, min(vocab, 151000), (k,), generator=g).tolist() for k in lens]


def lognormal_lengths(n: int, *, median: int, sigma: float, max_len: int, generator: Any) -> list[int]:
    """``n`` lengths, lognormal around ``median`` with spread ``sigma``, clipped to [16, max_len]."""
    import math

    import torch

    lens = torch.exp(math.log(median) + sigma * torch.randn(n, generator=generator))
    return lens.clamp(16, max_len).long().tolist()


def save_checkpoint(size: str, tokenizer: Path, out: Path, device: str) -> None:
    """A random-weight reward model of ``size`` (bf16 safetensors) with ``tokenizer``'s files."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tokenizer)
    cfg = config(size, num_labels=1, pad_token_id=tok.pad_token_id, max_position_embeddings=32768)
    cfg.vocab_size = max(cfg.vocab_size, len(tok))  # the smoke-test shape's vocabulary is too small
    with torch.device(device):
        model = AutoModelForSequenceClassification.from_config(cfg, dtype=torch.bfloat16)
    for p in model.parameters():
        p.data.normal_(0, 0.02)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    del model
    torch.cuda.empty_cache()
