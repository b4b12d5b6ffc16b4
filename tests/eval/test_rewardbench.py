"""RewardBench's reader: the hub's ``filtered`` split, and prior preference sets."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from rewardkit.eval.base import EvalOptions
from rewardkit.eval.rewardbench import RewardBench

from .files import write_jsonl


def test_rewardbench_parquet_layout_and_limit(tmp_path: Path) -> None:
    rows = [
        {
            "prompt": f"p{i}",
            "chosen": "c",
            "rejected": "r",
            "chosen_model": "m",
            "rejected_model": "n",
            "subset": "hep-go",
            "id": 100 + i,
        }
        for i in range(3)
    ]
    d = tmp_path / "reward-bench" / "data"
    d.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows), d / "filtered-00000-of-00001.parquet")
    pq.write_table(pa.Table.from_pylist(rows[:1]), d / "raw-00000-of-00001.parquet")
    loaded = RewardBench().load(tmp_path / "reward-bench", EvalOptions(limit=2))
    assert [i.meta for i in loaded.items] == [
        {"id": 100, "subset": "hep-go"},
        {"id": 101, "subset": "hep-go"},
    ]
    assert loaded.source == str(tmp_path / "reward-bench")


def test_prior_set_records_with_message_prompts(tmp_path: Path) -> None:
    # allenai/pref-test-sets: the prompt is a list of turns; the subset names the set.
    prompt = [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello"},
        {"role": "user", "content": "help me"},
    ]
    f = write_jsonl(
        tmp_path / "filtered.jsonl",
        [{"subset": "anthropic_hhh", "prompt": prompt, "chosen": "sure", "rejected": "no"}],
    )
    (item,) = RewardBench().load(f, EvalOptions()).items
    assert item.meta == {"id": 0, "subset": "anthropic_hhh"}
    chosen, rejected = item.conversations
    assert [m.content for m in chosen.messages] == ["hi", "hello", "help me", "sure"]
    assert rejected.messages[-1].content == "no"
