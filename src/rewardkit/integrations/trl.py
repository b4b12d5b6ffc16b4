"""A reward function for TRL's online trainers (``GRPOTrainer``, ``RLOOTrainer``) backed by a
rewardkit reward model, in this process or behind ``rewardkit serve``.

TRL calls a custom reward function as ``f(prompts=..., completions=..., completion_ids=...,
**dataset_columns_and_trainer_state)`` with one entry per completion: each prompt repeated once per
generation, and returns one reward per completion (``None``: no reward for that completion). It
names the function by its ``__name__`` in its logs (``rewards/<name>/mean``). Prompts and
completions come in one of two formats (read from TRL 1.x ``GRPOTrainer._calculate_rewards`` and
``_generate_single_turn``):

- standard: ``prompts[i]`` and ``completions[i]`` are strings;
- conversational: ``prompts[i]`` is a list of ``{"role", "content"}`` messages and
  ``completions[i]`` is ``[{"role": "assistant", "content": ...}]``.

`RewardFunction` groups the completions of each distinct prompt and scores every group as one
shared-prompt group (the prompt's tokens computed once): all of a call's groups in one engine call
for a local model, or in one ``POST /v1/rewards/groups`` request for a server. A standard-format
prompt is the user turn and the completion the assistant turn, the reward model card's contract;
the model's own chat template renders them.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from rewardkit.data.conversation import Message, ResponseGroup
from rewardkit.data.formats import parse_group
from rewardkit.errors import InputError

if TYPE_CHECKING:
    from rewardkit.api import RewardModel
    from rewardkit.client import RewardClient

log = logging.getLogger(__name__)

Reward = float | None


class GroupScorer(Protocol):
    """Scores response groups: one list of rewards per group, an `InputError` in place of a
    reward that cannot be computed (e.g. a conversation too long for the length policy)."""

    def __call__(self, groups: Sequence[ResponseGroup]) -> list[list[float | InputError]]: ...


class LocalScorer:
    """Scores groups with a `RewardModel` in this process: one engine call per batch of groups."""

    def __init__(self, rm: RewardModel) -> None:
        self.rm = rm

    def __call__(self, groups: Sequence[ResponseGroup]) -> list[list[float | InputError]]:
        from rewardkit.nested import flatten, split

        flat, sizes = flatten(g.conversations() for g in groups)
        encoded = self.rm.encode(flat)
        ok = [e for e in encoded if not isinstance(e, InputError)]
        ok_sizes = [sum(not isinstance(e, InputError) for e in grp) for grp in split(encoded, sizes)]
        scored = iter(self.rm.score_encoded(ok, group_sizes=[n for n in ok_sizes if n]))
        rewards = [e if isinstance(e, InputError) else next(scored).reward for e in encoded]
        return split(rewards, sizes)


class ServerScorer:
    """Scores groups through ``rewardkit serve``: one ``/v1/rewards/groups`` request per call,
    each group scored with its prompt computed once.

    The route takes each response as one assistant turn after the group's context. A response of
    several messages (``[assistant, user, assistant]``) is sent as its last turn after the
    context and its earlier turns: the same conversation, so the same reward; it shares its
    context with the responses that have the same earlier turns.

    Args:
        client: a `rewardkit.client.RewardClient` (its retries and timeout apply to the request).
    """

    def __init__(self, client: RewardClient) -> None:
        self.client = client

    def __call__(self, groups: Sequence[ResponseGroup]) -> list[list[float | InputError]]:
        # 1. Each response as (its context, its last turn); equal contexts make one group.
        index: dict[tuple[Message, ...], int] = {}
        sent: list[tuple[list[dict[str, str]], list[str]]] = []
        places: list[list[tuple[int, int]]] = []  # per group and response: (sent group, position)
        for group in groups:
            places.append([])
            for response in group.responses:
                context = group.context + response[:-1]
                g = index.setdefault(context, len(sent))
                if g == len(sent):
                    sent.append(([m.to_dict() for m in context], []))
                places[-1].append((g, len(sent[g][1])))
                sent[g][1].append(response[-1].content)
        # 2. One request; the rewards back in the groups' order.
        answer = self.client.groups(sent)["groups"] if sent else []
        return [[answer[g]["rewards"][i] for g, i in at] for at in places]


def _prompt_key(prompt: Any) -> str:
    return prompt if isinstance(prompt, str) else json.dumps(prompt, sort_keys=True, default=str)


def _is_empty(completion: Any) -> bool:
    """No text to judge: an empty string, or messages whose contents are all empty."""
    if isinstance(completion, str):
        return not completion.strip()
    if isinstance(completion, Sequence) and all(isinstance(m, dict) for m in completion):
        return all(not str(m.get("content") or "").strip() for m in completion)
    return False


class RewardFunction:
    """A TRL reward function (``GRPOTrainer(reward_funcs=[RewardFunction.from_model(...)])``).

    Args:
        scorer: a `LocalScorer`, a `ServerScorer`, or any `GroupScorer`.
        name: the ``__name__`` TRL logs the rewards under (``rewards/<name>/mean``).
        empty_reward: the reward of an empty completion, which the model's contract does not
            define. ``None`` (default) returns ``None`` for it: TRL then leaves the completion out
            of its group's baseline and gives it no advantage (TRL >= 1.6).

    Raises (when called):
        InputError: a prompt or completion is malformed, or a conversation is too long for the
            model's length policy (load the model with ``truncation="left"`` to drop the oldest
            context instead); the field names TRL's index (``completions[12]``).
        RewardServerError: (a server) the server refused the request or could not be reached
            after the client's retries; a conversation too long for the served model's length
            policy is a 422 naming it in the request (``["body", "groups", g, "responses", i]``).
    """

    def __init__(self, scorer: GroupScorer, *, name: str = "rewardkit", empty_reward: float | None = None):
        self.scorer = scorer
        self.__name__ = name
        self.empty_reward = empty_reward

    @classmethod
    def from_model(
        cls,
        model: RewardModel | str | Path,
        *,
        name: str = "rewardkit",
        empty_reward: float | None = None,
        **load: Any,
    ) -> RewardFunction:
        """Backed by a reward model in this process (a loaded `RewardModel`, or a hub id or
        directory loaded with ``RewardModel.load(model, **load)``, e.g. ``device="cuda:1"``)."""
        from rewardkit.api import RewardModel

        rm = model if isinstance(model, RewardModel) else RewardModel.load(model, **load)
        return cls(LocalScorer(rm), name=name, empty_reward=empty_reward)

    @classmethod
    def from_server(
        cls,
        base_url: str,
        *,
        api_key: str | None = None,
        timeout: float = 120.0,
        name: str = "rewardkit",
        empty_reward: float | None = None,
    ) -> RewardFunction:
        """Backed by ``rewardkit serve`` at ``base_url`` (``Authorization: Bearer api_key``):
        one ``POST /v1/rewards/groups`` per call."""
        from rewardkit.client import RewardClient

        client = RewardClient(base_url, api_key=api_key, timeout=timeout)
        return cls(ServerScorer(client), name=name, empty_reward=empty_reward)

    def __call__(
        self, prompts: Sequence[Any], completions: Sequence[Any], completion_ids: Any = None, **kwargs: Any
    ) -> list[Reward]:
        """One reward per completion, ``completions[i]`` judged as the answer to ``prompts[i]``."""
        if len(prompts) != len(completions):
            raise InputError(
                f"got {len(prompts)} prompts for {len(completions)} completions", field="prompts"
            )
        # 1. Group the completions by prompt (TRL repeats each prompt once per generation).
        members: dict[str, list[int]] = {}
        first: dict[str, int] = {}
        empty = [i for i, c in enumerate(completions) if _is_empty(c)]
        skip = set(empty)
        for i, p in enumerate(prompts):
            key = _prompt_key(p)
            first.setdefault(key, i)
            if i not in skip:
                members.setdefault(key, []).append(i)
        # 2. Validate each group as a {"prompt", "responses"} record.
        keys = list(members)
        groups = [self._group(prompts[first[k]], first[k], members[k], completions) for k in keys]
        # 3. Score all groups at once and put the rewards back in TRL's order.
        rewards: list[Reward] = [self.empty_reward] * len(completions)
        for k, group_rewards in zip(keys, self.scorer(groups) if groups else [], strict=True):
            for i, r in zip(members[k], group_rewards, strict=True):
                if isinstance(r, InputError):  # too long for the model's length policy
                    raise InputError(r.message, field=f"completions[{i}]")
                rewards[i] = r
        if empty:
            log.warning(
                "%d empty completion(s) of %d: reward %s", len(empty), len(completions), self.empty_reward
            )
        return rewards

    @staticmethod
    def _group(
        prompt: Any, prompt_index: int, indices: list[int], completions: Sequence[Any]
    ) -> ResponseGroup:
        """The completions ``indices`` of one prompt as a validated group; errors name TRL's
        argument and index (``prompts[3]``, ``completions[12][0].role``)."""
        try:
            return parse_group({"prompt": prompt, "responses": [completions[i] for i in indices]})
        except InputError as e:
            field = e.field or ""
            if field.startswith("prompt"):
                field = f"prompts[{prompt_index}]{field[len('prompt') :]}"
            elif field.startswith("responses["):
                k, _, rest = field[len("responses[") :].partition("]")
                field = f"completions[{indices[int(k)]}]{rest}"
            raise InputError(e.message, field=field or None) from e
