"""Preference pairs from scored response groups: which pairs, and the rows they are written as.

Pure functions over one group's rewards. Two output shapes:

- ``dpo``: TRL's preference format ``{"prompt", "chosen", "rejected"}`` (strings in the standard
  format, message lists in the conversational one), plus ``reward_chosen``, ``reward_rejected``
  and ``margin``: what ``trl.DPOTrainer`` and ``rewardkit train`` read.
- ``helpsteer3``: ``{"context", "response1", "response2", "overall_preference"}``, the strength
  of the preference derived from the reward margin (`preference_strength`), for training the next
  reward model with ``rewardkit train`` (Scaled-BT weighs each pair by that strength).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, get_args

from rewardkit.data.conversation import Message, ResponseGroup
from rewardkit.errors import ConfigError
from rewardkit.scoring.rows import best_index, response_value

PairsMode = Literal["best-worst", "all"]
PairFormat = Literal["dpo", "helpsteer3"]
PAIRS_MODES: tuple[str, ...] = get_args(PairsMode)
PAIR_FORMATS: tuple[str, ...] = get_args(PairFormat)

# The margins at which a Bradley-Terry reward model's win probability σ(margin) reaches 3:1
# (0.75) and 9:1 (0.90): below the first a pair is "slightly better" (strength 1), between them
# "better" (2), above the second "much better" (3), HelpSteer3's three steps.
STRENGTH_MARGINS: tuple[float, float] = (math.log(3), math.log(9))


@dataclass(frozen=True, kw_only=True)
class PairOptions:
    """How pairs are chosen from a group and written.

    Args:
        pairs: ``best-worst`` (the highest against the lowest reward, one pair per group) or
            ``all`` (every two responses, K·(K−1)/2 pairs per group).
        min_margin: keep a pair only when its reward margin is at least this; a pair whose two
            rewards are equal is never kept (it has no chosen response).
        format: ``dpo`` or ``helpsteer3`` (see the module docstring).
        strength_margins: the two margins at which the HelpSteer3 strength steps from 1 to 2
            and from 2 to 3.
    """

    pairs: PairsMode = "best-worst"
    min_margin: float = 0.0
    format: PairFormat = "dpo"
    strength_margins: tuple[float, float] = STRENGTH_MARGINS

    def __post_init__(self) -> None:
        if self.pairs not in PAIRS_MODES:
            raise ConfigError(f"--pairs must be one of {', '.join(PAIRS_MODES)}, got {self.pairs!r}")
        if self.format not in PAIR_FORMATS:
            raise ConfigError(f"--format must be one of {', '.join(PAIR_FORMATS)}, got {self.format!r}")
        if not math.isfinite(self.min_margin) or self.min_margin < 0:
            raise ConfigError(f"--min-margin must be a number >= 0, got {self.min_margin}")
        cuts = tuple(self.strength_margins)
        if len(cuts) != 2 or not all(math.isfinite(c) and c > 0 for c in cuts) or cuts[0] >= cuts[1]:
            raise ConfigError(
                f"--strength-margins must be two increasing numbers > 0, got {' '.join(map(str, cuts))}"
            )


@dataclass(frozen=True, kw_only=True)
class Pair:
    """Two responses of a group: indices of the preferred and the other one, and the margin."""

    chosen: int
    rejected: int
    margin: float


def _worst_index(rewards: Sequence[float]) -> int:
    return min(range(len(rewards)), key=lambda i: (rewards[i], i))


def select_pairs(
    rewards: Sequence[float], *, mode: PairsMode = "best-worst", min_margin: float = 0.0
) -> list[Pair]:
    """The pairs of one group's responses to write, in a deterministic order.

    Args:
        rewards: one reward per response, in the group's order.
        mode: ``best-worst``: the first highest against the first lowest reward; ``all``: every
            two responses ``i < j``, in that order, the higher reward chosen.
        min_margin: pairs with ``margin < min_margin`` (and ties) are left out.
    """
    if mode == "best-worst":
        candidates = [(best_index(rewards), _worst_index(rewards))] if len(rewards) >= 2 else []
    elif mode == "all":
        n = len(rewards)
        candidates = [
            (i, j) if rewards[i] >= rewards[j] else (j, i) for i in range(n) for j in range(i + 1, n)
        ]
    else:
        raise ConfigError(f"--pairs must be one of {', '.join(PAIRS_MODES)}, got {mode!r}")
    pairs = [Pair(chosen=c, rejected=r, margin=rewards[c] - rewards[r]) for c, r in candidates]
    return [p for p in pairs if p.margin > 0 and p.margin >= min_margin]


def preference_strength(margin: float, cuts: Sequence[float] = STRENGTH_MARGINS) -> int:
    """HelpSteer3 strength 1, 2 or 3 of a preference won by ``margin`` (> 0): one more step for
    each of ``cuts`` that ``margin`` reaches (defaults: σ(margin) ≥ 0.75, ≥ 0.90)."""
    return 1 + sum(margin >= c for c in cuts)


def _messages(turns: Sequence[Message]) -> list[dict[str, str]]:
    return [m.to_dict() for m in turns]


def _prompt_value(group: ResponseGroup) -> str | list[dict[str, str]]:
    if group.conversational:
        return _messages(group.context)
    (only,) = group.context  # a standard-format prompt is one user turn
    return only.content


def _helpsteer_response(turns: Sequence[Message]) -> str | list[dict[str, str]]:
    """HelpSteer3 writes a response as a string; a multi-turn response stays a message list."""
    if len(turns) == 1 and turns[0].role == "assistant":
        return turns[0].content
    return _messages(turns)


def pair_row(
    group: ResponseGroup, rewards: Sequence[float], pair: Pair, *, record_id: str | int, options: PairOptions
) -> dict[str, Any]:
    """The output row of one pair in ``options.format``.

    ``helpsteer3`` keeps the two responses in the group's order (``response1`` is the one with
    the lower index) and signs ``overall_preference`` as HelpSteer3 does: negative when
    ``response1`` is preferred.
    """
    c, r = pair.chosen, pair.rejected
    if options.format == "dpo":
        return {
            "id": record_id,
            "prompt": _prompt_value(group),
            "chosen": response_value(group, c),
            "rejected": response_value(group, r),
            "reward_chosen": rewards[c],
            "reward_rejected": rewards[r],
            "margin": pair.margin,
            "chosen_index": c,
            "rejected_index": r,
        }
    first, second = min(c, r), max(c, r)
    strength = preference_strength(pair.margin, options.strength_margins)
    return {
        "id": record_id,
        "context": _messages(group.context),
        "response1": _helpsteer_response(group.responses[first]),
        "response2": _helpsteer_response(group.responses[second]),
        "overall_preference": -strength if c == first else strength,
        "reward_1": rewards[first],
        "reward_2": rewards[second],
        "margin": pair.margin,
        "response1_index": first,
        "response2_index": second,
    }


def group_pair_rows(
    group: ResponseGroup, rewards: Sequence[float], *, record_id: str | int, options: PairOptions
) -> list[dict[str, Any]]:
    """Every pair row of one scored group (none when no pair clears ``options.min_margin``)."""
    pairs = select_pairs(rewards, mode=options.pairs, min_margin=options.min_margin)
    return [pair_row(group, rewards, p, record_id=record_id, options=options) for p in pairs]
