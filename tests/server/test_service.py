"""Pieces of a request tokenized at a time (`pieces`): in order, each within the bound unless one
item alone is larger, and every item exactly once."""

from __future__ import annotations

import random

from rewardkit.server.service import pieces


def test_pieces_cover_in_order_within_the_bound():
    rng = random.Random(0)
    for _ in range(200):
        sizes = [rng.randint(0, 50) for _ in range(rng.randint(0, 30))]
        most = rng.randint(1, 120)
        cut = list(pieces(sizes, most))
        assert [i for s in cut for i in range(len(sizes))[s]] == list(range(len(sizes)))
        for s in cut:
            assert sum(sizes[s]) <= most or s.stop - s.start == 1
    assert list(pieces([10, 10, 10, 100, 5], 25)) == [slice(0, 2), slice(2, 3), slice(3, 4), slice(4, 5)]
