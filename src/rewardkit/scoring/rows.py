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


def record_names(rec: Record) -> tuple[str, str] | None:
    """The names of a pair's two responses (``chosen``/``rejected``, HelpSteer3's
    ``response1``/``response2``); None for a conversation."""
    return rec.names if isinstance(rec, PreferencePair) else None


def row_id(record_id: str | None, line: int | None) -> str | int | None:
    """A row's ``id``: the record's own, else its line number (None when neither is known)."""
    return record_id if record_id is not None else line


def output_row(rec: Record, line: int, scored: Sequence[Scored]) -> dict[str, Any]:
    """One output row: the record's id (or line number) and its reward(s)."""
    return {"id": row_id(rec.id, line), **reward_columns(record_names(rec), scored)}


def reward_columns(names: tuple[str, str] | None, scored: Sequence[Scored]) -> dict[str, Any]:
    """An output row without its ``id``: the reward(s) of a conversation (``names`` None) or of a
    pair's two responses, with how they were tokenized."""
    if names is None:
        (s,) = scored
        return {
            "reward": s.reward,
            "num_tokens": s.num_tokens,
            "truncated_tokens": s.truncated_tokens,
            "truncated_turns": s.truncated_turns,
        }
    a, b = scored
    n1, n2 = names
    return {
        f"reward_{n1}": a.reward,
        f"reward_{n2}": b.reward,
        "p_first_better": sigmoid(a.reward - b.reward),
        "num_tokens": [a.num_tokens, b.num_tokens],
        "truncated_tokens": [a.truncated_tokens, b.truncated_tokens],
        "truncated_turns": [a.truncated_turns, b.truncated_turns],
    }
