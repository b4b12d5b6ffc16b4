"""Pairwise losses against values worked out by hand."""

from __future__ import annotations

import math

import pytest
import torch

from rewardkit.train.loss import bt, centering, margin_bt, pair_losses, scaled_bt

LN2 = math.log(2.0)  # -log σ(0)
L1 = math.log(1 + math.exp(-1))  # -log σ(1) = 0.31326...
L_NEG1 = math.log(1 + math.e)  # -log σ(-1) = 1.31326...
L_NEG2 = math.log(1 + math.exp(2))  # -log σ(-2) = 2.12692...


def t(*xs: float) -> torch.Tensor:
    return torch.tensor(xs, dtype=torch.float64)


def test_bt_hand_values() -> None:
    got = bt(t(0.0, 2.0, 1.0), t(0.0, 1.0, 3.0))  # Δ = 0, 1, -2
    assert torch.allclose(got, t(LN2, L1, L_NEG2), atol=1e-12)


def test_bt_is_finite_for_huge_margins() -> None:
    got = bt(t(1000.0, -1000.0), t(0.0, 0.0))
    assert torch.allclose(got, t(0.0, 1000.0))


def test_scaled_bt_weights_by_strength() -> None:
    got = scaled_bt(t(1.0, 1.0, 0.0), t(0.0, 0.0, 0.0), t(1.0, 3.0, 2.0))
    assert torch.allclose(got, t(L1, 3 * L1, 2 * LN2), atol=1e-12)


def test_margin_bt_subtracts_margin() -> None:
    got = margin_bt(t(1.0, 1.0), t(0.0, 0.0), t(1.0, 2.0))  # Δ - m = 0, -1
    assert torch.allclose(got, t(LN2, L_NEG1), atol=1e-12)


def test_centering_term() -> None:
    assert torch.allclose(centering(t(1.0, 2.0), t(-3.0, 2.0)), t(4.0, 16.0))
    got = pair_losses("bt", t(1.0), t(-3.0), t(1.0), center_coef=0.5)  # Δ = 4, (r_c + r_r)² = 4
    assert torch.allclose(got, t(math.log(1 + math.exp(-4)) + 2.0), atol=1e-12)


@pytest.mark.parametrize(("name", "expected"), [("bt", L1), ("scaled_bt", 2 * L1), ("margin_bt", L_NEG1)])
def test_pair_losses_dispatch(name: str, expected: float) -> None:
    got = pair_losses(name, t(1.0), t(0.0), t(2.0))  # type: ignore[arg-type]
    assert got.item() == pytest.approx(expected, abs=1e-12)


def test_unknown_loss_names_choices() -> None:
    with pytest.raises(ValueError, match="scaled_bt"):
        pair_losses("hinge", t(1.0), t(0.0), t(1.0))  # type: ignore[arg-type]


def test_gradient_pushes_rewards_apart() -> None:
    c, r = t(0.5).requires_grad_(), t(0.5).requires_grad_()
    bt(c, r).sum().backward()
    assert c.grad.item() == pytest.approx(-0.5) and r.grad.item() == pytest.approx(0.5)  # ∓σ(-Δ)
