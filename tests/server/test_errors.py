"""Every error path of the server: status, the field or limit named, and the server keeps serving."""

from __future__ import annotations

import http.client
import threading
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from rewardkit.api import RewardModel
from rewardkit.data.conversation import Conversation

U = {"role": "user", "content": "What is 2+2?"}
A = {"role": "assistant", "content": "4"}
RENDERED = "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n4<|im_end|>\n"  # [U, A], ChatML


def loc_of(r: httpx.Response) -> list:
    assert r.status_code == 422, r.text
    (err,) = r.json()["detail"]
    return err["loc"]


@pytest.mark.parametrize(
    ("body", "loc", "msg"),
    [
        (
            {"conversations": [[U, {"role": "robot", "content": "x"}]]},
            ["body", "conversations", 0, 1, "role"],
            "role must be one of system, user, assistant, got 'robot'",
        ),
        (
            {"conversations": [[U, {"role": "assistant", "content": 5}]]},
            ["body", "conversations", 0, 1, "content"],
            "content must be a string or a list of text parts, got int",
        ),
        (
            {"conversations": [[U, {"role": "assistant", "content": ""}]]},
            ["body", "conversations", 0, 1, "content"],
            "content is empty",
        ),
        (
            {"conversations": [[U, A], [U, {"role": "assistant", "content": "  \n"}]]},
            ["body", "conversations", 1, 1, "content"],
            "content is empty",
        ),
        (
            {"conversations": [[U, A], [A, U]]},
            ["body", "conversations", 1, 1, "role"],
            "last message must be the assistant",
        ),
        (
            {"conversations": [[U, {"role": "system", "content": "s"}, A]]},
            ["body", "conversations", 0, 1, "role"],
            "system message is allowed only first",
        ),
        ({"conversations": []}, ["body", "conversations"], "at least 1"),
        ({"conversations": "hi"}, ["body", "conversations"], "valid list"),
        ({"conversations": [[U, A]], "temperature": 1}, ["body", "temperature"], "Extra inputs"),
        ({}, ["body", "conversations"], "Field required"),
    ],
)
def test_rewards_validation_names_the_field(server, body, loc, msg):
    r = httpx.post(f"{server.url}/v1/rewards", json=body)
    assert loc_of(r) == loc
    assert msg in r.json()["detail"][0]["msg"]


def test_malformed_json_is_422(server):
    r = httpx.post(
        f"{server.url}/v1/rewards",
        content=b'{"conversations": [',
        headers={"content-type": "application/json"},
    )
    assert r.status_code == 422
    assert r.json()["detail"][0]["type"] == "json_invalid"


@pytest.mark.parametrize(
    ("route", "body", "loc"),
    [
        (
            "/v1/rewards/compare",
            {"context": [U, {"role": "system", "content": "s"}], "responses": ["a"]},
            ["body", "context", 1, "role"],
        ),
        ("/v1/rewards/compare", {"context": [U], "responses": ["a", ""]}, ["body", "responses", 1]),
        ("/v1/rewards/compare", {"context": [], "responses": ["a"]}, ["body", "context"]),
        ("/get_reward", {"query": ["ok", 3]}, ["body", "query", 1]),
        ("/get_reward", {"query": ["ok", ""]}, ["body", "query", 1]),
        ("/classify", {"input": "x", "messages": [U, A]}, ["body"]),
        ("/classify", {"messages": [A, U]}, ["body", "messages", 1, "role"]),
        ("/pooling", {"messages": [U, {"role": "tool", "content": "x"}]}, ["body", "messages", 1, "role"]),
        ("/pooling", {"input": []}, ["body"]),
    ],
)
def test_compat_and_compare_validation(server, route, body, loc):
    assert loc_of(httpx.post(f"{server.url}{route}", json=body)) == loc


def test_over_long_conversation_is_422_at_the_conversation(serve, tiny_model_dir):
    rm = RewardModel.load(tiny_model_dir, device="cpu", max_length=64)
    long = {"role": "assistant", "content": "x" * 200}
    with serve(rm) as srv:
        r = httpx.post(f"{srv.url}/v1/rewards", json={"conversations": [[U, A], [U, long]]})
        assert loc_of(r)[:3] == ["body", "conversations", 1]
        assert "over the maximum of 64" in r.json()["detail"][0]["msg"]
        queries = [rm.chat.render(Conversation.of(c).messages) for c in ([U, A], [U, long])]
        r = httpx.post(f"{srv.url}/get_reward", json={"query": queries})
        assert loc_of(r) == ["body", "query", 1]


