"""``POST /v1/rewards/groups``: several shared-prompt groups in one request, against a real server.

Each group's rewards equal ``/v1/rewards/compare`` on that group, the offline
`RewardModel.score_groups` and ``rewardkit score`` on the group as a ``responses`` record; the
request's limits cover all of its groups; one bad group fails the request before anything is
scored; a client that leaves cancels every group."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from rewardkit.api import RewardModel
from rewardkit.cli import main

TOL = 1e-5  # fp32 matmuls over differently sized packed batches differ in the last bits
SYSTEM = {"role": "system", "content": "be brief"}
U = {"role": "user", "content": "What is 2+2?"}
A = {"role": "assistant", "content": "4"}
GROUPS = [
    {"context": [SYSTEM, U], "responses": ["4", "It is four.", "5", "I do not know"]},
    {"context": [{"role": "user", "content": "Name a colour."}], "responses": ["blue"]},
    {"context": [U, A, {"role": "user", "content": "And 3+3?"}], "responses": ["6", "six", "7"]},
]


def conversations(group: dict) -> list[list[dict[str, str]]]:
    return [[*group["context"], {"role": "assistant", "content": r}] for r in group["responses"]]


def metric(url: str, name: str, **labels: str) -> float:
    """One sample of the server's metrics (0 when it has not been recorded yet)."""
    for family in text_string_to_metric_families(httpx.get(f"{url}/metrics").text):
        for s in family.samples:
            if s.name == name and s.labels == labels:
                return s.value
    return 0.0


def test_groups_equal_compare_and_offline(serve, tiny_rm: RewardModel, recording_rm, served_name):
    rm = recording_rm
    with serve(rm, max_wait_ms=2.0) as srv:
        body = httpx.post(f"{srv.url}/v1/rewards/groups", json={"groups": GROUPS}).json()
        assert rm.calls == [[4, 1, 3]]  # one engine batch, each group sharing its prompt
        compared = [httpx.post(f"{srv.url}/v1/rewards/compare", json=g).json()["rewards"] for g in GROUPS]
    offline = tiny_rm.score_groups([conversations(g) for g in GROUPS])
    assert len(body["groups"]) == len(GROUPS)
    for got, by_compare, want, group in zip(body["groups"], compared, offline, GROUPS, strict=True):
        assert got["rewards"] == pytest.approx(want, abs=TOL)
        assert got["rewards"] == pytest.approx(by_compare, abs=TOL)
        mean = sum(got["rewards"]) / len(got["rewards"])
        assert got["centered_rewards"] == pytest.approx([r - mean for r in got["rewards"]], abs=1e-9)
        assert got["num_tokens"] == [len(e.ids) for e in tiny_rm.encode(conversations(group))]
        assert got["truncated"] == [False] * len(group["responses"])
    assert body["usage"] == {"tokens": sum(n for g in body["groups"] for n in g["num_tokens"])}
    assert body["model"] == served_name
    assert body["spec"] == {**tiny_rm.spec.to_dict(), "model": served_name}


