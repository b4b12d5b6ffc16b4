"""Pairwise reward-model losses: Bradley-Terry and its HelpSteer variants.

Every function takes per-pair rewards and returns per-pair losses ``(P,)``; the trainer sums them
and divides by the number of pairs in the global batch, so that gradient accumulation and data
parallelism give the same update as one big batch.
"""

from __future__ import annotations

from typing import Literal, get_args

import torch
import torch.nn.functional as F

LossName = Literal["bt", "scaled_bt", "margin_bt"]
LOSSES: tuple[str, ...] = get_args(LossName)


def bt(chosen: torch.Tensor, rejected: torch.Tensor) -> torch.Tensor:
    """Bradley-Terry: ``-log σ(r_c - r_r)``.

    Under the BT model ``P(chosen ≻ rejected) = σ(r_c - r_r)``, so this is the negative
    log-likelihood of the observed preference. ``logsigmoid`` keeps it finite for large margins.
    """
    return -F.logsigmoid(chosen - rejected)


def scaled_bt(chosen: torch.Tensor, rejected: torch.Tensor, strength: torch.Tensor) -> torch.Tensor:
    """Scaled Bradley-Terry (HelpSteer2-Preference): ``-m · log σ(r_c - r_r)``.

    A pair judged "much better" (``m = 3``) counts three times a "slightly better" one (``m = 1``):
    the annotators' strength weights the likelihood instead of being thrown away.
    """
    return strength * bt(chosen, rejected)


def margin_bt(chosen: torch.Tensor, rejected: torch.Tensor, margin: torch.Tensor) -> torch.Tensor:
    """Margin Bradley-Terry (Llama 2): ``-log σ(r_c - r_r - m)``: stronger preferences must be won by
    a larger reward gap before the loss lets go."""
    return bt(chosen - margin, rejected)


def centering(chosen: torch.Tensor, rejected: torch.Tensor) -> torch.Tensor:
    """Reward-centring term ``(r_c + r_r)²``: BT only sees differences, so this pins the mean reward
    near 0 (useful when rewards are compared across prompts or fed to RL)."""
    return (chosen + rejected).square()


def pair_losses(
    name: LossName,
    chosen: torch.Tensor,
    rejected: torch.Tensor,
    strength: torch.Tensor,
    *,
    center_coef: float = 0.0,
) -> torch.Tensor:
    """Per-pair loss ``(P,)`` for the named loss, plus ``center_coef · (r_c + r_r)²``.

    Args:
        name: ``bt``, ``scaled_bt`` or ``margin_bt``.
        chosen: (P,) rewards of the preferred responses.
        rejected: (P,) rewards of the other responses.
        strength: (P,) preference strength (HelpSteer ``|overall_preference|``; 1 for plain pairs).
        center_coef: weight λ of the reward-centring term (0 disables it).
    """
    if name == "bt":
        loss = bt(chosen, rejected)
    elif name == "scaled_bt":
        loss = scaled_bt(chosen, rejected, strength)
    elif name == "margin_bt":
        loss = margin_bt(chosen, rejected, strength)
    else:
        raise ValueError(f"unknown loss {name!r}; expected one of {', '.join(LOSSES)}")
    if center_coef:
        loss = loss + center_coef * centering(chosen, rejected)
    return loss
