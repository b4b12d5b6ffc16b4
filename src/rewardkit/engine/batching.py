"""Pure planning functions: length sort, token-budget batches, packed streams.

Token sequences may be lists of ints or 1-D integer numpy arrays (the compact form the scoring
pipeline keeps); packing concatenates them with numpy, never element by element in Python.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from rewardkit.engine.attention import KeyPlan

TokenIds = Sequence[int] | np.ndarray


def token_budget_batches(lengths: Sequence[int], budget: int) -> list[list[int]]:
    """Groups indices, longest first, into batches whose total length is at most ``budget``.

    Packing has no padding, so a batch costs the sum of its lengths; sorting keeps similar
    lengths together (a tighter ``max_length`` for the attention kernel) and puts the largest
    batches first, so an out-of-memory shows at once. A sequence longer than the budget gets
    a batch of its own.
    """
    if budget < 1:
        raise ValueError(f"token budget must be positive, got {budget}")
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches: list[list[int]] = []
    cur: list[int] = []
    used = 0
    for i in order:
        if cur and used + lengths[i] > budget:
            batches.append(cur)
            cur, used = [], 0
        cur.append(i)
        used += lengths[i]
    if cur:
        batches.append(cur)
    return batches


def best_fit_batches(lengths: Sequence[int], budget: int) -> list[list[int]]:
    """Groups indices into as few batches of at most ``budget`` total length as it can: best fit
    decreasing (each sequence, longest first, goes to the fullest batch it still fits in).

    Where `token_budget_batches` closes a batch at the first sequence that does not fit, this
    keeps every batch open, so the short sequences fill the gaps the long ones leave: fewer,
    fuller batches (the trainer's micro-batches, each of which costs FSDP a fixed amount of
    communication). Batches come out fullest first; within one, longest first. A sequence longer
    than the budget gets a batch of its own. Deterministic: ties go to the earlier batch.
    """
    if budget < 1:
        raise ValueError(f"token budget must be positive, got {budget}")
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches: list[list[int]] = []
    used: list[int] = []
    for i in order:
        n = lengths[i]
        best = -1
        for k, u in enumerate(used):  # the fullest batch with room; plans hold tens of batches
            if u + n <= budget and (best < 0 or u > used[best]):
                best = k
        if best < 0:
            batches.append([i])
            used.append(n)
        else:
            batches[best].append(i)
            used[best] += n
    ranked = sorted(range(len(batches)), key=lambda k: (-used[k], k))
    return [batches[k] for k in ranked]


def pool_index(ids: TokenIds, pad_token_id: int | None) -> int:
    """Where HF's ``*ForSequenceClassification`` reads the reward: the rightmost token that is
    not the pad token (index 0 if all are), or the last token when the model has no pad id."""
    n = len(ids)
    if pad_token_id is None or ids[n - 1] != pad_token_id:
        return n - 1
    not_pad = np.flatnonzero(np.asarray(ids) != pad_token_id)
    return int(not_pad[-1]) if len(not_pad) else 0


def to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``t`` (on the CPU) on ``device`` without waiting for the GPU: to a GPU through pinned memory,
    asynchronously (a plain copy from pageable memory waits for the work already queued)."""
    return (t.pin_memory() if device.type == "cuda" else t).to(device, non_blocking=True)


@dataclass(frozen=True, kw_only=True)
class PackedBatch:
    """Sequences concatenated into one stream.

    Args:
        input_ids: (T,) all tokens.
        position_ids: (T,) positions restarting at 0 for every sequence.
        cu_seqlens: (B+1,) int32 cumulative lengths.
        max_seqlen: the longest sequence.
        read_index: (B,) stream index whose hidden state feeds the head.
        keys: for shared-prefix groups, which keys each query segment sees (see `pack_groups`).
    """

    input_ids: torch.Tensor
    position_ids: torch.Tensor
    cu_seqlens: torch.Tensor
    max_seqlen: int
    read_index: torch.Tensor
    keys: KeyPlan | None = None

    @property
    def num_tokens(self) -> int:
        return int(self.input_ids.numel())

    def to(self, device: torch.device) -> PackedBatch:
        keys = self.keys
        if keys is not None:
            keys = KeyPlan(
                cu_seqlens_k=to_device(keys.cu_seqlens_k, device),
                max_seqlen_k=keys.max_seqlen_k,
                gather=None if keys.gather is None else to_device(keys.gather, device),
            )
        return PackedBatch(
            input_ids=to_device(self.input_ids, device),
            position_ids=to_device(self.position_ids, device),
            cu_seqlens=to_device(self.cu_seqlens, device),
            max_seqlen=self.max_seqlen,
            read_index=to_device(self.read_index, device),
            keys=keys,
        )


