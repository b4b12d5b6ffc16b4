"""`rewardkit score`: parity with the reference, output rows, length policy, resume, errors, stdio."""

from __future__ import annotations

import json
import math
import os
import re
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from rewardkit.api import RewardModel
from rewardkit.cli import main
from rewardkit.data.conversation import Conversation
from rewardkit.data.io import read_records
from rewardkit.models.reference import reference_scores

ATOL = 1e-5  # fp32 packed vs per-conversation forward; see test_parity.py
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
U = {"role": "user", "content": "What is 1+1?"}
A = {"role": "assistant", "content": "1+1=2"}
S = {"role": "system", "content": "You are a careful grader. Answer briefly."}

RAGGED = [
    {"id": "short", "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "ok"}]},
    {"id": "sys", "messages": [S, U, A]},
    {
        "messages": [
            S,
            {"role": "user", "content": "Give me a colour. " * 6},
            {"role": "assistant", "content": "Blue, the colour of the sky over the sea on a clear day."},
            {"role": "user", "content": "Another one? Something warmer, like the sun, ünïcödé 🙂."},
            {"role": "assistant", "content": "Orange — warm, bright and cheerful. " * 5},
        ]
    },
    {"id": 7, "prompt": [U, A, {"role": "user", "content": "And 2+2?"}], "response": "2+2=4"},
    {"id": "long", "prompt": "Write a long answer. " * 10, "response": "This is a long answer. " * 12},
]


def _write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), "utf-8")
    return path


def _rows(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines()]


def _reference(rm: RewardModel, path: Path) -> list[list[float]]:
    """Reference rewards per input record (one per conversation of the record)."""
    out = []
    for _, rec in read_records(path).records:
        convs = rec.conversations() if hasattr(rec, "conversations") else (rec,)
        out.append(reference_scores(rm.model, rm.tokenizer, list(convs)))
    return out


def _score(*args: str | Path) -> int:
    return main(["score", *map(str, args), "--no-progress"])


@pytest.fixture(scope="module")
def llama_rm(tiny_llama_dir: Path) -> RewardModel:
    return RewardModel.load(tiny_llama_dir, device="cpu")


@pytest.mark.parametrize(("arch", "budget"), [("qwen2", None), ("llama", "64")])
def test_cli_rewards_match_reference(
    arch: str,
    budget: str | None,
    tmp_path: Path,
    tiny_model_dir: Path,
    tiny_llama_dir: Path,
    tiny_rm: RewardModel,
    llama_rm: RewardModel,
    capsys: pytest.CaptureFixture[str],
) -> None:
    model_dir, rm = (tiny_model_dir, tiny_rm) if arch == "qwen2" else (tiny_llama_dir, llama_rm)
    src = _write_jsonl(tmp_path / "in.jsonl", RAGGED)
    out = tmp_path / "out.jsonl"
    extra = ["--token-budget", budget] if budget else []  # 64: the long records get batches alone
    assert _score(src, "-o", out, "--model", model_dir, *extra) == 0
    rows = _rows(out)
    assert [r["id"] for r in rows] == ["short", "sys", 3, "7", "long"]  # no id: the line number
    want = [r for (r,) in _reference(rm, src)]
    assert [r["reward"] for r in rows] == pytest.approx(want, abs=ATOL)
    convs = [rec for _, rec in read_records(src).records]
    for row, conv in zip(rows, convs, strict=True):
        ids = rm.tokenizer.apply_chat_template(conv.to_dicts(), tokenize=True)["input_ids"]
        assert (row["num_tokens"], row["truncated_turns"], row["truncated_tokens"]) == (len(ids), 0, 0)
    err = capsys.readouterr().err
    assert f"model={model_dir} device=cpu dtype=float32 template={rm.spec.chat_template_sha256}" in err
    assert "scored 5 rows" in err
    meta = json.loads((tmp_path / "out.jsonl.meta.json").read_text(encoding="utf-8"))
    assert meta["spec"] == rm.spec.to_dict() | {"model": str(model_dir)}


