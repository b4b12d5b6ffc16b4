"""``rewardkit best-of-n`` / ``pairs`` and the ``{"prompt", "responses"}`` record in ``rewardkit
score``: rewards against the card's procedure, resume after a kill, skipped records, and the round
trip of written pairs through ``rewardkit train``."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from rewardkit.api import RewardModel
from rewardkit.cli import main
from rewardkit.data.formats import parse_group
from rewardkit.errors import InputError, RewardkitError
from rewardkit.models.reference import reference_scores
from rewardkit.preferences.files import best_of_n_file, default_scores_path, pairs_file, write_rows_atomic
from rewardkit.preferences.pairs import PairOptions
from rewardkit.train.data import load_pairs
from rewardkit.train.metrics import read_metrics

ATOL = 1e-5  # fp32 packed groups vs one conversation per forward; see test_parity.py
WORDS = ["two", "three", "sum", "is", "maybe", "four", "the", "answer", "no", "yes", "42"]


def make_groups(n: int, seed: int = 0) -> list[dict]:
    """``n`` group records: string or message prompts, 1–5 responses, some given as messages."""
    rng = random.Random(seed)

    def text() -> str:
        return " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 8)))

    out = []
    for i in range(n):
        responses: list = [text() for _ in range(rng.randint(1, 5))]
        if i % 3 == 0:
            prompt: str | list = [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": text()},
            ]
            responses[0] = [{"role": "assistant", "content": responses[0]}]
        else:
            prompt = text()
        rec = {"prompt": prompt, "responses": responses}
        if i % 2:
            rec["id"] = f"g{i}"
        out.append(rec)
    return out


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), "utf-8")
    return path


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text("utf-8").splitlines()]


@pytest.fixture(scope="module")
def groups_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_jsonl(tmp_path_factory.mktemp("groups") / "groups.jsonl", make_groups(24))


def reference_rewards(rm: RewardModel, path: Path) -> list[list[float]]:
    """The card's procedure, one conversation per forward, for every group of ``path``."""
    groups = [parse_group(json.loads(x)) for x in path.read_text("utf-8").splitlines()]
    return [reference_scores(rm.model, rm.tokenizer, list(g.conversations())) for g in groups]


def test_score_writes_rewards_and_best_per_group(
    tiny_model_dir: Path, tiny_rm, groups_file, tmp_path
) -> None:
    out = tmp_path / "scores.jsonl"
    assert main(["score", str(groups_file), "-o", str(out), "-m", str(tiny_model_dir), "--no-progress"]) == 0
    rows = read_jsonl(out)
    ref = reference_rewards(tiny_rm, groups_file)
    assert len(rows) == len(ref)
    for i, (row, want) in enumerate(zip(rows, ref, strict=True)):
        assert row["id"] == (f"g{i}" if i % 2 else i + 1)  # the record's id, else its line
        assert row["rewards"] == pytest.approx(want, abs=ATOL)
        assert row["best"] == max(range(len(want)), key=lambda k: want[k])
        assert len(row["num_tokens"]) == len(want) and row["truncated_tokens"] == [0] * len(want)


def test_best_of_n_writes_the_best_response(tiny_model_dir: Path, tiny_rm, groups_file, tmp_path) -> None:
    out = tmp_path / "best.jsonl"
    args = ["best-of-n", str(groups_file), "-o", str(out), "-m", str(tiny_model_dir), "--no-progress"]
    assert main([*args, "--with-response"]) == 0
    records = read_jsonl(groups_file)
    ref = reference_rewards(tiny_rm, groups_file)
    for rec, row, want in zip(records, read_jsonl(out), ref, strict=True):
        assert row["rewards"] == pytest.approx(want, abs=ATOL)
        assert row["best_reward"] == row["rewards"][row["best"]] == max(row["rewards"])
        best = rec["responses"][row["best"]]
        conversational = not isinstance(rec["prompt"], str) or not all(
            isinstance(r, str) for r in rec["responses"]
        )
        assert row["best_response"] == (
            [{"role": "assistant", "content": best}] if conversational and isinstance(best, str) else best
        )
    assert default_scores_path(out).is_file()
    # Without --with-response the rows carry the rewards only.
    assert main(args) == 0
    assert "best_response" not in read_jsonl(out)[0]