def test_truncation_left_is_reported(serve, tiny_model_dir, tiny_rm):
    rm = RewardModel.load(tiny_model_dir, device="cpu", max_length=64, truncation="left")
    turns = [{"role": "user", "content": "old " * 10}, {"role": "assistant", "content": "reply " * 5}, U, A]
    with serve(rm) as srv:
        body = httpx.post(f"{srv.url}/v1/rewards", json={"conversations": [[U, A], turns]}).json()
        assert body["truncated"] == [False, True]
        assert body["rewards"] == pytest.approx(rm.score([[U, A], turns]), abs=1e-5)
        assert body["rewards"][1] == pytest.approx(
            tiny_rm.score([[U, A]])[0], abs=1e-5
        )  # kept: last exchange
        metrics = httpx.get(f"{srv.url}/metrics").text
        assert "rewardkit_truncated_conversations_total 1.0" in metrics


def test_request_caps_are_413(server):
    r = httpx.post(f"{server.url}/v1/rewards", json={"conversations": [[U, A]] * 65})
    assert r.status_code == 413
    assert "65 conversations, over the limit of 64" in r.json()["detail"]
    big = {"role": "assistant", "content": "z" * 1000}
    r = httpx.post(f"{server.url}/v1/rewards", json={"conversations": [[U, big]] * 30})
    assert r.status_code == 413
    assert "over the limit of 20000" in r.json()["detail"] and "--max-request-tokens" in r.json()["detail"]


def test_body_size_cap_is_413(serve, tiny_rm):
    with serve(tiny_rm, max_body_bytes=1000) as srv:
        r = httpx.post(
            f"{srv.url}/v1/rewards",
            json={"conversations": [[U, {"role": "assistant", "content": "w" * 2000}]]},
        )
        assert r.status_code == 413
        assert "--max-body-bytes" in r.json()["detail"]


ROUTES = [
    ("GET", "/ready", None),
    ("GET", "/v1/models", None),
    ("GET", "/metrics", None),
    ("GET", "/docs", None),
    ("GET", "/openapi.json", None),
    ("POST", "/v1/rewards", {"conversations": [[U, A]]}),
    ("POST", "/v1/rewards/compare", {"context": [U], "responses": ["4"]}),
    ("POST", "/v1/rewards/groups", {"groups": [{"context": [U], "responses": ["4"]}]}),
    ("POST", "/get_reward", {"query": [RENDERED]}),
    ("POST", "/classify", {"input": "text"}),
    ("POST", "/pooling", {"input": "text"}),
    ("GET", "/no/such/route", None),
]


def test_api_key_on_every_route_but_health(serve, tiny_rm):
    with serve(tiny_rm, api_key="s3cret") as srv, httpx.Client(base_url=srv.url) as http:
        assert http.get("/health").status_code == 200
        for method, path, body in ROUTES:
            for headers in (
                {},
                {"Authorization": "Bearer wrong"},
                {"Authorization": "s3cret"},
                {"Authorization": "Basic s3cret"},
            ):
                r = http.request(method, path, json=body, headers=headers)
                assert r.status_code == 401, (path, headers)
                assert r.headers["www-authenticate"] == "Bearer"
            r = http.request(method, path, json=body, headers={"Authorization": "Bearer s3cret"})
            assert r.status_code == (404 if path == "/no/such/route" else 200), (path, r.text)


