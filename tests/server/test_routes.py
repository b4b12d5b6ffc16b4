"""Routes against a real server: every answer equals the offline score of the same input."""

from __future__ import annotations

import http.client
import math
import random
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from rewardkit.api import RewardModel
from rewardkit.data.conversation import Conversation

TOL = 1e-5  # fp32 matmuls over differently sized packed batches differ in the last bits


def test_64_concurrent_clients_get_offline_rewards(server, conversations, offline, post_json):
    """64 clients × 20 requests of 1–2 conversations: all 200, every reward equal to the offline one."""

    def client(cid: int) -> list[tuple[list[int], int, dict]]:
        rng = random.Random(cid)
        conn = http.client.HTTPConnection(server.host, server.port, timeout=60)
        out = []
        for _ in range(20):
            idx = rng.sample(range(len(conversations)), rng.randint(1, 2))
            status, _, body = post_json(
                conn, "/v1/rewards", {"conversations": [conversations[i] for i in idx]}
            )
            out.append((idx, status, body))
        conn.close()
        return out

    with ThreadPoolExecutor(64) as pool:
        per_client = list(pool.map(client, range(64)))
    results = [x for rows in per_client for x in rows]
    assert len(results) == 64 * 20
    for idx, status, body in results:
        assert status == 200, body
        assert body["rewards"] == pytest.approx([offline[i] for i in idx], abs=TOL)
        assert body["truncated"] == [False] * len(idx)
        assert body["usage"]["tokens"] == sum(body["num_tokens"])
        assert body["model"] == body["spec"]["model"]
    # Requests really were batched together: fewer engine batches than requests.
    metrics = httpx.get(f"{server.url}/metrics").text
    batches = next(
        float(line.split()[-1])
        for line in metrics.splitlines()
        if line.startswith("rewardkit_batch_conversations_count")
    )
    assert batches < 64 * 20


def test_response_carries_spec_and_token_counts(server, tiny_rm: RewardModel, conversations, served_name):
    body = httpx.post(f"{server.url}/v1/rewards", json={"conversations": conversations[:2]}).json()
    # The spec, with the served name where the model's path was.
    assert body["spec"] == {**tiny_rm.spec.to_dict(), "model": served_name}
    expected = [len(e.ids) for e in tiny_rm.encode(conversations[:2])]
    assert body["num_tokens"] == expected
    assert body["usage"] == {"tokens": sum(expected)}


def test_compare(server, tiny_rm: RewardModel):
    context = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "What is 2+2?"}]
    responses = ["4", "It is four.", "5", "I do not know"]
    body = httpx.post(
        f"{server.url}/v1/rewards/compare", json={"context": context, "responses": responses}
    ).json()
    expected = tiny_rm.score([[*context, {"role": "assistant", "content": r}] for r in responses])
    assert body["rewards"] == pytest.approx(expected, abs=TOL)
    r = body["rewards"]
    mean = sum(r) / len(r)
    assert body["centered_rewards"] == pytest.approx([x - mean for x in r], abs=1e-9)
    assert sum(body["centered_rewards"]) == pytest.approx(0.0, abs=1e-9)
    k = len(responses)
    p = body["win_prob"]
    assert len(p) == k and all(len(row) == k for row in p)
    for i in range(k):
        assert p[i][i] == 0.5
        for j in range(k):
            assert p[i][j] == pytest.approx(1 / (1 + math.exp(-(r[i] - r[j]))), abs=1e-12)
            assert p[i][j] + p[j][i] == pytest.approx(1.0, abs=1e-12)


def test_openrlhf_get_reward(server, tiny_rm: RewardModel, conversations, offline):
    """Queries are rendered conversations: the same reward as the conversation."""
    queries = [tiny_rm.chat.render(Conversation.of(c).messages) for c in conversations[:5]]
    body = httpx.post(
        f"{server.url}/get_reward",
        json={"query": queries, "prompts": ["p"] * 5, "labels": [None] * 5},
    ).json()
    assert set(body) == {"rewards", "scores", "extra_logs", "spec"}
    assert body["rewards"] == pytest.approx(offline[:5], abs=TOL)
    assert body["scores"] == body["rewards"]
    assert body["extra_logs"]["truncated"] == [0.0] * 5
    assert body["extra_logs"]["completed"] == [0.0] * 5 and body["spec"]["completed"] == []
    assert body["extra_logs"]["num_tokens"] == [float(len(e.ids)) for e in tiny_rm.encode(conversations[:5])]


