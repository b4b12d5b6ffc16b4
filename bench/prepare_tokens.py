"""Tokenize RM-Bench conversations for the GPU benchmarks (runs on the CPU, before a device call).

Writes an ``.npz`` with ``ids`` (all tokens, int32), ``lens`` (per conversation) and ``pairs``
((P, 2) indices of chosen/rejected conversations compared by RM-Bench: every chosen style
against every rejected style of the same prompt), tokenized through rewardkit's own
ChatTokenizer with the given tokenizer's chat template.

    python bench/prepare_tokens.py --data ../shared/data/rm-bench \\
        --tokenizer ../shared/tokenizers/qwen2.5 --prompts 128 --out .carry/rmbench_tokens.npz
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

import numpy as np
from transformers import AutoTokenizer

from rewardkit.data.conversation import Conversation
from rewardkit.models.templating import ChatTokenizer


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True, help="RM-Bench directory with *_filtered.json files")
    ap.add_argument("--tokenizer", required=True)
    ap.add_argument("--prompts", type=int, default=128, help="prompts sampled (6 conversations each)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()

    records = []
    for f in sorted(Path(a.data).glob("*.json")):
        records += json.loads(f.read_text())
    random.Random(a.seed).shuffle(records)
    records = records[: a.prompts]
    convs, pairs = [], []
    for r in records:
        base = len(convs)
        for resp in [*r["chosen"], *r["rejected"]]:
            convs.append(Conversation.from_prompt(r["prompt"], resp))
        pairs += [(base + i, base + 3 + j) for i in range(3) for j in range(3)]
    chat = ChatTokenizer(AutoTokenizer.from_pretrained(a.tokenizer), max_length=32768)
    ids = [e.ids for e in chat.encode(convs)]  # type: ignore[union-attr]
    lens = np.array([len(x) for x in ids], dtype=np.int64)
    np.savez(
        a.out,
        ids=np.concatenate([np.array(x, dtype=np.int32) for x in ids]),
        lens=lens,
        pairs=np.array(pairs, dtype=np.int64),
    )
    print(
        f"{len(convs)} conversations, {lens.sum()} tokens (mean {lens.mean():.0f}, max {lens.max()}), "
        f"{len(pairs)} pairs -> {a.out}"
    )


if __name__ == "__main__":
    main()
