"""Tensor-parallel scoring (2 ranks, gloo, CPU) equals the unsharded reference.

The module is also the worker that ``torchrun --nproc-per-node 2`` runs: each rank loads its
shard with transformers' tensor-parallel plan, rank 0 scores through the ordinary engine under
`Lockstep.leading` and the other rank follows.
"""

from __future__ import annotations

import inspect
import json
import random
import sys
from pathlib import Path

import pytest
import torch

from rewardkit.api import RewardModel
from rewardkit.data.conversation import Conversation
from rewardkit.engine.tensor_parallel import check_shapes
from rewardkit.errors import ConfigError
from rewardkit.models.reference import reference_scores

TOL = 1e-5  # fp32 on CPU: sharded matmuls only change the summation order
BUDGET = 256  # tokens per batch in the worker: several batches, and one sequence over it


def _worker(model_dir: str, job: str, out: str) -> None:
    import torch.distributed as dist

    from rewardkit.distributed import process_group

    torch.set_num_threads(1)
    with process_group("cpu") as group:
        result = _run_job(model_dir, json.loads(Path(job).read_text()), group.is_main)
        Path(f"{out}.rank{group.rank}").write_text(json.dumps(result))
        dist.barrier()  # the sharded model lived only in _run_job: it goes before the group


def _run_job(model_dir: str, spec: dict, main_rank: bool) -> dict[str, object]:
    from rewardkit.engine.tensor_parallel import Lockstep, tensor_parallel_engine
    from rewardkit.models.loading import load_model

    model, idx, head = load_model(
        model_dir, device=torch.device("cpu"), dtype=torch.float32, tensor_parallel=True
    )
    engine = tensor_parallel_engine(model, head=head, output_index=idx, token_budget=BUDGET)
    attn = model.model.layers[0].self_attn
    local_q = attn.q_proj(torch.zeros(1, 1, model.config.hidden_size)).shape[-1] // attn.head_dim
    result: dict[str, object] = {"local_q_heads": local_q}
    lockstep = engine.forward
    assert isinstance(lockstep, Lockstep)
    if main_rank:
        with lockstep.leading():
            result["ids"] = engine.score_ids(spec["ids"])
            result["groups"] = engine.score_groups(spec["groups"])
            if spec["long"]:
                result["long"] = engine.score_ids([spec["long"]])
    else:
        result["followed"] = lockstep.follow()
    return result


def _torchrun(run_command, torchrun_cmd, tmp_path: Path, model_dir: Path, job: dict) -> list[dict]:
    (tmp_path / "job.json").write_text(json.dumps(job))
    out = tmp_path / "result"
    cmd = [*torchrun_cmd(2), __file__, str(model_dir), str(tmp_path / "job.json"), str(out)]
    proc = run_command(cmd, timeout=240, env={"PYTHONWARNINGS": "ignore"})
    assert proc.returncode == 0, proc.stderr[-4000:]
    return [json.loads(Path(f"{out}.rank{r}").read_text()) for r in range(2)]


def _convs(n: int, seed: int) -> list[Conversation]:
    rng = random.Random(seed)
    convs = []
    for i in range(n):
        prompt = " ".join(f"p{i}w{j}" for j in range(rng.randint(1, 20)))
        convs.append(Conversation.from_prompt(prompt, " ".join(f"r{j}" for j in range(rng.randint(1, 30)))))
    return convs


def _close(a: list[float], b: list[float]) -> None:
    assert len(a) == len(b)
    assert max(abs(x - y) for x, y in zip(a, b, strict=True)) < TOL, (a, b)


@pytest.fixture(scope="module")
def qwen2_run(tp_model_dir, tmp_path_factory, run_command, torchrun_cmd):
    """One 2-rank run: plain batches, shared-prefix groups and one chunked long sequence."""

    tiny_rm = RewardModel.load(tp_model_dir, device="cpu")
    convs = _convs(10, seed=5)
    prompt = "Which is larger, 7 or 9? Explain briefly."
    group = [
        Conversation.from_prompt(prompt, r) for r in ("9.", "7 is larger.", "Nine, since 9 - 7 = 2 > 0.")
    ]
    ids = [e.ids for e in tiny_rm.encode(convs)]
    group_ids = [e.ids for e in tiny_rm.encode(group)]
    job = {"ids": ids, "groups": [group_ids, ids[:2]], "long": []}
    ranks = _torchrun(run_command, torchrun_cmd, tmp_path_factory.mktemp("tp-qwen2"), tp_model_dir, job)
    ref = {
        "ids": reference_scores(tiny_rm.model, tiny_rm.tokenizer, convs),
        "group": reference_scores(tiny_rm.model, tiny_rm.tokenizer, group),
    }
    return ranks, ref, tiny_rm


def test_tensor_parallel_matches_reference(qwen2_run):
    ranks, ref, _ = qwen2_run
    _close(ranks[0]["ids"], ref["ids"])
    assert len(set(ref["ids"])) == len(ref["ids"])  # distinct rewards: order mix-ups would show


