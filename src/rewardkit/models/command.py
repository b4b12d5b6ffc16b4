"""``rewardkit init-tiny``: a tiny random reward model of a real architecture (offline smoke tests)."""

from __future__ import annotations

import argparse

HELP = "write a tiny random reward model (offline; for smoke tests)"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("init-tiny", help=HELP, description=HELP)
    p.add_argument("directory")
    p.add_argument("--arch", choices=["qwen2", "llama"], default="qwen2")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from rewardkit.models.tiny import save_tiny_reward_model

    print(save_tiny_reward_model(args.directory, arch=args.arch, seed=args.seed))
    return 0
