"""Data parallel scoring: rank sharding under torchrun, and one replica per local GPU.

Every rank runs the same program on a deterministic shard of the input; nothing is exchanged
between replicas but a barrier, so throughput scales with the number of replicas. The shard of
rank ``r`` of ``w`` is the contiguous block ``[n·r // w, n·(r+1) // w)`` of the valid records:
merging the parts back into input order is then a concatenation in rank order, and records that
sit together in the input (often responses to one prompt) stay on one replica.

``torchrun`` sets ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``; `launch_local` (``--devices``) runs torch's
launcher itself, one process per listed GPU, so both go through the one rank-sharding path.
"""

from __future__ import annotations

import gc
import logging
import os
import socket
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist

from rewardkit.errors import ConfigError, RewardkitError

log = logging.getLogger(__name__)

# Ranks wait at the final barrier for the slowest shard; scoring a shard can take hours.
BARRIER_TIMEOUT = timedelta(hours=12)
# Marks the ranks that `launch_local` starts: their command line still holds ``--devices``.
LAUNCHED_DEVICES_ENV = "REWARDKIT_LAUNCHED_DEVICES"


@dataclass(frozen=True, kw_only=True)
class Rank:
    """Where this process sits in a data-parallel job.

    Args:
        rank: global rank, 0-based.
        world_size: number of processes scoring the input together.
        local_rank: rank on this machine; the GPU ``cuda:local_rank`` it uses.
    """

    rank: int
    world_size: int
    local_rank: int

    def __post_init__(self) -> None:
        if not 0 <= self.rank < self.world_size:
            raise ConfigError(f"RANK={self.rank} is outside WORLD_SIZE={self.world_size}")
        if self.local_rank < 0:
            raise ConfigError(f"LOCAL_RANK must be >= 0, got {self.local_rank}")

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def rank_from_env(env: dict[str, str] | None = None) -> Rank | None:
    """The rank torchrun (or `launch_local`) gave this process, or None when run alone."""
    env = dict(os.environ) if env is None else env
    if "RANK" not in env or "WORLD_SIZE" not in env:
        return None
    try:
        return Rank(
            rank=int(env["RANK"]),
            world_size=int(env["WORLD_SIZE"]),
            local_rank=int(env.get("LOCAL_RANK", env["RANK"])),
        )
    except ValueError as e:
        raise ConfigError(f"RANK/WORLD_SIZE/LOCAL_RANK must be integers: {e}") from e


def rank_device(rank: Rank, device: str | None) -> str:
    """The device a rank scores on: ``cuda:LOCAL_RANK`` unless ``--device cpu`` (or no GPU)."""
    if device in (None, "auto", "cuda"):
        return f"cuda:{rank.local_rank}" if torch.cuda.is_available() else "cpu"
    if device != "cpu":
        raise ConfigError(
            f"--device {device} cannot be combined with torchrun or --devices: each rank uses "
            "cuda:LOCAL_RANK (pass --device cpu to score on CPU)"
        )
    return "cpu"


def init_process_group(rank: Rank, device: torch.device) -> None:
    """Joins the job's process group: nccl on GPU, gloo on CPU (idempotent)."""
    if dist.is_initialized():
        return
    if device.type == "cuda":
        torch.cuda.set_device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(
        backend=backend,
        rank=rank.rank,
        world_size=rank.world_size,
        timeout=BARRIER_TIMEOUT,
        device_id=device if device.type == "cuda" else None,
    )
    log.debug("rank %d/%d joined the %s process group on %s", rank.rank, rank.world_size, backend, device)


def barrier() -> None:
    """Waits for every rank (no-op outside a process group)."""
    if dist.is_initialized():
        dist.barrier()


def destroy_process_group() -> None:
    """Leaves the process group (no-op outside one), after collecting garbage.

    Sharded tensors (DTensors of a tensor-parallel or FSDP model, optimizer state) must be freed
    before the group: left to interpreter exit they aborted about 1 two-process run in 30 at exit
    (gloo, "terminate called without an active exception"). Callers drop their references first;
    the collection here frees what only reference cycles still hold.
    """
    if dist.is_initialized():
        gc.collect()
        dist.destroy_process_group()


def shard_bounds(n: int, rank: int, world_size: int) -> tuple[int, int]:
    """``[lo, hi)``: the contiguous block of ``n`` items that ``rank`` of ``world_size`` takes.

    Block sizes differ by at most one; concatenating the blocks in rank order gives ``0..n``.
    """
    return n * rank // world_size, n * (rank + 1) // world_size