def _concat(seqs: Sequence[TokenIds]) -> torch.Tensor:
    return torch.from_numpy(np.concatenate([np.asarray(s, dtype=np.int64) for s in seqs]))


def _positions(lens: Sequence[int], starts: Sequence[int] | None = None) -> torch.Tensor:
    """Positions restarting at each segment: ``starts[i], ..., starts[i] + lens[i] - 1``."""
    total = sum(lens)
    seg_start = np.repeat(np.cumsum([0, *lens[:-1]]), lens)
    pos = np.arange(total) - seg_start
    if starts is not None:
        pos += np.repeat(np.asarray(starts, dtype=np.int64), lens)
    return torch.from_numpy(pos)


def pack(seqs: Sequence[TokenIds], pad_token_id: int | None) -> PackedBatch:
    """Packs token sequences (each non-empty) into one stream."""
    lens = [len(s) for s in seqs]
    assert lens and min(lens) > 0, "cannot pack empty sequences"
    starts = [0, *itertools.accumulate(lens)]
    return PackedBatch(
        input_ids=_concat(seqs),
        position_ids=_positions(lens),
        cu_seqlens=torch.tensor(starts, dtype=torch.int32),
        max_seqlen=max(lens),
        read_index=torch.tensor(
            [st + pool_index(s, pad_token_id) for st, s in zip(starts, seqs, strict=False)],
            dtype=torch.long,
        ),
    )


def shared_prefix_len(seqs: Sequence[TokenIds]) -> int:
    """Length of the token prefix all sequences share, leaving each at least one token of its own."""
    n = max(min(len(s) for s in seqs) - 1, 0)
    first = np.asarray(seqs[0][:n])
    for s in seqs[1:]:
        diff = np.flatnonzero(np.asarray(s[:n]) != first[:n])
        if len(diff):
            n = int(diff[0])
    return n


def group_cost(group: Sequence[TokenIds]) -> int:
    """Tokens a group puts in the stream: the shared prefix once, then each suffix."""
    p = shared_prefix_len(group) if len(group) > 1 else 0
    return p + sum(len(s) - p for s in group)


def pack_groups(groups: Sequence[Sequence[TokenIds]], pad_token_id: int | None) -> PackedBatch:
    """Packs groups of sequences that share a prefix (e.g. K responses to one prompt).

    Each group's shared prefix P is put in the stream once, followed by each sequence's suffix
    S_i. Query segments are [P, S_1, ..., S_K]; P attends causally to itself, S_i to P and then
    itself (a gathered key stream), with positions continuing after P — the same attention each
    sequence gets when scored alone, so the rewards are the same.
    """
    pieces: list[TokenIds] = []  # the stream, segment by segment
    pos_start: list[int] = []  # first position of each query segment
    q_lens: list[int] = []
    k_lens: list[int] = []
    gather: list[np.ndarray] = []
    read: list[int] = []
    size = 0
    for group in groups:
        p = shared_prefix_len(group) if len(group) > 1 else 0
        prefix_idx = np.arange(size, size + p)
        if p:
            pieces.append(group[0][:p])
            pos_start.append(0)
            q_lens.append(p)
            k_lens.append(p)
            gather.append(prefix_idx)
            size += p
        for seq in group:
            r = len(seq) - p
            pieces.append(seq[p:])
            pos_start.append(p)
            q_lens.append(r)
            k_lens.append(p + r)
            gather.append(np.concatenate([prefix_idx, np.arange(size, size + r)]))
            j = pool_index(seq, pad_token_id)
            read.append(size + j - p if j >= p else int(prefix_idx[0]) + j)
            size += r

    def cumsum(xs: list[int]) -> torch.Tensor:
        return torch.tensor([0, *itertools.accumulate(xs)], dtype=torch.int32)

    return PackedBatch(
        input_ids=_concat(pieces),
        position_ids=_positions(q_lens, pos_start),
        cu_seqlens=cumsum(q_lens),
        max_seqlen=max(q_lens),
        read_index=torch.tensor(read, dtype=torch.long),
        keys=KeyPlan(
            cu_seqlens_k=cumsum(k_lens),
            max_seqlen_k=max(k_lens),
            gather=torch.from_numpy(np.concatenate(gather)),
        ),
    )
