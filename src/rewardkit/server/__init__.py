"""HTTP reward server: dynamic batching over one engine, native and OpenRLHF/vLLM-compatible routes.

Names are imported lazily so that ``rewardkit --help`` (which registers ``serve``) does not pull in
FastAPI, uvicorn or torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "BackgroundServer": "rewardkit.server.runner",
    "DynamicBatcher": "rewardkit.server.batcher",
    "ServerConfig": "rewardkit.server.service",
    "ServerMetrics": "rewardkit.server.metrics",
    "create_app": "rewardkit.server.app",
    "run_server": "rewardkit.server.runner",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'rewardkit.server' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
