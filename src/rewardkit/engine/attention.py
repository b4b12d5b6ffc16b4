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
import itertools
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


# Padded scores (batch · heads · queries · keys) one SDPA call may hold on the CPU path.
_MAX_PADDED_SCORES = 1 << 22


def _buckets(lq: list[int], lk: list[int], heads: int) -> list[list[int]]:
    """Groups segments of similar key length, so that padding each group to its longest adds at
    most a quarter to its attention work and stays under `_MAX_PADDED_SCORES`."""
    order = sorted(range(len(lq)), key=lambda i: (-lk[i], -lq[i]))
    buckets: list[list[int]] = []
    cur: list[int] = []
    work = 0
    for i in order:
        if cur:
            n, mq, mk = len(cur) + 1, max(lq[j] for j in (*cur, i)), lk[cur[0]]
            padded = n * mq * mk
            if padded > 1.25 * (work + lq[i] * lk[i]) + 4096 or padded * heads > _MAX_PADDED_SCORES:
                buckets.append(cur)
                cur, work = [], 0
        cur.append(i)
        work += lq[i] * lk[i]
    if cur:
        buckets.append(cur)
    return buckets


def _segments_sdpa(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    cu_q: torch.Tensor,
    cu_k: torch.Tensor,
    scale: float | None,
) -> torch.Tensor:
    """Reference-equivalent path (CPU, or GPUs without flash varlen): the segments padded into a
    few batches of similar lengths, one SDPA call each (a per-segment loop costs a call per
    conversation per layer)."""
    out = torch.empty_like(q)  # (T, H, hd)
    bq, bk = cu_q.tolist(), cu_k.tolist()
    lq = [b - a for a, b in itertools.pairwise(bq)]
    lk = [b - a for a, b in itertools.pairwise(bk)]
    for seg in _buckets(lq, lk, q.shape[1]):
        if len(seg) == 1:  # one segment: no padding, and plain causal when square
            (i,) = seg
            qs, ks, vs = q[None, bq[i] : bq[i + 1]], k[None, bk[i] : bk[i + 1]], v[None, bk[i] : bk[i + 1]]
            mask = None if lq[i] == lk[i] else _bottom_right(lq[i], lk[i], q.device)[None]
            o = F.scaled_dot_product_attention(
                qs.transpose(1, 2),
                ks.transpose(1, 2),
                vs.transpose(1, 2),
                attn_mask=mask,
                is_causal=mask is None,
                scale=scale,
                enable_gqa=True,
            )  # (1, H, lq, hd)
            out[bq[i] : bq[i + 1]] = o[0].transpose(0, 1)
            continue
        mq, mk = max(lq[i] for i in seg), max(lk[i] for i in seg)
        # (segment, position) of every real query and key, and where it sits in the stream.
        qb, qp, qt = _scatter_index([lq[i] for i in seg], [bq[i] for i in seg], q.device)
        kb, kp, kt = _scatter_index([lk[i] for i in seg], [bk[i] for i in seg], q.device)
        pad_q = q.new_zeros(len(seg), mq, *q.shape[1:])
        pad_k = k.new_zeros(len(seg), mk, *k.shape[1:])
        pad_v = v.new_zeros(len(seg), mk, *v.shape[1:])
        pad_q[qb, qp] = q[qt]
        pad_k[kb, kp] = k[kt]
        pad_v[kb, kp] = v[kt]
        # Bottom-right causal within each segment's own lengths; padded keys never seen.
        shift = torch.tensor([lk[i] - lq[i] for i in seg], device=q.device)[:, None, None]
        rows = torch.arange(mq, device=q.device)[None, :, None]
        cols = torch.arange(mk, device=q.device)[None, None, :]
        key_len = torch.tensor([lk[i] for i in seg], device=q.device)[:, None, None]
        mask = (cols <= rows + shift) & (cols < key_len)  # (B, mq, mk)
        o = F.scaled_dot_product_attention(
            pad_q.transpose(1, 2),
            pad_k.transpose(1, 2),
            pad_v.transpose(1, 2),
            attn_mask=mask[:, None],
            scale=scale,
            enable_gqa=True,
        )  # (B, H, mq, hd)
        out[qt] = o.transpose(1, 2)[qb, qp]
    return out


def _bottom_right(lq: int, lk: int, device: torch.device) -> torch.Tensor:
    """Causal mask aligned to the bottom right: query i sees keys j <= i + (lk - lq)."""
    return torch.ones(lq, lk, dtype=torch.bool, device=device).tril(lk - lq)


def _scatter_index(
    lens: list[int], starts: list[int], device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """For segments of ``lens`` starting at ``starts`` of a stream: each token's (segment,
    position in it, index in the stream)."""
    n = torch.tensor(lens, device=device)
    seg = torch.repeat_interleave(torch.arange(len(lens), device=device), n)
    first = torch.repeat_interleave(torch.cumsum(n, 0) - n, n)
    pos = torch.arange(int(n.sum()), device=device) - first
    return seg, pos, torch.repeat_interleave(torch.tensor(starts, device=device), n) + pos


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
