"""Loading preference data and planning packed micro-batches."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rewardkit.errors import InputError
from rewardkit.models.templating import ChatTokenizer
from rewardkit.models.tiny import byte_tokenizer
from rewardkit.train.data import (
    collate,
    global_batch,
    hs2_turns,
    load_pairs,
    plan_micro_batches,
    rank_shard,
    tokenize_pairs,
)

HS3 = {"context": [{"role": "user", "content": "hi"}], "response1": "A", "response2": "B"}


def test_helpsteer3_chosen_strength_and_ties(jsonl, tmp_path: Path) -> None:
    f = jsonl(
        "hs3.jsonl",
        [
            {**HS3, "overall_preference": -2},
            {**HS3, "overall_preference": 3},
            {**HS3, "overall_preference": 0},
        ],
    )
    data = load_pairs(str(f))
    assert data.helpsteer and data.ties == 1 and len(data.pairs) == 2
    first, second = data.pairs
    assert first.chosen.messages[-1].content == "A" and first.strength == 2  # < 0: response1 better
    assert second.chosen.messages[-1].content == "B" and second.strength == 3


def test_chosen_rejected_pairs(jsonl, tmp_path: Path) -> None:
    f = jsonl("p.jsonl", [{"prompt": "hi", "chosen": "good", "rejected": "bad"}])
    data = load_pairs(str(f))
    assert not data.helpsteer and data.pairs[0].strength == 1
    assert data.pairs[0].rejected.messages[-1].content == "bad"


def test_helpsteer2_preference_split_and_turns(jsonl, tmp_path: Path) -> None:
    rows = [
        {
            "split": "train",
            "prompt": "u1<extra_id_1>Assistant\na1<extra_id_1>User\nu2",
            "response_1": "R1",
            "response_2": "R2",
            "preference_strength": 2,
        },
        {"split": "val", "prompt": "v", "response_1": "X", "response_2": "Y", "preference_strength": -1},
    ]
    f = jsonl("hs2.jsonl", rows)
    train = load_pairs(str(f), split="train")
    assert train.helpsteer and len(train.pairs) == 1
    chosen = train.pairs[0].chosen
    assert [(m.role, m.content) for m in chosen.messages] == [
        ("user", "u1"),
        ("assistant", "a1"),
        ("user", "u2"),
        ("assistant", "R2"),
    ]
    val = load_pairs(str(f), split="validation")
    assert val.pairs[0].chosen.messages[-1].content == "X"


def test_hs2_unknown_marker() -> None:
    with pytest.raises(InputError, match="turn marker 'System'"):
        hs2_turns("a<extra_id_1>System\nb")


def test_errors_name_file_line_and_field(jsonl, tmp_path: Path) -> None:
    f = tmp_path / "bad.jsonl"
    f.write_text(
        json.dumps({**HS3, "overall_preference": -1})
        + "\n\n"
        + json.dumps({**HS3, "overall_preference": 5})
        + "\n"
        + json.dumps({**HS3, "response2": "", "overall_preference": 1})
        + "\n"
    )
    with pytest.raises(InputError) as e:
        load_pairs(str(f))
    msg = str(e.value)
    assert msg.startswith(f"2 invalid record(s) in {f}")
    assert f"{f}:3: field 'overall_preference': expected a number from -3 to 3, got 5" in msg
    assert f"{f}:4: field 'response2': response is empty" in msg


def test_hs2_errors_use_hs2_field_names(jsonl, tmp_path: Path) -> None:
    f = jsonl("hs2.jsonl", [{"prompt": "p", "response_1": "a", "response_2": "b", "preference_strength": 9}])
    with pytest.raises(InputError, match=r"hs2.jsonl:1: field 'preference_strength'"):
        load_pairs(str(f), data_format="helpsteer2")


def test_conversations_are_not_pairs(jsonl, tmp_path: Path) -> None:
    f = jsonl("c.jsonl", [{"prompt": "p", "response": "r"}])
    with pytest.raises(InputError, match=r"c.jsonl:1: expected preference pairs"):
        load_pairs(str(f))


def test_tokenize_drops_or_reports_overlong_with_its_file_line(jsonl, tmp_path: Path) -> None:
    rows = [
        {"prompt": "hi", "chosen": "ok", "rejected": "no"},
        {**HS3, "overall_preference": 0},  # a tie, dropped before tokenizing
        {"prompt": "hi", "chosen": "x", "rejected": "y" * 200},
    ]
    # Ties are not mixed with chosen/rejected records in one file; two files keep the lines apart.
    f = jsonl("p.jsonl", [rows[0], rows[0], rows[2]])
    data = load_pairs(str(f))
    chat = ChatTokenizer(byte_tokenizer(), max_length=64)
    tp = tokenize_pairs(data, chat, truncation="drop")
    assert len(tp) == 2 and tp.dropped == 1
    # The chat template's own ids, chosen and rejected.
    assert tp.chosen[0] == chat.encode_one(data.pairs[0].chosen).ids
    assert tp.rejected[0] == chat.encode_one(data.pairs[0].rejected).ids
    with pytest.raises(InputError, match=rf"{f}:3: field 'rejected': "):
        tokenize_pairs(data, chat, truncation="error")
    # After ties are dropped and a subset taken, the line is still the record's own.
    h = jsonl("hs3.jsonl", [{**HS3, "overall_preference": 0}, {**HS3, "overall_preference": 1}] * 2)
    long = {**HS3, "response1": "z" * 200, "overall_preference": -1}
    h.write_text(h.read_text() + json.dumps(long) + "\n")
    data = load_pairs(str(h)).take([2, 0])
    assert data.lines == [5, 2]
    with pytest.raises(InputError, match=rf"{h}:5: field 'chosen'"):
        tokenize_pairs(data, chat, truncation="error")


def test_all_ties_error_says_how_many(jsonl) -> None:
    f = jsonl("ties.jsonl", [{**HS3, "overall_preference": 0}] * 3)
    with pytest.raises(
        InputError, match=r"no preference pairs in .*ties.jsonl: all 3 are ties \(preference 0\)"
    ):
        load_pairs(str(f))


def test_global_batches_cover_each_epoch_once() -> None:
    n, g = 21, 8
    epoch0 = [global_batch(n, s, global_batch_size=g, seed=1) for s in range(3)]
    assert [len(b) for b in epoch0] == [8, 8, 5]
    assert sorted(i for b in epoch0 for i in b) == list(range(n))
    epoch1 = [global_batch(n, s, global_batch_size=g, seed=1) for s in range(3, 6)]
    assert sorted(i for b in epoch1 for i in b) == list(range(n)) and epoch1 != epoch0
    assert global_batch(n, 4, global_batch_size=g, seed=1) == epoch1[1]  # a pure function of the step


def test_rank_shards_partition_and_balance() -> None:
    lengths = [10, 90, 40, 60, 20, 80, 30, 70]
    batch = list(range(8))
    shards = [rank_shard(batch, lengths, rank=r, world_size=2) for r in range(2)]
    assert sorted(shards[0] + shards[1]) == batch
    assert [sum(lengths[i] for i in s) for s in shards] == [200, 200]


def test_micro_batches_respect_budget_and_keep_ranks_in_step() -> None:
    lengths = [100, 100, 100, 100, 100]
    batch = list(range(5))
    plans = [plan_micro_batches(batch, lengths, rank=r, world_size=2, token_budget=200) for r in range(2)]
    assert len(plans[0]) == len(plans[1])  # same number of forwards on every rank
    real = [i for plan in plans for idx, w in plan if w == 1.0 for i in idx]
    assert sorted(real) == batch  # every pair trained once
    for plan in plans:
        for idx, w in plan:
            assert w == 0.0 or sum(lengths[i] for i in idx) <= 200
    # Rank 0 has 3 pairs (2 forwards), rank 1 has 2 (1 forward) + a filler: the shortest pair, weight 0.
    assert [[idx for idx, w in plan if w == 0.0] for plan in plans] == [[], [[0]]]


def test_micro_batches_run_fullest_first_and_second_fullest_last() -> None:
    """So that a step's first forward and last backward are full-sized, and the fillers that even
    out the ranks come before the last."""
    lengths = [90, 80, 70, 60, 50, 40, 30, 20, 15, 10, 5, 5]
    batch = list(range(len(lengths)))
    plans = [plan_micro_batches(batch, lengths, rank=r, world_size=2, token_budget=100) for r in range(2)]
    assert len(plans[0]) == len(plans[1]) >= 3
    for plan in plans:
        sizes = [sum(lengths[i] for i in idx) if w else 0 for idx, w in plan]
        real = [n for n in sizes if n]
        assert sizes[0] == max(real) and sizes[-1] == sorted(real)[-2]
        assert sizes[1:-1] == sorted(sizes[1:-1], reverse=True)  # then fullest first, fillers after


def test_collate_interleaves_chosen_and_rejected() -> None:
    from rewardkit.train.data import TokenPairs

    tp = TokenPairs(chosen=[[1, 2], [3]], rejected=[[4], [5, 6, 7]], strength=[2.0, 1.0])
    mb = collate(tp, [1, 0], 1.0, pad_token_id=None)
    assert mb.packed.input_ids.tolist() == [3, 5, 6, 7, 1, 2, 4]
    assert mb.packed.cu_seqlens.tolist() == [0, 1, 4, 6, 7]
    assert mb.strength.tolist() == [1.0, 2.0]


def test_hub_helpsteer3_and_helpsteer2(monkeypatch: pytest.MonkeyPatch) -> None:
    """Hub ids map to the right dataset config / files and splits (load_dataset faked: no network)."""
    import datasets

    calls = []
    hs3 = [{**HS3, "overall_preference": 1, "domain": "code"}, {**HS3, "overall_preference": 0}]
    hs2 = [
        {"split": "train", "prompt": "p", "response_1": "a", "response_2": "b", "preference_strength": -3},
        {"split": "val", "prompt": "p", "response_1": "c", "response_2": "d", "preference_strength": 2},
    ]

    def fake_load(repo: str, **kw):
        calls.append((repo, kw))
        return datasets.Dataset.from_list(hs3 if repo == "nvidia/HelpSteer3" else hs2)

    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    d3 = load_pairs("nvidia/HelpSteer3", split="validation")
    assert calls[-1] == ("nvidia/HelpSteer3", {"split": "validation", "name": "preference"})
    assert d3.helpsteer and d3.ties == 1 and d3.pairs[0].chosen.messages[-1].content == "B"
    d2 = load_pairs("nvidia/HelpSteer2", split="validation")
    assert calls[-1] == ("nvidia/HelpSteer2", {"split": "train", "data_dir": "preference"})
    assert [p.chosen.messages[-1].content for p in d2.pairs] == ["d"]  # only the "val" rows
