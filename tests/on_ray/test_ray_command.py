"""``rewardkit score --ray``: what the command passes to `score_file_ray`, and the options it refuses
(no cluster: the scoring itself is tested in test_ray_cluster.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from rewardkit.cli import main
from rewardkit.demo import DEMO_MODEL_DIR
from rewardkit.scoring.files import ScoreSummary

job = pytest.importorskip("rewardkit.ray.job", exc_type=ImportError)


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """`score_file_ray` replaced by a recorder that reports 3 records scored."""
    seen: list[dict[str, Any]] = []

    def fake(options: Any, input_path: str, output_path: str, **kwargs: Any) -> ScoreSummary:
        seen.append({"options": options, "input": input_path, "output": output_path, **kwargs})
        kwargs["on_start"](3)
        kwargs["progress"](3, 42)
        return ScoreSummary(rows=3, resumed=0, skipped=1, tokens=42)

    monkeypatch.setattr(job, "score_file_ray", fake)
    return seen


@pytest.mark.parametrize(
    ("flag", "address"), [(["--ray"], None), (["--ray", "10.0.0.1:6379"], "10.0.0.1:6379")]
)
def test_the_command_passes_its_options(
    flag: list[str], address: str | None, calls: list[dict[str, Any]], capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [
        "score",
        "in.jsonl",
        "-o",
        "out.jsonl",
        *flag,
        "--replicas",
        "3",
        "--on-error",
        "skip",
        "--overwrite",
    ]
    assert main([*argv, "--truncation", "left"]) == 0
    (call,) = calls
    assert (call["input"], call["output"], call["address"], call["replicas"]) == (
        "in.jsonl",
        "out.jsonl",
        address,
        3,
    )
    assert (call["on_error"], call["error_file"], call["overwrite"]) == ("skip", None, True)
    assert call["options"].model == str(DEMO_MODEL_DIR) and call["options"].truncation == "left"
    assert "scored 3 rows (42 tokens) on Ray, 1 skipped, into out.jsonl" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["in.jsonl", "--replicas", "2"], "--replicas applies to --ray"),
        (["--prompt", "q", "--response", "a", "--ray"], "not --prompt"),
        (["in.jsonl", "-o", "o.jsonl", "--ray", "--devices", "0"], "--devices or --tensor-parallel"),
        (["in.jsonl", "--ray"], "not stdin/stdout"),
        (["in.jsonl", "-o", "o.jsonl", "--ray", "--device", "cuda:1"], "Ray gives each replica its GPU"),
        (["in.jsonl", "-o", "o.jsonl", "--ray", "--replicas", "0"], "--replicas must be at least 1"),
    ],
)
def test_options_that_do_not_apply_are_refused_before_any_cluster_starts(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["score", *args]) == 2
    assert message in capsys.readouterr().err
    assert not job.ray.is_initialized()


def test_an_existing_output_is_kept(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "out.jsonl").write_text("{}\n")
    assert main(["score", "in.jsonl", "-o", str(tmp_path / "out.jsonl"), "--ray"]) == 2
    assert "pass --overwrite" in capsys.readouterr().err
    assert not job.ray.is_initialized()


def test_a_rewardkit_error_on_the_cluster_is_raised_as_itself() -> None:
    from ray.exceptions import ActorDiedError, RayTaskError

    from rewardkit.errors import ModelError

    cause = ModelError("cannot load 'm' as a sequence-classification reward model")
    wrapped = RayTaskError("__init__", "Traceback ...", cause).as_instanceof_cause()
    died = ActorDiedError()
    died.__cause__ = wrapped
    assert job._rewardkit_cause(died) is cause
    assert job._rewardkit_cause(ActorDiedError()) is None


def test_the_meta_of_an_input_given_as_a_uri_records_the_uri_and_its_sha256(tmp_path: Path) -> None:
    from rewardkit.api import ModelOptions
    from rewardkit.ray.storage import Location, plan_pieces
    from rewardkit.scoring.files import output_meta

    path = tmp_path / "in.jsonl"
    path.write_text('{"messages": []}\n', encoding="utf-8")
    spec = ModelOptions(model=str(DEMO_MODEL_DIR), device="cpu").load().spec
    local = output_meta(spec, str(path), on_error="skip")
    src = Location.of(path.as_uri())
    by_uri = job._meta(spec, src, plan_pieces(src, lines_per_piece=8), "skip")
    assert by_uri == {**local, "input": path.as_uri()}
