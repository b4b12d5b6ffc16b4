"""Lazy package exports: a package's public names import their module on first use, so that
``rewardkit --help`` (which imports every command module) does not import torch or FastAPI."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_exports(package: str, exports: Mapping[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` (PEP 562) that imports ``exports[name]`` and returns its ``name``.

    Example:
        >>> __getattr__ = lazy_exports(__name__, {"RewardModel": "rewardkit.api"})  # doctest: +SKIP
    """

    def __getattr__(name: str) -> Any:
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(exports[name]), name)

    return __getattr__
