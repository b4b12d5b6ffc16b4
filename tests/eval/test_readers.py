"""Benchmark readers for the hub and the original repositories' layouts, and score-file rows."""

from __future__ import annotations

import gzip
import json
import logging
import sys
import types
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from rewardkit.errors import InputError, RewardkitError
from rewardkit.eval.base import EvalOptions
from rewardkit.eval.helpsteer3 import HelpSteer3
from rewardkit.eval.judgebench import JudgeBench
from rewardkit.eval.rewardbench import RewardBench
from rewardkit.eval.rmbench import RMBench
from rewardkit.eval.run import read_scores

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


def write_json(path: Path, obj: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj), encoding="utf-8")
    return path


def test_rmbench_original_and_hub_layouts_agree(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
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


def test_rmbench_errors_name_file_record_and_field(tmp_path: Path) -> None:
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


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


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


def hs_record(i: int, pref: int, domain: str = "general") -> dict:
    return {
        "domain": domain,
        "language": "english",
        "context": [
            {"role": "user", "content": f"hi {i}"},
            {"role": "assistant", "content": "hello"},
            {"role": "user", "content": "explain"},
        ],
        "response1": f"r1-{i}",
        "response2": f"r2-{i}",
        "overall_preference": pref,
    }


def test_helpsteer3_hub_layout_gz(tmp_path: Path) -> None:
    d = tmp_path / "HelpSteer3" / "preference"
    d.mkdir(parents=True)
    with gzip.open(d / "validation.jsonl.gz", "wt", encoding="utf-8") as f:
        f.writelines(json.dumps(hs_record(i, p)) + "\n" for i, p in enumerate([-2, 0, 3]))
    write_jsonl(d / "train.jsonl", [hs_record(9, 1)])  # never read
    loaded = HelpSteer3().load(tmp_path / "HelpSteer3", OPTS)
    assert [i.meta for i in loaded.items] == [
        {"id": 0, "domain": "general", "overall_preference": -2.0},
        {"id": 1, "domain": "general", "overall_preference": 0.0},
        {"id": 2, "domain": "general", "overall_preference": 3.0},
    ]
    conv1, conv2 = loaded.items[0].conversations
    assert len(conv1) == 4 and conv2.messages[-1].content == "r2-0" and conv1.messages[0].content == "hi 0"


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


def test_hub_reader_uses_datasets(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def load_dataset(repo: str, config: str | None = None, *, split: str) -> list[dict]:
        calls.append((repo, config, split))
        if repo == "ScalerLab/JudgeBench":
            return [jb_record(1, "livebench-reasoning")]
        raise ConnectionError("offline")

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    loaded = JudgeBench().load(None, EvalOptions(split="claude"))
    assert calls == [("ScalerLab/JudgeBench", None, "claude")]
    assert loaded.source == "hf:ScalerLab/JudgeBench:claude" and len(loaded.items) == 1
    with pytest.raises(RewardkitError, match=r"cannot load nvidia/HelpSteer3 .*offline.*--data PATH"):
        HelpSteer3().load(None, OPTS)
    assert calls[-1] == ("nvidia/HelpSteer3", "preference", "validation")


def test_score_file_rows_are_validated(tmp_path: Path) -> None:
    f = write_jsonl(
        tmp_path / "s.jsonl",
        [
            {"id": "chat/1", "domain": "chat", "scores_chosen": [1, 2, 3], "scores_rejected": [0, 0, 0]},
            {"id": "chat/2", "domain": "chat", "scores_chosen": [1, 2], "scores_rejected": [0, 0, 0]},
            {"id": "chat/3", "domain": "chat", "scores_chosen": [1, 2, 3]},
        ],
    )
    with pytest.raises(RewardkitError) as e:
        read_scores(RMBench(), f)
    msg = str(e.value)
    assert "2 invalid row(s)" in msg
    assert f"{f}:2: field 'scores_chosen': expected a list of 3 numbers" in msg
    assert f"{f}:3: field 'scores_rejected': missing" in msg


@pytest.mark.skipif(not (SHARED_DATA / "rm-bench").is_dir(), reason="../shared/data not available")
def test_real_files_read() -> None:
    rm = RMBench().load(SHARED_DATA / "rm-bench", OPTS)
    assert len(rm.items) == 129 + 228 + 284 + 157
    doms = {d: sum(i.meta["domain"] == d for i in rm.items) for d in ("chat", "code", "math")}
    assert doms == {"chat": 129, "code": 228, "math": 0}
    jb = JudgeBench().load(SHARED_DATA / "judgebench", OPTS)
    assert len(jb.items) == 350
    from rewardkit.eval.metrics import judgebench_category

    cats = [judgebench_category(i.meta["source"]) for i in jb.items]
    assert {c: cats.count(c) for c in set(cats)} == {
        "Knowledge": 154,
        "Reasoning": 98,
        "Math": 56,
        "Code": 42,
    }
    assert len(JudgeBench().load(SHARED_DATA / "judgebench", EvalOptions(split="claude")).items) == 270


@pytest.mark.parametrize(
    ("kw", "flag"),
    [
        ({"difficulty_agg": "mean"}, "--difficulty-agg"),
        ({"split": "gemini"}, "--split"),
        ({"limit": 0}, "--limit"),
    ],
)
def test_options_name_the_flag(kw: dict, flag: str) -> None:
    from rewardkit.errors import ConfigError

    with pytest.raises(ConfigError, match=flag):
        EvalOptions(**kw)
