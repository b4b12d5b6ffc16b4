"""End to end: ``rewardkit eval`` on every benchmark with the tiny model, ``--scores``, ``report``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rewardkit.api import RewardModel
from rewardkit.cli import main
from rewardkit.data.conversation import Conversation

RM_RECORDS = [
    {
        "id": i,
        "prompt": f"Name a prime number above {i}.",
        "chosen": [f"{p}", f"{p} is prime, it has no divisors.", f"**{p}** is prime."],
        "rejected": [f"{p + 1}", f"{p + 1} is prime, it has no divisors.", f"**{p + 1}** is prime."],
    }
    for i, p in ((1, 3), (4, 5), (6, 7))
]
JB_RECORDS = [
    {
        "pair_id": f"p{i}",
        "source": src,
        "question": f"What is {i}+{i}?",
        "response_A": f"{2 * i}",
        "response_B": f"{2 * i + 1}",
        "label": "A>B" if i % 2 else "B>A",
        "response_model": "gpt-4o-2024-05-13",
    }
    for i, src in enumerate(
        ["mmlu-pro-law", "livebench-reasoning", "livebench-math", "livecodebench", "mmlu-pro-x"]
    )
]
LONG = "context " * 40  # 320 bytes: the byte tokenizer gives ~1 token per byte
HS_RECORDS = [
    {
        "domain": dom,
        "language": "english",
        "response1": f"answer {i}",
        "response2": f"other answer {i}",
        "overall_preference": pref,
        "context": (
            [{"role": "user", "content": LONG}, {"role": "assistant", "content": "ok"}] if i < 2 else []
        )
        + [{"role": "user", "content": f"question {i}"}],
    }
    for i, (dom, pref) in enumerate([("general", -2), ("code", 1), ("stem", 0), ("multilingual", 3)])
]
RB_RECORDS = [
    {"id": 10 + i, "subset": sub, "prompt": f"prompt {i}", "chosen": f"good {i}", "rejected": f"bad {i}"}
    for i, sub in enumerate(["alpacaeval-easy", "mt-bench-hard", "donotanswer", "hep-go", "math-prm"])
]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("bench-data")
    rm_dir = d / "rm-bench"
    rm_dir.mkdir()
    (rm_dir / "chat_filtered.json").write_text(json.dumps(RM_RECORDS[:2]), encoding="utf-8")
    (rm_dir / "code_filtered.json").write_text(json.dumps(RM_RECORDS[2:]), encoding="utf-8")
    return {
        "rm-bench": rm_dir,
        "judgebench": write_jsonl(d / "gpt-4o-2024-05-13.jsonl", JB_RECORDS),
        "helpsteer3": write_jsonl(d / "validation.jsonl", HS_RECORDS),
        "rewardbench": write_jsonl(d / "filtered.jsonl", RB_RECORDS),
    }


def run_eval(bench: str, data: Path, out: Path, model: Path, *extra: str) -> int:
    argv = ["eval", bench, "--model", str(model), "--device", "cpu", "--data", str(data), "-o", str(out)]
    return main([*argv, "--no-progress", *extra])


def expected_rows(rm: RewardModel, bench: str) -> list[dict]:
    """What each benchmark's rows must hold: the rewards of the documented conversations."""
    convs: list[Conversation] = []

    def s(prompt: object, response: str) -> int:
        """Queues [prompt..., assistant response]; returns where its reward will be."""
        msgs = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)  # type: ignore[arg-type]
        convs.append(Conversation.of([*msgs, {"role": "assistant", "content": response}]))
        return len(convs) - 1

    if bench == "rm-bench":
        doms = ["chat", "chat", "code"]
        rows = [
            {
                "id": f"{d}/{r['id']}",
                "domain": d,
                "scores_chosen": [s(r["prompt"], x) for x in r["chosen"]],
                "scores_rejected": [s(r["prompt"], x) for x in r["rejected"]],
            }
            for d, r in zip(doms, RM_RECORDS, strict=True)
        ]
    elif bench == "judgebench":
        rows = [
            {
                "pair_id": r["pair_id"],
                "source": r["source"],
                "label": r["label"],
                "score_A": s(r["question"], r["response_A"]),
                "score_B": s(r["question"], r["response_B"]),
            }
            for r in JB_RECORDS
        ]
    elif bench == "helpsteer3":
        rows = [
            {
                "id": i,
                "domain": r["domain"],
                "overall_preference": r["overall_preference"],
                "score_1": s(r["context"], r["response1"]),
                "score_2": s(r["context"], r["response2"]),
            }
            for i, r in enumerate(HS_RECORDS)
        ]
    else:
        rows = [
            {
                "id": r["id"],
                "subset": r["subset"],
                "score_chosen": s(r["prompt"], r["chosen"]),
                "score_rejected": s(r["prompt"], r["rejected"]),
            }
            for r in RB_RECORDS
        ]
    rewards = rm.score(convs)
    score_keys = (
        "scores_chosen",
        "scores_rejected",
        "score_A",
        "score_B",
        "score_1",
        "score_2",
        "score_chosen",
        "score_rejected",
    )
    for row in rows:
        for k in score_keys:
            if k in row:
                row[k] = [rewards[i] for i in row[k]] if isinstance(row[k], list) else rewards[row[k]]
    return rows


