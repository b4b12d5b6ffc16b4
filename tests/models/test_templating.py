"""ChatTokenizer: identical ids to ``apply_chat_template(tokenize=True)``, and the length policy.

The tiny tokenizer is byte-level with ChatML, so a rendered message costs exactly
``len(role) + len(content) + 4`` tokens (``<|im_start|>``, ``\\n``, ``<|im_end|>``, ``\\n``) and the
expected numbers below are worked by hand.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from transformers import AutoTokenizer

from rewardkit.cli import main
from rewardkit.data.conversation import Conversation
from rewardkit.errors import InputError
from rewardkit.models.templating import ChatTokenizer, Encoded
from rewardkit.models.tiny import byte_tokenizer

SEED = [{"role": "user", "content": "What is 1+1?"}, {"role": "assistant", "content": "1+1=2"}]
CONVERSATIONS = [
    SEED,
    [{"role": "system", "content": "Réponds en français 🙂"}, *SEED],
    [
        {"role": "user", "content": "Give me a colour."},
        {"role": "assistant", "content": "Blue."},
        {"role": "user", "content": "Another one?\n  With spaces  "},
        {"role": "assistant", "content": "数学 Green."},
    ],
]


def _hf_ids(tok, messages: list[dict]) -> list[int]:
    return list(tok.apply_chat_template(messages, tokenize=True, add_generation_prompt=False)["input_ids"])


@pytest.fixture(scope="module")
def tok():
    return byte_tokenizer()


def _msg(role: str, n: int, ch: str) -> dict:
    return {"role": role, "content": ch * n}


# Costs: system 6+10+4=20, user 4+20+4=28, assistant 9+20+4=33, user 28, final assistant 9+30+4=43.
LONG = Conversation.of(
    [
        _msg("system", 10, "s"),
        _msg("user", 20, "u"),
        _msg("assistant", 20, "a"),
        _msg("user", 20, "v"),
        _msg("assistant", 30, "f"),
    ]
)
FULL = 20 + 28 + 33 + 28 + 43  # 152


def test_encode_matches_apply_chat_template(tok) -> None:
    chat = ChatTokenizer(tok, max_length=4096)
    got = chat.encode([Conversation.of(m) for m in CONVERSATIONS])
    for enc, messages in zip(got, CONVERSATIONS, strict=True):
        assert isinstance(enc, Encoded)
        assert enc.ids == _hf_ids(tok, messages)
        assert not enc.truncated and enc.truncated_turns == 0


def test_hand_worked_token_count(tok) -> None:
    (enc,) = ChatTokenizer(tok, max_length=FULL).encode([LONG])
    assert len(enc.ids) == FULL and not enc.truncated  # exactly at the limit: kept whole


def test_truncation_error(tok) -> None:
    (err,) = ChatTokenizer(tok, max_length=FULL - 1, truncation="error").encode([LONG])
    assert isinstance(err, InputError)
    assert err.field == "messages"
    assert "conversation is 152 tokens, over the maximum of 151" in err.message
    assert "--truncation left" in err.message
    with pytest.raises(InputError, match="152 tokens"):
        ChatTokenizer(tok, max_length=100).encode_one(LONG)


def test_truncation_left_drops_oldest_turns_keeping_system(tok) -> None:
    chat = ChatTokenizer(tok, max_length=120, truncation="left")
    (enc,) = chat.encode([LONG])
    # Dropping user(28) leaves 124 > 120; dropping the assistant(33) too leaves 91.
    kept = [LONG.messages[0].to_dict(), *[m.to_dict() for m in LONG.messages[3:]]]
    assert enc.ids == _hf_ids(tok, kept)
    assert (len(enc.ids), enc.truncated_turns, enc.truncated_tokens) == (91, 2, FULL - 91)
    # One turn dropped is enough for a limit of 124.
    (enc,) = ChatTokenizer(tok, max_length=124, truncation="left").encode([LONG])
    assert (len(enc.ids), enc.truncated_turns, enc.truncated_tokens) == (124, 1, 28)


def test_truncation_left_then_cuts_the_oldest_kept_content(tok) -> None:
    # After both droppable turns: system 20 + user 28 (its content 20) + final 43 = 91 tokens.
    (enc,) = ChatTokenizer(tok, max_length=80, truncation="left").encode([LONG])
    kept = [LONG.messages[0].to_dict(), {"role": "user", "content": "v" * 9}, LONG.messages[-1].to_dict()]
    assert enc.ids == _hf_ids(tok, kept)  # 11 content tokens cut; headers, system, final whole
    assert (len(enc.ids), enc.truncated_turns, enc.truncated_tokens) == (80, 2, FULL - 80)
    assert tok.decode(enc.ids).startswith("<|im_start|>system\nssssssssss<|im_end|>\n<|im_start|>user\nvvv")
    # The shortest possible: one token of the user turn's content.
    (enc,) = ChatTokenizer(tok, max_length=72, truncation="left").encode([LONG])
    kept[1]["content"] = "v"
    assert enc.ids == _hf_ids(tok, kept)


def test_final_turn_and_system_that_do_not_fit_are_an_error(tok) -> None:
    (err,) = ChatTokenizer(tok, max_length=71, truncation="left").encode([LONG])
    assert isinstance(err, InputError)
    assert err.field == "messages[4].content"
    assert (
        "the final assistant turn (30 tokens) and the system message (10 tokens) are never truncated; "
        "with the chat template's turn headers at least 72 tokens are needed, over the maximum of 71"
    ) in err.message
    alone = Conversation.of([_msg("user", 1, "u"), _msg("assistant", 100, "a")])
    (err,) = ChatTokenizer(tok, max_length=100, truncation="left").encode([alone])
    assert (
        isinstance(err, InputError)
        and "the final assistant turn (100 tokens) is never truncated" in err.message
    )


def test_truncation_left_without_system_or_context(tok) -> None:
    conv = Conversation.of([_msg("user", 50, "u"), _msg("assistant", 10, "a")])  # 58 + 23 = 81
    (enc,) = ChatTokenizer(tok, max_length=40, truncation="left").encode([conv])
    assert enc.ids == _hf_ids(tok, [_msg("user", 9, "u"), _msg("assistant", 10, "a")])
    assert (enc.truncated_turns, enc.truncated_tokens) == (0, 41)


def test_batch_mixes_fitting_truncated_and_failing(tok) -> None:
    short = Conversation.of(SEED)
    huge_final = Conversation.of([_msg("user", 1, "u"), _msg("assistant", 100, "a")])
    out = ChatTokenizer(tok, max_length=80, truncation="left").encode([short, LONG, huge_final])
    assert isinstance(out[0], Encoded) and not out[0].truncated
    assert isinstance(out[1], Encoded) and out[1].truncated
    assert isinstance(out[2], InputError)


def test_encode_texts(tok) -> None:
    text = "<|im_start|>user\nhi<|im_end|>\n"  # 1 + 5 + 2 + 1 + 1 = 10 tokens
    chat = ChatTokenizer(tok, max_length=8, truncation="left")
    full = tok(text, add_special_tokens=False)["input_ids"]
    assert len(full) == 10
    ok, cut, empty = chat.encode_texts(["hi", text, ""])
    assert ok.ids == tok("hi", add_special_tokens=False)["input_ids"]
    assert cut.ids == full[-8:] and cut.truncated_tokens == 2
    assert isinstance(empty, InputError) and empty.field == "[2]"
    (err,) = ChatTokenizer(tok, max_length=8).encode_texts([text])
    assert isinstance(err, InputError) and "10 tokens, over the maximum of 8" in err.message


def test_over_long_pair_names_its_side(
    tmp_path: Path, tiny_model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = [
        {"prompt": "q", "chosen": "short", "rejected": "long " * 40},
        {
            "context": [{"role": "user", "content": "q"}],
            "response1": "long " * 40,
            "response2": "ok",
            "overall_preference": 1,
        },
    ]
    for i, row in enumerate(rows):
        path = tmp_path / f"pairs{i}.jsonl"
        path.write_text(json.dumps(row) + "\n", encoding="utf-8")
        assert main(["score", str(path), "--model", str(tiny_model_dir), "--max-length", "100"]) == 2
        side = "rejected" if i == 0 else "response1"
        assert f"{path}:1: field '{side}': conversation is " in capsys.readouterr().err
        args = [
            "score",
            str(path),
            "--model",
            str(tiny_model_dir),
            "--max-length",
            "100",
            "--truncation",
            "left",
        ]
        assert main(args) == 2
        assert f"{path}:1: field '{side}': the final assistant turn (200 tokens) is never truncated" in (
            capsys.readouterr().err
        )


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.mark.parametrize("truncation", ["error", "left"])
def test_no_transformers_warning_for_over_long_input(truncation: str) -> None:
    """The length policy reports over-long conversations; transformers' "indexing errors" warning
    (the tokenizer's model_max_length exceeded) is not printed besides."""
    tok = byte_tokenizer()
    tok.model_max_length = 64
    records = _Records()
    hf_logger = logging.getLogger("transformers.tokenization_utils_base")
    hf_logger.addHandler(records)
    try:
        ChatTokenizer(tok, max_length=64, truncation=truncation).encode([LONG])  # type: ignore[arg-type]
        assert not [m for m in records.messages if "Token indices sequence length" in m]
        tok(["x" * 100])  # the warning this test would see (transformers warns once per tokenizer)
        assert [m for m in records.messages if "Token indices sequence length" in m]
    finally:
        hf_logger.removeHandler(records)


# The seed conversation under Qwen2.5's template: the default system block (21 tokens), the user
# turn (12: digits are single tokens and the space before "1" is its own token) and the assistant
# turn (10): 43 ids in all.
QWEN_SEED_IDS = [
    *[151644, 8948, 198, 2610, 525, 1207, 16948, 11, 3465, 553, 54364, 14817, 13],
    *[1446, 525, 264, 10950, 17847, 13, 151645, 198],
    *[151644, 872, 198, 3838, 374, 220, 16, 10, 16, 30, 151645, 198],
    *[151644, 77091, 198, 16, 10, 16, 28, 17, 151645, 198],
]


def test_qwen25_seed_conversation_ids(qwen_tokenizer_dir: Path) -> None:
    qwen = AutoTokenizer.from_pretrained(qwen_tokenizer_dir)
    want = _hf_ids(qwen, SEED)
    assert want == QWEN_SEED_IDS
    assert len(want) == 43 and want[0] == 151644 and want[-2:] == [151645, 198]
    assert qwen.decode(want).startswith("<|im_start|>system\nYou are Qwen, created by Alibaba Cloud.")
    chat = ChatTokenizer(qwen, max_length=32768)
    assert chat.encode_one(Conversation.of(SEED)).ids == want
    for messages in CONVERSATIONS[1:]:
        assert chat.encode_one(Conversation.of(messages)).ids == _hf_ids(qwen, messages)
