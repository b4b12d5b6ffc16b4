"""Scoring as a job of several processes (torchrun, or ``--devices``): one replica per rank (data
parallel), or one model sharded over the ranks (tensor parallel).

Each function is what one rank runs: it joins the process group on the rank's device, loads the
model there, does its part and leaves the group. Start it on every rank, e.g. from a script run
with ``torchrun --nproc-per-node N script.py``::

    from rewardkit.api import ModelOptions
    from rewardkit.scoring import score_file_on_ranks

    score_file_on_ranks(ModelOptions(model="nvidia/Qwen-2.5-Nemotron-32B-Reward"), "in.jsonl", "out.jsonl")

How a data-parallel job shares the work:

1. Every rank cuts the input into the same *blocks* of consecutive lines (`index_blocks`, a read
   without parsing) and reads only the blocks it takes.
2. Nine tenths of the work (by tokens) are split evenly between the ranks up front; the rest the
   ranks take as they go (guided self-scheduling through a counter every rank shares): a rank
   takes a run of blocks worth ``remaining / (2 · ranks)`` of the work, so runs shrink towards
   the end and no rank waits long for another, whatever order the long records are in
   (`take_runs`).
3. Pass 1 (scan, while the weights load) validates and tokenizes; its per-block token counts
   size the runs of pass 2 by tokens, not records.
4. Pass 2 scores each run as one stream and writes one part file per block
   (``OUT.parts/block-*.jsonl``, each written whole); rank 0 concatenates them in block order,
   which is input order. A killed job resumes block by block, with any number of ranks.
"""

from __future__ import annotations

import bisect
import itertools
import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

import torch.distributed as dist

from rewardkit.api import ModelOptions, RewardModel
from rewardkit.data.io import Block, check_input, first_record_kind, index_blocks, source_name
from rewardkit.data.outputs import (
    block_path,
    check_output,
    check_resumable,
    count_rows,
    merge_blocks,
    parts_dir,
    parts_meta_path,
    rows_text,
)
from rewardkit.distributed import ProcessGroup, Rank, barrier, process_group, rank_from_env
from rewardkit.errors import ConfigError, InputError, RewardkitError
from rewardkit.models.templating import ChatTokenizer
from rewardkit.scoring.files import (
    MAX_LISTED_ERRORS,
    InvalidInputError,
    OnError,
    ProgressFn,
    ScoreSummary,
    StartFn,
    error_file_path,
    error_row,
    output_meta,
    record_units,
    scan,
    scan_while_loading,
)
from rewardkit.scoring.pipeline import default_window_tokens, score_stream
from rewardkit.scoring.rows import output_row

log = logging.getLogger(__name__)

T = TypeVar("T")
LoadedFn = Callable[[RewardModel], None]
BLOCKS_PER_RANK = 64  # blocks an input is cut into, per rank: the grain of sharing and resuming
MIN_BLOCK_BYTES = 1 << 10
MAX_BLOCK_BYTES = 1 << 26
# Share of the work split evenly (by tokens) up front, which timing cannot skew: with 2 ranks
# none takes more than 1 - 0.9 / 2 = 55% of the tokens. The rest goes to whichever rank is free,
# enough to even out a rank about 20% slower or later than the others.
FIXED_SHARE = 0.9


def _launched(rank: Rank | None, what: str) -> Rank:
    rank = rank or rank_from_env()
    if rank is None:
        raise ConfigError(
            f"{what} runs one process per GPU under torchrun (torchrun --nproc-per-node N ...) "
            "or --devices; RANK and WORLD_SIZE are not set"
        )
    return rank


class SharedCounter:
    """Atomic counters shared by every rank of the job: a ``TCPStore`` that rank 0 hosts on a
    free port of ``MASTER_ADDR`` (which torchrun makes reachable from every rank)."""

    def __init__(self, group: ProcessGroup) -> None:
        host = os.environ.get("MASTER_ADDR", "127.0.0.1")
        if group.is_main:
            self.store = dist.TCPStore(host, 0, group.world_size, True, wait_for_workers=False)
        box = [self.store.port if group.is_main else None]
        dist.broadcast_object_list(box, src=0)
        if not group.is_main:
            self.store = dist.TCPStore(host, int(box[0]), group.world_size, False)  # type: ignore[arg-type]

    def add(self, key: str, n: int) -> int:
        """Adds ``n`` to counter ``key`` (0 at first) and returns its new value."""
        return int(self.store.add(key, n))


