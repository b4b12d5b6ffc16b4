"""The built-in demo reward model and the generated preference data it is trained on.

The demo model is a ~1M-parameter ``Qwen2ForSequenceClassification`` shipped inside the package
so that rewardkit works offline with no download. It judges only the four toy skills of its
training data (small arithmetic, simple instructions, refusing harmful requests, answering benign
ones); see ``docs/demo-model.md``. Rebuild it with ``python -m rewardkit.demo.build``.
"""

from __future__ import annotations

from pathlib import Path

DEMO_MODEL_DIR = Path(__file__).resolve().parents[1] / "assets" / "demo-rm"
REAL_MODEL = "nvidia/Qwen-2.5-Nemotron-32B-Reward"
DEMO_NOTICE = (
    "rewardkit: no --model given, using the built-in demo reward model (a tiny toy trained on "
    f"generated data; see docs/demo-model.md). For real rewards pass --model {REAL_MODEL} (needs a GPU)."
)

__all__ = ["DEMO_MODEL_DIR", "DEMO_NOTICE", "REAL_MODEL"]
