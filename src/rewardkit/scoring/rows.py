"""Records in, rows out: which conversations a record scores, and the output row its rewards make.

Every scoring path (``rewardkit score``, ranks, Ray) turns a record into rows here, so the same
record gives the same row whichever way it was scored. A record's conversations are scored as one
shared-prompt group (a pair's two responses, or a group's K responses, compute their prompt once).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rewardkit.api import Scored, sigmoid
from rewardkit.data.conversation import Conversation, PreferencePair, ResponseGroup
from rewardkit.data.formats import Record


def record_conversations(rec: Record) -> tuple[Conversation, ...]:
    return rec.conversations() if isinstance(rec, PreferencePair | ResponseGroup) else (rec,)


def best_index(rewards: Sequence[float]) -> int:
    """Index of the highest reward; the first one on a tie."""
    return max(range(len(rewards)), key=lambda i: (rewards[i], -i))


def response_value(group: ResponseGroup, index: int) -> str | list[dict[str, str]]:
    """Response ``index`` of ``group`` as the source gave it: a string in the standard format, a
    list of messages in the conversational one."""
    turns = group.responses[index]
    if group.conversational:
        return [m.to_dict() for m in turns]
    (only,) = turns  # a standard-format response is one assistant turn
    return only.content


def _lengths(row: dict[str, Any], scored: Sequence[Scored]) -> dict[str, Any]:
    row.update(
        num_tokens=[s.num_tokens for s in scored],
        truncated_tokens=[s.truncated_tokens for s in scored],
        truncated_turns=[s.truncated_turns for s in scored],
    )
    return row


def output_row(rec: Record, line: int, scored: Sequence[Scored]) -> dict[str, Any]:
    """One output row: the record's id (or line number) and its reward(s).

    A `ResponseGroup` gives ``rewards`` (one per response, in order) and ``best`` (the index of
    the highest; the first on a tie).
    """
    row: dict[str, Any] = {"id": rec.id if rec.id is not None else line}
    if isinstance(rec, Conversation):
        (s,) = scored
        row["reward"] = s.reward
        row.update(
            num_tokens=s.num_tokens, truncated_tokens=s.truncated_tokens, truncated_turns=s.truncated_turns
        )
        return row
    if isinstance(rec, ResponseGroup):
        row["rewards"] = [s.reward for s in scored]
        row["best"] = best_index(row["rewards"])
        return _lengths(row, scored)
    a, b = scored
    n1, n2 = rec.names
    row[f"reward_{n1}"], row[f"reward_{n2}"] = a.reward, b.reward
    row["p_first_better"] = sigmoid(a.reward - b.reward)
    return _lengths(row, scored)
