"""End to end: ``rewardkit eval`` on every benchmark with the tiny model, ``--scores``, ``report``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rewardkit.api import RewardModel
from rewardkit.cli import main
from rewardkit.data.conversation import Conversation

from .files import read_jsonl, write_jsonl

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
                "reward_chosen": [s(r["prompt"], x) for x in r["chosen"]],
                "reward_rejected": [s(r["prompt"], x) for x in r["rejected"]],
            }
            for d, r in zip(doms, RM_RECORDS, strict=True)
        ]
    elif bench == "judgebench":
        rows = [
            {
                "pair_id": r["pair_id"],
                "source": r["source"],
                "label": r["label"],
                "reward_A": s(r["question"], r["response_A"]),
                "reward_B": s(r["question"], r["response_B"]),
            }
            for r in JB_RECORDS
        ]
    elif bench == "helpsteer3":
        rows = [
            {
                "id": i,
                "domain": r["domain"],
                "overall_preference": r["overall_preference"],
                "reward_1": s(r["context"], r["response1"]),
                "reward_2": s(r["context"], r["response2"]),
            }
            for i, r in enumerate(HS_RECORDS)
        ]
    else:
        rows = [
            {
                "id": r["id"],
                "subset": r["subset"],
                "reward_chosen": s(r["prompt"], r["chosen"]),
                "reward_rejected": s(r["prompt"], r["rejected"]),
            }
            for r in RB_RECORDS
        ]
    rewards = rm.score(convs)
    for row in rows:
        for k in row:
            if k.startswith("reward_"):
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
    header = "| Model | " + " | ".join(c.replace("|", "\\|") for c in report["columns"]) + " |"
    assert header in printed and header in (out / "report.md").read_text()

    # --scores recomputes the same metrics from the score file alone.
    again = tmp_path / "again"
    assert main(["eval", bench, "--scores", str(out / "scores.jsonl"), "-o", str(again), "--no-plots"]) == 0
    rep2 = json.loads((again / "report.json").read_text())
    assert rep2["table"] == report["table"] and rep2["counts"] == report["counts"]
    assert rep2["spec"] == report["spec"] and rep2["label"] == report["label"]
    assert rep2["scoring"] is None


def test_rm_bench_report_names_missing_domains(
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


def table_cells(line: str) -> list[str]:
    """The cells of a markdown table row (``\\|`` is a pipe inside a cell)."""
    return [c.strip() for c in line.replace("\\|", "\0").strip().strip("|").split("|")]


def test_helpsteer3_report_table_one_cell_per_column_and_missing_domain_marked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = [
        {"id": i, "domain": d, "overall_preference": p, "reward_1": 0.0, "reward_2": 1.0}
        for i, (d, p) in enumerate([("general", 2), ("code", -1), ("stem", 3)])
    ]
    scores = write_jsonl(tmp_path / "scores.jsonl", rows)
    assert (
        main(["eval", "helpsteer3", "--scores", str(scores), "-o", str(tmp_path / "hs"), "--no-plots"]) == 0
    )
    printed = capsys.readouterr().out
    md = (tmp_path / "hs" / "report.md").read_text()
    assert md == printed
    header, rule, row = md.splitlines()[2:5]
    cols = ["Model", "General", "STEM", "Code", "Multilingual", "|1|", "|2|", "|3|", "Overall"]
    assert [c.replace("\0", "|") for c in table_cells(header)] == cols
    assert len(table_cells(rule)) == len(table_cells(row)) == len(cols)
    assert table_cells(row)[-1] == "66.7†" and table_cells(row)[4] == "—"  # no multilingual pairs
    assert "HelpSteer3 domain(s) multilingual have no pairs" in md


def test_eval_pairs_file_grouped(
    tiny_model_dir: Path, tiny_rm: RewardModel, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    records = [
        {
            "id": f"r{i}",
            "prompt": f"What is {i}+{i}?",
            "chosen": f"{2 * i}",
            "rejected": f"{2 * i + 1}",
            "topic": t,
        }
        for i, t in enumerate(["math", "math", "trivia", "math", "trivia"])
    ]
    f = write_jsonl(tmp_path / "mine.jsonl", records)
    out = tmp_path / "run"
    argv = ["eval", "pairs", str(f), "--group-by", "topic", "--model", str(tiny_model_dir), "--device", "cpu"]
    assert main([*argv, "-o", str(out), "--no-plots", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    # Scored through the same path as rewardkit score: the rewards of the records' conversations.
    convs = [
        c
        for r in records
        for c in (
            Conversation.from_prompt(r["prompt"], r["chosen"]),
            Conversation.from_prompt(r["prompt"], r["rejected"]),
        )
    ]
    want = tiny_rm.score(convs)
    rows = read_jsonl(out / "scores.jsonl")
    assert [r["id"] for r in rows] == ["r0", "r1", "r2", "r3", "r4"]
    assert [r["group"] for r in rows] == [r["topic"] for r in records]
    got = [x for r in rows for x in (r["reward_chosen"], r["reward_rejected"])]
    assert got == pytest.approx(want, rel=1e-5, abs=1e-5)
    right = [want[2 * i] > want[2 * i + 1] for i in range(5)]
    report = json.loads((out / "report.json").read_text())
    assert report["columns"] == ["math", "trivia", "Overall"]
    assert report["table"]["math"] == pytest.approx(100 * sum(right[i] for i in (0, 1, 3)) / 3)
    assert report["table"]["trivia"] == pytest.approx(100 * (right[2] + right[4]) / 2)
    assert report["table"]["Overall"] == pytest.approx(100 * sum(right) / 5)
    assert "| Model | math | trivia | Overall |" in printed
    # The score file recomputes the same numbers.
    assert main(["eval", "pairs", "--scores", str(out / "scores.jsonl")]) == 0
    assert capsys.readouterr().out.count("| Model | math | trivia | Overall |") == 1
    # Wrong uses of the command say what to do.
    assert main(["eval", "pairs", "--model", str(tiny_model_dir)]) == 2
    assert "needs the pairs file" in capsys.readouterr().err
    assert main(["eval", "judgebench", str(f)]) == 2
    assert "reads its data with --data" in capsys.readouterr().err
    assert main(["eval", "judgebench", "--scores", str(out / "scores.jsonl"), "--group-by", "topic"]) == 2
    assert "--group-by is for rewardkit eval pairs" in capsys.readouterr().err


def test_eval_refuses_an_existing_run_unless_overwrite(
    data: dict[str, Path], tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    assert run_eval("judgebench", data["judgebench"], out, tiny_model_dir, "--no-plots") == 0
    before = (out / "scores.jsonl").read_bytes()
    capsys.readouterr()
    # Refused before the model loads: a model that does not exist is never reached.
    assert run_eval("judgebench", data["judgebench"], out, tmp_path / "no-model") == 2
    err = capsys.readouterr().err
    assert f"-o {out} already holds an evaluation run (report.json, scores.jsonl)" in err
    assert "--overwrite" in err and (out / "scores.jsonl").read_bytes() == before
    again = ["eval", "judgebench", "--scores", str(out / "scores.jsonl"), "-o", str(out), "--no-plots"]
    assert main(again) == 2
    assert main([*again, "--overwrite", "--label", "relabelled"]) == 0
    assert json.loads((out / "report.json").read_text())["label"] == "relabelled"
    assert (out / "scores.jsonl").read_bytes() == before  # recomputing never rewrites the scores
    assert run_eval("judgebench", data["judgebench"], out, tiny_model_dir, "--no-plots", "--overwrite") == 0


def test_rmbench_spelling_is_an_alias(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows = [{"id": "chat/1", "domain": "chat", "scores_chosen": [1, 2, 3], "scores_rejected": [0, 0, 0]}]
    scores = write_jsonl(tmp_path / "old-scores.jsonl", rows)  # an older file: old field names
    assert main(["eval", "rmbench", "--scores", str(scores), "-o", str(tmp_path / "r"), "--no-plots"]) == 0
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    assert report["bench"] == "rm-bench" and report["table"]["Chat"] == pytest.approx(100.0)
    with pytest.raises(SystemExit):
        main(["eval", "rm_bench", "--scores", str(scores)])
    assert "choose one of rm-bench, judgebench, helpsteer3, rewardbench, pairs" in capsys.readouterr().err


def test_command_knows_every_benchmark_without_importing_them() -> None:
    from rewardkit.eval import command, run

    assert tuple(run.BENCHMARKS) == command.BENCH_NAMES and command.BENCH_ALIASES == run.ALIASES
