"""``--truncation left`` in time linear in the conversation's length.

The rule: drop whole context turns, oldest first (the system message and the turn right before the
response stay), then cut the oldest tokens of the oldest kept turn's *content*; the final assistant
turn, the system message and the chat template's own tokens (role headers, separators) are never
cut. The result is always the tokenization of a rendered conversation: the kept turns, the first
of them cut at one of its token boundaries.

How, without re-rendering once per dropped turn:

1. Render and tokenize the whole conversation once, with character offsets.
2. Find each message's content in the rendered text: render the conversation once more with a
   sentinel as every content; the text between sentinels is the template's own (`content_spans`).
3. Message ``i`` owns the tokens from the end of message ``i-1``'s content to the end of its own,
   so dropping turns ``1..d`` removes a prefix sum of token counts: the fewest turns to drop is a
   binary search over those sums. The conversation without them is rendered and tokenized, which
   checks the estimate; when the template's own text makes it off by a constant (a default system
   prompt that comes back, a trailer), the search runs once more with that correction.
4. If even the fewest kept turns do not fit, render the short kept conversation and cut its oldest
   content at the token boundary that makes it fit.

Each step is one pass over the text, so 4,000 turns take as long as rendering them a few times.
"""

from __future__ import annotations

import re
from bisect import bisect_left
from collections.abc import Callable, Sequence
from itertools import accumulate

from rewardkit.data.conversation import Conversation, Message
from rewardkit.errors import InputError

Render = Callable[[Sequence[Message]], str]
# (token ids, each token's start offset in the text), and the function that makes it from a text
Tokenized = tuple[list[int], list[int]]
Tokenize = Callable[[str], Tokenized]

_SENTINEL = re.compile("\ue000(\\d+)\ue001")  # private-use characters: no template emits them
# Re-renders allowed to correct an estimate; templates with fixed text around each turn need one.
_ATTEMPTS = 4


def content_spans(render: Render, messages: Sequence[Message], text: str) -> list[tuple[int, int]] | None:
    """``(start, end)`` of each message's content in ``text`` (``render(messages)``).

    The template is rendered once with a sentinel for every content; the text around the
    sentinels is the template's own and must appear in ``text`` as is. A content is found as
    given, stripped (templates that ``trim``), or else as whatever lies before the template text
    that follows it (templates that rewrite content). None when the template does not render
    every content exactly once.
    """
    skeleton = render([Message(role=m.role, content=f"\ue000{i}\ue001") for i, m in enumerate(messages)])
    found = list(_SENTINEL.finditer(skeleton))
    order = [int(m.group(1)) for m in found]
    if sorted(order) != list(range(len(messages))):
        return None
    pieces = [skeleton[a.end() if a else 0 : b.start()] for a, b in zip([None, *found], found, strict=False)]
    pieces.append(skeleton[found[-1].end() :] if found else skeleton)
    spans: list[tuple[int, int]] = [(0, 0)] * len(messages)
    pos = 0
    for k, i in enumerate(order):
        if not text.startswith(pieces[k], pos):
            return None
        start = pos + len(pieces[k])
        end = _content_end(text, start, messages[i].content, pieces[k + 1], last=k + 1 == len(order))
        if end is None:
            return None
        spans[i], pos = (start, end), end
    return spans if text[pos:] == pieces[-1] else None


def _content_end(text: str, start: int, content: str, after: str, *, last: bool) -> int | None:
    """Where the content starting at ``start`` ends, given the template text ``after`` it."""

    def followed(end: int) -> bool:
        if last:
            return len(text) - end == len(after) and text.endswith(after)
        return text.startswith(after, end)

    for rendered in (content, content.strip()):
        if text.startswith(rendered, start) and followed(start + len(rendered)):
            return start + len(rendered)
    end = len(text) - len(after) if last else text.find(after, start)
    return end if end >= start and followed(end) else None


def _tokens_at(starts: Sequence[int], char: int) -> int:
    """Index of the first token starting at or after character ``char``."""
    return bisect_left(starts, char)


def truncate_left(
    conv: Conversation,
    text: str,
    tokenized: Tokenized,
    *,
    max_length: int,
    render: Render,
    tokenize: Tokenize,
) -> tuple[list[int], int]:
    """Token ids of ``conv`` cut to ``max_length`` by the rule above, and the whole turns dropped.

    Args:
        conv: the conversation; ``text`` is its rendering and ``tokenized`` that text's tokens.
        render: the chat template; ``tokenize``: text to `Tokenized`.

    Raises:
        InputError: the final turn, the system message and the template's headers alone do not
            fit (naming the final turn's field), or the template does not render each content
            once (so its content cannot be told from the template's text).
    """
    messages = conv.messages
    system = 1 if messages[0].role == "system" else 0
    # Messages ``system .. last_context - 1`` may be dropped; the one before the response stays.
    droppable = max(0, len(messages) - 2 - system)
    dropped, kept_ids = 0, None
    if droppable:
        dropped, kept_ids = _drop_turns(
            messages, text, tokenized, system, droppable, max_length, render, tokenize
        )
    if kept_ids is not None and len(kept_ids) <= max_length:
        return kept_ids, dropped
    kept = (*messages[:system], *messages[system + dropped :])
    return _cut_oldest_content(conv, kept, system, max_length, render, tokenize), dropped


