"""Where a process runs: its rank, its device, the process group, and the local launcher.

The one distributed module of rewardkit: scoring on several ranks, tensor-parallel scoring and
training all join and leave the process group here, and resolve ``--device`` here.

- ``torchrun`` (any number of machines) sets ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``;
  `rank_from_env` reads them (the only place that does).
- ``--devices`` runs torch's own launcher (`launch_local`, what torchrun runs) over the same
  command line, one process per listed GPU, so both go through the same code.
- Each rank computes on ``cuda:LOCAL_RANK`` (or the CPU with gloo): `resolve_device`.
"""

from __future__ import annotations

import gc
import logging
import os
import socket
import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from rewardkit.errors import ConfigError

log = logging.getLogger(__name__)

# Ranks wait at barriers for the slowest rank; scoring a share of a large file can take hours.
COLLECTIVE_TIMEOUT = timedelta(hours=12)
# Marks the ranks that `launch_local` starts: their command line still holds ``--devices``.
LAUNCHED_DEVICES_ENV = "REWARDKIT_LAUNCHED_DEVICES"


@dataclass(frozen=True, kw_only=True)
class Rank:
    """Where this process sits in a job of several processes.

    Args:
        rank: global rank, 0-based.
        world_size: number of processes in the job.
        local_rank: rank on this machine; the GPU ``cuda:local_rank`` it uses.
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.rank < self.world_size:
            raise ConfigError(f"RANK={self.rank} is outside WORLD_SIZE={self.world_size}")
        if self.local_rank < 0:
            raise ConfigError(f"LOCAL_RANK must be >= 0, got {self.local_rank}")

    @property
    def is_main(self) -> bool:
        return self.rank == 0


SINGLE = Rank()


def rank_from_env(env: Mapping[str, str] | None = None) -> Rank | None:
    """The rank torchrun (or `launch_local`) gave this process, or None when run alone."""
    env = os.environ if env is None else env
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


def is_main_process() -> bool:
    """True outside a launched job and on its rank 0 (for what is printed once per job)."""
    rank = rank_from_env()
    return rank is None or rank.is_main


def resolve_device(device: str | torch.device | None, rank: Rank | None = None) -> torch.device:
    """The device to compute on, for ``--device`` (``auto``, ``cpu``, ``cuda``, ``cuda:N``).

    ``auto`` is CUDA when available, else the CPU. In a job of several processes (``rank``
    given), ``auto``/``cuda`` mean this rank's GPU ``cuda:LOCAL_RANK`` and a fixed GPU index is
    refused: every rank would use the same GPU.

    Raises:
        ConfigError: an unknown device, CUDA asked for where there is none, or ``cuda:N`` on a rank.
    """
    name = "auto" if device is None else str(device)
    if rank is not None and rank.world_size > 1:
        if name in ("auto", "cuda"):
            return torch.device("cuda", rank.local_rank) if torch.cuda.is_available() else torch.device("cpu")
        if name != "cpu":
            raise ConfigError(
                f"--device {name} cannot be combined with torchrun or --devices: each rank uses "
                "cuda:LOCAL_RANK (pass --device cpu to run on the CPU)"
            )
        return torch.device("cpu")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError as e:
        raise ConfigError(f"--device: {e}") from e
    if dev.type not in ("cpu", "cuda"):
        raise ConfigError(f"--device must be auto, cpu, cuda or cuda:N, got {name!r}")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device {name}: CUDA is not available on this machine")
    return dev


@dataclass(frozen=True, kw_only=True)
class ProcessGroup:
    """A joined process group: this process's place in it and its device.

    Args:
        rank / world_size / local_rank: as in `Rank`.
        device: where this process computes (its GPU, or the CPU with gloo).
        owned: whether `join` created the group (and `leave` destroys it); a group the caller
            had already initialised is used as it is and left open.
    """

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    owned: bool

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def join(device: str | torch.device | None = "auto", *, rank: Rank | None = None) -> ProcessGroup:
    """Joins the job's process group (nccl on GPU, gloo on CPU) on this rank's device.

    ``rank`` defaults to the one torchrun gives (`rank_from_env`); a process started alone joins a
    world of one (what FSDP2 and a one-process training run need).
    """
    rank = rank or rank_from_env()
    launched = rank is not None
    rank = rank or SINGLE
    dev = resolve_device(device, rank)
    if dev.type == "cuda":
        if dev.index is None:
            dev = torch.device("cuda", rank.local_rank)
        torch.cuda.set_device(dev)
    backend = "nccl" if dev.type == "cuda" else "gloo"
    owned = not dist.is_initialized()
    if owned:
        device_id = dev if dev.type == "cuda" else None
        if launched:
            dist.init_process_group(
                backend,
                rank=rank.rank,
                world_size=rank.world_size,
                timeout=COLLECTIVE_TIMEOUT,
                device_id=device_id,
            )
        else:  # no rendezvous needed for a world of one
            dist.init_process_group(
                backend, store=dist.HashStore(), rank=0, world_size=1, device_id=device_id
            )
        log.debug("rank %d/%d joined the %s process group on %s", rank.rank, rank.world_size, backend, dev)
    return ProcessGroup(
        rank=dist.get_rank(),
        world_size=dist.get_world_size(),
        local_rank=rank.local_rank,
        device=dev,
        owned=owned,
    )


def leave(group: ProcessGroup) -> None:
    """Leaves a group that `join` created (after collecting garbage).

    Sharded tensors (DTensors of a tensor-parallel or FSDP model, optimizer state) must be freed
    before the group: left to interpreter exit they aborted about 1 two-process run in 30 at exit
    (gloo, "terminate called without an active exception"). Callers drop their references first;
    the collection here frees what only reference cycles still hold.
    """
    if group.owned and dist.is_initialized():
        gc.collect()
        dist.destroy_process_group()


@contextmanager
def process_group(
    device: str | torch.device | None = "auto", *, rank: Rank | None = None
) -> Iterator[ProcessGroup]:
    """`join` … `leave` around a block."""
    group = join(device, rank=rank)
    try:
        yield group
    finally:
        leave(group)


def barrier() -> None:
    """Waits for every rank (no-op outside a process group)."""
    if dist.is_initialized():
        dist.barrier()


def all_reduce_sum(values: Sequence[float], device: torch.device) -> list[float]:
    """Sums a few numbers over ranks in one collective (one host sync)."""
    t = torch.as_tensor(list(values), dtype=torch.float64, device=device)
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(t)
    return t.tolist()


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


def launched_by_devices() -> bool:
    """Whether this process is one of the ranks `launch_local` started."""
    return os.environ.get(LAUNCHED_DEVICES_ENV) is not None


def launch_local(argv: Sequence[str], devices: Sequence[int]) -> int:
    """Runs ``python -m rewardkit ARGV`` once per GPU of ``devices``, as the ranks of one job.

    The same as ``CUDA_VISIBLE_DEVICES=... torchrun --nproc-per-node N -m rewardkit ARGV``, through
    torch's own launcher (static rendezvous on a free local port): every rank takes the one
    distributed path, and when one rank fails the launcher stops the others. ``ARGV`` may keep its
    ``--devices``: ranks launched here recognise it through `launched_by_devices`.

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
