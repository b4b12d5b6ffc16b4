"""JudgeBench's reader: the original repository's and the hub's layouts, both splits."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from rewardkit.errors import InputError, RewardkitError
from rewardkit.eval.base import EvalOptions
from rewardkit.eval.judgebench import JudgeBench
from rewardkit.eval.metrics import judgebench_category

from .files import write_jsonl

SHARED_DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
OPTS = EvalOptions()


def jb_record(i: int, source: str, label: str = "A>B") -> dict:
    return {
        "pair_id": f"p{i}",
        "original_id": i,
        "source": source,
        "question": f"q{i}",
        "response_model": "gpt-4o-2024-05-13",
        "response_A": f"a{i}",
        "response_B": f"b{i}",
        "label": label,
    }


def test_judgebench_layouts_and_split(tmp_path: Path) -> None:
    gpt = [jb_record(1, "mmlu-pro-law"), jb_record(2, "livecodebench", "B>A")]
    claude = [jb_record(9, "livebench-math")]
    repo = tmp_path / "repo" / "data"
    write_jsonl(repo / "dataset=judgebench,response_model=gpt-4o-2024-05-13.jsonl", gpt)
    write_jsonl(repo / "dataset=judgebench,response_model=claude-3-5-sonnet-20240620.jsonl", claude)
    hub = tmp_path / "hub" / "data"
    hub.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(gpt), hub / "gpt-00000-of-00001.parquet")
    pq.write_table(pa.Table.from_pylist(claude), hub / "claude-00000-of-00001.parquet")

    a = JudgeBench().load(tmp_path / "repo", OPTS)
    b = JudgeBench().load(tmp_path / "hub", OPTS)
    assert (a.layout, b.layout) == ("original", "hub")
    assert (
        [i.meta for i in a.items]
        == [i.meta for i in b.items]
        == [
            {"pair_id": "p1", "source": "mmlu-pro-law", "label": "A>B"},
            {"pair_id": "p2", "source": "livecodebench", "label": "B>A"},
        ]
    )
    assert a.items[1].conversations[1].to_dicts()[-1] == {"role": "assistant", "content": "b2"}
    c = JudgeBench().load(tmp_path / "hub", EvalOptions(split="claude"))
    assert [i.meta["pair_id"] for i in c.items] == ["p9"]
    bad = write_jsonl(tmp_path / "bad.jsonl", [jb_record(1, "x"), {**jb_record(2, "x"), "label": "A=B"}])
    with pytest.raises(InputError) as e:
        JudgeBench().load(bad, OPTS)
    assert e.value.source == f"{bad}:2" and e.value.field == "label"


def test_judgebench_missing_split_and_repeated_pairs(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "only-gpt" / "gpt-4o-2024-05-13.jsonl", [jb_record(1, "livecodebench")])
    with pytest.raises(RewardkitError, match=r"no JudgeBench 'claude' split found.*claude-\*\.parquet"):
        JudgeBench().load(tmp_path / "only-gpt", EvalOptions(split="claude"))
    twice = write_jsonl(tmp_path / "twice.jsonl", [jb_record(1, "livecodebench")] * 2)
    with pytest.raises(RewardkitError, match="pair_id values repeat"):
        JudgeBench().load(twice, OPTS)


@pytest.mark.skipif(not (SHARED_DATA / "judgebench").is_dir(), reason="../shared/data not available")
def test_real_judgebench_files_read() -> None:
    jb = JudgeBench().load(SHARED_DATA / "judgebench", OPTS)
    assert len(jb.items) == 350
    cats = [judgebench_category(i.meta["source"]) for i in jb.items]
    assert {c: cats.count(c) for c in set(cats)} == {
        "Knowledge": 154,
        "Reasoning": 98,
        "Math": 56,
        "Code": 42,
    }
    assert len(JudgeBench().load(SHARED_DATA / "judgebench", EvalOptions(split="claude")).items) == 270
