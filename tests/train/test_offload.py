"""AdamW's moments on the host between steps (``offload_optimizer``): training is unchanged bit for
bit, the moments leave the device during the forward and backward and come back for the step,
and checkpoints hold them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from rewardkit.errors import ConfigError
from rewardkit.train import train
from rewardkit.train.config import TrainConfig
from rewardkit.train.offload import MOMENTS, HostMoments, local
from rewardkit.train.parallelize import decoder_blocks
from rewardkit.train.trainer import Trainer


def run(cfg: dict, steps: int, watch=None) -> tuple[list[dict], dict[str, torch.Tensor]]:
    t = Trainer(TrainConfig(**cfg))
    try:
        t.setup()
        if watch is not None:
            watch(t)
        rows = []
        for _ in range(steps):
            rows.append(t.train_step())
            t.step += 1
        weights = {n: p.full_tensor().detach().clone() for n, p in t.root.named_parameters()}
    finally:
        t.close()
    return rows, weights


def test_offloading_the_moments_does_not_change_training(base_config: dict, tmp_path: Path) -> None:
    """With one forward per step and with several (the last backward loads what the first forward
    and backward freed): the same losses, gradient norms and weights, bit for bit."""
    for budget in (1 << 16, 160):
        cfg = {**base_config, "max_pairs": 32, "export": False, "token_budget": budget}
        plain = run({**cfg, "output": str(tmp_path / f"plain-{budget}"), "offload_optimizer": False}, 3)
        host = run({**cfg, "output": str(tmp_path / f"host-{budget}"), "offload_optimizer": True}, 3)
        for key in ("loss", "accuracy", "grad_norm", "tokens"):
            assert [r[key] for r in host[0]] == [r[key] for r in plain[0]], key
        for name, w in plain[1].items():
            assert torch.equal(host[1][name], w), name


def device_moment_bytes(host: HostMoments) -> int:
    """Bytes the moments' storages really hold (not the bookkeeping)."""
    return sum(
        local(state[key]).untyped_storage().nbytes()
        for state in host.optimizer.state.values()
        for key in MOMENTS
        if key in state
    )


def test_the_moments_leave_the_device_between_steps(base_config: dict, tmp_path: Path) -> None:
    """Seen from each block's forward: in a step's first micro-batch the moments are freed as the
    forward goes (at least all but the gradients' bytes by its last block), none is left on the
    device in the later micro-batches, and the storages agree with the bookkeeping."""
    seen: list[tuple[int, int, int, int]] = []  # (step, block, moment bytes on the device, bookkept)
    hosts: list[HostMoments] = []

    def watch(t: Trainer) -> None:
        host = t.host_moments
        assert host is not None and t.cfg.offload_optimizer is True
        hosts.append(host)
        for k, block in enumerate(decoder_blocks(t.model)):  # runs after HostMoments' own hook
            block.register_forward_pre_hook(
                lambda m, a, k=k: seen.append((t.step, k, device_moment_bytes(host), host.device_bytes))
            )

    cfg = {**base_config, "max_pairs": 32, "export": False, "token_budget": 160, "offload_optimizer": True}
    run({**cfg, "output": str(tmp_path / "r")}, 2, watch)
    recorded = json.loads((tmp_path / "r" / "run.json").read_text())
    assert (
        recorded["config"]["offload_optimizer"] is True and recorded["settings"]["offload_optimizer"] is True
    )
    blocks = 1 + max(k for _, k, _, _ in seen)
    total = hosts[0].total_bytes
    assert total > 0
    assert all(real == kept for _, _, real, kept in seen)
    assert {real for step, _, real, _ in seen if step == 0} == {0}  # no moments before the first step
    second = [real for step, _, real, _ in seen if step == 1]
    assert len(second) >= 3 * blocks  # several micro-batches
    first_forward = second[:blocks]
    assert first_forward == sorted(first_forward, reverse=True) and first_forward[0] < total
    assert first_forward[-1] <= total / 2  # fp32 gradients: half the moments' bytes
    assert set(second[blocks:]) == {0}  # the first backward freed the rest


def test_resume_with_the_moments_on_the_host(base_config: dict, cut_and_resumed) -> None:
    """A checkpoint written with the moments on the host resumes to the same loss curve (the
    checkpoint brings them back to the device to save them; a resumed run moves them out again)."""
    cut_and_resumed({**base_config, "max_pairs": 48, "offload_optimizer": True})


def test_offloading_without_the_host_memory_is_a_config_error(
    base_config: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Asked for on a machine that cannot hold the moments: a clear error naming the option, before
    anything is written."""
    from rewardkit.train import build

    monkeypatch.setattr(build, "host_available_gib", lambda: 1e-6)
    out = tmp_path / "r"
    with pytest.raises(
        ConfigError, match=r"offload_optimizer \(--set offload_optimizer=\.\.\.\): .* GiB of host memory"
    ):
        train({**base_config, "output": str(out), "max_steps": 1, "offload_optimizer": True})
    assert not out.exists()
