"""RM-Bench's reader: the hub's and the original repository's layouts."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from rewardkit.errors import InputError, RewardkitError
from rewardkit.eval.base import EvalOptions
from rewardkit.eval.rm_bench import RMBench

from .files import write_json

SHARED_DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
OPTS = EvalOptions()


def rm_record(i: int, **extra: object) -> dict:
    return {
        "id": i,
        "prompt": f"question {i}?",
        "chosen": [f"good {i}", f"good {i}, detailed", f"**good {i}**"],
        "rejected": [f"bad {i}", f"bad {i}, detailed", f"**bad {i}**"],
        **extra,
    }


def test_rm_bench_original_and_hub_layouts_agree(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    orig = tmp_path / "orig" / "data"
    write_json(orig / "chat_filtered.json", [rm_record(1), rm_record(2)])
    write_json(orig / "safety-refuse_filtered.json", [rm_record(1)])  # same id, other domain
    hub = [
        {**rm_record(1), "id": "chat/1", "domain": "chat"},
        {**rm_record(2), "id": "chat/2", "domain": "chat"},
        {**rm_record(1), "id": "safety-refuse/1", "domain": "safety-refuse"},
    ]
    write_json(tmp_path / "hub" / "total_dataset.json", hub)
    with caplog.at_level(logging.WARNING):
        a = RMBench().load(tmp_path / "orig", OPTS)  # the repository root: finds data/
    assert a.layout == "original"
    assert "code, math, safety-response are MISSING" in caplog.text
    b = RMBench().load(tmp_path / "hub", OPTS)
    assert b.layout == "hub"
    assert [i.meta for i in a.items] == [i.meta for i in b.items]
    assert [i.meta["id"] for i in a.items] == ["chat/1", "chat/2", "safety-refuse/1"]
    first = a.items[0].conversations
    assert len(first) == 6
    assert [c.to_dicts() for c in first[:1]] == [
        [{"role": "user", "content": "question 1?"}, {"role": "assistant", "content": "good 1"}]
    ]
    assert first[3].messages[-1].content == "bad 1"  # rejected follow the 3 chosen


def test_rm_bench_errors_name_file_record_and_field(tmp_path: Path) -> None:
    bad = rm_record(7)
    bad["rejected"] = ["only one"]
    f = write_json(tmp_path / "code_filtered.json", [rm_record(1), bad])
    with pytest.raises(InputError) as e:
        RMBench().load(f, OPTS)
    assert e.value.source == f"{f}[1]" and e.value.field == "rejected"
    empty = write_json(tmp_path / "empty" / "notes.json", []).parent
    with pytest.raises(RewardkitError, match="no RM-Bench data found"):
        RMBench().load(empty, OPTS)
    with pytest.raises(RewardkitError, match="no such file or directory"):
        RMBench().load(tmp_path / "absent", OPTS)


def test_rm_bench_rewards_in_style_order() -> None:
    assert RMBench().scores_of([1, 2, 3, 4, 5, 6]) == {
        "reward_chosen": [1, 2, 3],
        "reward_rejected": [4, 5, 6],
    }


@pytest.mark.skipif(not (SHARED_DATA / "rm-bench").is_dir(), reason="../shared/data not available")
def test_real_rm_bench_files_read() -> None:
    rm = RMBench().load(SHARED_DATA / "rm-bench", OPTS)
    assert len(rm.items) == 129 + 228 + 284 + 157
    doms = {d: sum(i.meta["domain"] == d for i in rm.items) for d in ("chat", "code", "math")}
    assert doms == {"chat": 129, "code": 228, "math": 0}
