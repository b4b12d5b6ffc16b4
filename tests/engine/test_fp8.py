"""FP8 (e4m3, rowwise scales) linear layers: numerics on the CPU, wiring into the engine and spec."""

from __future__ import annotations

import copy

import pytest
import torch

from rewardkit.api import RewardModel
from rewardkit.engine.engine import ScoringEngine
from rewardkit.engine.fp8 import Float8RowwiseLinear

# e4m3 keeps 3 mantissa bits: each quantized value is within 2^-4 (6.25%) of the original,
# so a dot product of two quantized rows is off by well under that in relative terms.
E4M3_REL = 2**-4


@pytest.mark.parametrize("shape", [(5, 64), (3, 7, 64), (16, 64)])
@pytest.mark.parametrize("bias", [True, False])
def test_fp8_linear_close_to_linear(shape, bias):
    torch.manual_seed(0)
    lin = torch.nn.Linear(64, 48, bias=bias)
    x = torch.randn(*shape)
    want, got = lin(x), Float8RowwiseLinear(lin)(x)
    assert got.shape == want.shape and got.dtype == want.dtype
    assert ((got - want).norm() / want.norm()).item() < E4M3_REL


def test_fp8_linear_rejects_unaligned_shapes():
    with pytest.raises(ValueError, match="divisible by 16"):
        Float8RowwiseLinear(torch.nn.Linear(64, 40))


def test_engine_fp8_tracks_full_precision(tiny_model_dir):
    rm = RewardModel.load(tiny_model_dir, device="cpu")
    fp8_model = copy.deepcopy(rm.model)
    convs = [
        [
            {"role": "user", "content": f"question {i} " * (i + 1)},
            {"role": "assistant", "content": f"answer {i} " * (2 * i + 1)},
        ]
        for i in range(24)
    ]
    ids = [e.ids for e in rm.encode(convs)]
    full = torch.tensor(ScoringEngine(rm.model, compile=False).score_ids(ids))
    eng = ScoringEngine(fp8_model, compile=False, fp8=True)
    layers = fp8_model.model.layers
    assert sum(isinstance(m, Float8RowwiseLinear) for m in fp8_model.modules()) == 7 * len(layers)
    assert not any(isinstance(m, torch.nn.Linear) for m in layers.modules())
    fp8 = torch.tensor(eng.score_ids(ids))
    assert not torch.equal(fp8, full)  # it really ran in FP8
    assert torch.corrcoef(torch.stack([full, fp8]))[0, 1] > 0.95


def test_fp8_recorded_in_spec(tiny_model_dir):
    rm = RewardModel.load(tiny_model_dir, device="cpu", fp8=True)
    assert rm.spec.fp8 is True and rm.engine.fp8 is True
    assert RewardModel.load(tiny_model_dir, device="cpu").spec.fp8 is False
