"""What every benchmark shares: options, score-row validation, the hub reader."""

from __future__ import annotations

import sys
import types

import pytest

from rewardkit.errors import ConfigError, InputError, RewardkitError
from rewardkit.eval.base import EvalOptions, listed
from rewardkit.eval.helpsteer3 import HelpSteer3
from rewardkit.eval.judgebench import JudgeBench
from rewardkit.eval.rm_bench import RMBench

from .test_judgebench import jb_record


@pytest.mark.parametrize(
    ("kw", "flag"),
    [
        ({"difficulty_agg": "mean"}, "--difficulty-agg"),
        ({"split": "gemini"}, "--split"),
        ({"limit": 0}, "--limit"),
        ({"group_by": " "}, "--group-by"),
    ],
)
def test_options_name_the_flag(kw: dict, flag: str) -> None:
    with pytest.raises(ConfigError, match=flag):
        EvalOptions(**kw)


def test_score_rows_under_old_field_names_are_read_as_today() -> None:
    old = {"pair_id": "p", "source": "livecodebench", "label": "A>B", "score_A": 1, "score_B": 2.5}
    new = {"pair_id": "p", "source": "livecodebench", "label": "A>B", "reward_A": 1.0, "reward_B": 2.5}
    assert JudgeBench().check_row(old, source="s.jsonl", line=1) == new
    assert JudgeBench().check_row(new, source="s.jsonl", line=1) == new
    old_rm = {"id": "chat/1", "domain": "chat", "scores_chosen": [1, 2, 3], "scores_rejected": [0, 0, 0]}
    assert RMBench().check_row(old_rm, source="s.jsonl", line=1)["reward_chosen"] == [1.0, 2.0, 3.0]
    with pytest.raises(InputError) as e:
        HelpSteer3().check_row({"id": 0, "domain": "code", "overall_preference": 1}, source="s", line=4)
    assert e.value.field == "reward_1" and "reward_1, reward_2" in e.value.message


def test_listed_counts_what_it_leaves_out() -> None:
    assert listed(["a", "b"]) == "\n  a\n  b"
    text = listed([str(i) for i in range(25)])
    assert text.count("\n  ") == 21 and text.endswith("... and 5 more")


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
    assert loaded.layout == "hub"
    with pytest.raises(RewardkitError, match=r"cannot load nvidia/HelpSteer3 .*offline.*--data PATH"):
        HelpSteer3().load(None, EvalOptions())
    assert calls[-1] == ("nvidia/HelpSteer3", "preference", "validation")
