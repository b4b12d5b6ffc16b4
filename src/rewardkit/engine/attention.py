"""Varlen causal attention over a packed token stream, registered with transformers'
``AttentionInterface`` so that HF modeling code stays the model definition.

The packed forward passes ``cu_seq_lens_q`` and ``max_length_q`` through the model's
``**kwargs`` to every attention call. Because the name is not a mask implementation,
transformers builds no mask for it (no T² tensors).

By default each query segment attends causally to its own tokens. A `KeyPlan` (kwarg
``rewardkit_keys``) lets a segment's keys be other tokens, with the causal mask aligned to the
bottom right (the last query sees every key):

- shared-prefix groups: a response's keys are its prompt's tokens followed by its own;
- layer-major chunked prefill: a chunk's keys are every earlier token of the same layer,
  kept in a `LayerKV` buffer.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

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


class LayerKV:
    """Keys and values of one decoder layer at a time, for layer-major chunked prefill.

    The first chunk of a new layer resets the buffer, so memory is one layer's keys and values
    for the whole sequence (``2 · kv_heads · head_dim`` elements per token), not all layers'.
    """

    def __init__(
        self, capacity: int, kv_heads: int, head_dim: int, *, dtype: torch.dtype, device: torch.device
    ) -> None:
        self.k = torch.empty(capacity, kv_heads, head_dim, dtype=dtype, device=device)
        self.v = torch.empty_like(self.k)
        self.layer: int | None = None
        self.filled = 0

    def append(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Adds a chunk's (T_c, KV, hd) keys/values; returns all keys/values of the layer so far."""
        if layer != self.layer:
            self.layer, self.filled = layer, 0
        end = self.filled + k.shape[0]
        self.k[self.filled : end] = k
        self.v[self.filled : end] = v
        self.filled = end
        return self.k[:end], self.v[:end]


@dataclass(frozen=True, kw_only=True)
class KeyPlan:
    """Which keys each query segment attends to.

    Args:
        cu_seqlens_k: (S+1,) int32 cumulative key lengths, one segment per query segment.
        max_seqlen_k: longest key segment.
        gather: (Tk,) indices into the layer's keys forming the key stream (None: as they are).
        cache: a `LayerKV` to append this call's keys to and read all earlier ones from.
    """

    cu_seqlens_k: torch.Tensor
    max_seqlen_k: int
    gather: torch.Tensor | None = None
    cache: LayerKV | None = None


def _segments_sdpa(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    cu_q: torch.Tensor,
    cu_k: torch.Tensor,
    scale: float | None,
) -> torch.Tensor:
    """Reference-equivalent path (CPU, or GPUs without flash varlen): one SDPA per segment."""
    out = torch.empty_like(q)  # (T, H, hd)
    bq, bk = cu_q.tolist(), cu_k.tolist()
    for i in range(len(bq) - 1):
        (qs0, qs1), (ks0, ks1) = (bq[i], bq[i + 1]), (bk[i], bk[i + 1])
        # A leading batch dimension keeps CPU SDPA on its fast path (3-D inputs with GQA are ~10x slower).
        qs, ks, vs = q[None, qs0:qs1], k[None, ks0:ks1], v[None, ks0:ks1]
        lq, lk = qs1 - qs0, ks1 - ks0
        # Bottom-right causal: query i sees keys j <= i + (lk - lq); is_causal is top-left aligned.
        mask = None if lq == lk else torch.ones(lq, lk, dtype=torch.bool, device=q.device).tril(lk - lq)
        o = F.scaled_dot_product_attention(
            qs.transpose(1, 2),
            ks.transpose(1, 2),
            vs.transpose(1, 2),
            attn_mask=mask,
            is_causal=mask is None,
            scale=scale,
            enable_gqa=True,
        )  # (1, H, lq, hd)
        out[qs0:qs1] = o[0].transpose(0, 1)
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
    rewardkit_keys: KeyPlan | None = None,
    **kwargs: object,
) -> tuple[torch.Tensor, None]:
    """Causal attention within each packed segment (or over a `KeyPlan`'s keys).

    Args:
        query: (1, H, T, hd); key/value: (1, KV, T, hd) — HF's layout.
        cu_seq_lens_q: (S+1,) int32 cumulative query segment lengths.
        max_length_q: longest query segment.
        rewardkit_keys: where each segment's keys come from (default: its own tokens).

    Returns:
        (1, T, H, hd) attention output, as HF attention functions return.
    """
    assert query.shape[0] == 1 and attention_mask is None, "packed stream expected"
    q, k, v = (t[0].transpose(0, 1) for t in (query, key, value))  # (T, H, hd)
    cu_k, max_k = cu_seq_lens_q, max_length_q
    if rewardkit_keys is not None:
        if rewardkit_keys.cache is not None:
            k, v = rewardkit_keys.cache.append(module.layer_idx, k, v)
        if rewardkit_keys.gather is not None:
            k, v = k.index_select(0, rewardkit_keys.gather), v.index_select(0, rewardkit_keys.gather)
        cu_k, max_k = rewardkit_keys.cu_seqlens_k, rewardkit_keys.max_seqlen_k
    if q.is_cuda and _varlen_attn is not None:
        # Flash-attention's causal mask is bottom-right aligned when query and key lengths differ.
        out = _varlen_attn(
            q,
            k,
            v,
            cu_seq_lens_q,
            cu_k,
            max_length_q,
            max_k,
            scale=scaling,
            window_size=(-1, 0),
            **_GQA_KW,
        )
    else:
        out = _segments_sdpa(q, k, v, cu_seq_lens_q, cu_k, scaling)
    return out[None], None


AttentionInterface.register(VARLEN, varlen_attention_forward)
