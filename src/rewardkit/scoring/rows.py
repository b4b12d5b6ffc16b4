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


def _lengths(scored: Sequence[Scored]) -> dict[str, Any]:
    """How each of several responses was tokenized, as lists in response order."""
    return {
        "num_tokens": [s.num_tokens for s in scored],
        "truncated_tokens": [s.truncated_tokens for s in scored],
        "truncated_turns": [s.truncated_turns for s in scored],
    }


def record_names(rec: Record) -> tuple[str, ...] | None:
    """The shape of a record's row: None for a conversation, the names of a pair's two responses
    (``chosen``/``rejected``, HelpSteer3's ``1``/``2``), ``()`` for a group of responses."""
    if isinstance(rec, PreferencePair):
        return rec.names
    return () if isinstance(rec, ResponseGroup) else None


def row_id(record_id: str | None, line: int | None) -> str | int | None:
    """A row's ``id``: the record's own, else its line number (None when neither is known)."""
    return record_id if record_id is not None else line


def output_row(rec: Record, line: int, scored: Sequence[Scored]) -> dict[str, Any]:
    """One output row: the record's id (or line number) and its reward(s).

    A `ResponseGroup` gives ``rewards`` (one per response, in order) and ``best`` (the index of
    the highest; the first on a tie).
    """
    return {"id": row_id(rec.id, line), **reward_columns(record_names(rec), scored)}


def reward_columns(names: tuple[str, ...] | None, scored: Sequence[Scored]) -> dict[str, Any]:
    """An output row without its ``id``: the reward(s) of a conversation (``names`` None), of a
    pair's two responses, or of a group's responses (``()``), with how they were tokenized."""
    if names == ():
        rewards = [s.reward for s in scored]
        return {"rewards": rewards, "best": best_index(rewards), **_lengths(scored)}
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
        **_lengths(scored),
    }
