"""HTTP reward server: dynamic batching over one engine, native and OpenRLHF/vLLM-compatible routes.

Names are imported lazily so that ``rewardkit --help`` (which registers ``serve``) does not pull in
FastAPI, uvicorn or torch.
"""

from __future__ import annotations

from rewardkit._lazy import lazy_exports

_EXPORTS = {
    "BackgroundServer": "rewardkit.server.runner",
    "DynamicBatcher": "rewardkit.server.batcher",
    "ServerConfig": "rewardkit.server.service",
    "ServerMetrics": "rewardkit.server.metrics",
    "bind": "rewardkit.server.runner",
    "create_app": "rewardkit.server.app",
    "run_server": "rewardkit.server.runner",
}
__all__ = sorted(_EXPORTS)


__getattr__ = lazy_exports(__name__, _EXPORTS)
