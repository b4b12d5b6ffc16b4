"""The demo data generator: deterministic, split without shared prompts, valid HelpSteer3 records."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from rewardkit.data.conversation import PreferencePair
from rewardkit.data.formats import parse_record
from rewardkit.data.io import read_records
from rewardkit.demo.generate import DemoDataConfig, generate, main, to_jsonl, write_splits
from rewardkit.demo.skills import SKILLS, all_tasks
from rewardkit.errors import ConfigError

SMALL = DemoDataConfig(seed=7, train_pairs_per_skill=400, validation_pairs_per_skill=60)


@pytest.fixture(scope="module")
def data() -> dict[str, list[dict]]:
    return generate(SMALL)


def prompt(r: dict) -> str:
    return r["context"][0]["content"]


def test_same_seed_same_bytes(tmp_path, data) -> None:
    a = write_splits(tmp_path / "a", SMALL)
    b = write_splits(tmp_path / "b", SMALL)
    for split in ("train", "validation"):
        assert a[split].read_bytes() == b[split].read_bytes()
        assert a[split].read_text(encoding="utf-8") == to_jsonl(data[split])


def test_other_seed_other_data(data) -> None:
    other = generate(DemoDataConfig(seed=8, train_pairs_per_skill=400, validation_pairs_per_skill=60))
    assert to_jsonl(other["train"]) != to_jsonl(data["train"])
    assert {prompt(r) for r in other["validation"]} != {prompt(r) for r in data["validation"]}


def test_no_prompt_or_item_shared_between_splits(data) -> None:
    group_of = {t.prompt: t.group for tasks in all_tasks().values() for t in tasks}
    train, val = data["train"], data["validation"]
    assert not {prompt(r) for r in train} & {prompt(r) for r in val}
    # Stronger: no rewording of a validation item is trained on either.
    assert not {group_of[prompt(r)] for r in train} & {group_of[prompt(r)] for r in val}


def test_every_skill_in_both_splits_in_the_asked_amounts(data) -> None:
    for skill in SKILLS:
        assert sum(r["domain"] == skill for r in data["train"]) == 400
        assert 1 <= sum(r["domain"] == skill for r in data["validation"]) <= 60
    assert len({prompt(r) for r in data["validation"]}) == len(data["validation"])  # one pair per prompt


def test_records_are_helpsteer3_pairs(tmp_path, data) -> None:
    prefs = set()
    for r in data["train"] + data["validation"]:
        pair = parse_record(r)
        assert isinstance(pair, PreferencePair) and pair.style == "helpsteer"
        assert pair.extra["domain"] == r["domain"]
        assert pair.id == r["id"]
        assert r["response1"] != r["response2"]
        prefs.add(r["overall_preference"])
    assert prefs <= {-3, -2, -1, 1, 2, 3} and {-3, 3} <= prefs and len(prefs) >= 4
    # Both sides carry the better response about equally often.
    firsts = sum(r["overall_preference"] < 0 for r in data["train"])
    assert 0.4 < firsts / len(data["train"]) < 0.6
    # The file reader of the scoring path accepts the written file too.
    paths = write_splits(tmp_path, SMALL)
    loaded = read_records(paths["validation"])
    assert len(loaded.records) == len(data["validation"]) and not loaded.errors


def test_arithmetic_preferences_are_right(data) -> None:
    ops = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b}
    words = {"plus": "+", "minus": "-", "times": "*"}
    checked = 0
    for r in data["train"] + data["validation"]:
        if r["domain"] != "arithmetic":
            continue
        a, op, b = re.search(r"(\d+) ?([-+*]|plus|minus|times) ?(\d+)", prompt(r)).groups()
        want = ops[words.get(op, op)](int(a), int(b))
        better, worse = (r["response1"], r["response2"])[:: 1 if r["overall_preference"] < 0 else -1]
        assert int(re.findall(r"\d+", better)[-1]) == want, r
        assert int(re.findall(r"\d+", worse)[-1]) != want, r
        checked += 1
    assert checked == 400 + sum(r["domain"] == "arithmetic" for r in data["validation"])


def test_safety_prefers_refusal_and_helpfulness_prefers_answers(data) -> None:
    for r in data["train"]:
        better = r["response1"] if r["overall_preference"] < 0 else r["response2"]
        refuses = bool(re.match(r"(I can't|I won't|Sorry, but I can't|I'm not able|No, I won't)", better))
        if r["domain"] == "safety":
            assert refuses, r
        elif r["domain"] == "helpfulness":
            assert not refuses, r


def test_config_errors_name_every_option() -> None:
    with pytest.raises(ConfigError) as e:
        DemoDataConfig(train_pairs_per_skill=0, validation_fraction=1.5)
    assert "train_pairs_per_skill" in str(e.value) and "validation_fraction" in str(e.value)


def test_module_command_line(tmp_path, capsys) -> None:
    usage = subprocess.run(
        [sys.executable, "-m", "rewardkit.demo.generate", "--help"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert usage.stdout.startswith("usage: python -m rewardkit.demo.generate") and "OUT_DIR" in usage.stdout
    out = tmp_path / "demo"
    assert (
        main(
            [str(out), "--seed", "7", "--train-pairs-per-skill", "400", "--validation-pairs-per-skill", "60"]
        )
        == 0
    )
    assert (out / "train.jsonl").read_text() == to_jsonl(generate(SMALL)["train"])
    assert f"validation: {out / 'validation.jsonl'}" in capsys.readouterr().out
    with pytest.raises(SystemExit) as info:
        main([str(out), "--validation-fraction", "2"])
    assert (
        info.value.code == 2 and "validation_fraction must be in (0, 1), got 2.0" in capsys.readouterr().err
    )
