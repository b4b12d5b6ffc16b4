"""rewardkit: score, serve, train and evaluate scalar reward models.

The public names load lazily, so ``import rewardkit.errors`` (and ``rewardkit --help``) does not
import torch or transformers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rewardkit._lazy import lazy_exports

__version__ = "0.1.0"

_EXPORTS = {
    "RewardModel": "rewardkit.api",
    "Scored": "rewardkit.api",
    "Conversation": "rewardkit.data.conversation",
    "Message": "rewardkit.data.conversation",
    "PreferencePair": "rewardkit.data.conversation",
    "ScoringEngine": "rewardkit.engine.engine",
    "ConfigError": "rewardkit.errors",
    "InputError": "rewardkit.errors",
    "ModelError": "rewardkit.errors",
    "RewardkitError": "rewardkit.errors",
    "ScoringSpec": "rewardkit.models.loading",
}
__all__ = [
    "ConfigError",
    "Conversation",
    "InputError",
    "Message",
    "ModelError",
    "PreferencePair",
    "RewardModel",
    "RewardkitError",
    "Scored",
    "ScoringEngine",
    "ScoringSpec",
    "__version__",
]

if TYPE_CHECKING:
    from rewardkit.api import RewardModel, Scored
    from rewardkit.data.conversation import Conversation, Message, PreferencePair
    from rewardkit.engine.engine import ScoringEngine
    from rewardkit.errors import ConfigError, InputError, ModelError, RewardkitError
    from rewardkit.models.loading import ScoringSpec


__getattr__ = lazy_exports(__name__, _EXPORTS)