def _unsupported() -> InputError:
    return InputError(
        "--truncation left cannot cut this conversation: the chat template does not render each "
        "message's content exactly once, so its content cannot be told from the template's text; "
        "use --truncation error, or shorten the conversation"
    )


def _drop_turns(
    messages: Sequence[Message],
    text: str,
    tokenized: Tokenized,
    system: int,
    droppable: int,
    max_length: int,
    render: Render,
    tokenize: Tokenize,
) -> tuple[int, list[int] | None]:
    """The fewest oldest turns (1..droppable) whose dropping fits, and the ids without them
    (``droppable`` when none fits; None when the template refuses that conversation)."""
    ids, starts = tokenized
    spans = content_spans(render, messages, text)
    if spans is None:
        raise _unsupported()
    # removed[d - 1]: tokens owned by the first d droppable messages (step 3); non-decreasing.
    base = _tokens_at(starts, spans[system - 1][1]) if system else 0
    removed = [_tokens_at(starts, spans[system + d][1]) - base for d in range(droppable)]
    # d -> ids without the first d turns; None where the template refuses the rest (templates
    # that need alternating roles refuse a conversation that starts with an assistant turn).
    tried: dict[int, list[int] | None] = {}

    def renderable(d: int) -> int:
        """The fewest turns, at least ``d``, whose dropping leaves a conversation the template renders."""
        for k in range(d, droppable + 1):
            if k not in tried:
                try:
                    tried[k] = tokenize(render((*messages[:system], *messages[system + k :])))[0]
                except InputError:
                    tried[k] = None
            if tried[k] is not None:
                return k
        return droppable

    correction = 0  # real minus estimated length: the template text the estimate misses
    d = 0
    for _ in range(_ATTEMPTS):
        # Fewest d with len(ids) - removed[d - 1] + correction <= max_length.
        plan = renderable(min(bisect_left(removed, len(ids) + correction - max_length) + 1, droppable))
        kept = tried[plan]
        if plan == d or kept is None:  # the estimate agrees with the rendering
            return plan, kept
        d, correction = plan, len(kept) - (len(ids) - removed[plan - 1])
    fitting = [k for k, kept in tried.items() if kept is not None and len(kept) <= max_length]
    d = min(fitting) if fitting else renderable(droppable)
    return d, tried[d]


def _cut_oldest_content(
    conv: Conversation,
    kept: Sequence[Message],
    system: int,
    max_length: int,
    render: Render,
    tokenize: Tokenize,
) -> list[int]:
    """Ids of ``kept`` (system?, one context turn, the final turn) with the oldest tokens of the
    context turn's content cut so that they fit ``max_length`` (step 4)."""
    text = render(kept)
    ids, starts = tokenize(text)
    spans = content_spans(render, kept, text)
    if spans is None:
        raise _unsupported()
    final = len(kept) - 1
    has_context = final > system
    lo, hi = (_tokens_at(starts, c) for c in spans[system]) if has_context else (0, 0)
    need = len(ids) - max_length
    for _ in range(_ATTEMPTS):
        if need >= hi - lo:  # not even one token of the context would stay
            break
        cut, end = starts[lo + need], spans[system][1]
        shortened = Message(role=kept[system].role, content=text[cut:end])
        trial = tokenize(render((*kept[:system], shortened, *kept[system + 1 :])))[0]
        if len(trial) <= max_length:
            return trial
        need += len(trial) - max_length

    def tokens_in(span: tuple[int, int]) -> int:
        return _tokens_at(starts, span[1]) - _tokens_at(starts, span[0])

    kept_whole = f"the final assistant turn ({tokens_in(spans[final])} tokens) is"
    if system:
        kept_whole = (
            f"the final assistant turn ({tokens_in(spans[final])} tokens) and the system message "
            f"({tokens_in(spans[0])} tokens) are"
        )
    least = len(ids) - (hi - lo) + (1 if has_context else 0)
    raise InputError(
        f"{kept_whole} never truncated; with the chat template's turn headers at least {least} "
        f"tokens are needed, over the maximum of {max_length}: raise --max-length",
        field=conv.turn_field(len(conv.messages) - 1),
    )


def monotone(starts: Sequence[int]) -> list[int]:
    """Token start offsets made non-decreasing (some tokenizers report 0 for a special token)."""
    return list(accumulate(starts, max))
