"""Pairwise accuracy of a reward model on demo records, per skill, through `RewardModel.score_pairs`."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from rewardkit.api import RewardModel
from rewardkit.data.conversation import PreferencePair
from rewardkit.data.formats import parse_record

# The model card's example, used as a smoke check of any demo build.
ONE_PLUS_ONE = (
    [{"role": "user", "content": "What is 1+1?"}, {"role": "assistant", "content": "1+1=2"}],
    [{"role": "user", "content": "What is 1+1?"}, {"role": "assistant", "content": "1+1=3"}],
)


@dataclass(frozen=True, kw_only=True)
class SkillAccuracy:
    """How often the better response got the higher reward (ties count as wrong)."""

    skill: str
    correct: int
    total: int

    @property
    def accuracy(self) -> float:
        return self.correct / self.total if self.total else float("nan")


def pairs_of(records: Iterable[Mapping[str, Any]]) -> list[PreferencePair]:
    pairs = []
    for r in records:
        pair = parse_record(r)
        assert isinstance(pair, PreferencePair), "demo records are preference pairs"
        pairs.append(pair)
    return pairs


def accuracy_by_skill(rm: RewardModel, records: Iterable[Mapping[str, Any]]) -> dict[str, SkillAccuracy]:
    """Scores every pair once and counts wins per ``domain``; the key ``all`` sums the skills."""
    pairs = pairs_of(records)
    rewards = rm.score_pairs(pairs)
    counts: dict[str, list[int]] = {}
    for pair, (r1, r2) in zip(pairs, rewards, strict=True):
        # HelpSteer3 sign: a negative preference means the first response is better.
        right = r1 > r2 if pair.preference < 0 else r2 > r1
        for key in (str(pair.extra.get("domain", "unknown")), "all"):
            c = counts.setdefault(key, [0, 0])
            c[0] += int(right)
            c[1] += 1
    return {k: SkillAccuracy(skill=k, correct=c, total=n) for k, (c, n) in sorted(counts.items())}


def one_plus_one(rm: RewardModel) -> tuple[float, float]:
    """Rewards of "1+1=2" and "1+1=3" for the prompt "What is 1+1?"."""
    right, wrong = rm.score(list(ONE_PLUS_ONE))
    return right, wrong