def test_pairs_from_the_scores(tiny_model_dir: Path, groups_file, tmp_path) -> None:
    out = tmp_path / "pairs.jsonl"
    args = ["pairs", str(groups_file), "-o", str(out), "-m", str(tiny_model_dir), "--no-progress"]
    assert main([*args, "--pairs", "all", "--min-margin", "0.05"]) == 0
    scores = {r["id"]: r["rewards"] for r in read_jsonl(default_scores_path(out))}
    pairs = read_jsonl(out)
    expected = sum(
        1
        for rewards in scores.values()
        for i in range(len(rewards))
        for j in range(i + 1, len(rewards))
        if abs(rewards[i] - rewards[j]) >= 0.05
    )
    assert len(pairs) == expected > 0
    for p in pairs:
        rewards = scores[p["id"]]
        assert (p["reward_chosen"], p["reward_rejected"]) == (
            rewards[p["chosen_index"]],
            rewards[p["rejected_index"]],
        )
        assert p["margin"] == p["reward_chosen"] - p["reward_rejected"] >= 0.05
    # best-worst: one pair per group with two responses or more (the random rewards never tie).
    assert main([*args, "--pairs", "best-worst"]) == 0
    assert len(read_jsonl(out)) == sum(len(r) >= 2 for r in scores.values())


class Killed(RuntimeError):
    pass


def test_a_killed_run_resumes_and_writes_the_output_once(hooked_rm, tiny_rm, groups_file, tmp_path) -> None:
    calls = []

    def die_on_third(batch) -> None:
        calls.append(1)
        if len(calls) == 3:
            raise Killed

    out = tmp_path / "pairs.jsonl"
    opts = PairOptions(pairs="all", format="helpsteer3")
    with pytest.raises(Killed):
        pairs_file(
            hooked_rm(die_on_third), groups_file, out, options=opts, window_tokens=1
        )  # a record a window
    assert not out.exists()  # nothing is written before every group is scored
    partial = len(read_jsonl(default_scores_path(out)))
    assert 0 < partial < 24
    summary = pairs_file(tiny_rm, groups_file, out, options=opts, window_tokens=1)
    assert (summary.scoring.resumed, summary.scoring.rows, summary.groups) == (partial, 24 - partial, 24)
    fresh = tmp_path / "fresh.jsonl"
    pairs_file(tiny_rm, groups_file, fresh, options=opts)
    resumed, whole = read_jsonl(out), read_jsonl(fresh)
    assert len(resumed) == summary.rows == len(whole) > 0
    for a, b in zip(resumed, whole, strict=True):
        assert {k: v for k, v in a.items() if k not in ("reward_1", "reward_2", "margin")} == {
            k: v for k, v in b.items() if k not in ("reward_1", "reward_2", "margin")
        }
        assert (a["reward_1"], a["reward_2"]) == pytest.approx((b["reward_1"], b["reward_2"]), abs=ATOL)
    # Complete: a third run scores nothing and writes the same pairs.
    again = pairs_file(tiny_rm, groups_file, out, options=opts)
    assert (again.scoring.rows, again.scoring.resumed, again.rows) == (0, 24, summary.rows)


def test_skipped_records_keep_rows_and_records_together(tiny_model_dir: Path, tiny_rm, tmp_path) -> None:
    records = make_groups(6, seed=3)
    lines: list = [*records[:2], {"prompt": "q", "responses": []}, records[2], "{not json", *records[3:]]
    lines.append({"prompt": "q", "responses": ["x" * 5000]})  # too long for the tiny model's limit
    src = write_jsonl(tmp_path / "in.jsonl", lines)
    out = tmp_path / "best.jsonl"
    rm = RewardModel.load(tiny_model_dir, device="cpu", max_length=512)
    with pytest.raises(RewardkitError, match="3 invalid record"):
        best_of_n_file(rm, src, out)
    summary = best_of_n_file(rm, src, out, on_error="skip", with_response=True)
    assert (summary.scoring.skipped, summary.groups) == (3, 6)
    rows = read_jsonl(out)
    assert [r["id"] for r in rows] == [1, "g1", 4, "g3", 7, "g5"]  # ids, else line numbers
    errors = read_jsonl(Path(f"{default_scores_path(out)}.errors.jsonl"))
    assert [e["line"] for e in errors] == [3, 5, 9]
    for rec, row in zip(records, rows, strict=True):
        want = reference_scores(rm.model, rm.tokenizer, list(parse_group(rec).conversations()))
        assert row["rewards"] == pytest.approx(want, abs=ATOL)


