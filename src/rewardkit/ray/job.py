"""`score_file_ray`: a file of records scored on a Ray cluster (what ``rewardkit score --ray`` runs).

Ray Data does the distribution: the input's pieces are read and tokenized by CPU actors
(`RewardTokenizer`), scored by a fixed pool of model replicas (`RewardScorer`, one GPU each), and
streamed back to this process, the driver, in input order, which writes the output. Ray restarts
an actor whose process dies and runs its unfinished batches again (Ray Data's actor pools default
to ``max_restarts=-1``, ``max_task_retries=-1``); as only finished batches reach the driver, each
record gives exactly one row.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import ray
from ray.data import ActorPoolStrategy, Dataset

from rewardkit.api import ModelOptions
from rewardkit.data.formats import RecordKind, kind_of
from rewardkit.data.io import STDIO
from rewardkit.errors import ConfigError, InputError, RewardkitError
from rewardkit.models.loading import ScoringSpec
from rewardkit.ray import stages
from rewardkit.ray.stages import RewardScorer, RewardTokenizer, as_output_row, parse_rows
from rewardkit.ray.storage import (
    SOURCE_LINE,
    TEXT,
    Location,
    Plan,
    RowWriter,
    input_format,
    plan_pieces,
    read_pieces,
    write_text,
)
from rewardkit.scoring.files import InvalidInputError, OnError, ScoreSummary, output_meta

log = logging.getLogger(__name__)

# Where the output grows until it is complete; then it is moved to OUT.
PARTIAL_SUFFIX = ".partial"
# At most this many blocks of pieces go to Ray (past it, a block holds several pieces): bounds
# the driver's start-up work for very large inputs.
MAX_BLOCKS = 4096


@dataclass(frozen=True, kw_only=True)
class Resources:
    """What each scoring replica asks of the cluster, and how many there are."""

    replicas: int
    num_gpus: float
    num_cpus: float


def score_file_ray(
    options: ModelOptions,
    input_path: str,
    output_path: str,
    *,
    address: str | None = None,
    replicas: int | None = None,
    num_gpus: float | None = None,
    num_cpus: float | None = None,
    batch_size: int = 256,
    on_error: OnError = "raise",
    error_file: str | None = None,
    overwrite: bool = False,
    quiet: bool = False,
    on_start: Callable[[int | None], None] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> ScoreSummary:
    """Scores a JSONL/Parquet file on a Ray cluster into ``output_path``: the rows, in input
    order, and ``.meta.json`` that ``rewardkit score`` writes (JSONL; Parquet when the output ends
    in ``.parquet``, with ``id`` as a string column).

    Paths are local (readable on every node: a shared filesystem) or filesystem URIs pyarrow
    understands (``s3://``, ``gs://``, ``hdfs://``). The output is written to ``OUT.partial`` and
    moved to ``OUT`` only when complete; a run whose driver dies leaves ``OUT.partial`` and no
    ``OUT``, and the same command starts again from the beginning.

    Args:
        options: the model; each replica loads it once (``device``: ``auto``, ``cuda`` or ``cpu``).
        address: the cluster (``ray.init(address=...)``); None: the one this process is
            connected to, else ``RAY_ADDRESS`` or a cluster started on this machine, else a new
            local one (shut down at the end).
        replicas: model replicas (actors); default: one per GPU of the cluster (1 on the CPU).
        num_gpus: GPUs per replica; default 1 when the cluster has GPUs (``device`` auto/cuda).
        num_cpus: CPUs reserved per replica; default 1 with a GPU; on the CPU the cluster's CPUs
            but one (left to tokenize) shared by the replicas, at most 1 each.
        batch_size: records per call of a replica (its engine sorts them by length into
            token-budget batches); also the size of the input's pieces.
        on_error: invalid records: ``raise`` fails with every one listed (file:line) and writes
            nothing; ``skip`` scores the rest and lists them in ``error_file``.
        error_file: default ``OUT.errors.jsonl``.
        overwrite: replace an existing ``OUT`` (otherwise refused).
        quiet: no Ray Data progress bars.
        on_start: called with the number of input lines (None for gzip) before scoring.
        progress: called with (records, tokens) as scored rows arrive.

    Raises:
        InvalidInputError: ``on_error="raise"`` and some records are invalid.
        RewardkitError: stdin/stdout, an existing output, an input with no records.
        ConfigError: options that cannot run on Ray (tensor parallel, ``cuda:N``).
        ModelError: the model cannot be loaded (here, or by a replica: a rewardkit error on the
            cluster is raised as itself).
    """
    # 1. Check what can be checked before touching the cluster: the options, the output, and the
    #    tokenizer, chat template and length limit that every tokenizing actor will load.
    _check(options, input_path, output_path, replicas=replicas, batch_size=batch_size)
    src, dst = Location.of(str(input_path)), Location.of(str(output_path))
    if dst.exists() and not overwrite:
        raise RewardkitError(
            f"{dst.name} exists (written complete by an earlier run, see {dst.name}.meta.json); "
            "pass --overwrite to score again or choose another -o"
        )
    options.load_chat_tokenizer()
    with _connected(address):
        # 2. Cut the input into pieces (one read, which also hashes it) and size the replicas.
        res = _resources(options, replicas=replicas, num_gpus=num_gpus, num_cpus=num_cpus)
        replica = replace(options, device="cuda" if res.num_gpus else "cpu")
        plan = plan_pieces(src, lines_per_piece=batch_size)
        if not plan.pieces:
            raise RewardkitError(f"{src.name} holds no records")
        reading = _Reading(
            src=src,
            plan=plan,
            batch_size=batch_size,
            same_kind_as=_first_kind(src, plan, batch_size),
            quiet=quiet,
        )
        # 3. With --on-error raise, every record is checked before anything is scored or
        #    written, as ``rewardkit score`` does: the tokenizing stage alone, streaming back errors.
        if on_error == "raise":
            invalid = _all_errors(reading.tokens(replica, errors_only=True), src)
            if invalid:
                raise InvalidInputError(invalid)
        if on_start is not None:
            on_start(plan.lines)
        # 4. Tokenize and score, streaming the rows into the output in input order.
        scored = reading.tokens(replica).map_batches(
            RewardScorer,
            fn_constructor_kwargs={"options": replica, "provenance": True},
            batch_size=batch_size,
            batch_format="pyarrow",
            num_gpus=res.num_gpus or None,
            num_cpus=res.num_cpus,
            compute=ActorPoolStrategy(size=res.replicas),
        )
        return _write(scored, src, dst, plan, on_error=on_error, error_file=error_file, progress=progress)


def _check(
    options: ModelOptions, input_path: str, output_path: str, *, replicas: int | None, batch_size: int
) -> None:
    if STDIO in (str(input_path), str(output_path)):
        raise RewardkitError("--ray needs an INPUT file and -o OUTPUT (not stdin/stdout)")
    if batch_size < 1:
        raise ConfigError(f"batch_size must be at least 1, got {batch_size}")
    if replicas is not None and replicas < 1:
        raise ConfigError(f"--replicas must be at least 1, got {replicas}")
    if options.tensor_parallel:
        raise ConfigError(
            "--tensor-parallel cannot be combined with --ray: each Ray replica holds the whole model; "
            "score models larger than one GPU with torchrun --tensor-parallel"
        )
    if options.device.startswith("cuda:"):
        raise ConfigError(
            f"--device {options.device} cannot be combined with --ray: Ray gives each replica its GPU"
        )


@contextmanager
def _connected(address: str | None) -> Iterator[None]:
    """Connected to the cluster (started here if need be, and then shut down at the end).

    A rewardkit error raised on the cluster (say, a replica that cannot load the model) is raised
    here as itself, not wrapped in Ray's errors.
    """
    started = not ray.is_initialized()
    if started:
        ray.init(address=address)
    try:
        yield
    except ray.exceptions.RayError as e:
        cause = _rewardkit_cause(e)
        if cause is None:
            raise
        raise cause from e
    finally:
        if started:
            ray.shutdown()


def _rewardkit_cause(e: BaseException) -> RewardkitError | None:
    """The first RewardkitError in the chain of causes of a Ray error."""
    seen: set[int] = set()
    stack: list[BaseException | None] = [e]
    while stack:
        err = stack.pop()
        if err is None or id(err) in seen:
            continue
        seen.add(id(err))
        if isinstance(err, RewardkitError) and not isinstance(err, ray.exceptions.RayError):
            return err  # the error itself, not Ray's copy of it that also derives from its type
        stack += [getattr(err, "cause", None), err.__cause__, err.__context__]
    return None


def _resources(
    options: ModelOptions, *, replicas: int | None, num_gpus: float | None, num_cpus: float | None
) -> Resources:
    have = ray.cluster_resources()
    gpus, cpus = have.get("GPU", 0.0), have.get("CPU", 0.0)
    if num_gpus is None:
        num_gpus = 1.0 if options.device == "cuda" or (options.device == "auto" and gpus > 0) else 0.0
    if num_gpus and options.device == "cpu":
        raise ConfigError("--device cpu asks for no GPU, but num_gpus per replica is set")
    if replicas is None:
        replicas = max(1, int(gpus // num_gpus)) if num_gpus else 1
    if num_cpus is None:
        num_cpus = 1.0 if num_gpus else max(0.1, min(1.0, (cpus - 1) / replicas))
    if gpus < replicas * num_gpus or cpus < replicas * num_cpus + 1:
        # An autoscaling cluster adds nodes when asked; a fixed one waits for ever.
        log.warning(
            "%d replica(s) of %g GPU and %g CPU each, plus a CPU to tokenize, need more than the "
            "cluster has now (%g GPU, %g CPU): Ray waits for more nodes; lower --replicas on a "
            "fixed cluster",
            replicas,
            num_gpus,
            num_cpus,
            gpus,
            cpus,
        )
    return Resources(replicas=replicas, num_gpus=num_gpus, num_cpus=num_cpus)


@dataclass(frozen=True, kw_only=True)
class _Reading:
    """How the input is read and tokenized on the cluster."""

    src: Location
    plan: Plan
    batch_size: int
    same_kind_as: tuple[int, RecordKind] | None
    quiet: bool

    def tokens(self, options: ModelOptions, *, errors_only: bool = False) -> Dataset:
        """`RewardTokenizer`'s columns for every record, in input order (with ``errors_only``:
        for the invalid records alone)."""
        pieces = ray.data.from_items(
            self.plan.pieces, override_num_blocks=min(len(self.plan.pieces), MAX_BLOCKS)
        )
        ctx = pieces.context  # this dataset's own copy, inherited by the stages below
        ctx.execution_options.preserve_order = True
        ctx.raise_original_map_exception = True  # a stage's RewardkitError, not Ray's wrapper of it
        if self.quiet:
            ctx.enable_progress_bars = False
        read = pieces.map_batches(
            read_pieces,
            fn_kwargs={"src": self.src, "lines_per_chunk": self.batch_size},
            batch_format="pyarrow",
        )
        return read.map_batches(
            RewardTokenizer,
            fn_constructor_kwargs={
                "options": options,
                "json_column": TEXT if _jsonl(self.src) else None,
                "line_column": SOURCE_LINE,
                "same_kind_as": self.same_kind_as,
                "errors_only": errors_only,
            },
            # Whole blocks (a piece each, of at most ``batch_size`` records), not bundles of
            # them: the reading is fused into this stage, whose input rows are the pieces.
            batch_size=None,
            batch_format="pyarrow",
            compute=ActorPoolStrategy(min_size=1, max_size=None),
        )


def _jsonl(src: Location) -> bool:
    return input_format(src.name) != "parquet"


def _first_kind(src: Location, plan: Plan, batch_size: int) -> tuple[int, RecordKind] | None:
    """(line, kind) of the input's first valid record: every record must be of its kind."""
    for piece in plan.pieces:
        for table in read_pieces(pa.Table.from_pylist([piece]), src=src, lines_per_chunk=batch_size):
            recs = parse_rows(table, json_column=TEXT if _jsonl(src) else None, skip=SOURCE_LINE)
            for line, rec in zip(table[SOURCE_LINE].to_pylist(), recs, strict=True):
                if not isinstance(rec, InputError):
                    return line, kind_of(rec)
    return None