def part_path(output: str | Path, rank: int, world_size: int) -> Path:
    """The resumable part file of one rank: ``OUT.rank{r}-of-{w}``."""
    out = Path(output)
    return out.with_name(f"{out.name}.rank{rank}-of-{world_size}")


def merge_parts(output: str | Path, parts: Sequence[Path], meta_text: str, *, expected_rows: int) -> None:
    """Concatenates the parts (in rank order) into ``output`` atomically, then removes them.

    The merged file and its ``.meta.json`` are written beside ``output`` and moved into place
    with ``os.replace``, so a kill leaves either the parts or the complete output, never a mix.

    Raises:
        RewardkitError: the parts hold a different number of rows than expected.
    """
    out = Path(output)
    tmp = out.with_name(out.name + ".merging")
    rows = 0
    with open(tmp, "wb") as f:
        for p in parts:
            data = p.read_bytes()
            rows += data.count(b"\n")
            f.write(data)
        f.flush()
        os.fsync(f.fileno())
    if rows != expected_rows:
        tmp.unlink()
        raise RewardkitError(f"the part files of {out} hold {rows} rows, expected {expected_rows}")
    meta = out.with_name(out.name + ".meta.json")
    meta_tmp = meta.with_name(meta.name + ".merging")
    meta_tmp.write_text(meta_text, encoding="utf-8")
    os.replace(meta_tmp, meta)
    os.replace(tmp, out)
    for p in parts:
        p.unlink()
        p.with_name(p.name + ".meta.json").unlink(missing_ok=True)


def parse_devices(spec: str, available: int) -> list[int]:
    """``"0,1,3"`` or ``"all"`` → GPU indices, checked against the GPUs of this machine."""
    if available == 0:
        raise ConfigError(f"--devices {spec}: no CUDA GPU is visible on this machine")
    if spec.strip() == "all":
        return list(range(available))
    try:
        devices = [int(x) for x in spec.split(",") if x.strip()]
    except ValueError:
        raise ConfigError(f"--devices must be 'all' or GPU indices like 0,1,2,3, got {spec!r}") from None
    if not devices:
        raise ConfigError("--devices lists no GPU")
    if len(set(devices)) != len(devices):
        raise ConfigError(f"--devices lists a GPU twice: {spec}")
    bad = [d for d in devices if not 0 <= d < available]
    if bad:
        raise ConfigError(
            f"--devices {spec}: this machine has {available} GPU(s) (0-{available - 1}); "
            f"{', '.join(map(str, bad))} do not exist"
        )
    return devices


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _visible_devices(devices: Sequence[int]) -> str:
    """``CUDA_VISIBLE_DEVICES`` for ``devices``, indices counted among the GPUs visible now."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    ids = [x.strip() for x in visible.split(",")] if visible else None
    return ",".join(ids[d] if ids else str(d) for d in devices)


def launch_local(argv: Sequence[str], devices: Sequence[int]) -> int:
    """Runs ``python -m rewardkit ARGV`` once per GPU of ``devices``, as the ranks of one job.

    The same as ``CUDA_VISIBLE_DEVICES=... torchrun --nproc-per-node N -m rewardkit ARGV``, through
    torch's own launcher (static rendezvous on a free local port): every rank takes the one
    rank-sharding path, and when one rank fails the launcher stops the others. ``ARGV`` may keep
    its ``--devices``: ranks launched here recognise it through `LAUNCHED_DEVICES_ENV`.

    Returns:
        0 if every rank succeeded, else the exit code of the lowest failed rank.
    """
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    config = LaunchConfig(
        min_nodes=1,
        max_nodes=1,
        nproc_per_node=len(devices),
        run_id=f"rewardkit-{os.getpid()}",
        rdzv_backend="static",
        rdzv_endpoint=f"127.0.0.1:{_free_port()}",
        rdzv_configs={"rank": 0},
        max_restarts=0,
        local_addr="127.0.0.1",
    )
    env = {
        "CUDA_VISIBLE_DEVICES": _visible_devices(devices),
        LAUNCHED_DEVICES_ENV: "1",
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),  # torchrun's default too
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)  # the launcher passes its own environment on to the ranks
    try:
        elastic_launch(config, sys.executable)("-u", "-m", "rewardkit", *argv)
    except ChildFailedError as e:
        code = e.failures[min(e.failures)].exitcode
        return code if code > 0 else 1
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return 0
