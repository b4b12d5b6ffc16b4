"""Reading conversations back out of rendered text (`RenderedConversations`, OpenRLHF's queries):
every rendering round-trips, with or without any part of the template's tail, for the tiny
model's ChatML, a Llama-3-style template that trims content, and the real Qwen2.5 template."""

from __future__ import annotations

import pytest

from rewardkit.data.conversation import Conversation
from rewardkit.errors import InputError
from rewardkit.models.templating import ChatTokenizer
from rewardkit.models.tiny import CHATML_TEMPLATE, byte_tokenizer
from rewardkit.server.rendered import RenderedConversations

LLAMA3_LIKE = (
    "{{ bos_token }}{% for message in messages %}"
    "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + message['content'] | trim + '<|eot_id|>' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}"
)


def chat_of(template: str) -> ChatTokenizer:
    return ChatTokenizer(byte_tokenizer(template), max_length=4096)


@pytest.mark.parametrize("template", [CHATML_TEMPLATE, LLAMA3_LIKE])
def test_every_rendering_round_trips_short_of_any_part_of_the_tail(template, conversations):
    chat = chat_of(template)
    parser = RenderedConversations(chat.render)
    tail = parser.tail
    assert tail in ("<|im_end|>\n", "<|eot_id|>")
    for messages in conversations[:30]:
        conv = Conversation.of(messages)
        text = chat.render(conv.messages)
        for k in range(len(tail) + 1):
            found = parser.parse(text[: len(text) - k])
            assert found.conversation.messages == conv.messages
            assert found.appended == tail[len(tail) - k :]


def test_the_qwen25_template_with_its_default_system_prompt(qwen_tokenizer_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(qwen_tokenizer_dir)
    chat = ChatTokenizer(tok, max_length=4096)
    parser = RenderedConversations(chat.render)
    plain = [{"role": "user", "content": "What is 1+1?"}, {"role": "assistant", "content": "1+1=2"}]
    prompt = tok.apply_chat_template(plain[:1], tokenize=False, add_generation_prompt=True)
    assert "You are Qwen" in prompt  # the template's own system prompt, when none is given
    found = parser.parse(prompt + "1+1=2<|im_end|>")  # what OpenRLHF decodes
    assert found.appended == "\n"
    assert chat.render(found.conversation.messages) == chat.render(Conversation.of(plain).messages)
    with_system = [{"role": "system", "content": "be brief"}, *plain]
    text = chat.render(Conversation.of(with_system).messages)
    assert parser.parse(text).conversation.messages == Conversation.of(with_system).messages


@pytest.mark.parametrize(
    "text",
    [
        "",
        "plain text",
        "<|im_start|>user\nq<|im_end|>\n",  # no assistant turn
        "<|im_start|>user\nq<|im_end|>\n<|im_start|>assistant\n<|im_end|>\n",  # empty response
        "<|im_start|>user\nq<|im_end|>\n<|im_start|>robot\na<|im_end|>\n",  # unknown role
        "<|im_start|>user\nq<|im_end|>\n<|im_start|>assistant\na<|im_end|>\nmore",  # trailing text
    ],
)
def test_what_is_not_a_rendering_is_refused(text):
    parser = RenderedConversations(chat_of(CHATML_TEMPLATE).render)
    with pytest.raises(InputError, match="chat template"):
        parser.parse(text)


def test_content_the_template_would_change_is_refused():
    """The Llama-3-like template trims content: text whose content has outer spaces is not what it
    renders for any conversation, so it is refused rather than scored as something else."""
    parser = RenderedConversations(chat_of(LLAMA3_LIKE).render)
    ok = "<|start_header_id|>user<|end_header_id|>\n\nq<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\na"
    assert parser.parse(ok).appended == "<|eot_id|>"
    with pytest.raises(InputError):
        parser.parse(ok.replace("\n\nq", "\n\n q "))
