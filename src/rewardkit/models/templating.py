"""Conversation → token ids, exactly as ``apply_chat_template(tokenize=True)`` does, plus the
length policy. This is the only tokenization path in rewardkit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from transformers import PreTrainedTokenizerBase

from rewardkit.data.conversation import Conversation, Message
from rewardkit.errors import InputError
from rewardkit.models.loading import Truncation


@dataclass(frozen=True, kw_only=True)
class Encoded:
    """One tokenized conversation.

    Args:
        ids: token ids fed to the model.
        truncated_turns: whole context turns dropped by ``--truncation left``.
        truncated_tokens: tokens removed in total (0 when the conversation fit).
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
            turns (the system message is kept), then the oldest tokens, never the final turn.
    """

    def __init__(
        self, tokenizer: PreTrainedTokenizerBase, *, max_length: int, truncation: Truncation = "error"
    ) -> None:
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.truncation = truncation

    def render(self, messages: Sequence[Message]) -> str:
        return self.tokenizer.apply_chat_template(
            [m.to_dict() for m in messages], tokenize=False, add_generation_prompt=False
        )

    def _encode_texts(self, texts: list[str]) -> list[list[int]]:
        if not texts:
            return []
        return self.tokenizer(texts, add_special_tokens=False)["input_ids"]

    def encode(self, conversations: Sequence[Conversation]) -> list[Encoded | InputError]:
        """Tokenizes a batch; an over-long conversation under ``error`` gives an InputError."""
        all_ids = self._encode_texts([self.render(c.messages) for c in conversations])
        out: list[Encoded | InputError] = []
        for conv, ids in zip(conversations, all_ids, strict=True):
            if len(ids) <= self.max_length:
                out.append(Encoded(ids=ids))
                continue
            try:
                out.append(self._truncate(conv.messages, len(ids)))
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

    def _truncate(self, messages: tuple[Message, ...], full_len: int) -> Encoded:
        if self.truncation == "error":
            raise InputError(
                f"conversation is {full_len} tokens, over the maximum of {self.max_length}; "
                "use --truncation left to drop the oldest context, or raise --max-length",
                field="messages",
            )
        system = messages[:1] if messages[0].role == "system" else ()
        context, final = list(messages[len(system) : -1]), messages[-1]
        # 1. Drop whole turns, oldest first, keeping the turn right before the response.
        dropped = 0
        while len(context) > 1:
            context.pop(0)
            dropped += 1
            kept = (*system, *context, final)
            (ids,) = self._encode_texts([self.render(kept)])
            if len(ids) <= self.max_length:
                return Encoded(ids=ids, truncated_turns=dropped, truncated_tokens=full_len - len(ids))
        # 2. Cut the oldest tokens; the final turn must survive whole.
        kept = (*system, *context, final)
        ids, prefix = self._encode_texts([self.render(kept), self.render(kept[:-1])])
        final_len = len(ids) - len(prefix)
        if final_len > self.max_length:
            raise InputError(
                f"the final assistant turn alone is {final_len} tokens, over the maximum of "
                f"{self.max_length}; it is never truncated: raise --max-length",
                field=f"messages[{len(messages) - 1}].content",
            )
        return Encoded(
            ids=ids[-self.max_length :], truncated_turns=dropped, truncated_tokens=full_len - self.max_length
        )