def test_pairs_output(tmp_path: Path, tiny_model_dir: Path, tiny_rm: RewardModel) -> None:
    out = tmp_path / "pairs.out.jsonl"
    assert _score(EXAMPLES / "pairs.jsonl", "-o", out, "--model", tiny_model_dir) == 0
    rows = _rows(out)
    assert [r["id"] for r in rows] == ["p1", "p2"]
    for row, (chosen, rejected) in zip(rows, _reference(tiny_rm, EXAMPLES / "pairs.jsonl"), strict=True):
        assert row["reward_chosen"] == pytest.approx(chosen, abs=ATOL)
        assert row["reward_rejected"] == pytest.approx(rejected, abs=ATOL)
        p = 1 / (1 + math.exp(row["reward_rejected"] - row["reward_chosen"]))  # σ(r_chosen − r_rejected)
        assert row["p_first_better"] == pytest.approx(p, rel=1e-12)
        assert row["truncated_turns"] == [0, 0] and len(row["num_tokens"]) == 2


def test_helpsteer3_output(tmp_path: Path, tiny_model_dir: Path, tiny_rm: RewardModel) -> None:
    src = tmp_path / "hs3.parquet"  # Parquet in, through the CLI
    pq.write_table(pa.Table.from_pylist(_rows(EXAMPLES / "helpsteer3.jsonl")), src)
    out = tmp_path / "hs3.out.jsonl"
    assert _score(src, "-o", out, "--model", tiny_model_dir) == 0
    rows = _rows(out)
    assert [r["id"] for r in rows] == ["hs-1", "hs-2", "hs-3"]
    for row, (r1, r2) in zip(rows, _reference(tiny_rm, src), strict=True):
        assert (row["reward_1"], row["reward_2"]) == pytest.approx((r1, r2), abs=ATOL)
        assert "reward_chosen" not in row
        p = 1 / (1 + math.exp(row["reward_2"] - row["reward_1"]))
        assert row["p_first_better"] == pytest.approx(p, rel=1e-12)


