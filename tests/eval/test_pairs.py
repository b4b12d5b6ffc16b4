"""Your own preference pairs: the reader (the formats ``rewardkit score`` reads) and accuracy."""

from __future__ import annotations

from pathlib import Path

import pytest

from rewardkit.errors import RewardkitError
from rewardkit.eval.base import EvalOptions
from rewardkit.eval.pairs import Pairs, pairs_metrics

from .files import write_jsonl


def texts(item) -> list[list[str]]:  # type: ignore[no-untyped-def]
    return [[m.content for m in c.messages] for c in item.conversations]


def test_pair_shapes_preferred_first_and_ties_left_out(tmp_path: Path) -> None:
    turns = [{"role": "user", "content": "q"}]
    f = write_jsonl(
        tmp_path / "hs.jsonl",
        [
            {"context": turns, "response1": "a", "response2": "b", "overall_preference": -2, "id": "x"},
            {"context": turns, "response1": "c", "response2": "d", "overall_preference": 1},
            {"context": turns, "response1": "e", "response2": "f", "overall_preference": 0},
        ],
    )
    loaded = Pairs().load(f, EvalOptions())
    assert [i.meta for i in loaded.items] == [{"id": "x", "group": None}, {"id": 2, "group": None}]
    assert texts(loaded.items[0]) == [["q", "a"], ["q", "b"]]
    assert texts(loaded.items[1]) == [["q", "d"], ["q", "c"]]  # response2 preferred: it is chosen
    assert loaded.notes == (
        "1 record(s) with overall_preference 0 prefer neither response and were left out",
    )

    whole = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]
    g = write_jsonl(
        tmp_path / "trl.jsonl",
        [
            {"prompt": "p", "chosen": "good", "rejected": "bad"},
            {"prompt": "p", "chosen": "fine", "rejected": "poor"},
        ],
    )
    assert texts(Pairs().load(g, EvalOptions()).items[1]) == [["p", "fine"], ["p", "poor"]]
    h = write_jsonl(
        tmp_path / "whole.jsonl",
        [{"chosen": whole, "rejected": [*whole[:1], {"role": "assistant", "content": "no"}]}],
    )
    assert texts(Pairs().load(h, EvalOptions()).items[0]) == [["hi", "yo"], ["hi", "no"]]


def test_group_by_any_field(tmp_path: Path) -> None:
    f = write_jsonl(
        tmp_path / "p.jsonl",
        [
            {"prompt": "p", "chosen": "a", "rejected": "b", "topic": "math"},
            {"prompt": "p", "chosen": "a", "rejected": "b", "topic": 3},
        ],
    )
    items = Pairs().load(f, EvalOptions(group_by="topic")).items
    assert [i.meta["group"] for i in items] == ["math", "3"]


def test_every_problem_listed_before_anything_is_scored(tmp_path: Path) -> None:
    f = write_jsonl(
        tmp_path / "bad.jsonl",
        [
            {"prompt": "p", "chosen": "a", "rejected": "b", "topic": "x"},
            {"prompt": "p", "chosen": "", "rejected": "b", "topic": "x"},
            {"prompt": "p", "chosen": "a", "rejected": "b"},
        ],
    )
    with pytest.raises(RewardkitError) as e:
        Pairs().load(f, EvalOptions(group_by="topic"))
    msg = str(e.value)
    assert f"2 problem(s) in {f}; nothing was scored" in msg
    assert f"{f}:2: field 'chosen'" in msg and f"{f}:3: field 'topic': missing" in msg
    conv = write_jsonl(tmp_path / "conv.jsonl", [{"prompt": "p", "response": "r"}])
    with pytest.raises(RewardkitError, match=r"conv.jsonl:1: a single conversation, not a pair"):
        Pairs().load(conv, EvalOptions())
    with pytest.raises(RewardkitError, match="pairs file not found"):
        Pairs().load(tmp_path / "absent.jsonl", EvalOptions())


def row(group: str | None, chosen: float, rejected: float) -> dict:
    return {"id": 0, "group": group, "reward_chosen": chosen, "reward_rejected": rejected}


def test_pairs_accuracy_per_group_and_ties_wrong() -> None:
    res = pairs_metrics([row("b", 1, 0), row("b", 0, 1), row("a", 2, 2), row("a", 3, 1), row("b", 5, 4)])
    assert res.columns == ("a", "b", "Overall")
    assert res.table == {
        "a": pytest.approx(50.0),  # the tie is wrong
        "b": pytest.approx(100 * 2 / 3),
        "Overall": pytest.approx(60.0),
    }
    assert res.counts["per_group"] == {"a": {"pairs": 2, "correct": 1}, "b": {"pairs": 3, "correct": 2}}
    assert res.counts["ties"] == 1 and any("1 pair(s) scored a tie" in w for w in res.warnings)
    plain = pairs_metrics([row(None, 1, 0), row(None, 0, 1)])
    assert plain.columns == ("Overall",) and plain.table == {"Overall": pytest.approx(50.0)}
