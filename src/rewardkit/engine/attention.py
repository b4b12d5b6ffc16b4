"""Varlen causal attention over a packed token stream, registered with transformers'
``AttentionInterface`` so that HF modeling code stays the model definition.

The packed forward passes ``cu_seq_lens_q/k`` and ``max_length_q/k`` through the model's
``**kwargs`` to every attention call. Because the name is not a mask implementation,
transformers builds no mask for it (no T² tensors).
"""

from __future__ import annotations

import inspect
import itertools

import torch
import torch.nn.functional as F
from transformers import AttentionInterface

VARLEN = "rewardkit_varlen"

try:
    from torch.nn.attention.varlen import varlen_attn as _varlen_attn

    # torch 2.11 accepts grouped-query K/V directly; later releases ask for enable_gqa=True.
    _GQA_KW = {"enable_gqa": True} if "enable_gqa" in inspect.signature(_varlen_attn).parameters else {}
except ImportError:  # pragma: no cover - older torch
    _varlen_attn = None
    _GQA_KW = {}


def _segments_sdpa(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu: torch.Tensor, scale: float | None
) -> torch.Tensor:
    """Reference-equivalent path (CPU, or GPUs without flash varlen): one SDPA per sequence."""
    out = torch.empty_like(q)  # (T, H, hd)
    bounds = cu.tolist()
    for s, e in itertools.pairwise(bounds):
        qs, ks, vs = (t[s:e].transpose(0, 1) for t in (q, k, v))  # (H, L, hd)
        # A leading batch dimension keeps CPU SDPA on its fast path (3-D inputs with GQA are ~10x slower).
        o = F.scaled_dot_product_attention(
            qs[None], ks[None], vs[None], is_causal=True, scale=scale, enable_gqa=True
        )
        out[s:e] = o[0].transpose(0, 1)
    return out


def varlen_attention_forward(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    *,
    cu_seq_lens_q: torch.Tensor,
    max_length_q: int,
    **kwargs: object,
) -> tuple[torch.Tensor, None]:
    """Causal attention within each packed sequence.

    Args:
        query: (1, H, T, hd); key/value: (1, KV, T, hd) — HF's layout.
        cu_seq_lens_q: (B+1,) int32 cumulative sequence lengths (same for keys).
        max_length_q: longest sequence in the stream.

    Returns:
        (1, T, H, hd) attention output, as HF attention functions return.
    """
    assert query.shape[0] == 1 and attention_mask is None, "packed stream expected"
    q, k, v = (t[0].transpose(0, 1) for t in (query, key, value))  # (T, H, hd)
    if q.is_cuda and _varlen_attn is not None:
        out = _varlen_attn(
            q,
            k,
            v,
            cu_seq_lens_q,
            cu_seq_lens_q,
            max_length_q,
            max_length_q,
            scale=scaling,
            window_size=(-1, 0),
            **_GQA_KW,
        )
    else:
        out = _segments_sdpa(q, k, v, cu_seq_lens_q, scaling)
    return out[None], None


AttentionInterface.register(VARLEN, varlen_attention_forward)
