"""Preference data for training: load pairs, tokenize them, and plan packed micro-batches.

Sources: HelpSteer3 preference (hub ``nvidia/HelpSteer3`` or local JSONL), HelpSteer2-Preference
(hub ``nvidia/HelpSteer2``, its ``preference/`` files, or local JSONL), and generic
``{"prompt"?, "chosen", "rejected"}`` pairs. Every record is validated by
`rewardkit.data.formats`, so a bad record is reported with its file, line and field.

A pair is trained as one unit: its chosen and rejected conversations sit next to each other in one
packed token stream (``[c0, r0, c1, r1, ...]``), so one forward gives both rewards.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from rewardkit.data.conversation import PreferencePair
from rewardkit.data.formats import parse_pair
from rewardkit.data.io import iter_raw, read_records, source_name
from rewardkit.engine.batching import PackedBatch, best_fit_batches, pack
from rewardkit.errors import ConfigError, InputError, RewardkitError
from rewardkit.models.templating import ChatTokenizer
from rewardkit.nested import flatten, split
from rewardkit.train.config import DataFormat, TrainTruncation

log = logging.getLogger(__name__)

HS2_TURN = "<extra_id_1>"
_MAX_LISTED_ERRORS = 20


@dataclass(frozen=True, kw_only=True)
class PairData:
    """Validated preference pairs of one split, ties already removed.

    Args:
        pairs: the pairs, in source order.
        lines: where each pair is in the source (file line, or row of a hub split), for messages.
        ties: pairs with preference 0 that were dropped (a tie teaches BT nothing).
        helpsteer: whether the source carries HelpSteer preference strengths.
        source: where the pairs came from, for messages.
    """

    pairs: list[PreferencePair]
    lines: list[int]
    ties: int
    helpsteer: bool
    source: str

    def take(self, indices: Sequence[int]) -> PairData:
        """The pairs at ``indices`` (with their lines), in that order."""
        return replace(self, pairs=[self.pairs[i] for i in indices], lines=[self.lines[i] for i in indices])


def _raise_errors(errors: Sequence[InputError], source: str, what: str = "invalid record(s)") -> None:
    if not errors:
        return
    shown = "\n  ".join(e.describe() for e in errors[:_MAX_LISTED_ERRORS])
    more = f"\n  ... and {len(errors) - _MAX_LISTED_ERRORS} more" if len(errors) > _MAX_LISTED_ERRORS else ""
    raise InputError(f"{len(errors)} {what} in {source}:\n  {shown}{more}")


def hs2_turns(prompt: str) -> list[dict[str, str]]:
    """HelpSteer2 writes multi-turn prompts as one string:
    ``user 1<extra_id_1>Assistant\\nassistant 1<extra_id_1>User\\nuser 2``."""
    chunks = prompt.split(HS2_TURN)
    turns = [{"role": "user", "content": chunks[0]}]
    for chunk in chunks[1:]:
        head, _, body = chunk.partition("\n")
        role = {"user": "user", "assistant": "assistant"}.get(head.strip().lower())
        if role is None:
            raise InputError(f"unknown HelpSteer2 turn marker {head.strip()!r}", field="prompt")
        turns.append({"role": role, "content": body})
    return turns


_HS2_FIELDS = {"context": "prompt", "response1": "response_1", "response2": "response_2"}
_HS2_FIELDS["overall_preference"] = "preference_strength"


def parse_hs2(obj: Any) -> PreferencePair:
    """One HelpSteer2-Preference record (``prompt``, ``response_1``, ``response_2``,
    ``preference_strength`` from -3 to 3, < 0 meaning response 1 is better)."""
    if not isinstance(obj, dict):
        raise InputError(f"expected a JSON object, got {type(obj).__name__}")
    for key in ("prompt", "response_1", "response_2", "preference_strength"):
        if key not in obj:
            raise InputError("missing", field=key)
    if not isinstance(obj["prompt"], str):
        raise InputError(f"expected a string, got {type(obj['prompt']).__name__}", field="prompt")
    rec = {
        "context": hs2_turns(obj["prompt"]),
        "response1": obj["response_1"],
        "response2": obj["response_2"],
        "overall_preference": obj["preference_strength"],
    }
    try:
        return parse_pair(rec)
    except InputError as e:
        field = e.field or ""
        head, dot, rest = field.partition(".")
        base, bracket, idx = head.partition("[")
        renamed = _HS2_FIELDS.get(base, base) + bracket + idx + dot + rest
        raise InputError(e.message, field=renamed or None) from e


def _detect(first: Any) -> DataFormat:
    if isinstance(first, dict) and "preference_strength" in first:
        return "helpsteer2"
    if isinstance(first, dict) and "overall_preference" in first:
        return "helpsteer3"
    return "chosen_rejected"


Located = list[tuple[int, PreferencePair]]  # (line or row, pair)


def _parse_rows(rows: Iterable[tuple[int, Any]], fmt: DataFormat, source: str) -> Located:
    """Parses raw rows of a hub dataset (or HelpSteer2 file); collects every error."""
    pairs: Located = []
    errors: list[InputError] = []
    for n, obj in rows:
        try:
            if isinstance(obj, InputError):
                raise obj
            pairs.append((n, parse_hs2(obj) if fmt == "helpsteer2" else parse_pair(obj)))
        except InputError as e:
            errors.append(e.locate(source=source, line=n))
    _raise_errors(errors, source)
    return pairs


def _hs2_split(split: str) -> set[str]:
    return {"train"} if split == "train" else {"val", "validation"}


def _load_file(path: str, fmt: DataFormat, split: str | None) -> tuple[Located, DataFormat]:
    src = source_name(path)
    if fmt == "auto":
        first = next((obj for _, obj in iter_raw(path) if not isinstance(obj, InputError)), None)
        fmt = _detect(first)
    if fmt == "helpsteer2":
        rows: Iterator[tuple[int, Any]] = iter_raw(path)
        if split is not None:  # HelpSteer2's preference file holds both splits in a "split" column
            keep = _hs2_split(split)
            rows = ((n, o) for n, o in rows if not isinstance(o, dict) or o.get("split", split) in keep)
        return _parse_rows(rows, fmt, src), fmt
    loaded = read_records(path)
    _raise_errors(loaded.errors, src)
    pairs = [(n, r) for n, r in loaded.records if isinstance(r, PreferencePair)]
    if len(pairs) != len(loaded.records):
        line = next(n for n, r in loaded.records if not isinstance(r, PreferencePair))
        raise InputError("expected preference pairs, found a single conversation", source=src, line=line)
    return pairs, fmt


def _load_hub(name: str, fmt: DataFormat, split: str) -> tuple[Located, DataFormat]:
    try:
        import datasets
    except ImportError as e:  # pragma: no cover - datasets is an optional dependency
        raise RewardkitError("reading hub datasets needs `datasets`: pip install 'rewardkit[eval]'") from e
    repo, _, config = name.partition(":")
    kwargs: dict[str, Any] = {}
    if repo.lower() == "nvidia/helpsteer3":
        kwargs["name"] = config or "preference"
    elif repo.lower() == "nvidia/helpsteer2" and not config:
        kwargs["data_dir"] = "preference"
    elif config:
        kwargs["name"] = config
    is_hs2 = repo.lower() == "nvidia/helpsteer2"
    try:
        if is_hs2:
            ds = datasets.load_dataset(repo, split="train", **kwargs)
            keep = _hs2_split(split)
            ds = ds.filter(lambda row: row.get("split", "train") in keep)
        else:
            ds = datasets.load_dataset(repo, split=split, **kwargs)
    except (FileNotFoundError, ValueError, ConnectionError) as e:
        raise RewardkitError(f"cannot load hub dataset {name!r} (split {split!r}): {e}") from e
    if fmt == "auto":
        fmt = "helpsteer2" if is_hs2 else _detect(ds[0] if len(ds) else None)
    return _parse_rows(enumerate(ds, start=1), fmt, f"{name}[{split}]"), fmt


def is_local(source: str) -> bool:
    return Path(source).exists() or source.endswith((".jsonl", ".jsonl.gz", ".parquet", ".json"))


def load_pairs(source: str, *, data_format: DataFormat = "auto", split: str | None = None) -> PairData:
    """Reads and validates the preference pairs of ``source``, dropping (and counting) ties.

    Args:
        source: local ``.jsonl``/``.jsonl.gz``/``.parquet`` file, or a hub dataset id
            (``id`` or ``id:config``).
        data_format: record shape, or ``auto`` to detect it from the first record.
        split: hub split (``train``/``validation``); for a HelpSteer2 file, the rows of its
            ``split`` column to keep.

    Raises:
        InputError: invalid records, listed with file, line and field.
    """
    if is_local(source):
        pairs, fmt = _load_file(source, data_format, split)
        label = source_name(source)
    else:
        pairs, fmt = _load_hub(source, data_format, split or "train")
        label = f"{source}[{split or 'train'}]"
    kept = [(n, p) for n, p in pairs if not p.is_tie]
    ties = len(pairs) - len(kept)
    if not kept:
        what = f"all {ties} are ties (preference 0), which are dropped" if ties else "it holds no records"
        raise InputError(f"no preference pairs in {label}: {what}")
    log.info("%s: %d pairs, %d ties dropped", label, len(kept), ties)
    return PairData(
        pairs=[p for _, p in kept],
        lines=[n for n, _ in kept],
        ties=ties,
        helpsteer=fmt in ("helpsteer2", "helpsteer3"),
        source=label,
    )


@dataclass(frozen=True, kw_only=True)
class TokenPairs:
    """Tokenized pairs: ``chosen[i]``/``rejected[i]`` token ids and the preference strength."""

    chosen: list[list[int]]
    rejected: list[list[int]]
    strength: list[float]
    dropped: int = 0

    def __len__(self) -> int:
        return len(self.chosen)

    @property
    def lengths(self) -> list[int]:
        """Tokens of each pair (chosen + rejected): what a pair costs in a micro-batch."""
        return [len(c) + len(r) for c, r in zip(self.chosen, self.rejected, strict=True)]


def tokenize_pairs(data: PairData, chat: ChatTokenizer, *, truncation: TrainTruncation) -> TokenPairs:
    """Tokenizes chosen and rejected conversations with the model's chat template.

    Pairs that do not fit ``chat.max_length`` are dropped and counted (``drop``), truncated from
    the left by ``chat`` (``left``), or reported with their source line (``error``).
    """
    flat, sizes = flatten((p.chosen, p.rejected) for p in data.pairs)
    encoded = split(chat.encode(flat), sizes)
    chosen, rejected, strength, errors = [], [], [], []
    for p, line, (c, r) in zip(data.pairs, data.lines, encoded, strict=True):
        bad = [(side, e) for side, e in (("chosen", c), ("rejected", r)) if isinstance(e, InputError)]
        if bad:
            side, e = bad[0]
            errors.append(InputError(e.message, source=data.source, line=line, field=side))
            continue
        chosen.append(c.ids)  # type: ignore[union-attr]
        rejected.append(r.ids)  # type: ignore[union-attr]
        strength.append(p.strength)
    if errors and truncation == "error":
        what = (
            f"pair(s) longer than max_length={chat.max_length} (truncation=error; --set truncation=drop "
            "skips them, truncation=left drops their oldest context)"
        )
        _raise_errors(errors, data.source, what)
    if errors:
        log.warning("%s: dropped %d pair(s) longer than %d tokens", data.source, len(errors), chat.max_length)
    if not chosen:
        raise ConfigError(f"every pair of {data.source} is longer than max_length={chat.max_length}")
    return TokenPairs(chosen=chosen, rejected=rejected, strength=strength, dropped=len(errors))


# ---- planning: global batches → rank shards → packed micro-batches ---------------------------


def epoch_order(num_pairs: int, *, seed: int, epoch: int) -> list[int]:
    """A deterministic shuffle of the pairs for one epoch (same on every rank and on resume)."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(num_pairs, generator=g).tolist()


