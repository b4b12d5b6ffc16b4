"""Flatten nested lists and split them back: the one helper for "score a flat list, regroup"."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from typing import TypeVar

T = TypeVar("T")


def flatten(groups: Iterable[Sequence[T]]) -> tuple[list[T], list[int]]:
    """``[[a, b], [c]]`` → ``([a, b, c], [2, 1])``: the items in order and each group's size."""
    flat: list[T] = []
    sizes: list[int] = []
    for g in groups:
        flat.extend(g)
        sizes.append(len(g))
    return flat, sizes


def split(flat: Iterable[T], sizes: Sequence[int]) -> list[list[T]]:
    """The inverse of `flatten`: consecutive runs of ``flat`` of the given sizes.

    Raises:
        ValueError: the sizes do not add up to the number of items.
    """
    items = list(flat)
    if sum(sizes) != len(items):
        raise ValueError(f"group sizes add up to {sum(sizes)}, expected {len(items)}")
    bounds = [0, *itertools.accumulate(sizes)]
    return [items[a:b] for a, b in itertools.pairwise(bounds)]
