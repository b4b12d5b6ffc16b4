"""`RewardModel`: load once, score conversations and pairs through the one scoring path."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from rewardkit.data.conversation import Conversation, Message, PreferencePair
from rewardkit.data.formats import as_pair
from rewardkit.distributed import resolve_device
from rewardkit.engine.engine import ProgressFn, ScoringEngine
from rewardkit.errors import InputError
from rewardkit.models.fingerprint import weights_fingerprint
from rewardkit.models.loading import (
    ScoringSpec,
    Truncation,
    default_max_length,
    dtype_name,
    load_hf_config,
    load_model,
    load_tokenizer,
    model_length_limit,
    resolve_dtype,
    template_hash,
)
from rewardkit.models.templating import ChatTokenizer, Encoded
from rewardkit.nested import flatten, split

log = logging.getLogger(__name__)

ConversationLike = Conversation | Sequence[Mapping[str, Any] | Message]


@dataclass(frozen=True, kw_only=True)
class Scored:
    """A reward with how its input was tokenized."""

    reward: float
    num_tokens: int
    truncated_turns: int = 0
    truncated_tokens: int = 0


def sigmoid(x: float) -> float:
    """σ(x), stable for large |x|."""
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    z = math.exp(x)
    return z / (1.0 + z)


@dataclass(frozen=True, kw_only=True)
class ModelOptions:
    """How to load a reward model: the arguments of `RewardModel.load` as one value, so that a
    workflow can load it where it runs (e.g. on every rank of a job, each on its own device).

    Example:
        >>> opts = ModelOptions(model="nvidia/Qwen-2.5-Nemotron-32B-Reward", truncation="left")
        >>> rm = opts.load()  # doctest: +SKIP
    """

    model: str
    revision: str | None = None
    device: str = "auto"
    dtype: str = "auto"
    head_dtype: str | None = None
    max_length: int | None = None
    truncation: Truncation = "error"
    chat_template: str | None = None
    output_index: int | None = None
    reward_head: str | None = None
    trust_remote_code: bool = False
    fp8: bool = False
    token_budget: int | None = None
    tensor_parallel: bool = False
    compile: bool | None = None

    def load(self, *, chat: ChatTokenizer | None = None) -> RewardModel:
        """`RewardModel.load` with these options (``chat``: this model's `load_chat_tokenizer`,
        already loaded)."""
        kwargs = asdict(self)
        return RewardModel.load(kwargs.pop("model"), chat=chat, **kwargs)

    def load_chat_tokenizer(self) -> ChatTokenizer:
        """`load_chat_tokenizer` with these options: what `RewardModel.load` tokenizes with,
        without the weights (for a tokenizing stage that runs apart from the model)."""
        return load_chat_tokenizer(
            self.model,
            revision=self.revision,
            chat_template=self.chat_template,
            trust_remote_code=self.trust_remote_code,
            max_length=self.max_length,
            truncation=self.truncation,
        )


def load_chat_tokenizer(
    model: str | Path,
    *,
    revision: str | None = None,
    chat_template: str | Path | None = None,
    trust_remote_code: bool = False,
    max_length: int | None = None,
    truncation: Truncation = "error",
) -> ChatTokenizer:
    """A reward model's tokenizer, chat template and length policy, without its weights.

    ``max_length`` defaults to the model's limit (its config's positions and the tokenizer's
    stated maximum); above that limit a warning is logged.
    """
    name = str(model)
    tok, _ = load_tokenizer(
        name, revision=revision, chat_template=chat_template, trust_remote_code=trust_remote_code
    )
    config = load_hf_config(name, revision=revision, trust_remote_code=trust_remote_code)
    model_limit = model_length_limit(config, tok)
    limit = max_length if max_length is not None else default_max_length(config, tok)
    if model_limit is not None and limit > model_limit:
        log.warning(
            "--max-length %d is above the model's limit of %d tokens: longer conversations are "
            "scored past the positions it was built for",
            limit,
            model_limit,
        )
    return ChatTokenizer(tok, max_length=limit, truncation=truncation)


class RewardModel:
    """A scalar reward model ready to score.

    Example:
        >>> rm = RewardModel.load("nvidia/Qwen-2.5-Nemotron-32B-Reward")  # doctest: +SKIP
        >>> rm.score([[{"role": "user", "content": "What is 1+1?"},
        ...            {"role": "assistant", "content": "1+1=2"}]])  # doctest: +SKIP
    """

    def __init__(
        self, *, model: torch.nn.Module, chat: ChatTokenizer, engine: ScoringEngine, spec: ScoringSpec
    ):
        self.model = model
        self.chat = chat
        self.engine = engine
        self.spec = spec

    @property
    def tokenizer(self) -> Any:
        return self.chat.tokenizer

    @property
    def device(self) -> torch.device:
        return self.engine.device

    @classmethod
    def load(
        cls,
        model: str | Path,
        *,
        revision: str | None = None,
        device: str | None = "auto",
        dtype: str | None = "auto",
        head_dtype: str | None = None,
        max_length: int | None = None,
        truncation: Truncation = "error",
        chat_template: str | Path | None = None,
        output_index: int | None = None,
        trust_remote_code: bool = False,
        token_budget: int | None = None,
        reward_head: str | None = None,
        fp8: bool = False,
        tensor_parallel: bool = False,
        compile: bool | None = None,
        chat: ChatTokenizer | None = None,
    ) -> RewardModel:
        """Loads weights (safetensors), tokenizer and chat template; see `ScoringSpec`.

        ``reward_head`` (``sequence-classification`` or ``lm-logit:TOKEN_ID``) defaults to the one
        the checkpoint implies; see `rewardkit.models.loading.resolve_reward_head`. ``fp8`` runs
        the decoder's linear layers as FP8 GEMMs (Hopper GPUs; off by default). ``compile``:
        see `ScoringEngine` (``None``: on CUDA only). ``chat``: the tokenizer these arguments give
        (`load_chat_tokenizer`), when it is already loaded.
        """
        name = str(model)
        dev = resolve_device(device)  # under tensor parallel: this rank's device
        dt = resolve_dtype(dtype, dev)
        hdt = None if head_dtype in (None, "auto") else resolve_dtype(head_dtype, dev, option="--head-dtype")
        if chat is None:
            chat = load_chat_tokenizer(
                name,
                revision=revision,
                max_length=max_length,
                truncation=truncation,
                chat_template=chat_template,
                trust_remote_code=trust_remote_code,
            )
        net, out_idx, head = load_model(
            name,
            revision=revision,
            device=dev,
            dtype=dt,
            trust_remote_code=trust_remote_code,
            output_index=output_index,
            reward_head=reward_head,
            tensor_parallel=tensor_parallel,
        )
        if tensor_parallel:
            from rewardkit.engine.tensor_parallel import tensor_parallel_engine as make_engine
        else:
            make_engine = ScoringEngine
        engine = make_engine(
            net,
            output_index=out_idx,
            token_budget=token_budget,
            head_dtype=hdt,
            head=head,
            fp8=fp8,
            **({} if compile is None else {"compile": compile}),
        )
        spec = ScoringSpec(
            model=name,
            revision=revision,
            weights=weights_fingerprint(name, revision),
            chat_template_sha256=template_hash(chat.tokenizer.chat_template),
            max_length=chat.max_length,
            truncation=truncation,
            dtype=dtype_name(dt),
            head_dtype=dtype_name(engine.head_dtype),
            output_index=out_idx,
            head=head,
            fp8=fp8,
        )
        return cls(model=net, chat=chat, engine=engine, spec=spec)

    def encode(self, conversations: Sequence[ConversationLike]) -> list[Encoded | InputError]:
        """Tokenizes with the model's chat template and length policy: the one tokenization entry
        of every scoring path.

        Returns, per conversation, its `Encoded` tokens or the `InputError` that stops it from
        being scored (malformed, or too long for the length policy); ``field`` is relative to the
        conversation (``messages[2].role``). Never raises for one bad item.
        """
        convs: list[Conversation | None] = []
        errors: dict[int, InputError] = {}
        for i, c in enumerate(conversations):
            try:
                convs.append(Conversation.of(c))
            except InputError as e:
                convs.append(None)
                errors[i] = e
        ok = self.chat.encode([c for c in convs if c is not None])
        it = iter(ok)
        return [errors[i] if c is None else next(it) for i, c in enumerate(convs)]

    def encode_texts(self, texts: Sequence[str]) -> list[Encoded | InputError]:
        """Tokenizes already-templated texts as they are (no special tokens added), under the
        length policy (``left`` keeps the last tokens); per item like `encode`."""
        return self.chat.encode_texts(texts)

    def score_encoded(
        self,
        encoded: Sequence[Encoded],
        *,
        group_sizes: Sequence[int] | None = None,
        progress: ProgressFn | None = None,
    ) -> list[Scored]:
        """Scores tokenized conversations.

        Args:
            encoded: from `encode` (errors already removed).
            group_sizes: optional sizes of consecutive runs of ``encoded`` that share a prompt
                (e.g. 2 for each preference pair); their common prefix is computed once. The
                rewards are the same as without it.
            progress: called after each engine batch with (conversations, tokens).
        """
        ids = [e.ids for e in encoded]
        if group_sizes is None:
            rewards = self.engine.score_ids(ids, progress=progress)
        else:
            rewards = flatten(self.engine.score_groups(split(ids, group_sizes), progress=progress))[0]
        return [
            Scored(
                reward=r,
                num_tokens=len(e.ids),
                truncated_turns=e.truncated_turns,
                truncated_tokens=e.truncated_tokens,
            )
            for r, e in zip(rewards, encoded, strict=True)
        ]

    def score(
        self, conversations: Sequence[ConversationLike], *, group_sizes: Sequence[int] | None = None
    ) -> list[float]:
        """One reward per conversation (last message = the assistant response judged).

        Args:
            conversations: Conversations or lists of ``{"role", "content"}`` dicts.
            group_sizes: see `score_encoded` (a speed-up for responses sharing a prompt).

        Raises:
            InputError: a conversation is malformed or too long for the length policy; the
                field names its index.
        """
        return [s.reward for s in self._score_all(conversations, group_sizes, index=lambda i: i)]

    def _score_all(
        self,
        conversations: Sequence[ConversationLike],
        group_sizes: Sequence[int] | None,
        *,
        index: Callable[[int], int],
    ) -> list[Scored]:
        """`score_encoded` of every conversation; the first that cannot be scored raises, its field
        prefixed with ``[index(i)]``."""
        encoded = self.encode(conversations)
        for i, e in enumerate(encoded):
            if isinstance(e, InputError):
                raise e.under(f"[{index(i)}]")
        return self.score_encoded(encoded, group_sizes=group_sizes)  # type: ignore[arg-type]

    def score_groups(self, groups: Sequence[Sequence[ConversationLike]]) -> list[list[float]]:
        """Rewards for K responses per prompt, each group's shared prompt computed once."""
        flat, sizes = flatten(groups)
        return split(self.score(flat, group_sizes=sizes), sizes)

    def score_pairs(self, pairs: Sequence[PreferencePair | Mapping[str, Any]]) -> list[tuple[float, float]]:
        """(reward of ``first``, reward of ``second``) per pair (scored as groups of two).

        Args:
            pairs: `PreferencePair` objects or records: TRL's ``{"prompt", "chosen", "rejected"}``
                (each a string or a list of messages; without ``prompt`` the two are whole
                conversations) or HelpSteer3's (see `rewardkit.data.formats`).

        Raises:
            InputError: a malformed or over-long pair; the field names its index and side
                (``[3].rejected``).
        """
        convs: list[Conversation] = []
        for i, p in enumerate(pairs):
            try:
                convs.extend(as_pair(p).conversations())
            except InputError as e:
                raise e.under(f"[{i}]") from e
        scored = self._score_all(convs, [2] * len(pairs), index=lambda i: i // 2)
        return [(a.reward, b.reward) for a, b in zip(scored[::2], scored[1::2], strict=True)]
