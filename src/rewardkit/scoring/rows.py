"""Records in, rows out: which conversations a record scores, and the output row its rewards make.

Every scoring path (``rewardkit score``, ranks, Ray) turns a record into rows here, so the same
record gives the same row whichever way it was scored. A record's conversations are scored as one
shared-prompt group (a pair's two responses compute their prompt once).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rewardkit.api import Scored, sigmoid
from rewardkit.data.conversation import Conversation, PreferencePair
from rewardkit.data.formats import Record


def record_conversations(rec: Record) -> tuple[Conversation, ...]:
    return rec.conversations() if isinstance(rec, PreferencePair) else (rec,)


def output_row(rec: Record, line: int, scored: Sequence[Scored]) -> dict[str, Any]:
    """One output row: the record's id (or line number) and its reward(s)."""
    row: dict[str, Any] = {"id": rec.id if rec.id is not None else line}
    if isinstance(rec, Conversation):
        (s,) = scored
        row["reward"] = s.reward
        row.update(
            num_tokens=s.num_tokens, truncated_tokens=s.truncated_tokens, truncated_turns=s.truncated_turns
        )
        return row
    a, b = scored
    n1, n2 = rec.names
    row[f"reward_{n1}"], row[f"reward_{n2}"] = a.reward, b.reward
    row["p_first_better"] = sigmoid(a.reward - b.reward)
    row.update(
        num_tokens=[a.num_tokens, b.num_tokens],
        truncated_tokens=[a.truncated_tokens, b.truncated_tokens],
        truncated_turns=[a.truncated_turns, b.truncated_turns],
    )
    return row