def test_truncation_error_fails_and_writes_nothing(
    tmp_path: Path, tiny_model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = _write_jsonl(tmp_path / "in.jsonl", RAGGED)
    out = tmp_path / "out.jsonl"
    assert _score(src, "-o", out, "--model", tiny_model_dir, "--max-length", "200") == 2
    err = capsys.readouterr().err
    assert "2 invalid record(s); nothing was scored" in err
    assert f"{src}:3: field 'messages': conversation is " in err
    assert f"{src}:5: field 'response': conversation is " in err  # a prompt/response record
    assert "over the maximum of 200; use --truncation left" in err
    assert not out.exists() and not (tmp_path / "out.jsonl.meta.json").exists()


def test_truncation_left_rows(
    tmp_path: Path, tiny_model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Token counts (byte tokenizer): record 3 is 509 tokens, its final turn 203; record 5 ("long")
    # is 507, its final turn 9 + 276 + 4 = 289.
    src = _write_jsonl(tmp_path / "in.jsonl", RAGGED)
    out = tmp_path / "out.jsonl"
    args = ["-o", out, "--model", tiny_model_dir, "--truncation", "left"]
    assert _score(src, *args, "--max-length", "300") == 0
    rows = {r["id"]: r for r in _rows(out)}
    assert all(r["num_tokens"] <= 300 for r in rows.values())
    assert (rows["short"]["truncated_turns"], rows["short"]["truncated_tokens"]) == (0, 0)
    # system, user, assistant, user, final: the two oldest context turns go, then the oldest tokens.
    assert (rows[3]["truncated_turns"], rows[3]["truncated_tokens"], rows[3]["num_tokens"]) == (2, 209, 300)
    # One user turn and the response: no turn can go, the oldest tokens are cut.
    assert (rows["long"]["truncated_turns"], rows["long"]["truncated_tokens"]) == (0, 207)
    # A final turn (and system message) longer than the limit is an error, never cut.
    capsys.readouterr()
    assert _score(src, *args, "--max-length", "280", "-o", tmp_path / "o2.jsonl") == 2
    err = capsys.readouterr().err
    assert f"{src}:5: field 'response': the final assistant turn (276 tokens) is never truncated" in err
    assert ":3:" not in err
    assert not (tmp_path / "o2.jsonl").exists()


def test_resume_after_kill(tmp_path: Path, tiny_model_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = _write_jsonl(tmp_path / "in.jsonl", RAGGED)
    out = tmp_path / "out.jsonl"
    args = [src, "-o", out, "--model", tiny_model_dir]
    assert _score(*args) == 0
    full = out.read_text(encoding="utf-8")
    lines = full.splitlines(keepends=True)
    # A kill mid-write: two complete rows (the first marked so we can tell it was kept), a torn third.
    marked = json.dumps({**json.loads(lines[0]), "reward": 999.0}) + "\n"
    out.write_text(marked + lines[1] + lines[2][: len(lines[2]) // 2], encoding="utf-8")
    capsys.readouterr()
    assert _score(*args) == 0
    assert "resuming: 2 rows already in" in capsys.readouterr().err
    rows = _rows(out)
    assert [r["id"] for r in rows] == ["short", "sys", 3, "7", "long"]  # one per input row, in order
    assert rows[0]["reward"] == 999.0  # kept, not rescored
    assert out.read_text(encoding="utf-8").startswith(marked + lines[1])
    first = [json.loads(x) for x in lines]
    # The resumed rows were packed in a different batch: equal within the packing tolerance.
    assert [r["reward"] for r in rows[2:]] == pytest.approx([r["reward"] for r in first[2:]], abs=ATOL)
    assert [r["num_tokens"] for r in rows] == [r["num_tokens"] for r in first]
    # Already complete: nothing more to do.
    assert _score(*args) == 0 and _rows(out) == rows
    # Different settings are refused and leave the output as it was.
    assert _score(*args, "--max-length", "4000") == 2
    assert "spec.max_length: 4096 in the output, 4000 now" in capsys.readouterr().err
    _write_jsonl(src, RAGGED[:4])
    assert _score(*args) == 2
    err = capsys.readouterr().err
    assert "was written with different settings, so it cannot be resumed" in err
    assert "input_sha256: '" in err and "' in the output, '" in err
    assert _rows(out) == rows
    # --overwrite starts afresh.
    _write_jsonl(src, RAGGED)
    assert _score(*args, "--overwrite") == 0
    assert out.read_text(encoding="utf-8") == full


def test_on_error_skip(tmp_path: Path, tiny_model_dir: Path, tiny_rm: RewardModel) -> None:
    bad_role = {"id": "bad", "messages": [U, {"role": "bot", "content": "x"}]}
    src = _write_jsonl(tmp_path / "in.jsonl", [RAGGED[0], bad_role, '{"messages": [', RAGGED[1]])
    out = tmp_path / "out.jsonl"
    assert _score(src, "-o", out, "--model", tiny_model_dir) == 2
    assert not out.exists()
    assert _score(src, "-o", out, "--model", tiny_model_dir, "--on-error", "skip") == 0
    rows = _rows(out)
    assert [r["id"] for r in rows] == ["short", "sys"]
    want = [r for (r,) in _reference(tiny_rm, src)]
    assert [r["reward"] for r in rows] == pytest.approx(want, abs=ATOL)
    errors = _rows(tmp_path / "out.jsonl.errors.jsonl")
    assert [(e["source"], e["line"], e["field"]) for e in errors] == [
        (str(src), 2, "messages[1].role"),
        (str(src), 3, None),
    ]
    assert "role must be one of" in errors[0]["error"] and "malformed JSON" in errors[1]["error"]
    custom = tmp_path / "rejects.jsonl"
    args = [src, "-o", tmp_path / "o2.jsonl", "--model", tiny_model_dir, "--on-error", "skip"]
    assert _score(*args, "--error-file", custom) == 0
    assert len(_rows(custom)) == 2
    # To stdout, skipped rows need somewhere to go.
    assert _score(src, "--model", tiny_model_dir, "--on-error", "skip") == 2


def test_one_off_prompt_response(
    tiny_model_dir: Path, tiny_rm: RewardModel, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["--model", tiny_model_dir, "--prompt", "What is 1+1?", "--response", "1+1=2"]
    assert _score(*args, "--response", "1+1=3") == 0
    rows = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [(r["prompt"], r["response"]) for r in rows] == [
        ("What is 1+1?", "1+1=2"),
        ("What is 1+1?", "1+1=3"),
    ]
    convs = [Conversation.from_prompt("What is 1+1?", r) for r in ("1+1=2", "1+1=3")]
    want = reference_scores(tiny_rm.model, tiny_rm.tokenizer, convs)
    assert [r["reward"] for r in rows] == pytest.approx(want, abs=ATOL)
    assert _score(*args[:4]) == 2  # --prompt without --response
    assert "use either INPUT, or --prompt with one or more --response" in capsys.readouterr().err
    assert _score(EXAMPLES / "conversations.jsonl", *args) == 2
    assert _score("--model", tiny_model_dir) == 2
    assert "missing INPUT" in capsys.readouterr().err
    assert _score(*args[:5], " ") == 2
    assert "content is empty" in capsys.readouterr().err


def test_missing_input_file(tmp_path: Path, tiny_model_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _score(tmp_path / "nope.jsonl", "--model", tiny_model_dir) == 2
    assert "input file not found" in capsys.readouterr().err


def test_stdin_to_stdout_subprocess(
    tmp_path: Path, tiny_model_dir: Path, tiny_rm: RewardModel, run_command
) -> None:
    src = _write_jsonl(tmp_path / "in.jsonl", RAGGED[:3])
    cmd = [sys.executable, "-m", "rewardkit", "score", "-", "--model", str(tiny_model_dir)]
    proc = run_command(cmd, input=src.read_text(encoding="utf-8"), timeout=120)
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(x) for x in proc.stdout.splitlines()]
    assert [r["id"] for r in rows] == ["short", "sys", 3]
    want = [r for (r,) in _reference(tiny_rm, src)]
    assert [r["reward"] for r in rows] == pytest.approx(want, abs=ATOL)
    assert "rewardkit score: model=" in proc.stderr  # the header goes to stderr, not into the rows


def test_program_exit_codes_and_timings(tmp_path: Path, tiny_model_dir: Path, run_command) -> None:
    """The ``rewardkit`` program (which ends with a quick exit): every row is on disk, the summary
    starts with the start-up time, and an invalid input exits 2 with nothing written."""
    src = _write_jsonl(tmp_path / "in.jsonl", RAGGED[:3])
    out = tmp_path / "out.jsonl"
    base = [sys.executable, "-m", "rewardkit", "score", "--model", str(tiny_model_dir), "--no-progress"]
    proc = run_command([*base, str(src), "-o", str(out)], timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert [json.loads(x)["id"] for x in out.read_text().splitlines()] == ["short", "sys", 3]
    assert re.search(r"^time: start up [\d.]+ s, load [\d.]+ s, .*total [\d.]+ s", proc.stderr, re.M)

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": 1, "messages": 3}\n', encoding="utf-8")
    proc = run_command([*base, str(bad), "-o", str(tmp_path / "bad.out.jsonl")], timeout=120)
    assert proc.returncode == 2
    assert "bad.jsonl:1" in proc.stderr
    assert not (tmp_path / "bad.out.jsonl").exists()


def test_init_tiny(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "tiny"
    assert main(["init-tiny", str(target), "--arch", "llama", "--seed", "5"]) == 0
    assert capsys.readouterr().out.strip() == str(target)
    rm = RewardModel.load(target, device="cpu")
    assert type(rm.model).__name__ == "LlamaForSequenceClassification"
    conv = [Conversation.from_prompt("What is 1+1?", "1+1=2")]
    assert rm.score(conv) == pytest.approx(reference_scores(rm.model, rm.tokenizer, conv), abs=ATOL)


def test_resume_refuses_other_weights_and_accepts_other_spellings(
    tmp_path: Path, tiny_model_dir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Weights replaced in place (same config, same path) are refused, naming the fingerprint;
    the same input and model under other spellings of their paths resume."""
    import shutil

    from rewardkit.models.tiny import save_tiny_reward_model

    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    src = _write_jsonl(tmp_path / "in.jsonl", RAGGED)
    out = tmp_path / "out.jsonl"
    assert _score(src, "-o", out, "--model", model) == 0
    full = out.read_text(encoding="utf-8")
    out.write_text("".join(full.splitlines(keepends=True)[:2]), encoding="utf-8")
    # Another spelling of both paths: resumed, not refused.
    monkeypatch.chdir(tmp_path)
    capsys.readouterr()
    assert _score("./in.jsonl", "-o", out, "--model", "./model/") == 0
    assert "resuming: 2 rows already in" in capsys.readouterr().err
    assert _rows(out)[:2] == [json.loads(x) for x in full.splitlines()[:2]]
    # Retrained weights exported to the same directory: refused, naming both fingerprints.
    out.write_text("".join(full.splitlines(keepends=True)[:2]), encoding="utf-8")
    other = save_tiny_reward_model(tmp_path / "other", seed=5)
    shutil.copy(other / "model.safetensors", model / "model.safetensors")
    assert _score(src, "-o", out, "--model", model) == 2
    err = capsys.readouterr().err
    assert "cannot be resumed" in err and "spec.weights: '" in err and "' in the output, '" in err
    assert len(_rows(out)) == 2  # left as it was


def test_output_paths_that_cannot_work_fail_before_the_model_loads(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = _write_jsonl(tmp_path / "in.jsonl", RAGGED)
    (tmp_path / "adir").mkdir()
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    cases = [
        (["-o", tmp_path / "adir", "--overwrite"], "is a directory"),
        (["-o", src, "--overwrite"], "is the input file"),
        (["-o", tmp_path / "in.jsonl", "--overwrite"], "is the input file"),
        (
            ["-o", tmp_path / "missing" / "dir" / "out.jsonl", "--model", "/no/such/model"],
            "model directory not found",
        ),
        (["--model", "/no/such/model"], "model directory not found"),
        (["-o", tmp_path / "adir", "--model", "/no/such/model"], "is a directory"),
    ]
    if os.geteuid() != 0:  # root writes anywhere
        cases.append((["-o", locked / "out.jsonl"], "cannot write in"))
    for args, words in cases:
        assert _score(src, *args) == 2, args
        assert words in capsys.readouterr().err, args
    assert not list((tmp_path / "adir").iterdir())
    assert not (tmp_path / "adir.meta.json").exists()
    assert _score(tmp_path / "adir", "-o", tmp_path / "x.jsonl") == 2
    assert "is a directory" in capsys.readouterr().err
    assert _score(tmp_path / "nope.jsonl", "-o", tmp_path / "x.jsonl", "--model", "/no/such/model") == 2
    assert "input file not found" in capsys.readouterr().err  # before the model


def test_error_file_in_a_new_directory_and_parquet_output(tmp_path: Path, tiny_model_dir: Path) -> None:
    src = _write_jsonl(tmp_path / "in.jsonl", [*RAGGED, "{broken"])
    out = tmp_path / "out.parquet"
    errors = tmp_path / "new" / "errors.jsonl"
    assert (
        _score(src, "-o", out, "--model", tiny_model_dir, "--on-error", "skip", "--error-file", errors) == 0
    )
    rows = pq.read_table(out).to_pylist()
    want = _rows_of(tmp_path, src, tiny_model_dir)
    assert [r["id"] for r in rows] == [str(r["id"]) for r in want]
    assert [r["reward"] for r in rows] == pytest.approx([r["reward"] for r in want], abs=ATOL)
    assert [json.loads(x)["line"] for x in errors.read_text().splitlines()] == [6]
    # Complete: a second run scores nothing and leaves no part behind.
    assert (
        _score(src, "-o", out, "--model", tiny_model_dir, "--on-error", "skip", "--error-file", errors) == 0
    )
    assert pq.read_table(out).to_pylist() == rows
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [
            "in.jsonl",
            "new",
            "out.parquet",
            "out.parquet.meta.json",
            "want.jsonl",
            "want.jsonl.errors.jsonl",
            "want.jsonl.meta.json",
        ]
    )


def _rows_of(tmp_path: Path, src: Path, model: Path) -> list[dict]:
    want = tmp_path / "want.jsonl"
    assert _score(src, "-o", want, "--model", model, "--on-error", "skip") == 0
    return _rows(want)


def test_empty_input_and_prompt_output(
    tmp_path: Path, tiny_model_dir: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n\n", encoding="utf-8")
    assert _score(empty, "-o", tmp_path / "o.jsonl", "--model", tiny_model_dir) == 2
    assert "holds no records" in capsys.readouterr().err
    assert _score(empty, "-o", tmp_path / "o.jsonl", "--model", tiny_model_dir, "--on-error", "skip") == 0
    assert "holds no records" in caplog.text and (tmp_path / "o.jsonl").read_text() == ""
    out = tmp_path / "prompt.jsonl"
    args = ["--prompt", "What is 1+1?", "--response", "2", "--response", "3", "--model", tiny_model_dir]
    assert _score(*args, "-o", out) == 0
    assert capsys.readouterr().out == ""  # written to -o, not stdout
    assert [r["response"] for r in _rows(out)] == ["2", "3"]


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    from rewardkit import __version__

    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.strip() == f"rewardkit {__version__}"