def test_overload_gives_429_and_no_wrong_answer(
    serve, fresh_rm: RewardModel, conversations, offline, post_json
):
    """A small queue and a long batch wait: the excess gets 429 + Retry-After, the rest is exact."""
    with serve(fresh_rm, max_queue=4, max_conversations=2, max_wait_ms=300) as srv:
        barrier = threading.Barrier(32)

        def one(i: int):
            conn = http.client.HTTPConnection(srv.host, srv.port, timeout=60)
            conn.connect()
            barrier.wait()
            status, headers, body = post_json(conn, "/v1/rewards", {"conversations": [conversations[i]]})
            conn.close()
            return i, status, headers, body

        with ThreadPoolExecutor(32) as pool:
            results = list(pool.map(one, range(32)))
        ok = [(i, b) for i, st, _, b in results if st == 200]
        busy = [(h, b) for _, st, h, b in results if st == 429]
        assert len(ok) + len(busy) == 32
        assert len(ok) >= 4 and busy
        for i, body in ok:
            assert body["rewards"] == pytest.approx([offline[i]], abs=1e-5)
        for headers, body in busy:
            assert int(headers["retry-after"]) >= 1
            assert "at capacity" in body["detail"] and "limit 4" in body["detail"]
        # Still serving, and the queue has drained.
        r = httpx.post(f"{srv.url}/v1/rewards", json={"conversations": [conversations[0]]})
        assert r.status_code == 200 and r.json()["rewards"] == pytest.approx([offline[0]], abs=1e-5)
        assert "rewardkit_queue_depth 0.0" in httpx.get(f"{srv.url}/metrics").text


def test_a_failing_batch_fails_only_its_requests(
    serve, hooked_rm, tiny_rm: RewardModel, conversations, offline
):
    poison = tiny_rm.tokenizer.convert_tokens_to_ids("~")

    def flaky(batch):
        if bool((batch.input_ids == poison).any()):
            raise RuntimeError("device fell over")

    fresh_rm = hooked_rm(flaky)
    with serve(fresh_rm, max_wait_ms=0) as srv:
        bad = httpx.post(
            f"{srv.url}/v1/rewards", json={"conversations": [[U, {"role": "assistant", "content": "~"}]]}
        )
        assert bad.status_code == 500
        assert bad.json()["detail"] == "scoring failed: RuntimeError: device fell over"
        good = httpx.post(f"{srv.url}/v1/rewards", json={"conversations": conversations[:3]})
        assert good.status_code == 200
        assert good.json()["rewards"] == pytest.approx(offline[:3], abs=1e-5)
        families = {f.name: f for f in text_string_to_metric_families(httpx.get(f"{srv.url}/metrics").text)}
        assert families["rewardkit_batch_failures"].samples[0].value == 1.0


def test_metrics_move(serve, tiny_rm: RewardModel, conversations):
    def scrape(url: str) -> dict[tuple[str, tuple], float]:
        text = httpx.get(f"{url}/metrics").text
        return {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for f in text_string_to_metric_families(text)
            for s in f.samples
        }

    with serve(tiny_rm) as srv:
        before = scrape(srv.url)
        tokens = sum(len(e.ids) for e in tiny_rm.encode(conversations[:5]))
        for c in conversations[:5]:
            assert httpx.post(f"{srv.url}/v1/rewards", json={"conversations": [c]}).status_code == 200
        httpx.post(f"{srv.url}/v1/rewards", json={"conversations": []})
        after = scrape(srv.url)

    def delta(name: str, **labels: str) -> float:
        key = (name, tuple(sorted(labels.items())))
        return after.get(key, 0.0) - before.get(key, 0.0)

    assert delta("rewardkit_requests_total", route="/v1/rewards", code="200") == 5
    assert delta("rewardkit_requests_total", route="/v1/rewards", code="422") == 1
    assert delta("rewardkit_request_errors_total", route="/v1/rewards", code="422") == 1
    assert delta("rewardkit_request_errors_total", route="/v1/rewards", code="200") == 0
    assert delta("rewardkit_request_duration_seconds_count", route="/v1/rewards") == 6
    assert delta("rewardkit_scored_tokens_total") == tokens
    assert delta("rewardkit_scored_conversations_total") == 5
    assert delta("rewardkit_batch_conversations_sum") == 5
    assert delta("rewardkit_batch_tokens_sum") == tokens
    assert delta("rewardkit_reward_count") == 5
    assert after[("rewardkit_tokens_per_second", ())] > 0
    assert after[("rewardkit_queue_depth", ())] == 0
    assert after[("rewardkit_inflight_requests", ())] == 1  # the scrape itself