def steps_per_epoch(num_pairs: int, global_batch_size: int) -> int:
    return math.ceil(num_pairs / global_batch_size)


def global_batch(num_pairs: int, step: int, *, global_batch_size: int, seed: int) -> list[int]:
    """Pair indices of optimizer step ``step`` (0-based); the last batch of an epoch may be short."""
    per_epoch = steps_per_epoch(num_pairs, global_batch_size)
    epoch, k = divmod(step, per_epoch)
    order = epoch_order(num_pairs, seed=seed, epoch=epoch)
    return order[k * global_batch_size : (k + 1) * global_batch_size]


def rank_shard(batch: Sequence[int], lengths: Sequence[int], *, rank: int, world_size: int) -> list[int]:
    """This rank's pairs of a global batch: dealt longest first in snake order (0..W-1, W-1..0, ...),
    so every rank gets a similar number of tokens."""
    by_len = sorted(batch, key=lambda i: (-lengths[i], i))
    return [i for k, i in enumerate(by_len) if _dealt_to(k, world_size) == rank]


def _dealt_to(k: int, world_size: int) -> int:
    lap, pos = divmod(k, world_size)
    return pos if lap % 2 == 0 else world_size - 1 - pos


@dataclass(frozen=True, kw_only=True)
class MicroBatch:
    """One packed forward of pairs.

    Args:
        packed: the stream ``[c0, r0, c1, r1, ...]``.
        strength: (P,) preference strength of each pair.
        weight: 1.0, or 0.0 for a filler forward that keeps ranks in step (see `plan_micro_batches`).
    """

    packed: PackedBatch
    strength: torch.Tensor
    weight: float

    @property
    def num_pairs(self) -> int:
        return int(self.strength.numel())


