"""RewardClient / AsyncRewardClient: against a real server, and retry behaviour on scripted replies."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from rewardkit.client import AsyncRewardClient, RetryPolicy, RewardClient, RewardServerError
from rewardkit.data.conversation import Conversation
from rewardkit.errors import ConfigError

NO_WAIT = RetryPolicy(max_retries=3, backoff=0.0)


def test_sync_client_against_server(server, conversations, offline, tiny_rm):
    with RewardClient(server.url) as rc:
        assert rc.ready()
        assert rc.rewards(conversations[:4]) == pytest.approx(offline[:4], abs=1e-5)
        assert rc.rewards([Conversation.of(conversations[5])]) == pytest.approx([offline[5]], abs=1e-5)
        text = tiny_rm.chat.render(Conversation.of(conversations[6]).messages)
        assert rc.get_reward([text]) == pytest.approx([offline[6]], abs=1e-5)
        ctx = conversations[7][:-1]
        out = rc.compare(ctx, [conversations[7][-1]["content"], "other"])
        assert out["rewards"][0] == pytest.approx(offline[7], abs=1e-5)
        messages = Conversation.of(conversations[8]).messages  # Message objects are accepted too
        groups = [(ctx, ["other", conversations[7][-1]["content"]]), (messages[:-1], [messages[-1].content])]
        out = rc.groups(groups)
        assert [g["rewards"][-1] for g in out["groups"]] == pytest.approx(offline[7:9], abs=1e-5)
        with pytest.raises(RewardServerError) as e:
            rc.rewards([[{"role": "user", "content": "no answer"}]])
        assert e.value.status_code == 422
        assert e.value.detail[0]["loc"] == ["body", "conversations", 0, 0, "role"]


def test_async_client_against_server(server, conversations, offline):
    async def main():
        async with AsyncRewardClient(server.url) as rc:
            assert await rc.ready()
            one_each = await asyncio.gather(*(rc.rewards([c]) for c in conversations[:16]))
            grouped = await rc.groups([(c[:-1], [c[-1]["content"]]) for c in conversations[:16]])
            return one_each, grouped

    one_each, grouped = asyncio.run(main())
    assert [r[0] for r in one_each] == pytest.approx(offline[:16], abs=1e-5)
    assert [g["rewards"][0] for g in grouped["groups"]] == pytest.approx(offline[:16], abs=1e-5)


def test_api_key_is_sent(serve, tiny_rm, conversations):
    with serve(tiny_rm, api_key="k") as srv:
        with RewardClient(srv.url, api_key="k") as rc:
            assert len(rc.rewards(conversations[:1])) == 1
        with (
            RewardClient(srv.url, api_key="wrong", retry=NO_WAIT) as rc,
            pytest.raises(RewardServerError) as e,
        ):
            rc.rewards(conversations[:1])
        assert e.value.status_code == 401


class Script:
    """A transport answering with scripted statuses, then a success."""

    def __init__(self, *statuses: int) -> None:
        self.statuses = list(statuses)
        self.calls = 0

    def reply(self, request: httpx.Request) -> httpx.Response:
        self.calls += 1
        if self.statuses:
            status = self.statuses.pop(0)
            if status == 0:
                raise httpx.ConnectError("refused", request=request)
            return httpx.Response(status, json={"detail": f"status {status}"}, headers={"Retry-After": "0"})
        return httpx.Response(200, json={"rewards": [1.5]})


@pytest.mark.parametrize("statuses", [(429,), (503, 500), (0, 502, 504)])
def test_retries_then_succeeds(statuses):
    script = Script(*statuses)
    with RewardClient("http://rm", retry=NO_WAIT, transport=httpx.MockTransport(script.reply)) as rc:
        assert rc.rewards([[{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]]) == [
            1.5
        ]
    assert script.calls == len(statuses) + 1


def test_async_retries_then_succeeds():
    script = Script(429, 0, 500)

    async def main():
        transport = httpx.MockTransport(script.reply)
        async with AsyncRewardClient("http://rm", retry=NO_WAIT, transport=transport) as rc:
            return await rc.get_reward(["text"])

    assert asyncio.run(main()) == [1.5]
    assert script.calls == 4


def test_gives_up_after_max_retries():
    script = Script(429, 429, 429, 429, 429)
    rc = RewardClient("http://rm", retry=NO_WAIT, transport=httpx.MockTransport(script.reply))
    with rc, pytest.raises(RewardServerError, match="429") as e:
        rc.get_reward(["text"])
    assert script.calls == 4 and e.value.detail == "status 429"


@pytest.mark.parametrize("status", [400, 401, 404, 413, 422])
def test_client_errors_are_not_retried(status):
    script = Script(status)
    rc = RewardClient("http://rm", retry=NO_WAIT, transport=httpx.MockTransport(script.reply))
    with rc, pytest.raises(RewardServerError) as e:
        rc.get_reward(["text"])
    assert script.calls == 1 and e.value.status_code == status


def test_backoff_doubles_honours_retry_after_and_caps():
    policy = RetryPolicy(backoff=1.0, max_backoff=10.0)
    assert 0.75 <= policy.delay(0, None) <= 1.25
    assert 3.0 <= policy.delay(2, None) <= 5.0
    assert policy.delay(10, None) == 10.0
    assert policy.delay(0, httpx.Response(429, headers={"Retry-After": "7"})) == 7.0
    assert policy.delay(0, httpx.Response(429, headers={"Retry-After": "600"})) == 10.0
    with pytest.raises(ConfigError, match="max_retries"):
        RetryPolicy(max_retries=-1)
