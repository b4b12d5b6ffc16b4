"""Library workflows: `evaluate` with a model, `recompute` from a score file, score files and
run directories."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rewardkit.api import RewardModel
from rewardkit.errors import RewardkitError
from rewardkit.eval.base import EvalOptions
from rewardkit.eval.run import check_output_dir, evaluate, get_benchmark, read_scores, recompute

from .files import read_jsonl, write_jsonl
from .test_judgebench import jb_record


def test_score_file_rows_are_validated(tmp_path: Path) -> None:
    f = write_jsonl(
        tmp_path / "s.jsonl",
        [
            {"id": "chat/1", "domain": "chat", "reward_chosen": [1, 2, 3], "reward_rejected": [0, 0, 0]},
            {"id": "chat/2", "domain": "chat", "reward_chosen": [1, 2], "reward_rejected": [0, 0, 0]},
            {"id": "chat/3", "domain": "chat", "reward_chosen": [1, 2, 3]},
        ],
    )
    with pytest.raises(RewardkitError) as e:
        read_scores(get_benchmark("rm-bench"), f)
    msg = str(e.value)
    assert "2 invalid row(s)" in msg
    assert f"{f}:2: field 'reward_chosen': expected a list of 3 numbers" in msg
    assert f"{f}:3: field 'reward_rejected': missing" in msg


def test_get_benchmark_names_and_alias() -> None:
    assert get_benchmark("rmbench") is get_benchmark("rm-bench")
    assert get_benchmark("pairs").name == "pairs"
    with pytest.raises(RewardkitError, match="unknown benchmark 'rm_bench'; choose one of rm-bench"):
        get_benchmark("rm_bench")


def test_evaluate_from_python_then_recompute(tiny_rm: RewardModel, tmp_path: Path) -> None:
    bench = get_benchmark("judgebench")
    data = write_jsonl(
        tmp_path / "jb.jsonl", [jb_record(i, s) for i, s in enumerate(["livecodebench", "mmlu-pro-law"])]
    )
    loaded = bench.load(data, EvalOptions())
    run = evaluate(tiny_rm, bench, loaded, tmp_path / "run", label="tiny", plots=False)
    assert {p.name for p in run.files} == {"report.json", "report.md"}
    rows = read_jsonl(tmp_path / "run" / "scores.jsonl")
    convs = [c for it in loaded.items for c in it.conversations]
    want = tiny_rm.score(convs)
    assert [x for r in rows for x in (r["reward_A"], r["reward_B"])] == pytest.approx(
        want, rel=1e-5, abs=1e-5
    )
    assert run.report["label"] == "tiny" and run.report["counts"]["pairs"] == 2

    # The same metrics from the score file alone; nothing is written without an output_dir.
    again = recompute(bench, tmp_path / "run" / "scores.jsonl")
    assert again.files == [] and again.report["table"] == run.report["table"]
    assert again.report["label"] == "tiny" and again.report["spec"] == run.report["spec"]

    # A run directory is not replaced unless asked, and no file of the old run outlives it.
    with pytest.raises(RewardkitError, match=r"already holds an evaluation run.*--overwrite"):
        evaluate(tiny_rm, bench, loaded, tmp_path / "run", plots=False)
    (tmp_path / "run" / "judgebench.png").write_bytes(b"old plot")
    evaluate(tiny_rm, bench, loaded, tmp_path / "run", plots=False, overwrite=True)
    assert not (tmp_path / "run" / "judgebench.png").exists()


def test_recompute_reads_score_files_with_old_field_names(tmp_path: Path) -> None:
    old = write_jsonl(
        tmp_path / "old.jsonl",
        [
            {"id": 0, "domain": "code", "overall_preference": -1, "score_1": 2.0, "score_2": 1.0},
            {"id": 1, "domain": "code", "overall_preference": 2, "score_1": 2.0, "score_2": 1.0},
        ],
    )
    (tmp_path / "old.jsonl.meta.json").write_text(json.dumps({"bench": "helpsteer3", "label": "m"}))
    run = recompute(get_benchmark("helpsteer3"), old, tmp_path / "out", options=EvalOptions(), plots=False)
    assert run.report["table"]["Code"] == pytest.approx(50.0) and run.report["label"] == "m"
    assert (tmp_path / "out" / "report.md").is_file()
    with pytest.raises(RewardkitError, match="holds helpsteer3 scores, not judgebench"):
        recompute(get_benchmark("judgebench"), old)


def test_check_output_dir(tmp_path: Path) -> None:
    assert check_output_dir(tmp_path / "new") == tmp_path / "new"
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    assert check_output_dir(tmp_path / "other") == tmp_path / "other"  # not a run: fine
    (tmp_path / "file").write_text("x")
    with pytest.raises(RewardkitError, match="is a file"):
        check_output_dir(tmp_path / "file", overwrite=True)
