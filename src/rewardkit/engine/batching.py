"""Pure planning functions: length sort, token-budget batches, packed streams."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch


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
    """

    input_ids: torch.Tensor
    position_ids: torch.Tensor
    cu_seqlens: torch.Tensor
    max_seqlen: int
    read_index: torch.Tensor

    @property
    def num_tokens(self) -> int:
        return int(self.input_ids.numel())

    def to(self, device: torch.device) -> PackedBatch:
        pin = device.type == "cuda"

        def move(t: torch.Tensor) -> torch.Tensor:
            return (t.pin_memory() if pin else t).to(device, non_blocking=True)

        return PackedBatch(
            input_ids=move(self.input_ids),
            position_ids=move(self.position_ids),
            cu_seqlens=move(self.cu_seqlens),
            max_seqlen=self.max_seqlen,
            read_index=move(self.read_index),
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
