"""Conversation → token ids, exactly as ``apply_chat_template(tokenize=True)`` does, plus the
length policy. This is the only tokenization path in rewardkit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import jinja2
from transformers import BatchEncoding, PreTrainedTokenizerBase

from rewardkit.data.conversation import Conversation, Message
from rewardkit.errors import ConfigError, InputError
from rewardkit.models.loading import Truncation
from rewardkit.models.truncation import Tokenized, monotone, truncate_left


@dataclass(frozen=True, kw_only=True)
class Encoded:
    """One tokenized conversation.

    Args:
        ids: token ids fed to the model.
        truncated_turns: whole context turns (messages) dropped by ``--truncation left``.
        truncated_tokens: tokens removed in total, whole turns and cut content together (0 when
            the conversation fit).
    """

    ids: list[int]
    truncated_turns: int = 0
    truncated_tokens: int = 0

    @property
    def truncated(self) -> bool:
        return self.truncated_tokens > 0


class ChatTokenizer:
    """Renders conversations with the model's chat template and applies the length policy.

    ``apply_chat_template(tokenize=True)`` renders the template, then encodes the text with
    ``add_special_tokens=False``; doing the two steps here lets the encode run batched.

    Args:
        tokenizer: the checkpoint's tokenizer (its ``chat_template`` is used).
        max_length: longest sequence accepted.
        truncation: ``error`` rejects longer conversations; ``left`` drops the oldest context
            turns (the system message is kept), then the oldest tokens of the oldest kept turn's
            content, never the final turn nor the template's own tokens (see
            `rewardkit.models.truncation`).
    """

    def __init__(
        self, tokenizer: PreTrainedTokenizerBase, *, max_length: int, truncation: Truncation = "error"
    ) -> None:
        if truncation == "left" and not tokenizer.is_fast:
            raise ConfigError(
                "--truncation left needs a fast tokenizer (it cuts at token offsets); "
                f"{type(tokenizer).__name__} is not one"
            )
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.truncation = truncation

    def render(self, messages: Sequence[Message]) -> str:
        """The chat template's text for ``messages``.

        Raises:
            InputError: the template refuses the conversation (its ``raise_exception``).
        """
        try:
            return self.tokenizer.apply_chat_template(
                [m.to_dict() for m in messages], tokenize=False, add_generation_prompt=False
            )
        except jinja2.TemplateError as e:
            raise InputError(f"the chat template cannot render this conversation: {e}") from e

    def _tokenize(self, texts: list[str]) -> BatchEncoding | None:
        if not texts:
            return None
        # verbose=False: over-long inputs are the length policy's to report, not transformers'.
        return self.tokenizer(texts, add_special_tokens=False, verbose=False)

    def _encode_texts(self, texts: list[str]) -> list[list[int]]:
        batch = self._tokenize(texts)
        return [] if batch is None else batch["input_ids"]

    def _tokenized(self, batch: BatchEncoding, i: int) -> Tokenized:
        """Text ``i`` of a batch with its token start offsets (kept by a fast tokenizer)."""
        return batch["input_ids"][i], monotone([start for start, _ in batch.encodings[i].offsets])

    def _tokenize_one(self, text: str) -> Tokenized:
        batch = self._tokenize([text])
        assert batch is not None
        return self._tokenized(batch, 0)

    def encode(self, conversations: Sequence[Conversation]) -> list[Encoded | InputError]:
        """Tokenizes a batch; a conversation that cannot be scored under the length policy (or
        that the template refuses) gives an InputError in its place."""
        rendered: list[str | InputError] = []
        for conv in conversations:
            try:
                rendered.append(self.render(conv.messages))
            except InputError as e:
                rendered.append(e)
        texts = [r for r in rendered if isinstance(r, str)]
        batch = self._tokenize(texts)
        out: list[Encoded | InputError] = []
        i = 0
        for conv, text in zip(conversations, rendered, strict=True):
            if isinstance(text, InputError):
                out.append(text)
                continue
            assert batch is not None
            ids, i = batch["input_ids"][i], i + 1
            if len(ids) <= self.max_length:
                out.append(Encoded(ids=ids))
                continue
            try:
                out.append(self._truncate(conv, text, batch, i - 1))
            except InputError as e:
                out.append(e)
        return out

    def encode_texts(self, texts: Sequence[str]) -> list[Encoded | InputError]:
        """Tokenizes already-templated text (e.g. OpenRLHF's ``/get_reward`` queries) with no special
        tokens added; over-long texts follow the length policy (``left`` keeps the last tokens)."""
        out: list[Encoded | InputError] = []
        for i, ids in enumerate(self._encode_texts(list(texts))):
            if not ids:
                out.append(InputError("text is empty", field=f"[{i}]"))
            elif len(ids) <= self.max_length:
                out.append(Encoded(ids=ids))
            elif self.truncation == "left":
                out.append(Encoded(ids=ids[-self.max_length :], truncated_tokens=len(ids) - self.max_length))
            else:
                out.append(
                    InputError(
                        f"text is {len(ids)} tokens, over the maximum of {self.max_length}", field=f"[{i}]"
                    )
                )
        return out

    def encode_one(self, conversation: Conversation) -> Encoded:
        """Tokenizes one conversation; raises InputError if it cannot be made to fit."""
        (res,) = self.encode([conversation])
        if isinstance(res, InputError):
            raise res
        return res

    def _truncate(self, conv: Conversation, text: str, batch: BatchEncoding, i: int) -> Encoded:
        full_len = len(batch["input_ids"][i])
        if self.truncation == "error":
            raise InputError(
                f"conversation is {full_len} tokens, over the maximum of {self.max_length}; "
                "use --truncation left to drop the oldest context, or raise --max-length",
                field=conv.source_field,
            )
        ids, turns = truncate_left(
            conv,
            text,
            self._tokenized(batch, i),
            max_length=self.max_length,
            render=self.render,
            tokenize=self._tokenize_one,
        )
        return Encoded(ids=ids, truncated_turns=turns, truncated_tokens=full_len - len(ids))