def test_groups_equal_the_score_command(serve, tiny_rm: RewardModel, tiny_model_dir: Path, tmp_path: Path):
    """The same groups as ``{"messages", "responses"}`` records through ``rewardkit score``."""
    src = tmp_path / "groups.jsonl"
    src.write_text(
        "".join(json.dumps({"messages": g["context"], "responses": g["responses"]}) + "\n" for g in GROUPS)
    )
    out = tmp_path / "scored.jsonl"
    assert main(["score", str(src), "-o", str(out), "--model", str(tiny_model_dir), "--no-progress"]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    with serve(tiny_rm) as srv:
        body = httpx.post(f"{srv.url}/v1/rewards/groups", json={"groups": GROUPS}).json()
    for got, row in zip(body["groups"], rows, strict=True):
        assert got["rewards"] == pytest.approx(row["rewards"], abs=TOL)
        assert got["num_tokens"] == row["num_tokens"]


def test_truncation_left_is_reported_per_response(serve, tiny_model_dir):
    rm = RewardModel.load(tiny_model_dir, device="cpu", max_length=64, truncation="left")
    old = [{"role": "user", "content": "old " * 10}, {"role": "assistant", "content": "reply " * 5}]
    groups = [{"context": [U], "responses": ["4"]}, {"context": [*old, U], "responses": ["4", "5"]}]
    with serve(rm) as srv:
        body = httpx.post(f"{srv.url}/v1/rewards/groups", json={"groups": groups}).json()
    assert [g["truncated"] for g in body["groups"]] == [[False], [True, True]]
    want = rm.score_groups([conversations(g) for g in groups])
    for got, expected in zip(body["groups"], want, strict=True):
        assert got["rewards"] == pytest.approx(expected, abs=TOL)
    assert body["groups"][1]["rewards"][0] == pytest.approx(body["groups"][0]["rewards"][0], abs=TOL)


@pytest.mark.parametrize(
    ("groups", "loc"),
    [
        (
            [GROUPS[0], {"context": [U, SYSTEM], "responses": ["a"]}],
            ["body", "groups", 1, "context", 1, "role"],
        ),
        ([GROUPS[0], {"context": [U], "responses": ["a", " \n"]}], ["body", "groups", 1, "responses", 1]),
        ([GROUPS[0], {"context": [U], "responses": ["a", ""]}], ["body", "groups", 1, "responses", 1]),
        ([{"context": [U], "responses": []}], ["body", "groups", 0, "responses"]),
        ([GROUPS[1], {"context": [], "responses": ["a"]}], ["body", "groups", 1, "context"]),
        ([GROUPS[1], {"context": [U], "responses": ["a"], "n": 1}], ["body", "groups", 1, "n"]),
        (
            [{"context": [{"role": "user", "content": "q", "name": "x"}], "responses": ["a"]}],
            ["body", "groups", 0, "context", 0, "name"],
        ),
        ([], ["body", "groups"]),
    ],
)
def test_validation_names_the_group(server, groups, loc):
    r = httpx.post(f"{server.url}/v1/rewards/groups", json={"groups": groups})
    assert r.status_code == 422, r.text
    assert [e["loc"] for e in r.json()["detail"]] == [loc]


def test_over_long_responses_fail_the_request_before_any_group_is_scored(serve, tiny_model_dir):
    rm = RewardModel.load(tiny_model_dir, device="cpu", max_length=64)
    groups = [GROUPS[1], {"context": [U], "responses": ["x" * 200, "ok", "y" * 300]}]
    with serve(rm) as srv:
        r = httpx.post(f"{srv.url}/v1/rewards/groups", json={"groups": groups})
        assert r.status_code == 422
        detail = r.json()["detail"]
        assert [e["loc"] for e in detail] == [["body", "groups", 1, "responses", i] for i in (0, 2)]
        assert all("over the maximum of 64" in e["msg"] for e in detail)
        assert metric(srv.url, "rewardkit_scored_conversations_total") == 0  # not even group 0
        assert metric(srv.url, "rewardkit_queue_depth") == 0


def test_request_limits_cover_all_groups(serve, tiny_rm):
    one = {"context": [U], "responses": ["4"] * 3}
    long = {"context": [U], "responses": ["z" * 400]}
    cases = [
        # each group alone is within the limit, the request is not
        ({"max_conversations": 8}, [one, one, one], "9 responses, over the limit of 8"),
        ({"max_conversations": 2}, [GROUPS[1]] * 3, "3 groups, over the limit of 2"),
        ({"max_request_chars": 1000}, [long] * 3, "--max-request-chars"),
        ({"max_request_tokens": 1000}, [long] * 3, "--max-request-tokens"),
        # a group's conversation: its context with its longest response
        (
            {"max_messages": 3},
            [one, {"context": [U, A, U], "responses": ["a"]}],
            "group 1 (context + response) has 4 messages",
        ),
        ({"max_conversation_chars": 300}, [one, long], "group 1 (context + response) has 412 characters"),
    ]
    for config, groups, words in cases:
        with serve(tiny_rm, **config) as srv:
            r = httpx.post(f"{srv.url}/v1/rewards/groups", json={"groups": groups})
            assert r.status_code == 413, (config, r.text)
            assert words in r.json()["detail"], (config, r.json())
            assert httpx.post(f"{srv.url}/v1/rewards/groups", json={"groups": groups[:1]}).status_code == 200


def test_a_client_that_leaves_cancels_all_its_groups(serve, tiny_model_dir, hooked_engine):
    """A slow engine with a small budget scores the request's groups over several batches; the
    client leaves during the first: the groups not yet in a batch are never scored."""
    started = threading.Event()

    def slow(batch):
        started.set()
        time.sleep(0.5)

    base = RewardModel.load(tiny_model_dir, device="cpu")
    engine = hooked_engine(base.model, slow, token_budget=128)
    rm = RewardModel(model=base.model, chat=base.chat, engine=engine, spec=base.spec)
    groups = [{"context": [U], "responses": [f"answer {i}", f"reply {i}"]} for i in range(8)]
    sent = sum(len(g["responses"]) for g in groups)
    per_group = sum(len(e.ids) for e in rm.encode(conversations(groups[0])))
    assert 128 // per_group < len(groups) // 2  # the request needs more than two batches
    with serve(rm, max_wait_ms=0) as srv:
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(f"{srv.url}/v1/rewards/groups", json={"groups": groups}, timeout=0.3)
        assert started.wait(10)
        deadline = time.monotonic() + 10
        while metric(srv.url, "rewardkit_requests_total", route="/v1/rewards/groups", code="499") < 1:
            assert time.monotonic() < deadline, "the request was not cancelled"
            time.sleep(0.05)
        assert metric(srv.url, "rewardkit_queue_depth") == 0
        # A later request queues behind whatever is left of the first: once it is answered,
        # the first's groups would all have been scored had they not been dropped.
        live = httpx.post(f"{srv.url}/v1/rewards/groups", json={"groups": groups[:1]}, timeout=30)
        assert live.status_code == 200
        scored = metric(srv.url, "rewardkit_scored_conversations_total") - 2
        assert 0 < scored < sent / 2  # the batches running when the client left


def test_a_failing_batch_fails_the_request_and_drops_its_other_groups(serve, tiny_model_dir, hooked_engine):
    base = RewardModel.load(tiny_model_dir, device="cpu")
    poison = base.tokenizer.convert_tokens_to_ids("~")

    def flaky(batch):
        time.sleep(0.2)
        if bool((batch.input_ids == poison).any()):
            raise RuntimeError("device fell over")

    engine = hooked_engine(base.model, flaky, token_budget=128)
    rm = RewardModel(model=base.model, chat=base.chat, engine=engine, spec=base.spec)
    groups = [{"context": [U], "responses": ["~", "~~"]}]
    groups += [{"context": [U], "responses": [f"answer {i}", f"reply {i}"]} for i in range(8)]
    with serve(rm, max_wait_ms=0) as srv:
        r = httpx.post(f"{srv.url}/v1/rewards/groups", json={"groups": groups}, timeout=30)
        assert r.status_code == 500
        assert r.json()["detail"] == "scoring failed: RuntimeError: device fell over"
        assert metric(srv.url, "rewardkit_queue_depth") == 0
        # Behind what is left of the first request (see the test above).
        live = httpx.post(f"{srv.url}/v1/rewards/groups", json={"groups": groups[1:2]}, timeout=30)
        assert live.status_code == 200
        scored = metric(srv.url, "rewardkit_scored_conversations_total") - 2
        assert scored < 2 * 8 / 2  # the batch taken as the first failed, not the 8 groups
