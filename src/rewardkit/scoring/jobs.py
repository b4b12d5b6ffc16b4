"""Scoring as a job of several processes (torchrun, or ``--devices``): one replica per rank (data
parallel), or one model sharded over the ranks (tensor parallel).

Each function is what one rank runs: it joins the process group on the rank's device, loads the
model there, does its part and leaves the group. Start it on every rank, e.g. from a script run
with ``torchrun --nproc-per-node N script.py``::

    from rewardkit.api import ModelOptions
    from rewardkit.scoring import score_file_on_ranks

    score_file_on_ranks(ModelOptions(model="nvidia/Qwen-2.5-Nemotron-32B-Reward"), "in.jsonl", "out.jsonl")
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TypeVar

from rewardkit.api import ModelOptions, RewardModel
from rewardkit.distributed import Rank, barrier, process_group, rank_from_env
from rewardkit.errors import ConfigError
from rewardkit.scoring.files import OnError, ScoreSummary, score_file_sharded

log = logging.getLogger(__name__)

T = TypeVar("T")
LoadedFn = Callable[[RewardModel], None]


def _launched(rank: Rank | None, what: str) -> Rank:
    rank = rank or rank_from_env()
    if rank is None:
        raise ConfigError(
            f"{what} runs one process per GPU under torchrun (torchrun --nproc-per-node N ...) "
            "or --devices; RANK and WORLD_SIZE are not set"
        )
    return rank


def score_file_on_ranks(
    options: ModelOptions,
    input_path: str | Path,
    output_path: str | Path,
    *,
    rank: Rank | None = None,
    on_error: OnError = "raise",
    error_file: str | Path | None = None,
    overwrite: bool = False,
    on_load: LoadedFn | None = None,
    on_start: Callable[[int, int], None] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> ScoreSummary:
    """One rank of a data-parallel scoring job (see `score_file_sharded` for the file contract).

    Joins the process group on this rank's device (``cuda:LOCAL_RANK``, or the CPU with gloo),
    loads a replica of the model there, scores this rank's share of ``input_path`` into its part
    file; after a barrier rank 0 merges the parts into ``output_path``. Leaves the group.

    Args:
        options: how to load the model; ``device`` may be ``auto``, ``cuda`` or ``cpu``.
        rank: this process's rank (default: what torchrun set).
        on_load: called with the loaded model (e.g. to print a header on rank 0).
        on_start / progress: see `rewardkit.scoring.files.score_file`.

    Raises:
        ConfigError: not launched as a job (no ``RANK``/``WORLD_SIZE``).
    """
    rank = _launched(rank, "scoring on several ranks")
    with process_group(options.device, rank=rank) as group:
        rm = replace(options, device=str(group.device)).load()
        if on_load is not None:
            on_load(rm)
        try:
            return score_file_sharded(
                rm,
                input_path,
                output_path,
                rank=rank.rank,
                world_size=rank.world_size,
                barrier=barrier,
                on_error=on_error,
                error_file=error_file,
                overwrite=overwrite,
                on_start=on_start,
                progress=progress,
            )
        finally:
            del rm


def run_tensor_parallel(
    options: ModelOptions, work: Callable[[RewardModel], T], *, rank: Rank | None = None
) -> T | None:
    """Loads ``options.model`` sharded over every rank of the job and runs ``work`` on rank 0.

    Every rank joins the process group and loads its shard; rank 0 calls ``work(rm)`` with an
    ordinary `RewardModel` (anything it scores runs on every rank through the engine's
    `rewardkit.engine.tensor_parallel.Lockstep`), while the other ranks run its forwards until it
    returns. The sharded model is freed before the group is left.

    Returns:
        ``work``'s result on rank 0, None on the other ranks.

    Raises:
        ConfigError: not launched as a job.
    """
    rank = _launched(rank, "--tensor-parallel")
    with process_group(options.device, rank=rank) as group:
        return _lead_or_follow(replace(options, device=str(group.device), tensor_parallel=True), work, rank)


def _lead_or_follow(options: ModelOptions, work: Callable[[RewardModel], T], rank: Rank) -> T | None:
    # The sharded model lives only in this frame, so it is gone before the group is left.
    from rewardkit.engine.tensor_parallel import Lockstep

    rm = options.load()
    lockstep = rm.engine.forward
    assert isinstance(lockstep, Lockstep), "a tensor-parallel engine runs its forwards in Lockstep"
    if not rank.is_main:
        lockstep.follow()
        return None
    with lockstep.leading():
        return work(rm)
