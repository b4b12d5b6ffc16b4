"""What makes two training runs the same run: a fingerprint recorded in every checkpoint, so that
``--resume`` continues only the run that wrote it.

The fingerprint covers the data (a content hash of the tokenized training pairs: their tokens,
order, which side was chosen and the preference strength — so relabelled pairs, other files,
other chat templates or ``max_length`` differ, while the same file under another path does not),
the validation data, the starting weights (a digest of the model as loaded), the loss, and the
schedule (every option the optimizer's updates or the data order depend on). Options that only
lengthen a run (``max_steps``, ``epochs``) are not part of it: a constant learning rate after
warmup makes a longer run the same run.
"""

from __future__ import annotations

import hashlib
from array import array
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from rewardkit.train.config import TrainConfig
from rewardkit.train.data import TokenPairs

# Options of the schedule: the optimizer's updates and the data order depend on each of them.
SCHEDULE_KEYS = (
    "global_batch_size",
    "seed",
    "lr",
    "warmup_steps",
    "weight_decay",
    "adam_betas",
    "adam_eps",
    "grad_clip",
)
# Elements of each weight tensor that go into the digest (an evenly strided sample): any two
# different checkpoints differ in nearly every element, so a sample tells them apart while the
# digest of a 70B model stays a fraction of a second.
_SAMPLE = 1 << 16


def data_digest(data: TokenPairs) -> str:
    """sha256 of tokenized pairs: each pair's chosen and rejected token ids and strength."""
    h = hashlib.sha256()
    for chosen, rejected, strength in zip(data.chosen, data.rejected, data.strength, strict=True):
        for ids in (chosen, rejected):
            h.update(len(ids).to_bytes(8, "little"))
            h.update(array("q", ids).tobytes())
        h.update(array("d", [strength]).tobytes())
    return h.hexdigest()


def weights_digest(model: nn.Module) -> str:
    """sha256 of a model's weights: each tensor's name, dtype, shape and a strided sample of its
    values (all of them for tensors of up to 65,536 elements)."""
    h = hashlib.sha256()
    with torch.no_grad():
        for name, t in sorted(model.state_dict().items()):
            h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
            flat = t.detach().reshape(-1)
            step = max(1, flat.numel() // _SAMPLE)
            h.update(flat[::step].to(torch.float64).cpu().numpy().tobytes())
    return h.hexdigest()


def run_fingerprint(
    cfg: TrainConfig, *, train: TokenPairs, val: TokenPairs | None, weights: str, loss: str
) -> dict[str, Any]:
    """The fingerprint of a run (JSON-serialisable), recorded in each checkpoint's trainer state."""
    options = cfg.to_dict()
    return {
        "data": data_digest(train),
        "num_pairs": len(train),
        "val_data": data_digest(val) if val is not None else None,
        "model": weights,
        "loss": loss,
        "reward_centering": cfg.reward_centering,
        **{k: options[k] for k in SCHEDULE_KEYS},
    }


def _show(value: Any) -> str:
    if isinstance(value, str) and len(value) == 64:  # a sha256
        return value[:12]
    return repr(value)


def differences(saved: Mapping[str, Any], now: Mapping[str, Any]) -> list[str]:
    """``key: checkpoint X, now Y`` for every fingerprint entry that differs (entries an older
    checkpoint did not record are skipped)."""
    return [
        f"{key}: checkpoint {_show(saved[key])}, now {_show(value)}"
        for key, value in now.items()
        if key in saved and saved[key] != value
    ]
