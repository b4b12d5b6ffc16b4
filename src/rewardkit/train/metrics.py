"""Training throughput accounting (FLOPs, MFU) and the metric sinks (JSONL, TensorBoard)."""

from __future__ import annotations

import importlib.util
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from rewardkit.errors import ConfigError

log = logging.getLogger(__name__)

# Dense bf16 peak FLOP/s by device name (vendor datasheets; no sparsity).
PEAK_BF16_TFLOPS = {"H200": 989.0, "H100": 989.0, "H800": 989.0, "A100": 312.0, "A800": 312.0, "L40S": 362.0}


def peak_tflops(device: torch.device, override: float | None = None) -> float | None:
    """The device's peak dense bf16 TFLOP/s (``override`` if given; None when unknown, e.g. CPU)."""
    if override is not None:
        return override
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    # "H100 PCIe" is slower than the SXM part the table holds.
    if "H100" in name and "PCIe" in name:
        return 756.0
    return next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)


class FlopCounter:
    """Training FLOPs of a packed micro-batch: ``6·N`` per token for the matmuls (forward 2N,
    backward 4N) plus causal attention, ``6·L·H·hd·s²`` per sequence of length ``s`` (QKᵀ and
    AV, half the square each, times 3 for forward + backward). Activation-checkpointing
    recompute is not counted: MFU measures useful work.
    """

    def __init__(self, config: Any, matmul_params: int) -> None:
        heads = config.num_attention_heads
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
        self.per_token = 6 * matmul_params
        self.per_square = 6 * config.num_hidden_layers * heads * head_dim

    def __call__(self, seq_lens: Sequence[int]) -> float:
        return float(self.per_token * sum(seq_lens) + self.per_square * sum(s * s for s in seq_lens))


def tensorboard_enabled(option: bool | None) -> bool:
    """Whether to write TensorBoard logs: ``True`` requires TensorBoard, ``False`` disables it,
    ``None`` uses it when installed (it is an optional dependency: ``rewardkit[train]``)."""
    installed = importlib.util.find_spec("tensorboard") is not None
    if option and not installed:
        raise ConfigError(
            "tensorboard (--set tensorboard=...): TensorBoard is not installed; "
            "pip install 'rewardkit[train]' or set tensorboard=false"
        )
    if option is None and not installed:
        log.info("TensorBoard is not installed (pip install 'rewardkit[train]'); metrics go to metrics.jsonl")
    return installed and option is not False


class MetricsWriter:
    """Appends metric rows to ``metrics.jsonl`` and, when available, TensorBoard (rank 0 only).

    Args:
        output: the run directory.
        tensorboard: also write TensorBoard logs (see `tensorboard_enabled`).
        truncate_after: on resume, drop rows logged after this step (they are logged again);
            TensorBoard is told the same, so its curves show each step once.
    """

    def __init__(self, output: Path, *, tensorboard: bool, truncate_after: int | None = None) -> None:
        self.path = output / "metrics.jsonl"
        output.mkdir(parents=True, exist_ok=True)
        if truncate_after is not None and self.path.exists():
            kept = [
                line
                for line in self.path.read_text(encoding="utf-8").splitlines()
                if line.strip() and json.loads(line).get("step", 0) <= truncate_after
            ]
            self.path.write_text("".join(line + "\n" for line in kept), encoding="utf-8")
        elif truncate_after is None:
            self.path.write_text("", encoding="utf-8")
        self._f = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()
        self._tb = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            # ``purge_step`` hides the old run's events from that step on: the resumed steps
            # replace them instead of being drawn a second time.
            purge = truncate_after + 1 if truncate_after is not None else None
            self._tb = SummaryWriter(log_dir=str(output / "tensorboard"), purge_step=purge)

    def write(self, row: dict[str, Any]) -> None:
        self._f.write(json.dumps(row) + "\n")
        self._f.flush()
        if self._tb is not None:
            step = row["step"]
            for k, v in row.items():
                if k != "step" and isinstance(v, int | float) and not isinstance(v, bool):
                    self._tb.add_scalar(k, v, step)

    def close(self) -> None:
        self._f.close()
        if self._tb is not None:
            self._tb.close()


def read_metrics(output: str | Path) -> list[dict[str, Any]]:
    """The rows of a run's ``metrics.jsonl``."""
    path = Path(output) / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
