"""`RewardFunction` for TRL: TRL's arguments in both formats, grouping by prompt, the local and the
server backend, and real ``GRPOTrainer`` / ``RLOOTrainer`` steps with the demo reward model."""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Sequence
from pathlib import Path

import pytest

from rewardkit.api import RewardModel, Scored
from rewardkit.data.conversation import Conversation
from rewardkit.errors import InputError
from rewardkit.integrations.trl import LocalScorer, RewardFunction, ServerScorer
from rewardkit.models.templating import Encoded

ATOL = 1e-5  # fp32 packed groups vs one conversation per forward; see test_parity.py
SYSTEM = {"role": "system", "content": "Answer briefly."}


class RecordingModel(RewardModel):
    """The tiny model, recording the group sizes of each engine call."""

    def __init__(self, rm: RewardModel) -> None:
        super().__init__(model=rm.model, chat=rm.chat, engine=rm.engine, spec=rm.spec)
        self.calls: list[list[int] | None] = []

    def score_encoded(self, encoded: Sequence[Encoded], *, group_sizes=None, progress=None) -> list[Scored]:
        self.calls.append(None if group_sizes is None else list(group_sizes))
        return super().score_encoded(encoded, group_sizes=group_sizes, progress=progress)


def one_by_one(rm: RewardModel, prompts: Sequence, completions: Sequence) -> list[float]:
    """Each completion scored alone as the conversation its prompt and it make."""
    convs = []
    for p, c in zip(prompts, completions, strict=True):
        context = [{"role": "user", "content": p}] if isinstance(p, str) else list(p)
        reply = [{"role": "assistant", "content": c}] if isinstance(c, str) else list(c)
        convs.append(context + reply)
    return rm.score(convs)


def test_standard_format_groups_each_prompts_completions(tiny_rm: RewardModel) -> None:
    rm = RecordingModel(tiny_rm)
    reward = RewardFunction.from_model(rm, name="rm")
    # Prompts repeated per generation; in a distributed run a rank's slice need not be aligned.
    prompts = [
        "What is 1+1?",
        "What is 1+1?",
        "Name a colour.",
        "Name a colour.",
        "Name a colour.",
        "What is 1+1?",
    ]
    completions = ["2", "1+1=2", "Blue", "red", "Green, like grass.", "3"]
    got = reward(prompts=prompts, completions=completions, completion_ids=[[1]] * 6, trainer_state=None)
    assert got == pytest.approx(one_by_one(tiny_rm, prompts, completions), abs=ATOL)
    assert rm.calls == [[3, 3]]  # one engine call, one shared-prompt group per distinct prompt
    assert reward.__name__ == "rm"


def test_conversational_format(tiny_rm: RewardModel) -> None:
    ctx = [SYSTEM, {"role": "user", "content": "What is 2+2?"}]
    other = [{"role": "user", "content": "And 3+3?"}]
    prompts = [ctx, ctx, other, other]
    completions = [[{"role": "assistant", "content": c}] for c in ("4", "5", "6", "six")]
    got = RewardFunction.from_model(tiny_rm)(prompts, completions)
    assert got == pytest.approx(one_by_one(tiny_rm, prompts, completions), abs=ATOL)


def test_empty_completions_get_no_reward(tiny_rm: RewardModel) -> None:
    prompts = ["q1", "q1", "q1", "q2"]
    completions = ["a", " ", "b", ""]
    got = RewardFunction.from_model(tiny_rm)(prompts, completions)
    want = one_by_one(tiny_rm, ["q1", "q1"], ["a", "b"])
    assert got[1] is None and got[3] is None
    assert [got[0], got[2]] == pytest.approx(want, abs=ATOL)
    chat = [[{"role": "assistant", "content": ""}]]
    assert RewardFunction.from_model(tiny_rm, empty_reward=-5.0)(["q"], chat) == [-5.0]


@pytest.mark.parametrize(
    ("prompts", "completions", "field", "words"),
    [
        (
            ["q", "q"],
            ["a", [{"role": "bot", "content": "b"}]],
            "completions[1][0].role",
            "role must be one of",
        ),
        (
            ["q", [{"role": "assistant", "content": "x"}]],
            ["a", "b"],
            "prompts[1]",
            "must end with a user turn",
        ),
        (["q", "q", "r"], ["a", "b", 7], "completions[2]", "expected a list of messages, got int"),
        (["q"], ["a", "b"], "prompts", "1 prompts for 2 completions"),
    ],
)
def test_errors_name_trls_argument_and_index(tiny_rm, prompts, completions, field: str, words: str) -> None:
    with pytest.raises(InputError) as e:
        RewardFunction.from_model(tiny_rm)(prompts, completions)
    assert e.value.field == field
    assert words in e.value.message


def test_too_long_names_the_completion(tiny_model_dir: Path) -> None:
    rm = RewardModel.load(tiny_model_dir, device="cpu", max_length=64)
    prompts, completions = ["q", "long " * 20, "long " * 20], ["fine", "a", "b"]
    with pytest.raises(InputError, match="--truncation left") as e:
        RewardFunction.from_model(rm)(prompts, completions)
    assert e.value.field == "completions[1]"
    left = RewardFunction.from_model(tiny_model_dir, device="cpu", max_length=64, truncation="left")
    assert all(math.isfinite(r) for r in left(prompts, completions))


