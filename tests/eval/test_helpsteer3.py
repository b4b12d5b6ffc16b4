"""HelpSteer3's reader: the hub's ``preference/validation.jsonl.gz``."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from rewardkit.errors import RewardkitError
from rewardkit.eval.base import EvalOptions
from rewardkit.eval.helpsteer3 import HelpSteer3

from .files import write_jsonl

OPTS = EvalOptions()


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
    assert HelpSteer3().scores_of([0.5, 1.5]) == {"reward_1": 0.5, "reward_2": 1.5}


def test_helpsteer3_directory_without_validation(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "hs" / "preference" / "train.jsonl", [hs_record(0, 1)])
    with pytest.raises(RewardkitError, match="no HelpSteer3 validation file found"):
        HelpSteer3().load(tmp_path / "hs", OPTS)
