"""The dynamic batcher alone, with a recording scorer: batch formation, waits, failures, draining."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence

import pytest

from rewardkit.api import Scored
from rewardkit.models.templating import Encoded
from rewardkit.server.batcher import DynamicBatcher, Overloaded, ShuttingDown
from rewardkit.server.metrics import ServerMetrics


class Recorder:
    """Scores a sequence as its first token id; records every batch and the thread it ran on."""

    def __init__(self, fail_on: int | None = None, delay: float = 0.0) -> None:
        self.batches: list[list[int]] = []
        self.group_sizes: list[list[int] | None] = []
        self.threads: set[str] = set()
        self.fail_on = fail_on
        self.delay = delay

    def __call__(self, encoded: Sequence[Encoded], group_sizes: Sequence[int] | None = None) -> list[Scored]:
        self.group_sizes.append(None if group_sizes is None else list(group_sizes))
        self.threads.add(threading.current_thread().name)
        ids = [e.ids[0] for e in encoded]
        self.batches.append(ids)
        time.sleep(self.delay)
        if self.fail_on in ids:
            raise RuntimeError("boom")
        return [Scored(reward=float(e.ids[0]), num_tokens=len(e.ids)) for e in encoded]


def enc(first: int, length: int) -> Encoded:
    return Encoded(ids=[first] + [0] * (length - 1))


def batcher(scorer: Recorder, **kw) -> DynamicBatcher:
    opts = {"token_budget": 100, "max_wait_ms": 50.0, "max_pending": 1000, "metrics": ServerMetrics()} | kw
    return DynamicBatcher(scorer, **opts)


def test_concurrent_requests_share_token_budget_batches():
    rec = Recorder()

    async def main():
        b = batcher(rec)
        b.start()
        # 10 requests of 30 tokens (budget 100: 3 per batch), one of 250 (a batch of its own).
        reqs = [[enc(i, 30)] for i in range(10)] + [[enc(99, 250)]]
        results = await asyncio.gather(*(b.submit(r) for r in reqs))
        await b.close()
        return results

    results = asyncio.run(main())
    assert [r[0].reward for r in results] == [*range(10), 99]
    assert rec.batches == [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9], [99]]  # FIFO, never over budget
    assert rec.threads == {"rewardkit-engine_0"}  # one worker thread, never the event loop


def test_requests_are_never_split_and_keep_their_order():
    rec = Recorder()

    async def main():
        b = batcher(rec)
        b.start()
        r = await asyncio.gather(b.submit([enc(1, 40), enc(2, 40)]), b.submit([enc(3, 40), enc(4, 10)]))
        await b.close()
        return r

    a, c = asyncio.run(main())
    assert [s.reward for s in a] == [1, 2] and [s.reward for s in c] == [3, 4]
    assert rec.batches == [[1, 2], [3, 4]]


def test_grouped_request_reaches_the_engine_as_one_group():
    rec = Recorder()

    async def main():
        b = batcher(rec)
        b.start()
        r = await asyncio.gather(
            b.submit([enc(1, 10), enc(2, 10)]), b.submit([enc(3, 10), enc(4, 10), enc(5, 10)], group=True)
        )
        await b.close()
        return r

    a, g = asyncio.run(main())
    assert [s.reward for s in a] == [1, 2] and [s.reward for s in g] == [3, 4, 5]
    assert rec.batches == [[1, 2, 3, 4, 5]]
    assert rec.group_sizes == [[1, 1, 3]]  # plain requests: groups of one; the compare request: one group


def test_the_groups_of_one_request_share_batches_and_stay_whole():
    """``/v1/rewards/groups`` submits each group as a job, all at once: they fill batches
    together, and a group that fits the budget is never split across batches."""
    rec = Recorder()

    async def main():
        b = batcher(rec, max_wait_ms=0)
        b.start()
        groups = [[enc(1, 20), enc(2, 20), enc(3, 20)], [enc(4, 20), enc(5, 20)], [enc(6, 30), enc(7, 30)]]
        r = await asyncio.gather(*(b.submit(g, group=True) for g in groups))
        await b.close()
        return r

    out = asyncio.run(main())
    assert [[s.reward for s in g] for g in out] == [[1, 2, 3], [4, 5], [6, 7]]
    assert rec.batches == [[1, 2, 3, 4, 5], [6, 7]]
    assert rec.group_sizes == [[3, 2], [2]]


def test_full_budget_dispatches_without_waiting():
    rec = Recorder()

    async def main():
        b = batcher(rec, max_wait_ms=5000)
        b.start()
        t = time.perf_counter()
        await asyncio.gather(b.submit([enc(1, 50)]), b.submit([enc(2, 50)]))
        elapsed = time.perf_counter() - t
        await b.close()
        return elapsed

    assert asyncio.run(main()) < 1.0  # the budget filled: no 5 s wait
    assert rec.batches == [[1, 2]]


def test_lone_request_waits_at_most_max_wait():
    rec = Recorder()

    async def main():
        b = batcher(rec, max_wait_ms=200)
        b.start()
        t = time.perf_counter()
        await b.submit([enc(1, 10)])
        elapsed = time.perf_counter() - t
        await b.close()
        return elapsed

    assert 0.15 < asyncio.run(main()) < 2.0


def test_a_failure_fails_only_its_batch():
    rec = Recorder(fail_on=4)

    async def main():
        b = batcher(rec)
        b.start()
        out = await asyncio.gather(*(b.submit([enc(i, 30)]) for i in range(9)), return_exceptions=True)
        later = await b.submit([enc(42, 5)])
        await b.close()
        return out, later

    out, later = asyncio.run(main())
    assert rec.batches[:3] == [[0, 1, 2], [3, 4, 5], [6, 7, 8]]
    assert [type(x).__name__ for x in out] == ["list"] * 3 + ["BatchFailed"] * 3 + ["list"] * 3
    assert str(out[3]) == "scoring failed: RuntimeError: boom"
    assert [x[0].reward for x in out[6:]] == [6, 7, 8]
    assert later[0].reward == 42


def test_admission_limit_and_release():
    async def main():
        b = batcher(Recorder(), max_pending=3)
        b.start()
        with b.admit(2):
            with pytest.raises(Overloaded, match="2 conversations pending, limit 3"), b.admit(2):
                pass
            with b.admit(1):
                assert b.pending == 3
        assert b.pending == 0
        with b.admit(5):  # an idle server admits any single request
            pass
        await b.close()
        with pytest.raises(ShuttingDown), b.admit(1):
            pass

    asyncio.run(main())


def test_close_drains_queued_work():
    rec = Recorder(delay=0.05)

    async def main():
        b = batcher(rec, max_wait_ms=10_000)
        b.start()
        tasks = [asyncio.create_task(b.submit([enc(i, 10)])) for i in range(3)]
        await asyncio.sleep(0.05)  # queued, waiting for the batch to fill
        await b.close()  # stops waiting, scores them
        return [t.result()[0].reward for t in tasks]

    assert asyncio.run(main()) == [0, 1, 2]
    assert rec.batches == [[0, 1, 2]]


def test_a_large_request_is_scored_in_parts_and_does_not_hold_up_later_ones():
    """Budget 100: a request of 10 × 50 tokens goes in parts; a small request that arrives while
    the first part runs is in the next batch, not after the whole large request."""
    rec = Recorder(delay=0.2)

    async def main():
        b = batcher(rec, max_wait_ms=0)
        b.start()
        large = asyncio.create_task(b.submit([enc(i, 50) for i in range(10)]))
        await asyncio.sleep(0.1)  # the first part is being scored
        small = await b.submit([enc(99, 10)])
        out = await large
        await b.close()
        return small, out

    small, out = asyncio.run(main())
    assert [s.reward for s in out] == list(range(10)) and small[0].reward == 99
    assert rec.batches[0] == [0, 1]
    assert rec.batches[1] == [99, 2]  # whole requests first, then the rest of the budget to a part
    assert [x for batch in rec.batches for x in batch if x != 99] == list(range(10))
    assert all(len(batch) <= 2 for batch in rec.batches)  # never over the budget


def test_a_large_group_is_scored_as_groups_of_its_parts():
    rec = Recorder()

    async def main():
        b = batcher(rec, max_wait_ms=0)
        b.start()
        out = await b.submit([enc(i, 40) for i in range(5)], group=True)
        await b.close()
        return out

    assert [s.reward for s in asyncio.run(main())] == list(range(5))
    assert rec.batches == [[0, 1], [2, 3], [4]]
    assert rec.group_sizes == [[2], [2], [1]]  # each part shares its prompt


def test_a_cancelled_request_leaves_the_queue():
    """The client went away (its task is cancelled): conversations not yet in a batch are never
    scored, and its queue room is free again."""
    rec = Recorder(delay=0.2)

    async def main():
        b = batcher(rec, max_wait_ms=0, max_pending=12)

        async def request(n: int, first: int) -> list:
            with b.admit(n):
                return await b.submit([enc(first + i, 50) for i in range(n)])

        b.start()
        gone = asyncio.create_task(request(10, 0))
        await asyncio.sleep(0.1)  # its first part is running
        gone.cancel()
        await asyncio.sleep(0)
        pending_after = b.pending
        live = await request(10, 100)  # would not be admitted if the first still held its room
        await b.close()
        return pending_after, live

    pending_after, live = asyncio.run(main())
    assert pending_after == 0
    assert [s.reward for s in live] == list(range(100, 110))
    scored = [x for batch in rec.batches for x in batch]
    assert scored[:2] == [0, 1] and not set(range(2, 10)) & set(scored)  # only the running part
