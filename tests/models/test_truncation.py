"""``--truncation left`` against the rule spelled out plainly, at every length, on several templates.

The reference below re-renders and re-tokenizes after every dropped turn and tries every cut of the
oldest kept content at its token boundaries, keeping the first that fits: quadratic, obviously
right. The fast path must give exactly its ids, so its result is by construction the tokenization
of the rendered truncated conversation — headers and the system message intact, the final turn
whole — and never more truncated than needed.
"""

from __future__ import annotations

import random
import time
from pathlib import Path

import pytest
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from rewardkit.data.conversation import Conversation, Message
from rewardkit.errors import InputError
from rewardkit.models.templating import ChatTokenizer, Encoded
from rewardkit.models.tiny import CHATML_TEMPLATE, byte_tokenizer
from rewardkit.models.truncation import content_spans

# Qwen2.5's template: a default system block when the conversation has none.
QWEN25_TEMPLATE = (
    "{%- if messages[0]['role'] == 'system' %}{{- '<|im_start|>system\\n' + messages[0]['content'] + "
    "'<|im_end|>\\n' }}{%- else %}{{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You "
    "are a helpful assistant.<|im_end|>\\n' }}{%- endif %}{%- for message in messages %}{%- if not "
    "(message['role'] == 'system' and loop.first) %}{{- '<|im_start|>' + message['role'] + '\\n' + "
    "message['content'] + '<|im_end|>\\n' }}{%- endif %}{%- endfor %}"
)
# Llama-3 style: a fixed preamble, and every content trimmed.
TRIM_TEMPLATE = (
    "<|begin_of_text|>{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\\n\\n"
    "{{ m['content'] | trim }}<|eot_id|>{% endfor %}"
)
# Gemma style: roles must alternate after the system message, or the template raises.
ALTERNATING_TEMPLATE = (
    "{% set offset = 1 if messages[0]['role'] == 'system' else 0 %}{% for m in messages %}"
    "{% if m['role'] != 'system' and (m['role'] == 'user') != ((loop.index0 - offset) % 2 == 0) %}"
    "{{ raise_exception('roles must alternate user/assistant') }}{% endif %}"
    "<start_of_turn>{{ m['role'] }}\\n{{ m['content'] }}<end_of_turn>\\n{% endfor %}"
)
TEMPLATES = {
    "chatml": CHATML_TEMPLATE,
    "qwen2.5": QWEN25_TEMPLATE,
    "trim": TRIM_TEMPLATE,
    "alternating": ALTERNATING_TEMPLATE,
}
WORDS = ("alpha", "beta", "gamma", "delta", "kappa", "sigma", "ünï", "数学", "🙂")


def _ids(chat: ChatTokenizer, messages: tuple[Message, ...]) -> list[int]:
    return chat.tokenizer(chat.render(messages), add_special_tokens=False)["input_ids"]


def reference(chat: ChatTokenizer, conv: Conversation, max_length: int) -> tuple[list[int], int, bool] | None:
    """(ids, whole turns dropped, content cut) by the rule, spelled out; None when it cannot fit."""
    msgs = conv.messages
    system = 1 if msgs[0].role == "system" else 0
    kept = msgs
    for dropped in range(max(0, len(msgs) - 2 - system) + 1):
        kept = (*msgs[:system], *msgs[system + dropped :])
        try:
            ids = _ids(chat, kept)
        except InputError:  # the template refuses this conversation (roles must alternate)
            continue
        if len(ids) <= max_length:
            return ids, dropped, False
    if len(kept) - system < 2:
        return None
    text = chat.render(kept)
    content = kept[system].content
    rendered = content if content in text else content.strip()
    start = text.index(rendered)  # the test contents are unique, never inside a header
    end = start + len(rendered)
    offsets = chat.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    for cut in sorted({a for a, _ in offsets if start < a < end}):
        shortened = Message(role=kept[system].role, content=text[cut:end])
        ids = _ids(chat, (*kept[:system], shortened, *kept[system + 1 :]))
        if len(ids) <= max_length:
            return ids, dropped, True
    return None


def _conversation(rng: random.Random, exchanges: int, system: bool) -> Conversation:
    def text(tag: str) -> str:
        return f"{tag} " + " ".join(rng.choices(WORDS, k=rng.randint(1, 6)))

    msgs = [{"role": "system", "content": text("SYSTEMPROMPT stays")}] if system else []
    for i in range(exchanges):
        msgs += [{"role": "user", "content": text(f"u{i}")}, {"role": "assistant", "content": text(f"a{i}")}]
    return Conversation.of(msgs)


