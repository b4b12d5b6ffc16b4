"""Pair selection, preference strength and pair rows: pure functions, by invariants and examples."""

from __future__ import annotations

import math
import random

import pytest

from rewardkit.data.formats import parse_group
from rewardkit.errors import ConfigError
from rewardkit.preferences.pairs import (
    STRENGTH_MARGINS,
    Pair,
    PairOptions,
    group_pair_rows,
    pair_row,
    preference_strength,
    select_pairs,
)
from rewardkit.scoring.rows import best_index


def test_best_worst_worked_example() -> None:
    rewards = [0.5, 2.0, -1.0, 2.0, -1.0]
    # The first highest (index 1) against the first lowest (index 2).
    assert select_pairs(rewards) == [Pair(chosen=1, rejected=2, margin=3.0)]
    assert select_pairs(rewards, min_margin=3.0) == [Pair(chosen=1, rejected=2, margin=3.0)]
    assert select_pairs(rewards, min_margin=3.01) == []
    assert select_pairs([1.0]) == []  # one response: no pair
    assert select_pairs([1.0, 1.0]) == []  # a tie has no chosen response


def test_all_pairs_worked_example() -> None:
    pairs = select_pairs([0.0, 1.0, 1.0], mode="all")
    # (0, 1), (0, 2), (1, 2) in index order, the higher reward chosen; 1 vs 2 is a tie.
    assert pairs == [Pair(chosen=1, rejected=0, margin=1.0), Pair(chosen=2, rejected=0, margin=1.0)]


@pytest.mark.parametrize("seed", range(30))
def test_pair_invariants(seed: int) -> None:
    rng = random.Random(seed)
    k = rng.randint(1, 9)
    rewards = [round(rng.gauss(0, 1), 1) for _ in range(k)]  # rounded: ties happen
    min_margin = rng.choice([0.0, 0.3, 1.0])
    every = select_pairs(rewards, mode="all", min_margin=min_margin)
    expected = {
        frozenset((i, j))
        for i in range(k)
        for j in range(i + 1, k)
        if abs(rewards[i] - rewards[j]) >= min_margin and rewards[i] != rewards[j]
    }
    assert {frozenset((p.chosen, p.rejected)) for p in every} == expected
    assert len(every) == len(expected)
    for p in every:
        assert p.margin == rewards[p.chosen] - rewards[p.rejected] > 0
    bw = select_pairs(rewards, mode="best-worst", min_margin=min_margin)
    assert len(bw) <= 1
    if bw:
        (p,) = bw
        assert p.chosen == best_index(rewards) and rewards[p.rejected] == min(rewards)
        assert p.margin == max(x.margin for x in every)  # the widest pair of the group
    else:
        assert max(rewards) - min(rewards) < min_margin or max(rewards) == min(rewards)


def test_preference_strength_steps_at_the_bt_odds() -> None:
    lo, hi = STRENGTH_MARGINS
    assert 1 / (1 + math.exp(-lo)) == pytest.approx(0.75)
    assert 1 / (1 + math.exp(-hi)) == pytest.approx(0.90)
    assert [preference_strength(m) for m in (0.01, lo - 1e-9, lo, hi - 1e-9, hi, 10.0)] == [1, 1, 2, 2, 3, 3]
    assert [preference_strength(m, (0.5, 1.0)) for m in (0.4, 0.5, 0.99, 1.0)] == [1, 2, 2, 3]


STANDARD = parse_group({"id": "s", "prompt": "What is 1+1?", "responses": ["2", "3", "11"]})
CHAT = parse_group(
    {
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "1+1?"}],
        "responses": ["2", [{"role": "assistant", "content": "3"}]],
    }
)


def test_dpo_rows_in_standard_and_conversational_form() -> None:
    row = pair_row(
        STANDARD,
        [1.0, -0.5, 0.2],
        Pair(chosen=0, rejected=1, margin=1.5),
        record_id="s",
        options=PairOptions(),
    )
    assert row == {
        "id": "s",
        "prompt": "What is 1+1?",
        "chosen": "2",
        "rejected": "3",
        "reward_chosen": 1.0,
        "reward_rejected": -0.5,
        "margin": 1.5,
        "chosen_index": 0,
        "rejected_index": 1,
    }
    (row,) = group_pair_rows(CHAT, [0.0, 2.0], record_id=4, options=PairOptions())
    assert row["prompt"] == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "1+1?"}]
    assert row["chosen"] == [{"role": "assistant", "content": "3"}]
    assert row["rejected"] == [{"role": "assistant", "content": "2"}]
    assert (row["id"], row["margin"]) == (4, 2.0)


def test_helpsteer3_rows_keep_group_order_and_sign_the_preference() -> None:
    opts = PairOptions(format="helpsteer3", pairs="all")
    rows = group_pair_rows(STANDARD, [1.0, -0.5, 3.5], record_id="s", options=opts)
    assert [(r["response1"], r["response2"], r["overall_preference"]) for r in rows] == [
        ("2", "3", -2),  # response1 better by 1.5: strength 2, negative sign
        ("2", "11", 3),  # response2 better by 2.5: strength 3
        ("3", "11", 3),
    ]
    assert rows[0]["context"] == [{"role": "user", "content": "What is 1+1?"}]
    assert (rows[0]["reward_1"], rows[0]["reward_2"], rows[0]["margin"]) == (1.0, -0.5, 1.5)
    (row,) = group_pair_rows(CHAT, [0.0, 0.5], record_id=0, options=opts)
    assert (row["response1"], row["response2"], row["overall_preference"]) == ("2", "3", 1)


@pytest.mark.parametrize(
    ("kwargs", "flag"),
    [
        ({"pairs": "best"}, "--pairs"),
        ({"format": "csv"}, "--format"),
        ({"min_margin": -1.0}, "--min-margin"),
        ({"min_margin": math.nan}, "--min-margin"),
        ({"strength_margins": (2.0, 1.0)}, "--strength-margins"),
        ({"strength_margins": (0.0, 1.0)}, "--strength-margins"),
    ],
)
def test_options_name_the_flag(kwargs: dict, flag: str) -> None:
    with pytest.raises(ConfigError, match=flag):
        PairOptions(**kwargs)
