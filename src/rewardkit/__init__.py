"""rewardkit: score, serve, train and evaluate scalar reward models."""

from rewardkit.api import RewardModel, Scored
from rewardkit.data.conversation import Conversation, Message, PreferencePair
from rewardkit.engine.engine import ScoringEngine
from rewardkit.errors import ConfigError, InputError, ModelError, RewardkitError
from rewardkit.models.loading import ScoringSpec

__version__ = "0.1.0"
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
