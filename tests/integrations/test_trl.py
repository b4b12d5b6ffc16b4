"""`RewardFunction` for TRL: TRL's arguments in both formats, grouping by prompt, the local and the
server backend, and real ``GRPOTrainer`` / ``RLOOTrainer`` steps with the demo reward model."""

from __future__ import annotations

import importlib.util
import json
import math
from collections.abc import Sequence
from pathlib import Path

import pytest

from rewardkit.api import RewardModel
from rewardkit.errors import InputError
from rewardkit.integrations.trl import LocalScorer, RewardFunction, ServerScorer

ATOL = 1e-5  # fp32 packed groups vs one conversation per forward; see test_parity.py
SYSTEM = {"role": "system", "content": "Answer briefly."}


def one_by_one(rm: RewardModel, prompts: Sequence, completions: Sequence) -> list[float]:
    """Each completion scored alone as the conversation its prompt and it make."""
    convs = []
    for p, c in zip(prompts, completions, strict=True):
        context = [{"role": "user", "content": p}] if isinstance(p, str) else list(p)
        reply = [{"role": "assistant", "content": c}] if isinstance(c, str) else list(c)
        convs.append(context + reply)
    return rm.score(convs)


def test_standard_format_groups_each_prompts_completions(tiny_rm: RewardModel, recording_rm) -> None:
    rm = recording_rm
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


def test_too_long_through_a_server_is_a_422_locating_it(tiny_model_dir: Path) -> None:
    from rewardkit.client import RewardServerError
    from rewardkit.server import BackgroundServer, ServerConfig, create_app

    rm = RewardModel.load(tiny_model_dir, device="cpu", max_length=64)
    prompts, completions = ["q", "long " * 20, "long " * 20], ["fine", "a", "b"]
    app = create_app(rm, ServerConfig(max_wait_ms=2.0))
    with BackgroundServer(app) as srv, pytest.raises(RewardServerError) as e:
        RewardFunction.from_server(srv.url)(prompts, completions)
    assert e.value.status_code == 422
    assert [d["loc"] for d in e.value.detail] == [["body", "groups", 1, "responses", i] for i in (0, 1)]
    assert all("over the maximum of 64" in d["msg"] for d in e.value.detail)


def _requests(url: str, key: str) -> dict[str, float]:
    """Answered requests per route, from the server's metrics."""
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(f"{url}/metrics", headers={"Authorization": f"Bearer {key}"}).text
    return {
        s.labels["route"]: s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
        if s.name == "rewardkit_requests_total"
    }


def test_server_backend_sends_one_request_per_call(tiny_rm: RewardModel) -> None:
    from rewardkit.server import BackgroundServer, ServerConfig, create_app

    ctx = [SYSTEM, {"role": "user", "content": "What is 2+2?"}]
    # A completion of several messages: its earlier turns go with the context.
    turns = [{"role": "assistant", "content": "4"}, {"role": "user", "content": "sure?"}]
    turns.append({"role": "assistant", "content": "yes"})
    prompts = ["What is 1+1?", ctx, "What is 1+1?", ctx, "Name a colour.", ctx, ctx]
    completions = [
        "2",
        [{"role": "assistant", "content": "4"}],
        "3",
        [{"role": "assistant", "content": "5"}],
        "red",
        turns,
        [*turns[:2], {"role": "assistant", "content": "no"}],
    ]
    want = RewardFunction.from_model(tiny_rm)(prompts, completions)
    assert want == pytest.approx(one_by_one(tiny_rm, prompts, completions), abs=ATOL)
    config = ServerConfig(api_key="secret", max_wait_ms=2.0)
    with BackgroundServer(create_app(tiny_rm, config)) as srv:
        remote = RewardFunction.from_server(srv.url, api_key="secret", name="served")
        assert isinstance(remote.scorer, ServerScorer)
        for call in range(1, 3):
            assert remote(prompts, completions) == pytest.approx(want, abs=ATOL)
            counts = {route: n for route, n in _requests(srv.url, "secret").items() if route != "/metrics"}
            assert counts == {"/v1/rewards/groups": call}
        # Only empty completions: nothing to send.
        assert remote(["q", "q"], ["", " "]) == [None, None]
        assert _requests(srv.url, "secret")["/v1/rewards/groups"] == 2


