"""Cross-request dynamic batching into one scoring engine.

Requests put their encoded conversations on a FIFO queue; one collector task forms token-budget
batches (up to ``token_budget`` tokens, or whatever arrived within ``max_wait`` of the oldest
waiting request) and runs each on ONE worker thread, so the event loop never waits on the model.

A request that fits the budget is never split. Each batch takes first the whole requests that fit,
oldest first, then fills what is left of the budget with a part of the oldest request larger than
the budget (at least one conversation of it, so it always advances): requests that arrive while a
large one is scored wait for the batch being computed, not for all of the large one. (A part of a
shared-prompt group is a group itself: its prompt is computed once per part, same rewards.) A
request whose client went away is dropped from the queue; a part already in a running batch is
finished.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from rewardkit.api import Scored
from rewardkit.models.templating import Encoded
from rewardkit.nested import flatten, split
from rewardkit.server.metrics import ServerMetrics

log = logging.getLogger(__name__)

# ``score(encoded)``, or ``score(encoded, group_sizes=[...])`` when a batch holds a group of
# conversations sharing a prompt (``RewardModel.score_encoded`` takes both).
ScoreFn = Callable[..., list[Scored]]


class Overloaded(Exception):
    """The queue is full; retry after ``retry_after`` seconds."""

    def __init__(self, pending: int, limit: int, retry_after: int) -> None:
        self.retry_after = retry_after
        super().__init__(
            f"server is at capacity ({pending} conversations pending, limit {limit}); "
            f"retry after {retry_after} s"
        )


class ShuttingDown(Exception):
    """The server is draining and accepts no new work."""


class BatchFailed(Exception):
    """The engine raised on the batch that held this request."""


@dataclass(kw_only=True)
class _Job:
    encoded: Sequence[Encoded]
    future: asyncio.Future[list[Scored]]
    group: bool = False  # all of encoded share a prompt: scored with the prompt computed once
    enqueued: float = field(default_factory=time.monotonic)
    taken: int = 0  # conversations already put into batches
    scored: list[Scored] = field(default_factory=list)

    @property
    def tokens_left(self) -> int:
        return sum(len(e.ids) for e in self.encoded[self.taken :])

    def take(self, budget: int, *, at_least_one: bool) -> _Part:
        """The next conversations up to ``budget`` tokens."""
        end, tokens = self.taken, 0
        while end < len(self.encoded):
            n = len(self.encoded[end].ids)
            if tokens + n > budget and not (at_least_one and end == self.taken):
                break
            tokens += n
            end += 1
        part = _Part(job=self, encoded=self.encoded[self.taken : end], tokens=tokens)
        self.taken = end
        return part


@dataclass(kw_only=True)
class _Part:
    """Consecutive conversations of one job, scored in one batch."""

    job: _Job
    encoded: Sequence[Encoded]
    tokens: int

    @property
    def group_sizes(self) -> list[int]:
        return [len(self.encoded)] if self.job.group else [1] * len(self.encoded)


class DynamicBatcher:
    """Batches concurrent requests for one engine.

    Args:
        score: runs one batch (``RewardModel.score_encoded``); called on the worker thread only.
        token_budget: tokens per batch (``rm.engine.token_budget``).
        max_wait_ms: how long the oldest waiting request may wait for others to join its batch.
        max_pending: conversations admitted and not yet answered; more gives `Overloaded`.
        metrics: where batch sizes, queue depth and throughput are recorded.
    """

    def __init__(
        self,
        score: ScoreFn,
        *,
        token_budget: int,
        max_wait_ms: float,
        max_pending: int,
        metrics: ServerMetrics,
    ) -> None:
        self._score = score
        self.token_budget = token_budget
        self.max_wait = max_wait_ms / 1000.0
        self.max_pending = max_pending
        self.metrics = metrics
        self.pending = 0
        self._queue: deque[_Job] = deque()
        self._queued_tokens = 0
        self._wakeup = asyncio.Event()
        self._closing = False
        self._task: asyncio.Task[None] | None = None
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rewardkit-engine")
        self._tokens_per_s = 0.0

    @property
    def accepting(self) -> bool:
        return self._task is not None and not self._closing

    def start(self) -> None:
        """Starts the collector on the running event loop."""
        self._task = asyncio.get_running_loop().create_task(self._collect(), name="rewardkit-batcher")
        self._task.add_done_callback(self._stopped)

    def _stopped(self, task: asyncio.Task[None]) -> None:
        """If the collector itself failed, nothing would ever answer: fail what waits, admit no more."""
        if task.cancelled() or task.exception() is None:
            return
        log.error("the batcher stopped", exc_info=task.exception())
        self._closing = True
        err = BatchFailed(f"the batcher stopped: {type(task.exception()).__name__}")
        for job in self._queue:
            if not job.future.done():
                job.future.set_exception(err)
        self._queue.clear()

    async def close(self) -> None:
        """Stops admitting work, scores everything still queued, then stops the worker."""
        self._closing = True
        self._wakeup.set()
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)  # a failure is logged by _stopped
        self._worker.shutdown(wait=True)

    @contextlib.contextmanager
    def admit(self, conversations: int) -> Iterator[None]:
        """Reserves room for a request's conversations for the duration of the block.

        Raises:
            ShuttingDown: the server is draining.
            Overloaded: the pending conversations would exceed ``max_pending``.
        """
        if not self.accepting:
            raise ShuttingDown("the server is shutting down")
        if self.pending and self.pending + conversations > self.max_pending:
            raise Overloaded(self.pending, self.max_pending, self._retry_after())
        self.pending += conversations
        self.metrics.queue_depth.set(self.pending)
        try:
            yield
        finally:
            self.pending -= conversations
            self.metrics.queue_depth.set(self.pending)

    async def submit(self, encoded: Sequence[Encoded], *, group: bool = False) -> list[Scored]:
        """Scores one request's conversations in shared batches; results in input order.

        ``group``: the conversations share a prompt (``/v1/rewards/compare``, or one group of
        ``/v1/rewards/groups``); it is computed once.
        Cancelling the caller (its client went away) drops what is not yet in a running batch.

        Raises:
            BatchFailed: the engine raised on a batch holding this request.
        """
        if self._closing:
            raise ShuttingDown("the server is shutting down")
        job = _Job(encoded=encoded, future=asyncio.get_running_loop().create_future(), group=group)
        self._queue.append(job)
        self._queued_tokens += job.tokens_left
        self._wakeup.set()
        return await job.future

    def _retry_after(self) -> int:
        if self._tokens_per_s <= 0:
            return 1
        return max(1, min(60, math.ceil(self._queued_tokens / self._tokens_per_s)))

    async def _next_batch(self) -> list[_Part] | None:
        """Waits for work, then for the budget to fill or the oldest job's wait to run out."""
        while not self._queue:
            if self._closing:
                return None
            self._wakeup.clear()
            await self._wakeup.wait()
        deadline = self._queue[0].enqueued + self.max_wait
        while not self._closing and self._queued_tokens < self.token_budget:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            self._wakeup.clear()
            try:
                await asyncio.wait_for(self._wakeup.wait(), remaining)
            except TimeoutError:
                break
        return self._fill()

    def _fill(self) -> list[_Part]:
        """Whole jobs that fit, oldest first; then the rest of the budget to a part of the oldest
        job larger than the whole budget (at least one conversation when the batch is empty)."""
        batch: list[_Part] = []
        tokens = 0
        large: _Job | None = None
        for job in list(self._queue):
            left = job.tokens_left
            if job.future.done():  # cancelled: the client went away
                self._queue.remove(job)
                self._queued_tokens -= left
            elif tokens + left <= self.token_budget:
                self._queue.remove(job)
                batch.append(job.take(left, at_least_one=True))
                tokens += left
            elif large is None and left > self.token_budget:
                large = job
        if large is not None:
            part = large.take(self.token_budget - tokens, at_least_one=not batch)
            if part.encoded:
                batch.append(part)
                tokens += part.tokens
            if large.taken == len(large.encoded):
                self._queue.remove(large)
        self._queued_tokens -= tokens
        return batch

    async def _collect(self) -> None:
        loop = asyncio.get_running_loop()
        while (batch := await self._next_batch()) is not None:
            if not batch:
                continue
            flat, sizes = flatten(part.encoded for part in batch)
            tokens = sum(part.tokens for part in batch)
            score: Callable[[], list[Scored]] = functools.partial(self._score, flat)
            if any(part.job.group for part in batch):
                groups = flatten(part.group_sizes for part in batch)[0]
                score = functools.partial(self._score, flat, group_sizes=groups)
            start = time.perf_counter()
            try:
                scored = await loop.run_in_executor(self._worker, score)
            except Exception as e:  # a failed batch fails its own requests; the server keeps serving
                log.exception("engine failed on a batch of %d conversations (%d tokens)", len(flat), tokens)
                self.metrics.batch_failures.inc()
                err = BatchFailed(f"scoring failed: {type(e).__name__}: {e}")
                for part in batch:
                    if not part.job.future.done():
                        part.job.future.set_exception(err)
                continue
            seconds = time.perf_counter() - start
            self._tokens_per_s = tokens / seconds if seconds > 0 else self._tokens_per_s
            self.metrics.observe_batch(conversations=len(flat), tokens=tokens, seconds=seconds)
            for part, results in zip(batch, split(scored, sizes), strict=True):
                job = part.job
                job.scored.extend(results)
                if len(job.scored) == len(job.encoded) and not job.future.done():
                    job.future.set_result(job.scored)