def test_refuses_other_records_and_stdin(tiny_rm, tmp_path, capsys) -> None:
    convs = write_jsonl(tmp_path / "convs.jsonl", [{"prompt": "q", "response": "a"}])
    # The command checks its input before loading the model (here, one that does not exist).
    cmd = ["pairs", str(convs), "-o", str(tmp_path / "out.jsonl"), "-m", str(tmp_path / "no-model")]
    assert main(cmd) == 2
    assert "convs.jsonl:1: expected" in capsys.readouterr().err
    with pytest.raises(InputError, match="found a conversation record"):
        best_of_n_file(tiny_rm, convs, tmp_path / "out.jsonl")
    assert not default_scores_path(tmp_path / "out.jsonl").exists()
    with pytest.raises(RewardkitError, match="not stdin"):
        pairs_file(tiny_rm, "-", tmp_path / "out.jsonl")
    with pytest.raises(RewardkitError, match="three different files"):
        pairs_file(tiny_rm, convs, convs)


def _last_text(response: str | list) -> str:
    return response if isinstance(response, str) else response[-1]["content"]


@pytest.mark.parametrize("fmt", ["dpo", "helpsteer3"])
def test_written_pairs_train_a_reward_model(
    fmt: str, tiny_model_dir: Path, tiny_lm_dir: Path, groups_file: Path, tmp_path: Path
) -> None:
    pairs = tmp_path / f"{fmt}.jsonl"
    cmd = ["pairs", str(groups_file), "-o", str(pairs), "-m", str(tiny_model_dir), "--no-progress"]
    assert main([*cmd, "--pairs", "all", "--format", fmt]) == 0
    rows = read_jsonl(pairs)
    # The trainer's reader sees every pair, the better response as chosen, HelpSteer3 strengths.
    data = load_pairs(str(pairs))
    assert (len(data.pairs), data.ties, data.helpsteer) == (len(rows), 0, fmt == "helpsteer3")
    for pair, row in zip(data.pairs, rows, strict=True):
        if fmt == "dpo":
            chosen, strength = _last_text(row["chosen"]), 1.0
        else:
            chosen = _last_text(row["response1"] if row["overall_preference"] < 0 else row["response2"])
            strength = abs(row["overall_preference"])
        assert (pair.chosen.messages[-1].content, pair.strength) == (chosen, strength)
    # And ``rewardkit train`` trains on them (a couple of steps of a tiny model on the CPU).
    run = tmp_path / "run"
    fast = ["lr=1e-3", "warmup_steps=1", "global_batch_size=8", "micro_batch_tokens=512", "save_every=0"]
    fast += ["eval_every=0", "tensorboard=false", "device=cpu"]
    sets = [a for s in fast for a in ("--set", s)]
    train_cmd = ["train", "--model", str(tiny_lm_dir), "--data", str(pairs), "--output", str(run)]
    assert main([*train_cmd, "--max-steps", "2", "--no-progress", *sets]) == 0
    steps = [r for r in read_metrics(run) if "loss" in r]
    assert [r["step"] for r in steps] == [1, 2] and all(r["pairs"] == 8 for r in steps)
    assert (run / "final" / "model.safetensors").is_file()


def test_output_is_replaced_only_when_complete(tmp_path: Path) -> None:
    out = write_jsonl(tmp_path / "out.jsonl", [{"old": 1}])

    def rows():
        yield {"new": 1}
        raise Killed

    with pytest.raises(Killed):
        write_rows_atomic(out, rows())
    assert read_jsonl(out) == [{"old": 1}]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.jsonl"]  # no temporary file left
    assert write_rows_atomic(out, iter([{"new": 1}, {"new": 2}])) == 2
    assert read_jsonl(out) == [{"new": 1}, {"new": 2}]