def test_each_rank_holds_its_share_of_heads(qwen2_run):
    ranks, _, _ = qwen2_run
    assert [r["local_q_heads"] for r in ranks] == [4, 4]  # 8 heads over 2 ranks


def test_follower_ran_every_forward(qwen2_run):
    ranks, _, _ = qwen2_run
    # ids (several BUDGET-token batches) + two groups in one batch: at least 3 forwards.
    assert ranks[1]["followed"] >= 3


def test_tensor_parallel_groups_match_reference(qwen2_run):
    ranks, ref, _ = qwen2_run
    group, pair = ranks[0]["groups"]
    _close(group, ref["group"])
    _close(pair, ref["ids"][:2])


def test_tensor_parallel_long_sequence_matches_reference(
    qwen2_run, tp_model_dir, tmp_path, run_command, torchrun_cmd
):
    _, _, tiny_rm = qwen2_run
    long_conv = Conversation.from_prompt("x " * 200, "y " * 100)  # > BUDGET tokens: chunked prefill
    long_ids = tiny_rm.encode([long_conv])[0].ids
    assert len(long_ids) > BUDGET
    ranks = _torchrun(
        run_command, torchrun_cmd, tmp_path, tp_model_dir, {"ids": [], "groups": [], "long": long_ids}
    )
    _close(ranks[0]["long"], reference_scores(tiny_rm.model, tiny_rm.tokenizer, [long_conv]))


def test_lm_logit_head_is_gathered(tmp_path, run_command, torchrun_cmd):
    """A causal LM's reward-token row, from an output embedding sharded over an odd vocabulary."""
    from rewardkit.models.tiny import byte_tokenizer, tiny_causal_lm

    tok = byte_tokenizer()  # 259 tokens: shards of 130 and 129 rows
    model = tiny_causal_lm(vocab_size=len(tok), pad_token_id=tok.pad_token_id, seed=7)
    model.config.reward_token_id = 200  # a row in the second rank's shard
    model.save_pretrained(tmp_path / "lm")
    tok.save_pretrained(tmp_path / "lm")
    rm = RewardModel.load(tmp_path / "lm", device="cpu")
    convs = _convs(4, seed=9)
    ids = [e.ids for e in rm.encode(convs)]
    ranks = _torchrun(
        run_command, torchrun_cmd, tmp_path, tmp_path / "lm", {"ids": ids, "groups": [], "long": []}
    )
    _close(ranks[0]["ids"], rm.engine.score_ids(ids))


def test_shapes_must_divide():
    from transformers import Qwen2Config

    check_shapes(Qwen2Config(num_attention_heads=4, num_key_value_heads=2, intermediate_size=128), 2)
    with pytest.raises(ConfigError) as e:
        check_shapes(Qwen2Config(num_attention_heads=28, num_key_value_heads=4, intermediate_size=18944), 8)
    assert "num_attention_heads=28, num_key_value_heads=4" in str(e.value)
    assert "intermediate_size" not in str(e.value)  # 18944 = 8 · 2368


def test_load_needs_a_process_group(tiny_model_dir):
    from rewardkit.models.loading import load_model

    with pytest.raises(ConfigError, match="torchrun"):
        load_model(str(tiny_model_dir), device=torch.device("cpu"), dtype=torch.float32, tensor_parallel=True)


def test_fp8_is_refused(tiny_rm):
    from rewardkit.engine.tensor_parallel import tensor_parallel_engine

    with pytest.raises(ConfigError, match="--fp8 cannot be combined with --tensor-parallel"):
        tensor_parallel_engine(tiny_rm.model, fp8=True)


@pytest.mark.skipif(
    "tensor_parallel" not in inspect.signature(RewardModel.load).parameters,
    reason="rewardkit score --tensor-parallel is not wired into the CLI",
)
def test_cli_score_tensor_parallel(qwen2_run, tp_model_dir, tmp_path, run_command, torchrun_cmd):
    """``torchrun -m rewardkit score --tensor-parallel`` writes the unsharded model's rewards."""
    _, _, tiny_rm = qwen2_run
    convs = _convs(5, seed=11)
    rows = [{"messages": [m.to_dict() for m in c.messages]} for c in convs]
    (tmp_path / "in.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    cmd = [
        *torchrun_cmd(2),
        "-m",
        "rewardkit",
        "score",
        str(tmp_path / "in.jsonl"),
        "-o",
        str(tmp_path / "out.jsonl"),
    ]
    cmd += ["-m", str(tp_model_dir), "--device", "cpu", "--tensor-parallel", "--no-progress"]
    proc = run_command(cmd, timeout=240, env={"PYTHONWARNINGS": "ignore"})
    assert proc.returncode == 0, proc.stderr[-4000:]
    got = [json.loads(line)["reward"] for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    _close(got, reference_scores(tiny_rm.model, tiny_rm.tokenizer, convs))


if __name__ == "__main__":
    _worker(*sys.argv[1:4])
