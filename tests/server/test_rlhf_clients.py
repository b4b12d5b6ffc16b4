"""Requests exactly as OpenRLHF's and verl's reward clients build and send them, read from their
source (neither framework is installed here):

- OpenRLHF at 3c3be6234e0cb353e76bb8019947db9dfe99fca7 (2026-08-13), ``openrlhf/utils/agent.py``,
  ``SingleTurnAgentExecutor``: the prompt is ``apply_chat_template(chat, tokenize=False,
  add_generation_prompt=True)`` (``openrlhf/datasets/prompts_dataset.py``); the query is
  ``decode(prompt_ids + action_ids, skip_special_tokens=False)`` where ``action_ids`` are vLLM's
  output tokens (the response, then the end-of-turn token unless cut by the length limit); it
  POSTs ``{"query": [query], "prompts": [prompt], "labels": [label]}`` with aiohttp and no
  headers to each ``--reward.remote_url``, and reads ``scores`` (else ``rewards``) and
  ``extra_logs`` (every value made a tensor).
- verl at b178a3cd56f58b2d502255daba591e92833930a7 (2026-01-29),
  ``verl/experimental/reward_loop/reward_loop.py``, ``RewardLoopWorker.compute_score_disrm``: the
  input is ``apply_chat_template(raw_prompt + [assistant: decode(response).replace(eos, "")],
  add_generation_prompt=False, tokenize=False)``; it POSTs ``{"model":
  reward_model.model.path, "input": ..., "activation": False}`` to ``/classify`` with no headers
  and reads ``data[-1]["probs"][-1]``.
"""

from __future__ import annotations

import httpx
import pytest

from rewardkit.api import RewardModel

TOL = 1e-5
CHAT = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "What is 1+1?"}]
RESPONSE = "1+1=2"
VALID = "<|im_start|>user\nq<|im_end|>\n<|im_start|>assistant\na<|im_end|>\n"  # ChatML, the tiny model's


def openrlhf_payload(rm: RewardModel, chat: list[dict], response: str, *, finished: bool = True) -> dict:
    tok = rm.tokenizer
    prompt = tok.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
    prompt_ids = tok(text=prompt, add_special_tokens=False)["input_ids"]
    action_ids = tok(response, add_special_tokens=False)["input_ids"]
    if finished:  # vLLM stops at the end-of-turn token and returns it
        action_ids = [*action_ids, tok.convert_tokens_to_ids("<|im_end|>")]
    query = tok.decode(prompt_ids + action_ids, skip_special_tokens=False)
    return {"query": [query], "prompts": [prompt], "labels": [""]}


def verl_payload(rm: RewardModel, chat: list[dict], response: str, model: str) -> dict:
    tok = rm.tokenizer
    response_ids = tok(response + tok.eos_token, add_special_tokens=False)["input_ids"]
    rollout_response = tok.decode(response_ids).replace(tok.eos_token, "")
    rm_prompt = tok.apply_chat_template(
        [*chat, {"role": "assistant", "content": rollout_response}],
        add_generation_prompt=False,
        tokenize=False,
    )
    return {"model": model, "input": rm_prompt, "activation": False}


@pytest.fixture
def card(tiny_rm: RewardModel) -> float:
    """The model card's reward of CHAT + RESPONSE."""
    return tiny_rm.score([[*CHAT, {"role": "assistant", "content": RESPONSE}]])[0]


def test_openrlhf_query_scores_as_the_card_with_the_key_in_the_url(serve, tiny_rm, card):
    payload = openrlhf_payload(tiny_rm, CHAT, RESPONSE)
    assert payload["query"][0].endswith("<|im_end|>")  # without the template's "\n": the case to fix
    as_is = tiny_rm.engine.score_ids([tiny_rm.encode_texts(payload["query"])[0].ids])[0]  # type: ignore[union-attr]
    assert abs(as_is - card) > 1e-3  # scoring the text as it is would silently differ
    with serve(tiny_rm, api_key="k", key_in_path=True) as srv:
        r = httpx.post(f"{srv.url}/key/k/get_reward", json=payload)  # no Authorization header
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["rewards"] == pytest.approx([card], abs=TOL)
        assert (body.get("scores") or body["rewards"]) == body["rewards"]
        assert body["spec"]["completed"] == [{"query": 0, "appended": "\n"}]
        assert body["extra_logs"]["completed"] == [1.0]
        assert all(
            isinstance(v, list) and all(isinstance(x, float) for x in v) for v in body["extra_logs"].values()
        )
        for url in (f"{srv.url}/get_reward", f"{srv.url}/key/wrong/get_reward"):
            assert httpx.post(url, json=payload).status_code == 401


def test_openrlhf_query_cut_by_the_length_limit_is_completed_too(server, tiny_rm):
    payload = openrlhf_payload(tiny_rm, CHAT, "1+1 is", finished=False)
    body = httpx.post(f"{server.url}/get_reward", json=payload).json()
    expected = tiny_rm.score([[*CHAT, {"role": "assistant", "content": "1+1 is"}]])
    assert body["rewards"] == pytest.approx(expected, abs=TOL)
    assert body["spec"]["completed"] == [{"query": 0, "appended": "<|im_end|>\n"}]


@pytest.mark.parametrize(
    ("query", "says"),
    [
        ("What is 1+1? 1+1=2", "does not start as this model's chat template renders"),
        (
            "<|im_start|>user\nWhat is 1+1?<|im_end|>\n<|im_start|>assistant\n",
            "last turn is not the assistant",
        ),
        ("<|im_start|>user\nWhat is 1+1?<|im_end|>\n", "last turn is not the assistant"),
    ],
)
def test_a_query_that_is_not_a_rendered_conversation_is_refused(server, query, says):
    r = httpx.post(f"{server.url}/get_reward", json={"query": [VALID, query]})
    assert r.status_code == 422
    (err,) = r.json()["detail"]
    assert err["loc"] == ["body", "query", 1] and says in err["msg"]


def test_verl_request_with_its_own_model_name(serve, tiny_rm, card):
    verl_model = "/data/verl/models/Qwen-2.5-Nemotron-32B-Reward"  # verl sends reward_model.model.path
    payload = verl_payload(tiny_rm, CHAT, RESPONSE, verl_model)
    with serve(tiny_rm, api_key="k", key_in_path=True, served_model_name=["my-rm", verl_model]) as srv:
        r = httpx.post(f"{srv.url}/key/k/classify", json=payload)
        assert r.status_code == 200, r.text
        assert r.json()["data"][-1]["probs"][-1] == pytest.approx(card, abs=TOL)  # what verl reads
        assert r.json()["model"] == "my-rm"
        with_header = httpx.post(f"{srv.url}/classify", json=payload, headers={"Authorization": "Bearer k"})
        assert with_header.json()["data"][-1]["probs"][-1] == pytest.approx(card, abs=TOL)
        other = httpx.post(f"{srv.url}/key/k/classify", json={**payload, "model": "/elsewhere/rm"})
        assert other.status_code == 404 and "--served-model-name" in other.json()["detail"]