@pytest.mark.parametrize("conversational", [False, True], ids=["standard", "conversational"])
def test_a_trl_batch_is_one_http_request_in_trls_order(
    tiny_rm: RewardModel, recording_rm, conversational: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """TRL's layout (each prompt repeated ``num_generations`` times): every HTTP request the call
    sends is counted; there is one, holding one shared-prompt group per prompt, and the rewards
    come back in TRL's order."""
    import httpx

    from rewardkit.server import BackgroundServer, ServerConfig, create_app

    questions = ["What is 1+1?", "Name a colour.", "How do I cook rice?"]
    num_generations = 4
    prompts: list = [q for q in questions for _ in range(num_generations)]
    texts = [f"answer {'.' * i}" for i in range(len(prompts))]  # all different: order shows
    completions: list = texts
    if conversational:
        prompts = [[SYSTEM, {"role": "user", "content": q}] for q in prompts]
        completions = [[{"role": "assistant", "content": t}] for t in texts]
    rm = recording_rm
    with BackgroundServer(create_app(rm, ServerConfig(api_key="k", max_wait_ms=2.0))) as srv:
        reward = RewardFunction.from_server(srv.url, api_key="k")
        sent: list[httpx.Request] = []
        send = httpx.HTTPTransport.handle_request

        def counted(transport: httpx.HTTPTransport, request: httpx.Request) -> httpx.Response:
            sent.append(request)
            return send(transport, request)

        monkeypatch.setattr(httpx.HTTPTransport, "handle_request", counted)
        got = reward(prompts=prompts, completions=completions, completion_ids=[[1]] * 12, trainer_state=None)
    assert [(r.method, r.url.path) for r in sent] == [("POST", "/v1/rewards/groups")]
    body = json.loads(sent[0].content)
    assert [len(g["responses"]) for g in body["groups"]] == [num_generations] * len(questions)
    assert rm.calls == [[num_generations] * len(questions)]  # one engine batch, prompts shared
    assert got == pytest.approx(one_by_one(tiny_rm, prompts, completions), abs=ATOL)
    assert len(set(got)) == len(got)


def test_server_scorer_groups_responses_by_their_context() -> None:
    """What goes in the one request: equal contexts (the prompt plus a response's earlier turns)
    make one group, and every reward comes back to its response."""
    from rewardkit.data.conversation import ResponseGroup
    from rewardkit.data.formats import parse_group

    class Client:
        def __init__(self) -> None:
            self.sent: list = []

        def groups(self, groups):
            self.sent.append(groups)
            return {"groups": [{"rewards": [len(ctx) * 100 + len(r) for r in rs]} for ctx, rs in groups]}

    later = [{"role": "assistant", "content": "a"}, {"role": "user", "content": "b"}]
    groups: list[ResponseGroup] = [
        parse_group(
            {"prompt": "q", "responses": ["x", [*later, {"role": "assistant", "content": "yy"}], "zzz"]}
        ),
        parse_group({"prompt": [{"role": "user", "content": "q"}], "responses": ["wwww"]}),
        parse_group({"prompt": "r", "responses": [[*later, {"role": "assistant", "content": "v"}]]}),
    ]
    client = Client()
    got = ServerScorer(client)(groups)  # type: ignore[arg-type]
    assert got == [[101, 302, 103], [104], [301]]
    (sent,) = client.sent  # one request
    q = [{"role": "user", "content": "q"}]
    assert sent == [
        (q, ["x", "zzz", "wwww"]),
        ([*q, *later], ["yy"]),
        ([{"role": "user", "content": "r"}, *later], ["v"]),
    ]


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
