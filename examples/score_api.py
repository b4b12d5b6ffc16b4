"""Score conversations and preference pairs from Python.

Usage:
    python examples/score_api.py                # the built-in demo model, offline
    python examples/score_api.py nvidia/Qwen-2.5-Nemotron-32B-Reward   # the real model, on a GPU
"""

from __future__ import annotations

import sys

from rewardkit import PreferencePair, RewardModel
from rewardkit.data.conversation import Message


def main(model: str) -> None:
    rm = RewardModel.load(model)
    conversations = [
        [{"role": "user", "content": "What is 1+1?"}, {"role": "assistant", "content": "1+1=2"}],
        [{"role": "user", "content": "What is 1+1?"}, {"role": "assistant", "content": "1+1=3"}],
    ]
    for conv, reward in zip(conversations, rm.score(conversations), strict=True):
        print(f"{reward:+.4f}  {conv[-1]['content']}")

    pair = PreferencePair(
        context=(Message(role="user", content="Name a prime number."),),
        first=(Message(role="assistant", content="7 is prime."),),
        second=(Message(role="assistant", content="9 is prime."),),
    )
    ((chosen, rejected),) = rm.score_pairs([pair])
    print(f"chosen {chosen:+.4f}  rejected {rejected:+.4f}")
    print(rm.spec)


if __name__ == "__main__":
    from rewardkit.demo import DEMO_MODEL_DIR

    main(sys.argv[1] if len(sys.argv) > 1 else str(DEMO_MODEL_DIR))