@pytest.mark.parametrize("route", ["/classify", "/pooling"])
def test_vllm_shapes(server, tiny_rm: RewardModel, conversations, offline, route, served_name):
    conv = conversations[3]
    text = tiny_rm.chat.render(Conversation.of(conv).messages)
    n_tokens = len(tiny_rm.encode([conv])[0].ids)
    # Chat form, one content given as text parts: the same conversation, the same reward.
    parts = [
        {**m, "content": [{"type": "text", "text": m["content"]}]} if i == 0 else m
        for i, m in enumerate(conv)
    ]
    for payload, expected, tokens in [
        ({"input": text}, [offline[3]], n_tokens),
        ({"input": [text, text]}, [offline[3]] * 2, 2 * n_tokens),
        ({"messages": parts, "model": served_name}, [offline[3]], n_tokens),
    ]:
        for activation in (None, False, True):
            body = httpx.post(f"{server.url}{route}", json={**payload, "use_activation": activation}).json()
            want = [1 / (1 + math.exp(-x)) for x in expected] if activation else expected
            assert body["object"] == "list"
            assert body["id"].startswith("classify-" if route == "/classify" else "pool-")
            assert body["model"] == served_name
            assert isinstance(body["created"], int)
            assert body["usage"] == {
                "prompt_tokens": tokens,
                "total_tokens": tokens,
                "completion_tokens": 0,
                "prompt_tokens_details": None,
            }
            assert [d["index"] for d in body["data"]] == list(range(len(expected)))
            if route == "/classify":
                assert all(d["num_classes"] == 1 and d["label"] == "LABEL_0" for d in body["data"])
                got = [d["probs"][0] for d in body["data"]]
            else:
                assert all(d["object"] == "pooling" and len(d["data"]) == 1 for d in body["data"])
                got = [d["data"][0] for d in body["data"]]
            assert got == pytest.approx(want, abs=TOL)


def test_health_ready_models(server, tiny_rm: RewardModel, served_name):
    assert httpx.get(f"{server.url}/health").json() == {"status": "ok"}
    assert httpx.get(f"{server.url}/ready").json() == {"status": "ready", "model": served_name}
    models = httpx.get(f"{server.url}/v1/models").json()
    assert models["object"] == "list"
    assert [(m["id"], m["object"], m["max_model_len"]) for m in models["data"]] == [
        (served_name, "model", tiny_rm.spec.max_length)
    ]


def test_served_model_name(serve, tiny_rm: RewardModel, conversations):
    with serve(tiny_rm, served_model_name=["my-rm", "/models/rm"]) as srv:
        for name in ("my-rm", "/models/rm"):  # every name is accepted; the first is answered
            body = httpx.post(
                f"{srv.url}/v1/rewards", json={"model": name, "conversations": conversations[:1]}
            )
            assert body.json()["model"] == "my-rm" and body.json()["spec"]["model"] == "my-rm"
        assert [m["id"] for m in httpx.get(f"{srv.url}/v1/models").json()["data"]] == ["my-rm", "/models/rm"]
        wrong = httpx.post(
            f"{srv.url}/v1/rewards", json={"model": "other", "conversations": conversations[:1]}
        )
        assert wrong.status_code == 404
        assert "'other' is not served here" in wrong.json()["detail"]


def test_event_loop_stays_responsive_during_a_slow_batch(serve, hooked_rm, conversations):
    """The engine runs on a worker thread: /health answers while a batch is computing."""
    import threading
    import time

    started = threading.Event()

    def slow(batch):
        started.set()
        time.sleep(1.0)

    fresh_rm = hooked_rm(slow)
    with serve(fresh_rm, max_wait_ms=0) as srv, httpx.Client(base_url=srv.url, timeout=30) as http:
        box: dict = {}
        t = threading.Thread(
            target=lambda: box.update(r=http.post("/v1/rewards", json={"conversations": conversations[:1]}))
        )
        t.start()
        assert started.wait(10)
        t0 = time.perf_counter()
        assert httpx.get(f"{srv.url}/health").status_code == 200
        assert time.perf_counter() - t0 < 0.5
        t.join()
        assert box["r"].status_code == 200
