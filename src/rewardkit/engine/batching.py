"""Pure planning functions: length sort, token-budget batches, packed streams."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from rewardkit.engine.attention import KeyPlan


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


def pool_index(ids: Sequence[int], pad_token_id: int | None) -> int:
    """Where HF's ``*ForSequenceClassification`` reads the reward: the rightmost token that is
    not the pad token (index 0 if all are), or the last token when the model has no pad id."""
    if pad_token_id is None:
        return len(ids) - 1
    for j in range(len(ids) - 1, -1, -1):
        if ids[j] != pad_token_id:
            return j
    return 0


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
        pin = device.type == "cuda"

        def move(t: torch.Tensor) -> torch.Tensor:
            return (t.pin_memory() if pin else t).to(device, non_blocking=True)

        keys = self.keys
        if keys is not None:
            keys = KeyPlan(
                cu_seqlens_k=move(keys.cu_seqlens_k),
                max_seqlen_k=keys.max_seqlen_k,
                gather=None if keys.gather is None else move(keys.gather),
            )
        return PackedBatch(
            input_ids=move(self.input_ids),
            position_ids=move(self.position_ids),
            cu_seqlens=move(self.cu_seqlens),
            max_seqlen=self.max_seqlen,
            read_index=move(self.read_index),
            keys=keys,
        )


def pack(seqs: Sequence[Sequence[int]], pad_token_id: int | None) -> PackedBatch:
    """Packs token sequences (each non-empty) into one stream."""
    lens = [len(s) for s in seqs]
    assert lens and min(lens) > 0, "cannot pack empty sequences"
    starts = [0]
    for n in lens:
        starts.append(starts[-1] + n)
    flat = [t for s in seqs for t in s]
    return PackedBatch(
        input_ids=torch.tensor(flat, dtype=torch.long),
        position_ids=torch.cat([torch.arange(n) for n in lens]),
        cu_seqlens=torch.tensor(starts, dtype=torch.int32),
        max_seqlen=max(lens),
        read_index=torch.tensor(
            [st + pool_index(s, pad_token_id) for st, s in zip(starts, seqs, strict=False)],
            dtype=torch.long,
        ),
    )


def shared_prefix_len(seqs: Sequence[Sequence[int]]) -> int:
    """Length of the token prefix all sequences share, leaving each at least one token of its own."""
    n = min(len(s) for s in seqs) - 1
    first = seqs[0]
    for i in range(max(n, 0)):
        if any(s[i] != first[i] for s in seqs[1:]):
            return i
    return max(n, 0)


def group_cost(group: Sequence[Sequence[int]]) -> int:
    """Tokens a group puts in the stream: the shared prefix once, then each suffix."""
    p = shared_prefix_len(group) if len(group) > 1 else 0
    return p + sum(len(s) - p for s in group)


def pack_groups(groups: Sequence[Sequence[Sequence[int]]], pad_token_id: int | None) -> PackedBatch:
    """Packs groups of sequences that share a prefix (e.g. K responses to one prompt).

    Each group's shared prefix P is put in the stream once, followed by each sequence's suffix
    S_i. Query segments are [P, S_1, ..., S_K]; P attends causally to itself, S_i to P and then
    itself (a gathered key stream), with positions continuing after P — the same attention each
    sequence gets when scored alone, so the rewards are the same.
    """
    ids: list[int] = []
    pos: list[torch.Tensor] = []
    q_lens: list[int] = []
    k_lens: list[int] = []
    gather: list[torch.Tensor] = []
    read: list[int] = []
    for group in groups:
        p = shared_prefix_len(group) if len(group) > 1 else 0
        p_start = len(ids)
        if p:
            ids.extend(group[0][:p])
            pos.append(torch.arange(p))
            q_lens.append(p)
            k_lens.append(p)
            gather.append(torch.arange(p_start, p_start + p))
        prefix_idx = torch.arange(p_start, p_start + p)
        for seq in group:
            start = len(ids)
            r = len(seq) - p
            ids.extend(seq[p:])
            pos.append(torch.arange(p, p + r))
            q_lens.append(r)
            k_lens.append(p + r)
            gather.append(torch.cat([prefix_idx, torch.arange(start, start + r)]))
            j = pool_index(seq, pad_token_id)
            read.append(start + j - p if j >= p else p_start + j)

    def cumsum(xs: list[int]) -> torch.Tensor:
        return torch.tensor([0, *itertools.accumulate(xs)], dtype=torch.int32)

    return PackedBatch(
        input_ids=torch.tensor(ids, dtype=torch.long),
        position_ids=torch.cat(pos),
        cu_seqlens=cumsum(q_lens),
        max_seqlen=max(q_lens),
        read_index=torch.tensor(read, dtype=torch.long),
        keys=KeyPlan(cu_seqlens_k=cumsum(k_lens), max_seqlen_k=max(k_lens), gather=torch.cat(gather)),
    )