def _check_every_length(tok: PreTrainedTokenizerBase, seed: int, conversations: int) -> int:
    """Compares with the reference at ~10 lengths per conversation; returns how many cut content."""
    rng = random.Random(seed)
    cut = 0
    for n in range(conversations):
        conv = _conversation(rng, exchanges=1 + n % 4, system=n % 2 == 0)
        full = len(ChatTokenizer(tok, max_length=10**6).encode_one(conv).ids)
        for max_length in sorted({*range(8, full, max(1, full // 10)), full - 1}):
            chat = ChatTokenizer(tok, max_length=max_length, truncation="left")
            (got,) = chat.encode([conv])
            want = reference(chat, conv, max_length)
            where = f"conversation {n}, max_length {max_length} of {full}"
            if want is None:
                assert isinstance(got, InputError), where
                assert "never truncated" in got.message and got.field == f"messages[{len(conv) - 1}].content"
                continue
            assert isinstance(got, Encoded), f"{where}: {got}"
            ids, dropped, content_cut = want
            assert (got.ids, got.truncated_turns) == (ids, dropped), where
            assert got.truncated_tokens == full - len(got.ids), where
            cut += content_cut
    return cut


@pytest.mark.parametrize("template", sorted(TEMPLATES))
def test_equals_the_reference_at_every_length(template: str) -> None:
    cut = _check_every_length(byte_tokenizer(TEMPLATES[template]), seed=len(template), conversations=6)
    assert cut >= 3  # the content cut itself was exercised, not only whole turns


def test_equals_the_reference_with_the_qwen25_tokenizer(qwen_tokenizer_dir: Path) -> None:
    qwen = AutoTokenizer.from_pretrained(qwen_tokenizer_dir)
    assert _check_every_length(qwen, seed=7, conversations=4) >= 3


def test_headers_and_system_message_survive() -> None:
    tok = byte_tokenizer()
    conv = Conversation.of(
        [
            {"role": "system", "content": "SYSTEMPROMPT stays"},
            {"role": "user", "content": "Please tell me, what is 1+1?"},
            {"role": "assistant", "content": "2"},
        ]
    )
    (enc,) = ChatTokenizer(tok, max_length=64, truncation="left").encode([conv])
    assert tok.decode(enc.ids) == (
        "<|im_start|>system\nSYSTEMPROMPT stays<|im_end|>\n"
        "<|im_start|>user\n, what is 1+1?<|im_end|>\n<|im_start|>assistant\n2<|im_end|>\n"
    )


def test_content_spans() -> None:
    chat = ChatTokenizer(byte_tokenizer(TRIM_TEMPLATE), max_length=100)
    msgs = Conversation.of(
        [{"role": "user", "content": "  user  "}, {"role": "assistant", "content": "hi"}]
    ).messages
    text = chat.render(msgs)
    assert [text[a:b] for a, b in content_spans(chat.render, msgs, text) or []] == ["user", "hi"]
    twice = ChatTokenizer(
        byte_tokenizer("{% for m in messages %}{{ m['content'] * 2 }}{% endfor %}"),
        max_length=4,
        truncation="left",
    )
    assert content_spans(twice.render, msgs, twice.render(msgs)) is None
    (err,) = twice.encode([Conversation.of([*msgs[:1], *msgs])])
    assert (
        isinstance(err, InputError) and "does not render each message's content exactly once" in err.message
    )


def _best_of_two(fn) -> float:
    times = []
    for _ in range(2):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def test_linear_in_the_conversation_length() -> None:
    """4,000 short turns: one render-and-tokenize pass costs the fitting conversation's encode;
    the truncation adds a few linear passes (it re-rendered once per dropped turn before: minutes)."""
    tok = byte_tokenizer()
    msgs = [{"role": "system", "content": "SYSTEMPROMPT stays"}]
    for i in range(2000):
        msgs += [
            {"role": "user", "content": f"What is {i}+1?"},
            {"role": "assistant", "content": f"{i + 1}."},
        ]
    conv = Conversation.of(msgs)
    fits = ChatTokenizer(tok, max_length=10**7)
    left = ChatTokenizer(tok, max_length=256, truncation="left")
    (enc,) = left.encode([conv])
    assert isinstance(enc, Encoded) and len(enc.ids) <= 256 and enc.truncated_turns > 3900
    encode_alone = _best_of_two(lambda: fits.encode([conv]))
    truncating = _best_of_two(lambda: left.encode([conv]))
    # The truncation's own cost, well under a second (about 0.3 s on a busy 2-core machine).
    assert truncating - encode_alone < 1.0, (truncating, encode_alone)
