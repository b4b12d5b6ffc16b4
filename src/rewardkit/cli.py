"""``rewardkit`` command line, built top-down: each area's command module adds its subcommands,
and each subcommand is a thin layer over a library function (see docs/design.md)."""

from __future__ import annotations

import argparse
import atexit
import logging
import os
import sys
import threading
import time
from collections.abc import Sequence

from rewardkit import __version__
from rewardkit.errors import RewardkitError
from rewardkit.eval import command as eval_command
from rewardkit.models import command as models_command
from rewardkit.preferences import command as preferences_command
from rewardkit.scoring import command as score_command
from rewardkit.server import command as serve_command
from rewardkit.train import command as train_command

# Each module's ``register(subparsers)`` adds its subcommands, in this order in ``--help``.
COMMAND_MODULES = (
    score_command,
    preferences_command,
    serve_command,
    eval_command,
    train_command,
    models_command,
)


def build_parser() -> argparse.ArgumentParser:
    """The ``rewardkit`` parser; a parsed command runs as ``args.run(args)``."""
    parser = argparse.ArgumentParser(
        prog="rewardkit", description="Score, serve, train and evaluate reward models."
    )
    parser.add_argument("--version", action="version", version=f"rewardkit {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in COMMAND_MODULES:
        module.register(sub)
    return parser


def _setup_logging(verbose: bool) -> None:
    rank = f" [rank {os.environ['RANK']}]" if "RANK" in os.environ else ""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format=f"%(levelname)s %(name)s{rank}: %(message)s",
        stream=sys.stderr,
    )
    for noisy in ("httpx", "urllib3", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # huggingface_hub prints through a handler of its own: once is enough.
    logging.getLogger("huggingface_hub").propagate = False
    if not verbose:  # weight-loading bars of a few seconds are noise next to ours
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()


def main(argv: Sequence[str] | None = None) -> int:
    started = time.perf_counter()
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    # The command line itself, for a command that starts itself once per GPU (score --devices),
    # and when it started, for a command that reports its start-up time (score).
    parser.set_defaults(argv=argv, started=started)
    args = parser.parse_args(argv)
    _setup_logging(args.verbose)
    try:
        return args.run(args)
    except RewardkitError as e:
        print(f"rewardkit {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"rewardkit {args.command}: interrupted", file=sys.stderr)
        return 130


def entry() -> None:
    """The ``rewardkit`` program: `main`, then a quick exit.

    Every output is closed when `main` returns. The exit does what the interpreter's does first
    (joins the threads that are not daemons, runs the exit handlers: logging, torch's, the compile
    workers'), then ends the process without tearing its modules down one by one, which takes
    seconds once torch and transformers are loaded.
    """
    code = main()
    threading._shutdown()
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    entry()