def _write(
    scored: Dataset,
    src: Location,
    dst: Location,
    plan: Plan,
    *,
    on_error: OnError,
    error_file: str | None,
    progress: Callable[[int, int], None] | None,
) -> ScoreSummary:
    """Streams the scored rows into ``OUT.partial``; when all are in, writes the error list, the
    ``.meta.json`` and moves the output to ``OUT``."""
    partial = dst.sibling(PARTIAL_SUFFIX)
    errors: list[InputError] = []
    specs: set[str] = set()
    rows = n_tokens = 0
    with _removed_on_error(partial):
        with RowWriter(partial, parquet=dst.name.endswith(".parquet")) as out:
            for table in _ordered(scored.iter_batches(batch_format="pyarrow", batch_size=None)):
                specs.update(_column_values(table[stages.SPEC]))
                good = []
                for row in table.drop_columns([stages.SPEC]).to_pylist():
                    if row[stages.ERROR] is None:
                        good.append(as_output_row(row))
                    else:
                        errors.append(_input_error(row, src))
                out.write(good)
                rows += len(good)
                batch_tokens = sum(_total(r["num_tokens"]) for r in good)
                n_tokens += batch_tokens
                if progress is not None:
                    progress(len(good), batch_tokens)
        assert not (errors and on_error == "raise"), "records checked valid failed to tokenize"
        if not specs:
            raise RewardkitError(f"{src.name} holds no records")
        if len(specs) > 1:
            raise RewardkitError(f"the replicas loaded the model differently: {sorted(specs)}")
        if errors:
            _write_errors(errors, Location.of(error_file) if error_file else dst.sibling(".errors.jsonl"))
        meta = _meta(ScoringSpec(**json.loads(specs.pop())), src, plan, on_error)
        write_text(dst.sibling(".meta.json"), json.dumps(meta, indent=1, sort_keys=True))
        dst.fs.move(partial.path, dst.path)
    return ScoreSummary(rows=rows, resumed=0, skipped=len(errors), tokens=n_tokens)


