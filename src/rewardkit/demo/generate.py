"""Deterministic preference data for the demo reward model, in HelpSteer3's JSONL shape.

Each record::

    {"id": "train-arithmetic-00000",
     "context": [{"role": "user", "content": "What is 1+1?"}],
     "response1": "1+1=2", "response2": "1+1=3",
     "overall_preference": -3, "domain": "arithmetic"}

``overall_preference`` follows HelpSteer3: negative means ``response1`` is better, positive
``response2``; its magnitude (1–3) is the strength. Which side the better response is on is
random. ``domain`` names the skill.

Train and validation are split by *group* (the item a prompt asks about, whatever its
wording), so no validation prompt — nor any rewording of it — appears in training.
"""

from __future__ import annotations

import argparse
import json
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rewardkit.demo.skills import SKILLS, Task, all_tasks
from rewardkit.errors import ConfigError

SPLITS = ("train", "validation")


@dataclass(frozen=True, kw_only=True)
class DemoDataConfig:
    """How much demo data to make.

    Args:
        seed: everything random (split, pairing, order) derives from it.
        train_pairs_per_skill: training pairs per skill (prompts are reused with other answers).
        validation_pairs_per_skill: at most this many validation pairs per skill, one per prompt.
        validation_fraction: share of each skill's groups held out for validation.
    """

    seed: int = 0
    train_pairs_per_skill: int = 3000
    validation_pairs_per_skill: int = 300
    validation_fraction: float = 0.2

    def __post_init__(self) -> None:
        errors = []
        if self.train_pairs_per_skill < 1:
            errors.append(f"train_pairs_per_skill must be at least 1, got {self.train_pairs_per_skill}")
        if self.validation_pairs_per_skill < 1:
            errors.append(
                f"validation_pairs_per_skill must be at least 1, got {self.validation_pairs_per_skill}"
            )
        if not 0 < self.validation_fraction < 1:
            errors.append(f"validation_fraction must be in (0, 1), got {self.validation_fraction}")
        if errors:
            raise ConfigError("; ".join(errors))


def split_groups(tasks: list[Task], fraction: float, rng: random.Random) -> tuple[set[str], set[str]]:
    """Shuffles the distinct groups and holds out ``fraction`` of them (at least one)."""
    groups = sorted({t.group for t in tasks})
    rng.shuffle(groups)
    n_val = max(1, round(fraction * len(groups)))
    return set(groups[n_val:]), set(groups[:n_val])


def _record(task: Task, rid: str, rng: random.Random) -> dict[str, Any]:
    better, worse, strength = rng.choice(task.options)
    first_better = rng.random() < 0.5
    return {
        "id": rid,
        "context": [{"role": "user", "content": task.prompt}],
        "response1": better if first_better else worse,
        "response2": worse if first_better else better,
        "overall_preference": -strength if first_better else strength,
        "domain": task.skill,
    }


def generate(config: DemoDataConfig | None = None) -> dict[str, list[dict[str, Any]]]:
    """Makes the train and validation records (lists of HelpSteer3-shaped dicts).

    The result depends only on ``config``: the same config gives the same records, in order.
    """
    cfg = config or DemoDataConfig()
    out: dict[str, list[dict[str, Any]]] = {s: [] for s in SPLITS}
    for skill, tasks in all_tasks().items():
        # One stream per skill, so changing one skill's bank leaves the others' data unchanged.
        rng = random.Random(f"rewardkit-demo:{cfg.seed}:{skill}")
        train_groups, _ = split_groups(tasks, cfg.validation_fraction, rng)
        train = [t for t in tasks if t.group in train_groups]
        val = [t for t in tasks if t.group not in train_groups]
        val = rng.sample(val, min(len(val), cfg.validation_pairs_per_skill))
        order: list[Task] = []
        while len(order) < cfg.train_pairs_per_skill:
            order.extend(rng.sample(train, len(train)))
        for i, task in enumerate(order[: cfg.train_pairs_per_skill]):
            out["train"].append(_record(task, f"train-{skill}-{i:05d}", rng))
        for i, task in enumerate(val):
            out["validation"].append(_record(task, f"validation-{skill}-{i:05d}", rng))
    # Interleave skills so any prefix of the training file covers all of them.
    shuffler = random.Random(f"rewardkit-demo:{cfg.seed}:order")
    shuffler.shuffle(out["train"])
    return out


def to_jsonl(records: list[dict[str, Any]]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)


def write_splits(out_dir: str | Path, config: DemoDataConfig | None = None) -> dict[str, Path]:
    """Writes ``train.jsonl`` and ``validation.jsonl`` under ``out_dir``; returns their paths."""
    root = Path(out_dir)
    root.mkdir(parents=True, exist_ok=True)
    paths = {}
    for split, records in generate(config).items():
        path = root / f"{split}.jsonl"
        path.write_text(to_jsonl(records), encoding="utf-8")
        paths[split] = path
    return paths


# The command line's options: DemoDataConfig field -> (type, metavar, help).
_OPTIONS: dict[str, tuple[type, str, str]] = {
    "seed": (int, "N", "seed of everything random"),
    "train_pairs_per_skill": (int, "N", "training pairs per skill"),
    "validation_pairs_per_skill": (int, "N", "at most this many validation pairs per skill"),
    "validation_fraction": (float, "F", "share of each skill's prompt groups held out"),
}


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m rewardkit.demo.generate [OUT_DIR]``: writes the two splits, prints their paths."""
    p = argparse.ArgumentParser(
        prog="python -m rewardkit.demo.generate",
        description="Writes the demo reward model's preference data (HelpSteer3-shaped JSONL): "
        "OUT_DIR/train.jsonl and OUT_DIR/validation.jsonl. The same options write the same files.",
    )
    p.add_argument(
        "out_dir",
        metavar="OUT_DIR",
        nargs="?",
        default="demo-data",
        help="output directory (default: ./demo-data)",
    )
    defaults = DemoDataConfig()
    for name, (kind, metavar, text) in _OPTIONS.items():
        default = getattr(defaults, name)
        flag = f"--{name.replace('_', '-')}"
        p.add_argument(flag, type=kind, metavar=metavar, default=default, help=f"{text} (default {default})")
    args = p.parse_args(argv)
    try:
        config = DemoDataConfig(**{name: getattr(args, name) for name in _OPTIONS})
    except ConfigError as e:
        p.error(str(e))
    for split, path in write_splits(args.out_dir, config).items():
        print(f"{split}: {path}")
    return 0


__all__ = [
    "SKILLS",
    "SPLITS",
    "DemoDataConfig",
    "generate",
    "main",
    "split_groups",
    "to_jsonl",
    "write_splits",
]

if __name__ == "__main__":
    raise SystemExit(main())