def test_server_backend_gives_the_local_rewards(tiny_rm: RewardModel) -> None:
    from rewardkit.server import BackgroundServer, ServerConfig, create_app

    ctx = [SYSTEM, {"role": "user", "content": "What is 2+2?"}]
    prompts = ["What is 1+1?", "What is 1+1?", ctx, ctx, "Name a colour."]
    completions = [
        "2",
        "3",
        [{"role": "assistant", "content": "4"}],
        [{"role": "assistant", "content": "5"}],
        "red",
    ]
    want = RewardFunction.from_model(tiny_rm)(prompts, completions)
    config = ServerConfig(api_key="secret", max_wait_ms=2.0)
    with BackgroundServer(create_app(tiny_rm, config)) as srv:
        remote = RewardFunction.from_server(srv.url, api_key="secret", name="served")
        assert isinstance(remote.scorer, ServerScorer)
        assert remote(prompts, completions) == pytest.approx(want, abs=ATOL)
        # A multi-message completion goes through /v1/rewards: the same reward, prompt not shared.
        turns = [{"role": "assistant", "content": "4"}, {"role": "user", "content": "sure?"}]
        turns.append({"role": "assistant", "content": "yes"})
        (r,) = remote([ctx], [turns])
        assert r == pytest.approx(tiny_rm.score([Conversation.of(ctx + turns)])[0], abs=ATOL)


# ---- real TRL trainers ------------------------------------------------------------------------

needs_trl = pytest.mark.skipif(importlib.util.find_spec("trl") is None, reason="trl is not installed")


class Recorded(RewardFunction):
    """The demo model's reward function, keeping what TRL passed and what it got back."""

    def __init__(self, rm: RewardModel) -> None:
        super().__init__(LocalScorer(rm), name="demo_rm")
        self.calls: list[tuple[list, list, list]] = []

    def __call__(self, prompts, completions, completion_ids=None, **kwargs):
        rewards = super().__call__(prompts, completions, completion_ids, **kwargs)
        self.calls.append((list(prompts), list(completions), rewards))
        return rewards


@pytest.fixture(scope="module")
def demo_rm() -> RewardModel:
    from rewardkit.demo import DEMO_MODEL_DIR

    return RewardModel.load(DEMO_MODEL_DIR, device="cpu")


def _train_one_step(trainer_name: str, tiny_lm_dir: Path, reward: Recorded, dataset: list[dict], out: Path):
    import trl
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer

    config_cls, trainer_cls = getattr(trl, f"{trainer_name}Config"), getattr(trl, f"{trainer_name}Trainer")
    args = config_cls(
        output_dir=str(out),
        per_device_train_batch_size=8,
        num_generations=4,
        max_completion_length=12,
        max_steps=1,
        learning_rate=1e-3,
        use_cpu=True,
        bf16=False,
        report_to=[],
        logging_steps=1,
        save_strategy="no",
        seed=0,
    )
    tok = AutoTokenizer.from_pretrained(tiny_lm_dir)
    trainer = trainer_cls(
        model=AutoModelForCausalLM.from_pretrained(tiny_lm_dir),
        reward_funcs=[reward],
        args=args,
        train_dataset=Dataset.from_list(dataset),
        processing_class=tok,
    )
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer.train()
    changed = any(not p.detach().equal(before[n]) for n, p in trainer.model.named_parameters())
    return trainer.state.log_history, changed


def _check_step(reward: Recorded, demo_rm: RewardModel, history: list[dict], changed: bool) -> None:
    ((prompts, completions, rewards),) = reward.calls  # one call for the step's 8 completions
    assert len(prompts) == 8
    # Each prompt repeated num_generations (4) times, next to each other.
    assert all(prompts[i] == prompts[i - i % 4] for i in range(8)) and prompts[0] != prompts[4]
    scored = [(p, c, r) for p, c, r in zip(prompts, completions, rewards, strict=True) if r is not None]
    assert scored, "every sampled completion was empty"
    want = one_by_one(demo_rm, *zip(*[(p, c) for p, c, _ in scored], strict=True))
    assert [r for _, _, r in scored] == pytest.approx(want, abs=ATOL)
    logged = next(row for row in history if "rewards/demo_rm/mean" in row)
    assert logged["rewards/demo_rm/mean"] == pytest.approx(sum(want) / len(want), abs=1e-4)
    assert changed  # the policy took an optimizer step


@needs_trl
def test_grpo_step_with_conversational_prompts(
    tiny_lm_dir: Path, demo_rm: RewardModel, tmp_path: Path
) -> None:
    reward = Recorded(demo_rm)
    data = [{"prompt": [{"role": "user", "content": f"What is {i}+{i}?"}]} for i in range(1, 5)]
    _check_step(reward, demo_rm, *_train_one_step("GRPO", tiny_lm_dir, reward, data, tmp_path))


@needs_trl
def test_rloo_step_with_standard_prompts(tiny_lm_dir: Path, demo_rm: RewardModel, tmp_path: Path) -> None:
    reward = Recorded(demo_rm)
    data = [{"prompt": f"Say something about {w}."} for w in ("cats", "rain", "bread", "maps")]
    _check_step(reward, demo_rm, *_train_one_step("RLOO", tiny_lm_dir, reward, data, tmp_path))