def plan_micro_batches(
    batch: Sequence[int], lengths: Sequence[int], *, rank: int, world_size: int, token_budget: int
) -> list[tuple[list[int], float]]:
    """Splits this rank's shard of a global batch into token-budget micro-batches, packed best fit
    (`rewardkit.engine.batching.best_fit_batches`): every micro-batch costs FSDP the same
    communication (weights gathered twice, gradients reduce-scattered once), so fewer, fuller
    micro-batches make a faster step. Every rank's plan is ordered fullest first, except that its
    second fullest goes last, so the ranks' i-th micro-batches, which run in lockstep, are of
    similar size, and a step's first forward and last backward are full-sized ones (with AdamW's
    moments on the host, they hide the copies: `rewardkit.train.offload`).

    FSDP needs every rank to run the same number of forwards (each one all-gathers weights), so
    every rank plans all shards and pads its own list to the longest with fillers: a forward of
    the batch's shortest pair whose loss is multiplied by 0, before the last micro-batch. No
    communication is needed.

    Returns:
        ``(pair indices, weight)`` per micro-batch.
    """
    counts = []
    mine: list[list[int]] = []
    for r in range(world_size):
        shard = rank_shard(batch, lengths, rank=r, world_size=world_size)
        plan = [[shard[j] for j in mb] for mb in best_fit_batches([lengths[i] for i in shard], token_budget)]
        counts.append(len(plan))
        if r == rank:
            mine = plan
    filler = min(batch, key=lambda i: (lengths[i], i))
    plan = [(mb, 1.0) for mb in mine] + [([filler], 0.0)] * (max(counts) - len(mine))
    if len(mine) > 1:
        plan.append(plan.pop(1))  # the second fullest last
    return plan


def collate(data: TokenPairs, indices: Sequence[int], weight: float, pad_token_id: int | None) -> MicroBatch:
    """Packs the pairs ``indices`` into one stream, chosen then rejected for each pair."""
    seqs, _ = flatten((data.chosen[i], data.rejected[i]) for i in indices)
    return MicroBatch(
        packed=pack(seqs, pad_token_id),
        strength=torch.tensor([data.strength[i] for i in indices], dtype=torch.float32),
        weight=weight,
    )


def split_holdout(num_pairs: int, fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """(train, validation) indices with ``fraction`` of the pairs held out, chosen
    deterministically, each in source order."""
    order = epoch_order(num_pairs, seed=seed, epoch=-1)
    val = set(order[: max(1, round(fraction * num_pairs))])
    return [i for i in range(num_pairs) if i not in val], sorted(val)


def subset(num_pairs: int, limit: int | None, seed: int) -> list[int]:
    """Indices of at most ``limit`` pairs: a deterministic sample, in source order."""
    if limit is None or num_pairs <= limit:
        return list(range(num_pairs))
    return sorted(epoch_order(num_pairs, seed=seed, epoch=-2)[:limit])
