"""Reading a conversation back out of text rendered with the model's chat template.

OpenRLHF sends each rollout to ``/get_reward`` as ``decode(prompt_ids + response_ids)``: the prompt
rendered with the generation prompt, then the response up to and including the end-of-turn token
(``<|im_end|>`` for ChatML), but not what the template writes after it (``\\n``). Tokenized as it
is, that text is not what the model card scores: on the demo model "1+1=2" gets 2.83 instead of
3.67. `RenderedConversations` parses such a text into messages with the template's own framing and
accepts it only if rendering those messages gives the text back, possibly short of a part of the
template's *tail* (what it writes after the last message); the text then scores as that
conversation does, and the part it lacked is reported.

The framing comes from rendering probe conversations: for every pair of roles, what the template
writes before the first message (the *header*, which may hold a default system prompt), between
two messages (the *glue*) and after the last (the *end*). A template whose framing depends on more
than the neighbouring roles (or that refuses the probes) still works for every text whose
messages round-trip; one that cannot be probed at all is reported when a text arrives.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from rewardkit.data.conversation import ROLES, Conversation, Message
from rewardkit.errors import InputError

Render = Callable[[Sequence[Message]], str]
# Probe contents: plain words that no template rewrites and that no frame contains.
_PROBES = ("RKPROBEFIRSTA7", "RKPROBESECONDB3")


@dataclass(frozen=True, kw_only=True)
class Rendered:
    """A text read as a conversation: ``appended`` is the part of the template's tail the text
    lacked (``""`` when it was complete)."""

    conversation: Conversation
    appended: str


class RenderedConversations:
    """Parses text rendered with one chat template (see the module docstring).

    Args:
        render: the model's template, messages → text (``rm.chat.render``).
    """

    def __init__(self, render: Render) -> None:
        self.render = render
        self.headers: dict[str, str] = {}
        self.glue: dict[tuple[str, str], str] = {}
        self.ends: dict[str, str] = {}
        for first, second in itertools.product(ROLES, ("user", "assistant")):
            a, b = _PROBES
            try:
                text = render((Message(role=first, content=a), Message(role=second, content=b)))  # type: ignore[arg-type]
            except Exception:  # the template refuses this order of roles: texts never have it
                continue
            i, j = text.find(a), text.find(b)
            if i < 0 or j < i + len(a) or text.count(a) != 1 or text.count(b) != 1:
                continue
            self.headers.setdefault(first, text[:i])
            self.glue[first, second] = text[i + len(a) : j]
            self.ends.setdefault(second, text[j + len(b) :])
        self.tail = self.ends.get("assistant", "")
        self.marker = self.tail.strip()  # the end-of-turn marker (``<|im_end|>``)

    def parse(self, text: str) -> Rendered:
        """The conversation ``text`` renders, possibly short of a part of the template's tail.

        Raises:
            InputError: ``text`` is not such a rendering (the message says what was expected).
        """
        if not self.headers:
            raise InputError(
                "this model's chat template could not be probed, so rendered text cannot be read "
                "back into a conversation; send conversations to /v1/rewards instead"
            )
        starts = sorted((h for h in self.headers.items() if text.startswith(h[1])), key=lambda h: -len(h[1]))
        if not starts:
            shown = min(self.headers.values(), key=len)
            raise InputError(
                f"the text does not start as this model's chat template renders a conversation "
                f"({shown!r}); it must be the conversation rendered with the reward model's template"
            )
        for role, header in starts:
            found = self._split(text, role, len(header))
            if found is not None:
                return found
        raise InputError(
            "the text is not a conversation rendered with this model's chat template "
            f"(possibly without the end the template writes after the last turn, {self.tail!r}): "
            "its last turn is not the assistant's, a turn is empty, or a turn holds the template's "
            f"end-of-turn marker {self.marker!r}"
        )

    def _split(self, text: str, role: str, pos: int) -> Rendered | None:
        """Messages from ``pos`` on, the first of ``role``; None if they do not render ``text``."""
        messages: list[Message] = []
        while True:
            nexts = [
                (text.find(g, pos), -len(g), nxt) for (r, nxt), g in self.glue.items() if r == role and g
            ]
            hits = sorted(n for n in nexts if n[0] >= 0)
            if not hits:
                break
            at, minus_len, nxt = hits[0]
            messages.append(Message(role=role, content=text[pos:at]))  # type: ignore[arg-type]
            pos, role = at - minus_len, nxt
        if role != "assistant":
            return None
        # The longest part of the tail the text ends with (the rest is what it lacks).
        k = max(k for k in range(len(self.tail) + 1) if text.endswith(self.tail[:k]))
        messages.append(Message(role="assistant", content=text[pos : len(text) - k]))
        if self.marker and any(self.marker in m.content for m in messages):
            return None  # a turn holding the end-of-turn marker: the text is ambiguous
        try:
            conv = Conversation(tuple(messages))
        except InputError:
            return None
        appended = self.tail[k:]
        if self.render(conv.messages) != text + appended:
            return None
        return Rendered(conversation=conv, appended=appended)