def take_runs(
    counter: SharedCounter,
    key: str,
    costs: Sequence[int],
    rank: int,
    world_size: int,
    *,
    max_cost: int,
    fixed: float = FIXED_SHARE,
) -> Iterator[range]:
    """The runs of blocks this rank takes, until every block is taken.

    1. The blocks holding the first ``fixed`` of the cost are split into ``world_size`` runs of
       equal cost (cut at block boundaries); rank ``r`` takes run ``r``. No rank waits on another
       for these, and the split does not depend on how fast each rank happens to go.
    2. The rest is taken as ranks go (guided self-scheduling): each run starts where the shared
       counter ``key`` stands and covers about ``remaining cost / (2 · world_size)``, so the runs
       shrink towards the end and a rank that finishes early takes more of them.

    Runs are at most ``max_cost`` (and at least one block).
    """
    prefix = [0, *itertools.accumulate(costs)]
    n = len(costs)
    total = prefix[n]
    split = bisect.bisect_left(prefix, fixed * total) if total else 0
    lo = bisect.bisect_left(prefix, prefix[split] * rank / world_size)
    hi = bisect.bisect_left(prefix, prefix[split] * (rank + 1) / world_size)
    lo, hi = min(lo, split), min(hi, split) if rank < world_size - 1 else split
    yield from _capped(lo, hi, prefix, max_cost)
    while True:
        at = split + counter.add(key, 0)
        if at >= n:
            return
        target = min(max_cost, max(1, (total - prefix[at]) // (2 * world_size)))
        k = max(1, bisect.bisect_left(prefix, prefix[at] + target) - at)
        end = split + counter.add(key, k)
        start = end - k
        if start >= n:
            return
        yield range(start, min(end, n))


def _capped(lo: int, hi: int, prefix: Sequence[int], max_cost: int) -> Iterator[range]:
    """Blocks ``[lo, hi)`` as consecutive runs of at most ``max_cost`` (at least one block each)."""
    while lo < hi:
        end = min(hi, max(lo + 1, bisect.bisect_right(prefix, prefix[lo] + max_cost) - 1))
        yield range(lo, end)
        lo = end


def _block_bytes(path: str | Path, world_size: int) -> int:
    size = Path(path).stat().st_size
    return min(MAX_BLOCK_BYTES, max(MIN_BLOCK_BYTES, size // (BLOCKS_PER_RANK * world_size)))


@dataclass(frozen=True, kw_only=True)
class _BlockScan:
    index: int
    records: int
    conversations: int
    tokens: int


def score_file_on_ranks(
    options: ModelOptions,
    input_path: str | Path,
    output_path: str | Path,
    *,
    rank: Rank | None = None,
    on_error: OnError = "raise",
    error_file: str | Path | None = None,
    overwrite: bool = False,
    window_tokens: int | None = None,
    on_load: LoadedFn | None = None,
    on_start: StartFn | None = None,
    progress: ProgressFn | None = None,
) -> ScoreSummary:
    """One rank of a data-parallel scoring job (the module docstring says how work is shared).

    The merged output and its ``.meta.json`` are those `rewardkit.scoring.files.score_file` writes
    for the same input in one process.

    Args:
        options: how to load the model; ``device`` may be ``auto``, ``cuda`` or ``cpu``.
        rank: this process's rank (default: what torchrun set).
        on_load: called with the loaded model (e.g. to print a header on rank 0).
        on_start: called with (conversations left to score by all ranks, rows already done).
        progress: called after each engine batch with (conversations, tokens); on rank 0 they
            are those of all ranks since the last call.

    Raises:
        ConfigError: not launched as a job (no ``RANK``/``WORLD_SIZE``).
        InvalidInputError / RewardkitError: as `score_file`, on every rank alike.
    """
    rank = _launched(rank, "scoring on several ranks")
    if "-" in (str(input_path), str(output_path)):
        raise RewardkitError("scoring on several ranks needs an INPUT file and -o OUTPUT, not stdin/stdout")
    check_input(input_path)
    check_output(output_path, input_path=input_path, error_file=error_file)
    with process_group(options.device, rank=rank) as group:
        job = _RankedJob(
            group, replace(options, device=str(group.device)), Path(input_path), Path(output_path)
        )
        return job.run(
            on_error=on_error,
            error_file=error_file,
            overwrite=overwrite,
            window_tokens=window_tokens,
            on_load=on_load,
            on_start=on_start,
            progress=progress,
        )


class _RankedJob:
    """The steps of `score_file_on_ranks` on one rank."""

    def __init__(self, group: ProcessGroup, options: ModelOptions, input_path: Path, output: Path) -> None:
        self.group = group
        self.options = options
        self.input = input_path
        self.output = output
        self.source = source_name(input_path)
        self.blocks = index_blocks(input_path, target_bytes=_block_bytes(input_path, group.world_size))
        self.kind = first_record_kind(input_path)
        self.counter = SharedCounter(group)

    def run(
        self,
        *,
        on_error: OnError,
        error_file: str | Path | None,
        overwrite: bool,
        window_tokens: int | None,
        on_load: LoadedFn | None,
        on_start: StartFn | None,
        progress: ProgressFn | None,
    ) -> ScoreSummary:
        t_start = time.perf_counter()
        # 1. Scan this rank's share while the weights load; everyone gets every block's counts.
        rm, (stats, errors, error_count), load_s = scan_while_loading(
            self.options, lambda chat: self._scan(chat, on_error)
        )
        seconds = {"load": load_s, "scan": time.perf_counter() - t_start - load_s}
        # Compile before the ranks meet, so that they all start scoring together.
        compile_s = rm.engine.warm_up()
        if compile_s:
            seconds["compile"] = compile_s
        stats, errors, error_count = self._gather_scans(stats, errors, error_count)
        records = sum(s.records for s in stats)
        if error_count and on_error == "raise":
            raise InvalidInputError(errors, error_count)
        if error_count and self.group.is_main:
            path = error_file_path(self.output, error_file)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("".join(json.dumps(error_row(e)) + "\n" for e in errors), encoding="utf-8")
            log.warning("%d invalid record(s) skipped, listed in %s", error_count, path)
        if records == 0 and error_count == 0 and on_error == "raise":
            raise RewardkitError(f"{self.source} holds no records")
        if on_load is not None:
            on_load(rm)
        # 2. The output: already complete, or block parts to resume (rank 0 decides for all).
        meta = output_meta(rm.spec, self.input, on_error=on_error)
        state = self._agree(lambda: self._prepare_output(meta, records, overwrite))
        if state == "complete":
            if on_start is not None:
                on_start(0, records)
            return ScoreSummary(rows=0, resumed=records, skipped=error_count, tokens=0, seconds=seconds)
        done = {i for i in range(len(self.blocks)) if block_path(self.output, i).exists()}
        resumed = sum(stats[i].records for i in done)
        if on_start is not None:
            on_start(sum(s.conversations for s in stats if s.index not in done), resumed)
        # 3. Score runs of blocks, sized by tokens.
        t_score = time.perf_counter()
        tokens = self._score(rm, stats, done, window_tokens, self._shared_progress(progress))
        seconds["score"] = time.perf_counter() - t_score
        # 4. Rank 0 merges the blocks into the output, in input order.
        barrier()
        rank_tokens: list[Any] = [None] * self.group.world_size
        dist.all_gather_object(rank_tokens, tokens)
        if self.group.is_main:
            parts = [block_path(self.output, i) for i in range(len(self.blocks))]
            merge_blocks(self.output, parts, meta, expected_rows=records)
            shutil.rmtree(parts_dir(self.output))
        barrier()
        seconds["total"] = time.perf_counter() - t_start
        return ScoreSummary(
            rows=records - resumed,
            resumed=resumed,
            skipped=error_count,
            tokens=sum(rank_tokens),
            seconds=seconds,
            rank_tokens=[int(t) for t in rank_tokens],
        )

    def _scan(self, chat: ChatTokenizer, on_error: OnError) -> tuple[list[_BlockScan], list[InputError], int]:
        """Pass 1 on this rank's share of the blocks: counts per block, and the errors (all of
        them for the error file, the first few when they fail the run)."""
        keep = MAX_LISTED_ERRORS if on_error == "raise" else 1 << 62
        stats, errors, count = [], [], 0
        costs = [b.end - b.start for b in self.blocks]
        for run in take_runs(
            self.counter, "scan", costs, self.group.rank, self.group.world_size, max_cost=sum(costs)
        ):
            for i in run:
                s = scan(
                    chat,
                    self.input,
                    source=self.source,
                    block=self.blocks[i],
                    kind=self.kind,
                    keep_errors=keep,
                )
                stats.append(
                    _BlockScan(index=i, records=s.records, conversations=s.conversations, tokens=s.tokens)
                )
                errors.extend(s.errors)
                count += s.error_count
        return stats, errors, count

    def _gather_scans(
        self, stats: list[_BlockScan], errors: list[InputError], count: int
    ) -> tuple[list[_BlockScan], list[InputError], int]:
        everyone: list[Any] = [None] * self.group.world_size
        dist.all_gather_object(everyone, (stats, errors, count))
        by_block = sorted((s for part in everyone for s in part[0]), key=lambda s: s.index)
        assert [s.index for s in by_block] == list(range(len(self.blocks))), "every block scanned once"
        all_errors = sorted((e for part in everyone for e in part[1]), key=lambda e: e.line or 0)
        return by_block, all_errors, sum(part[2] for part in everyone)

    def _agree(self, decide: Callable[[], str]) -> str:
        """Runs ``decide`` on rank 0 and gives its result (or its error) to every rank."""
        box: list[Any] = [None]
        if self.group.is_main:
            try:
                box[0] = decide()
            except RewardkitError as e:
                box[0] = e
        dist.broadcast_object_list(box, src=0)
        if isinstance(box[0], RewardkitError):
            raise box[0]
        return str(box[0])

    def _prepare_output(self, meta: dict[str, Any], records: int, overwrite: bool) -> str:
        """On rank 0: ``complete`` if the output is already this job's; else readies the parts."""
        parts = parts_dir(self.output)
        if overwrite:
            shutil.rmtree(parts, ignore_errors=True)
            self.output.unlink(missing_ok=True)
        elif self.output.exists():
            check_resumable(self.output, meta)
            if count_rows(self.output) == records:
                shutil.rmtree(parts, ignore_errors=True)  # left by a kill after the merge
                return "complete"
            raise RewardkitError(
                f"{self.output} exists but is not the complete output of these settings; "
                "pass --overwrite or choose another -o"
            )
        sidecar = parts_meta_path(self.output)
        if sidecar.exists():
            check_resumable(parts, meta, sidecar=sidecar)
        parts.mkdir(parents=True, exist_ok=True)
        sidecar.write_text(json.dumps(meta, indent=1, sort_keys=True), encoding="utf-8")
        return "parts"

    def _shared_progress(self, progress: ProgressFn | None) -> ProgressFn | None:
        """Every rank adds its batches to shared counters, and reports everyone's since its last
        report (so rank 0's bar shows the whole job)."""
        if progress is None:
            return None
        seen = [0, 0]

        def report(n: int, tokens: int) -> None:
            total = [self.counter.add("conversations", n), self.counter.add("tokens", tokens)]
            progress(total[0] - seen[0], total[1] - seen[1])
            seen[:] = total

        return report

    def _score(
        self,
        rm: RewardModel,
        stats: list[_BlockScan],
        done: set[int],
        window_tokens: int | None,
        progress: ProgressFn | None,
    ) -> int:
        """Pass 2 on this rank: takes runs of blocks, scores each as one stream, writes each
        block's rows to its part file; returns the tokens scored here."""
        max_tokens = window_tokens or default_window_tokens(rm)
        costs = [0 if s.index in done else s.tokens for s in stats]
        tokens = 0
        for run in take_runs(
            self.counter, "score", costs, self.group.rank, self.group.world_size, max_cost=max_tokens
        ):
            todo = [self.blocks[i] for i in run if i not in done]
            log.debug(
                "rank %d takes blocks %d-%d (%d tokens)",
                self.group.rank,
                run[0],
                run[-1],
                sum(costs[i] for i in run),
            )
            if not todo:
                continue
            by_block: dict[int, list[dict[str, Any]]] = {b.index: [] for b in todo}
            for window in score_stream(rm, self._units(todo), window_tokens=max_tokens, progress=progress):
                for (index, line, rec), scored in window:
                    if isinstance(scored, InputError) or rec is None:
                        continue  # listed by the scan
                    by_block[index].append(output_row(rec, line, scored))
                    tokens += sum(s.num_tokens for s in scored)
            for index, block_rows in by_block.items():
                _write_whole(block_path(self.output, index), rows_text(block_rows))
        return tokens

    def _units(self, blocks: Sequence[Block]) -> Iterator[tuple[tuple[int, int, Any], Any]]:
        for b in blocks:
            for (line, rec), unit in record_units(self.input, source=self.source, block=b, kind=self.kind):
                yield (b.index, line, rec), unit


def _write_whole(path: Path, text: str) -> None:
    """Writes a file so that it exists only once complete (written beside, then renamed)."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


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
