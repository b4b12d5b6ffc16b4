"""The streaming core every scoring path shares: units in, rewards out, in input order.

A *unit* is what one output row needs: one record's (or one benchmark item's) conversations,
scored as one shared-prompt group (a pair's two responses compute their prompt once). Two stages
run at the same time, so the engine never waits for the CPU:

1. a background thread pulls units from the caller's iterator (reading and parsing a file happens
   there too), tokenizes them in chunks through `RewardModel.encode` (the fast tokenizer, batched),
   keeps the ids as compact int32 arrays and cuts the stream into *windows* of about
   ``window_tokens`` tokens, at most ``prefetch`` windows ahead;
2. the calling thread scores each window with one engine call: its conversations are sorted by
   length into token-budget batches, so every batch is full except a window's last one.

Results come back in input order, one window at a time. Memory is bounded by the windows in
flight, whatever the length of the input.
"""

from __future__ import annotations

import dataclasses
import logging
import queue
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import numpy as np

from rewardkit.api import RewardModel, Scored
from rewardkit.data.conversation import Conversation
from rewardkit.errors import InputError
from rewardkit.models.templating import Encoded
from rewardkit.nested import flatten, split

log = logging.getLogger(__name__)

K = TypeVar("K")
# What a unit is before tokenization: its conversations, or why it cannot be scored.
UnitInput = Sequence[Conversation] | InputError
# What it is after: its tokenized conversations, or why it cannot be scored.
Tokenized = list[Encoded] | InputError
ProgressFn = Callable[[int, int], None]

# Engine batches per window: large enough that a window's one partial batch costs little, and
# that sorting by length over it forms batches of similar lengths.
WINDOW_BATCHES = 32
MAX_WINDOW_UNITS = 65536
TOKENIZE_CHUNK = 512


@dataclass(kw_only=True)
class Window(Generic[K]):
    """Consecutive tokenized units: ``keys[i]``'s conversations are ``units[i]``."""

    keys: list[K]
    units: list[Tokenized]
    tokens: int = 0


def compact(e: Encoded) -> Encoded:
    """The same tokens as an int32 array (4 bytes a token instead of a list of Python ints)."""
    return dataclasses.replace(e, ids=np.asarray(e.ids, dtype=np.int32))


Encode = Callable[[Sequence[Conversation]], list[Encoded | InputError]]


def tokenize_units(encode: Encode, units: Iterable[tuple[K, UnitInput]]) -> Iterator[tuple[K, Tokenized]]:
    """Tokenizes units in chunks of `TOKENIZE_CHUNK` (one batched tokenizer call each), with
    ``encode`` (`RewardModel.encode`, or a `ChatTokenizer`'s before the weights are loaded).

    A unit whose conversations cannot be tokenized (too long for the length policy) becomes one
    `InputError` listing each of them (the fields name the record's side, e.g. ``rejected``).
    """
    chunk: list[tuple[K, UnitInput]] = []

    def flush() -> Iterator[tuple[K, Tokenized]]:
        ok = [u for _, u in chunk if not isinstance(u, InputError)]
        flat, sizes = flatten(ok)
        encoded = iter(split(encode(flat), sizes))
        for key, unit in chunk:
            if isinstance(unit, InputError):
                yield key, unit
                continue
            encs = next(encoded)
            bad = [e for e in encs if isinstance(e, InputError)]
            yield key, InputError.combine(bad) if bad else [compact(e) for e in encs]  # type: ignore[arg-type]
        chunk.clear()

    for item in units:
        chunk.append(item)
        if len(chunk) >= TOKENIZE_CHUNK:
            yield from flush()
    yield from flush()


def skip_valid_units(tokenized: Iterable[tuple[K, Tokenized]], n: int) -> Iterator[tuple[K, Tokenized]]:
    """Drops the first ``n`` valid units (already scored by an earlier run); invalid ones pass."""
    for key, unit in tokenized:
        if n and not isinstance(unit, InputError):
            n -= 1
            continue
        yield key, unit


def windows(
    tokenized: Iterable[tuple[K, Tokenized]], *, max_tokens: int, max_units: int = MAX_WINDOW_UNITS
) -> Iterator[Window[K]]:
    """Cuts a stream of tokenized units into windows of at most ``max_tokens`` tokens (a unit
    larger than that gets a window of its own) and ``max_units`` units."""
    win: Window[K] = Window(keys=[], units=[])
    for key, unit in tokenized:
        n = 0 if isinstance(unit, InputError) else sum(len(e.ids) for e in unit)
        if win.keys and (win.tokens + n > max_tokens or len(win.keys) >= max_units):
            yield win
            win = Window(keys=[], units=[])
        win.keys.append(key)
        win.units.append(unit)
        win.tokens += n
    if win.keys:
        yield win


def score_window(
    rm: RewardModel, window: Window[K], progress: ProgressFn | None = None
) -> list[tuple[K, list[Scored] | InputError]]:
    """Scores a window's valid units in one engine call; results in window order."""
    good = [u for u in window.units if not isinstance(u, InputError)]
    flat, sizes = flatten(good)
    scored = iter(split(rm.score_encoded(flat, group_sizes=sizes, progress=progress), sizes) if flat else [])
    return [
        (key, unit if isinstance(unit, InputError) else next(scored))
        for key, unit in zip(window.keys, window.units, strict=True)
    ]


class _Prefetch(Generic[K]):
    """Runs ``produce`` (an iterator of windows) on a daemon thread, at most ``depth`` ahead.

    Exceptions raised by the producer are re-raised in the consumer; closing stops the producer.
    """

    _DONE = object()

    def __init__(self, produce: Iterator[Window[K]], depth: int) -> None:
        self._produce = produce
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rewardkit-tokenize", daemon=True)
        self._thread.start()

    def _put(self, item: Any) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _run(self) -> None:
        try:
            for w in self._produce:
                if not self._put(w):
                    return
            self._put(self._DONE)
        except BaseException as e:  # handed to the consumer, which re-raises it
            self._put(e)

    def __iter__(self) -> Iterator[Window[K]]:
        try:
            while True:
                item = self._queue.get()
                if item is self._DONE:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            self.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def default_window_tokens(rm: RewardModel) -> int:
    """`WINDOW_BATCHES` engine batches."""
    return WINDOW_BATCHES * rm.engine.token_budget


def score_stream(
    rm: RewardModel,
    units: Iterable[tuple[K, UnitInput]],
    *,
    window_tokens: int | None = None,
    skip_valid: int = 0,
    prefetch: int = 2,
    progress: ProgressFn | None = None,
) -> Iterator[list[tuple[K, list[Scored] | InputError]]]:
    """Scores units, streaming; yields each window's results in input order.

    Args:
        rm: the reward model.
        units: ``(key, conversations)`` (or ``(key, InputError)`` for a unit already known to be
            invalid, passed through in place); iterated on a background thread.
        window_tokens: tokens per window (default `default_window_tokens`).
        skip_valid: leave out the first N valid units (resuming after an earlier run).
        prefetch: windows tokenized ahead of the engine.
        progress: the engine's per-batch callback (conversations, tokens).

    Yields:
        Per window, ``(key, scored conversations or InputError)`` for each of its units.
    """
    max_tokens = window_tokens or default_window_tokens(rm)
    tokenized = skip_valid_units(tokenize_units(rm.encode, units), skip_valid)
    for window in _Prefetch(windows(tokenized, max_tokens=max_tokens), prefetch):
        yield score_window(rm, window, progress)
