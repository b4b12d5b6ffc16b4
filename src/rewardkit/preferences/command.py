"""``rewardkit best-of-n`` and ``rewardkit pairs``: thin layers over `rewardkit.preferences.files`."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

from rewardkit.options import add_model_args, model_options, progress_bar

if TYPE_CHECKING:
    from rewardkit.preferences.files import GroupsSummary

BEST_OF_N_HELP = "score K responses per prompt (prompt computed once); write the rewards and the best"
PAIRS_HELP = "build DPO or HelpSteer3 preference pairs from K scored responses per prompt"
INPUT_HELP = 'JSONL (.gz) or Parquet of {"prompt": str | [messages], "responses": [...]} records'


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("input", help=INPUT_HELP)
    p.add_argument("-o", "--output", required=True, help="JSONL output, written atomically once complete")
    p.add_argument(
        "--scores",
        default=None,
        help="resumable score file (default: OUTPUT.scores.jsonl); a killed run continues from it",
    )
    p.add_argument(
        "--on-error",
        choices=["raise", "skip"],
        default="raise",
        help="invalid records: fail before scoring anything, or skip and list them in SCORES.errors.jsonl",
    )
    p.add_argument("--overwrite", action="store_true", help="score afresh instead of resuming --scores")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_model_args(p)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("best-of-n", help=BEST_OF_N_HELP, description=BEST_OF_N_HELP)
    _add_common(p)
    p.add_argument(
        "--with-response", action="store_true", help="also write the best response itself (best_response)"
    )
    p.set_defaults(run=run_best_of_n)

    p = sub.add_parser("pairs", help=PAIRS_HELP, description=PAIRS_HELP)
    _add_common(p)
    p.add_argument(
        "--pairs",
        choices=["best-worst", "all"],
        default="best-worst",
        help="best-worst: highest vs lowest reward (one pair per prompt); all: every two responses",
    )
    p.add_argument(
        "--min-margin", type=float, default=0.0, help="keep pairs whose reward margin is at least this"
    )
    p.add_argument(
        "--format",
        choices=["dpo", "helpsteer3"],
        default="dpo",
        help="dpo: {prompt, chosen, rejected} (TRL); helpsteer3: {context, response1, response2, "
        "overall_preference} for rewardkit train",
    )
    p.add_argument(
        "--strength-margins",
        type=float,
        nargs=2,
        default=None,
        metavar=("M2", "M3"),
        help="helpsteer3: margins at which the strength steps to 2 and to 3 "
        "(default: ln 3 and ln 9, where σ(margin) = 0.75 and 0.90)",
    )
    p.set_defaults(run=run_pairs)


class _Progress:
    """The scoring stage's progress bar on stderr."""

    def __init__(self, disable: bool) -> None:
        self.disable = disable
        self.bar: Any = None

    def start(self, total: int, done: int) -> None:
        if done:
            print(f"resuming: {done} groups already scored", file=sys.stderr)
        self.bar = progress_bar(total, disable=self.disable)

    def advance(self, n: int, tokens: int) -> None:
        self.bar.update(n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _scoring(args: argparse.Namespace, progress: _Progress) -> dict[str, Any]:
    return {
        "scores_path": args.scores,
        "on_error": args.on_error,
        "overwrite": args.overwrite,
        "on_start": progress.start,
        "progress": progress.advance,
    }


def _summary(args: argparse.Namespace, s: GroupsSummary, what: str) -> int:
    sc = s.scoring
    print(
        f"scored {sc.rows} groups ({sc.tokens:,} tokens), {sc.resumed} resumed, {sc.skipped} skipped "
        f"into {s.scores}; wrote {s.rows} {what} from {s.groups} groups to {args.output}",
        file=sys.stderr,
    )
    return 0


def run_best_of_n(args: argparse.Namespace) -> int:
    from rewardkit.preferences.files import best_of_n_file, check_inputs

    check_inputs(args.input, args.output, args.scores)  # before a model of minutes is loaded
    rm = model_options(args).load()
    progress = _Progress(args.no_progress)
    try:
        summary = best_of_n_file(
            rm, args.input, args.output, with_response=args.with_response, **_scoring(args, progress)
        )
    finally:
        progress.close()
    return _summary(args, summary, "rows")


def run_pairs(args: argparse.Namespace) -> int:
    from rewardkit.preferences.files import check_inputs, pairs_file
    from rewardkit.preferences.pairs import STRENGTH_MARGINS, PairOptions

    options = PairOptions(
        pairs=args.pairs,
        min_margin=args.min_margin,
        format=args.format,
        strength_margins=tuple(args.strength_margins or STRENGTH_MARGINS),
    )
    check_inputs(args.input, args.output, args.scores)
    rm = model_options(args).load()
    progress = _Progress(args.no_progress)
    try:
        summary = pairs_file(rm, args.input, args.output, options=options, **_scoring(args, progress))
    finally:
        progress.close()
    return _summary(args, summary, "pairs")
