"""The model card's scoring procedure, one conversation per forward: the oracle every fast path is
tested against. Deliberately plain; not used on any hot path.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers import PreTrainedTokenizerBase

from rewardkit.data.conversation import Conversation
from rewardkit.models.loading import attention_implementation


def card_inputs(
    tokenizer: PreTrainedTokenizerBase, conv: Conversation, device: torch.device
) -> dict[str, torch.Tensor]:
    """The model card's tokenization: ``apply_chat_template(messages, tokenize=True, ...)``."""
    ids = tokenizer.apply_chat_template(
        conv.to_dicts(), tokenize=True, add_generation_prompt=False, return_dict=True, return_tensors="pt"
    )
    return {k: v.to(device) for k, v in ids.items()}


@torch.inference_mode()
def reference_scores(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    conversations: Sequence[Conversation],
    *,
    output_index: int = 0,
) -> list[float]:
    """``model(**apply_chat_template(messages)).logits[0][output_index].item()`` per conversation."""
    device = next(model.parameters()).device
    out = []
    with attention_implementation(model, "sdpa"):
        for conv in conversations:
            ids = card_inputs(tokenizer, conv, device)
            logits = model(ids["input_ids"], attention_mask=ids["attention_mask"]).logits
            out.append(logits[0][output_index].item())
    return out


@torch.inference_mode()
def generate_reference_scores(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    conversations: Sequence[Conversation],
    *,
    token_id: int = 0,
) -> list[float]:
    """The causal-LM reward cards' procedure (e.g. Llama-3.x-Nemotron-70B-Reward): a one-token
    ``generate(..., max_new_tokens=1, output_scores=True, return_dict_in_generate=True)`` on the
    templated conversation, reading ``scores[0][0][token_id]``, per conversation.

    Greedy (``do_sample=False``) so that no sampling settings of the checkpoint's generation config
    (temperature, top-p) rescale or mask ``scores``; with no logits processor configured they are
    the raw next-token logits, which is what rewardkit's ``lm-logit`` head computes.
    """
    device = next(model.parameters()).device
    out = []
    with attention_implementation(model, "sdpa"):
        for conv in conversations:
            ids = card_inputs(tokenizer, conv, device)
            response = model.generate(
                input_ids=ids["input_ids"],
                attention_mask=ids["attention_mask"],
                max_new_tokens=1,
                do_sample=False,
                output_scores=True,
                return_dict_in_generate=True,
                pad_token_id=tokenizer.pad_token_id,
            )
            out.append(response.scores[0][0][token_id].item())
    return out