def assert_rows_match(got: list[dict], want: list[dict]) -> None:
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert g.keys() == w.keys()
        for k, v in w.items():
            assert g[k] == (pytest.approx(v, rel=1e-5, abs=1e-5) if not isinstance(v, str) else v), k


@pytest.mark.parametrize("bench", ["rm-bench", "judgebench", "helpsteer3", "rewardbench"])
def test_eval_every_benchmark_then_scores_round_trip(
    bench: str,
    data: dict[str, Path],
    tiny_model_dir: Path,
    tiny_rm: RewardModel,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "run"
    plots = bench in ("rm-bench", "judgebench")  # matplotlib is slow on a busy CPU; two benches suffice
    assert run_eval(bench, data[bench], out, tiny_model_dir, *([] if plots else ["--no-plots"])) == 0
    printed = capsys.readouterr().out
    report = json.loads((out / "report.json").read_text())
    assert report["bench"] == bench and report["spec"] == tiny_rm.spec.to_dict() | {
        "model": str(tiny_model_dir)
    }
    assert report["scoring"]["skipped_items"] == 0
    assert report["scoring"]["conversations"] == (18 if bench == "rm-bench" else 2 * report["data"]["items"])
    rows = [json.loads(x) for x in (out / "scores.jsonl").read_text().splitlines()]
    assert_rows_match(rows, expected_rows(tiny_rm, bench))
    assert (out / f"{bench}.png").stat().st_size > 1000 if plots else not (out / f"{bench}.png").exists()
    header = "| Model | " + " | ".join(report["columns"]) + " |"
    assert header in printed and header in (out / "report.md").read_text()

    # --scores recomputes the same metrics from the score file alone.
    again = tmp_path / "again"
    assert main(["eval", bench, "--scores", str(out / "scores.jsonl"), "-o", str(again), "--no-plots"]) == 0
    rep2 = json.loads((again / "report.json").read_text())
    assert rep2["table"] == report["table"] and rep2["counts"] == report["counts"]
    assert rep2["spec"] == report["spec"] and rep2["label"] == report["label"]
    assert rep2["scoring"] is None


def test_rmbench_report_names_missing_domains(
    data: dict[str, Path], tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "rm"
    assert run_eval("rm-bench", data["rm-bench"], out, tiny_model_dir, "--difficulty-agg", "pooled") == 0
    # The heatmap is drawn for RM-Bench only.
    printed = capsys.readouterr().out
    assert "RM-Bench domain(s) math, safety MISSING" in printed
    report = json.loads((out / "report.json").read_text())
    assert report["table"]["Math"] is None and report["marks"]["Overall"] == "†"
    assert report["details"]["difficulty_agg"] == "pooled"
    assert "| — |" in printed and (out / "rm-bench-matrix.png").is_file()
    matrices = report["details"]["matrices"]
    assert set(matrices) == {"chat", "code"} and all(len(m) == 3 for m in matrices.values())


def test_truncated_items_are_counted(data: dict[str, Path], tiny_model_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "hs"
    extra = ("--max-length", "200", "--truncation", "left")
    assert run_eval("helpsteer3", data["helpsteer3"], out, tiny_model_dir, *extra) == 0
    report = json.loads((out / "report.json").read_text())
    # Items 0 and 1 have a 320-byte first turn; dropping it makes them fit.
    assert report["scoring"]["truncated_items"] == 2
    assert report["scoring"]["truncated_conversations"] == 4
    assert report["spec"]["truncation"] == "left" and report["spec"]["max_length"] == 200
    assert report["counts"]["excluded_ties"] == 1


def test_too_long_items_fail_or_are_skipped_loudly(
    data: dict[str, Path], tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (
        run_eval("helpsteer3", data["helpsteer3"], tmp_path / "a", tiny_model_dir, "--max-length", "200") == 2
    )
    err = capsys.readouterr().err
    assert "2 of 4 helpsteer3 items cannot be scored; nothing was scored" in err
    assert "id=0, domain=general (conversation 0): conversation is" in err
    assert not (tmp_path / "a" / "scores.jsonl").exists()

    out = tmp_path / "b"
    assert (
        run_eval(
            "helpsteer3", data["helpsteer3"], out, tiny_model_dir, "--max-length", "200", "--on-error", "skip"
        )
        == 0
    )
    report = json.loads((out / "report.json").read_text())
    assert report["scoring"]["skipped_items"] == 2 and report["counts"]["rows"] == 2
    assert any("2 item(s) could not be scored" in w for w in report["warnings"])
    assert [json.loads(x)["id"] for x in (out / "skipped.jsonl").read_text().splitlines()] == [0, 1]


def test_report_side_by_side(
    data: dict[str, Path],
    tiny_model_dir: Path,
    tiny_llama_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    runs = []
    for name, model in (("qwen", tiny_model_dir), ("llama", tiny_llama_dir)):
        runs.append(tmp_path / name)
        assert run_eval("judgebench", data["judgebench"], runs[-1], model, "--label", name, "--no-plots") == 0
    runs.append(tmp_path / "rb")
    assert run_eval("rewardbench", data["rewardbench"], runs[-1], tiny_model_dir, "--no-plots") == 0
    capsys.readouterr()
    png = tmp_path / "cmp.png"
    assert main(["report", *map(str, runs), "--png", str(png)]) == 0
    text = capsys.readouterr().out
    jb = [json.loads((r / "report.json").read_text()) for r in runs[:2]]
    for rep in jb:
        t = rep["table"]
        cells = " | ".join(f"{t[c]:.1f}" if t[c] is not None else "—" for c in rep["columns"])
        assert f"| {rep['label']} | {cells} |" in text
    assert text.index("## JudgeBench") < text.index("## RewardBench")
    assert "| Model | Chat | Chat Hard | Safety | Reasoning | Score |" in text
    assert png.stat().st_size > 1000
    rb_label = json.loads((runs[2] / "report.json").read_text())["label"]
    assert rb_label == tiny_model_dir.name and f"| {rb_label} |" in text  # its label, undecorated

    # Two runs of one benchmark under one label: the directory names tell them apart.
    assert main(["report", str(runs[0]), str(runs[0])]) == 0
    assert text.count(f"| qwen ({runs[0].name}) |") == 0
    assert capsys.readouterr().out.count(f"| qwen ({runs[0].name}) |") == 2
    assert main(["report", str(tmp_path / "nope")]) == 2


def test_eval_takes_model_or_scores_not_both(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    scores = tmp_path / "scores.jsonl"
    scores.write_text("")
    assert main(["eval", "judgebench", "--model", "some/model", "--scores", str(scores)]) == 2
    assert "give either --model" in capsys.readouterr().err