@contextmanager
def _removed_on_error(path: Location) -> Iterator[None]:
    """Removes ``path`` if the block fails (a driver that dies leaves it: see `score_file_ray`)."""
    try:
        yield
    except BaseException:
        if path.exists():
            path.fs.delete_file(path.path)
        raise


def _ordered(tables: Iterable[pa.Table]) -> Iterator[pa.Table]:
    """The tables as they come, checked to be in input order (Ray Data's ``preserve_order``)."""
    last = 0
    for t in tables:
        lines = t[stages.LINE].to_pylist()
        assert all(a < b for a, b in zip([last, *lines], lines, strict=False)), "rows out of input order"
        last = lines[-1] if lines else last
        yield t


def _input_error(row: dict[str, Any], src: Location) -> InputError:
    return InputError(
        row[stages.ERROR], source=src.name, line=row[stages.LINE], field=row[stages.ERROR_FIELD]
    )


def _total(n: int | list[int]) -> int:
    return sum(n) if isinstance(n, list) else n


def _column_values(col: pa.ChunkedArray) -> set[str]:
    """The distinct strings of a (dictionary-encoded) string column."""
    if pa.types.is_dictionary(col.type):
        return {v for chunk in col.chunks for v in chunk.dictionary.to_pylist()}
    return set(pc.unique(col).to_pylist())


def _all_errors(errors: Dataset, src: Location) -> list[InputError]:
    """The rows of `RewardTokenizer(errors_only=True)` as InputErrors."""
    return [
        _input_error(r, src)
        for t in errors.iter_batches(batch_format="pyarrow", batch_size=None)
        for r in t.select([stages.LINE, stages.ERROR, stages.ERROR_FIELD]).to_pylist()
    ]


def _meta(spec: ScoringSpec, src: Location, plan: Plan, on_error: OnError) -> dict[str, Any]:
    if src.local:
        return output_meta(spec, src.name, on_error=on_error)
    # ``output_meta`` hashes local files; a URI's sha256 comes from the plan's read of it.
    meta = output_meta(spec, STDIO, on_error=on_error)
    meta.update(input=src.name, input_sha256=plan.sha256)
    return meta


def _write_errors(errors: list[InputError], path: Location) -> None:
    rows = [{"source": e.source, "line": e.line, "field": e.field, "error": e.message} for e in errors]
    write_text(path, "".join(json.dumps(r) + "\n" for r in rows))
    log.warning("%d invalid record(s) skipped, listed in %s", len(errors), path.name)
