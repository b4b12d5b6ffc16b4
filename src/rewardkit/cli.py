"""``rewardkit`` command line: thin wrappers that build options and call the library."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from rewardkit.errors import RewardkitError

if TYPE_CHECKING:
    from rewardkit.engine.parallel import Rank

log = logging.getLogger("rewardkit")

Command = Callable[[argparse.Namespace], int]
_COMMANDS: dict[str, Command] = {}


def add_model_args(p: argparse.ArgumentParser) -> None:
    """Options shared by every command that loads a reward model."""
    g = p.add_argument_group("model")
    g.add_argument(
        "--model",
        "-m",
        default=None,
        help="HF model id or local directory (default: the built-in demo reward model)",
    )
    g.add_argument("--revision", help="hub revision (branch, tag or commit)")
    g.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda, cuda:1")
    g.add_argument("--dtype", default="auto", help="auto (bf16 on GPU, fp32 on CPU), bfloat16, float32")
    g.add_argument("--head-dtype", default=None, help="dtype of the reward head (default: the model's)")
    g.add_argument("--max-length", type=int, default=None, help="longest conversation in tokens")
    g.add_argument(
        "--truncation",
        choices=["error", "left"],
        default="error",
        help="over-long conversations: fail the record, or drop the oldest context",
    )
    g.add_argument("--chat-template", default=None, help="Jinja chat template file to use instead")
    g.add_argument("--output-index", type=int, default=None, help="head output to use as reward")
    g.add_argument(
        "--reward-head",
        default=None,
        metavar="HEAD",
        help="sequence-classification (score head) or lm-logit:TOKEN_ID (a causal LM's next-token "
        "logit of TOKEN_ID, e.g. lm-logit:0); default: what the checkpoint declares",
    )
    g.add_argument("--trust-remote-code", action="store_true", help="allow model code from the hub")
    g.add_argument(
        "--fp8",
        action="store_true",
        help="decoder linear layers as FP8 GEMMs (Hopper GPUs; faster, rewards move slightly)",
    )
    g.add_argument(
        "--token-budget",
        type=int,
        default=None,
        help="tokens per packed batch (default: sized from free GPU memory)",
    )


def load_reward_model(args: argparse.Namespace):  # -> RewardModel, imported lazily (fast --help)
    from rewardkit.api import RewardModel

    model = args.model
    if model is None:
        from rewardkit.demo import DEMO_MODEL_DIR, DEMO_NOTICE

        if os.environ.get("RANK", "0") == "0":  # once per job, not once per rank
            print(DEMO_NOTICE, file=sys.stderr)
        model = DEMO_MODEL_DIR
    return RewardModel.load(
        model,
        revision=args.revision,
        device=args.device,
        dtype=args.dtype,
        head_dtype=args.head_dtype,
        max_length=args.max_length,
        truncation=args.truncation,
        chat_template=args.chat_template,
        output_index=args.output_index,
        trust_remote_code=args.trust_remote_code,
        fp8=args.fp8,
        token_budget=args.token_budget,
        reward_head=args.reward_head,
        tensor_parallel=getattr(args, "tensor_parallel", False),
    )


def command(name: str, help: str) -> Callable[[Callable[[argparse.ArgumentParser], Command]], None]:
    """Registers a subcommand: the decorated function adds its arguments and returns its runner."""

    def register(build: Callable[[argparse.ArgumentParser], Command]) -> None:
        _BUILDERS.append((name, help, build))

    return register


_BUILDERS: list[tuple[str, str, Callable[[argparse.ArgumentParser], Command]]] = []


@command("score", "score conversations or preference pairs (JSONL/Parquet in, JSONL out)")
def _score(p: argparse.ArgumentParser) -> Command:
    p.add_argument("input", nargs="?", help="JSONL (.gz) or Parquet file, or - for stdin")
    p.add_argument("-o", "--output", default="-", help="JSONL output (default: stdout); resumable")
    p.add_argument("--prompt", help="score one prompt instead of a file")
    p.add_argument("--response", action="append", help="response to --prompt (repeatable)")
    p.add_argument(
        "--on-error",
        choices=["raise", "skip"],
        default="raise",
        help="invalid records: fail before scoring anything, or skip and list them",
    )
    p.add_argument("--error-file", default=None, help="where skipped records are listed")
    p.add_argument("--overwrite", action="store_true", help="start the output afresh")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument(
        "--devices",
        default=None,
        help="data parallel: one replica per GPU, e.g. 0,1,2,3 or all (under torchrun: one per rank)",
    )
    p.add_argument(
        "--tensor-parallel",
        action="store_true",
        help="shard the model over the ranks of torchrun (one per GPU) for models too large for one GPU",
    )
    add_model_args(p)

    def run(args: argparse.Namespace) -> int:
        if args.tensor_parallel:
            if args.devices is not None:
                raise RewardkitError("--tensor-parallel and --devices cannot be combined")
            return _score_tensor_parallel(args)
        if args.prompt is not None or args.response:
            if args.input or not (args.prompt and args.response):
                raise RewardkitError("use either INPUT, or --prompt with one or more --response")
            if args.devices is not None:
                raise RewardkitError("--devices applies to scoring an INPUT file, not --prompt")
            return _score_one(args)
        if not args.input:
            raise RewardkitError("missing INPUT (a JSONL/Parquet file or -), or --prompt/--response")
        if args.devices is not None:
            import torch

            from rewardkit.engine.parallel import (
                LAUNCHED_DEVICES_ENV,
                launch_local,
                parse_devices,
                rank_from_env,
            )

            if rank_from_env() is not None:
                if os.environ.get(LAUNCHED_DEVICES_ENV) is None:
                    raise RewardkitError(
                        "--devices cannot be combined with torchrun, which already sets the ranks"
                    )
                return _score_file(args)  # one of the ranks launch_local started
            devices = parse_devices(args.devices, torch.cuda.device_count())
            if args.output == "-" or args.input == "-":
                raise RewardkitError("--devices needs an INPUT file and -o OUTPUT (not stdin/stdout)")
            if args.device not in ("auto", "cuda"):
                raise RewardkitError(f"--device {args.device} cannot be combined with --devices")
            return launch_local(args.argv, devices)
        return _score_file(args)

    return run


def _score_tensor_parallel(args: argparse.Namespace) -> int:
    """Under torchrun: every rank loads its shard; rank 0 scores, the others run its forwards."""
    import torch

    from rewardkit.engine.parallel import (
        destroy_process_group,
        init_process_group,
        rank_device,
        rank_from_env,
    )

    rank = rank_from_env()
    if rank is None:
        raise RewardkitError(
            "--tensor-parallel runs one process per GPU under torchrun: "
            "torchrun --nproc-per-node N -m rewardkit score ... --tensor-parallel"
        )
    args.device = rank_device(rank, args.device)
    init_process_group(rank, torch.device(args.device))
    try:
        return _lead_or_follow(args, rank.is_main)  # the sharded model lives only in there
    finally:
        destroy_process_group()


def _lead_or_follow(args: argparse.Namespace, main_rank: bool) -> int:
    from rewardkit.engine.tensor_parallel import Lockstep

    rm = load_reward_model(args)
    lockstep = Lockstep(rm.engine)
    if not main_rank:
        lockstep.follow()
        return 0
    with lockstep.lead():
        if args.prompt is not None or args.response:
            return _score_one(args, rm)
        return _score_file_ranked(args, None, rm)


def _score_one(args: argparse.Namespace, rm=None) -> int:
    from rewardkit.data.conversation import Conversation

    rm = rm or load_reward_model(args)
    convs = [Conversation.from_prompt(args.prompt, r) for r in args.response]
    for resp, reward in zip(args.response, rm.score(convs), strict=True):
        print(json.dumps({"prompt": args.prompt, "response": resp, "reward": reward}, ensure_ascii=False))
    return 0


def _score_file(args: argparse.Namespace) -> int:
    from rewardkit.engine.parallel import destroy_process_group, rank_from_env

    rank = rank_from_env()  # set by torchrun (or by --devices, which runs torch's launcher)
    try:
        return _score_file_ranked(args, rank)
    except RewardkitError as e:
        if rank is None:
            raise
        # Every rank fails alike (same input, same checks): rank 0 reports. The others wait a
        # moment first, as torchrun stops the whole job when the first rank exits.
        if rank.is_main:
            print(f"rewardkit score: error: {e}", file=sys.stderr)
        else:
            log.debug("rank %d: %s", rank.rank, e)
            time.sleep(3.0)
        return 2
    finally:
        if rank is not None:
            destroy_process_group()


def _score_file_ranked(args: argparse.Namespace, rank: Rank | None, rm=None) -> int:
    from tqdm import tqdm

    from rewardkit.scoring import score_file, score_file_sharded

    main_rank = rank is None or rank.is_main
    if rank is not None:
        import torch

        from rewardkit.engine.parallel import barrier, init_process_group, rank_device

        args.device = rank_device(rank, args.device)
        init_process_group(rank, torch.device(args.device))
    rm = rm or load_reward_model(args)
    s = rm.spec
    if main_rank:
        where = "" if rank is None else f" ranks={rank.world_size}"
        print(
            f"rewardkit score: model={s.model} device={rm.device}{where} dtype={s.dtype} "
            f"template={s.chat_template_sha256} max_length={s.max_length} truncation={s.truncation} head={s.head}",
            file=sys.stderr,
        )
    bar = None

    def on_start(total: int, done: int) -> None:
        nonlocal bar
        if done and main_rank:
            print(f"resuming: {done} rows already in {args.output}", file=sys.stderr)
        bar = tqdm(
            total=total,
            unit="conv",
            disable=args.no_progress or not main_rank,
            file=sys.stderr,
            dynamic_ncols=True,
            desc=None if rank is None else "rank 0",
        )

    def progress(n: int, tokens: int) -> None:
        assert bar is not None
        bar.update(n)
        elapsed = bar.format_dict["elapsed"] or 1e-9
        progress.tokens += tokens  # type: ignore[attr-defined]
        bar.set_postfix_str(f"{progress.tokens / elapsed:,.0f} tok/s")  # type: ignore[attr-defined]

    progress.tokens = 0  # type: ignore[attr-defined]
    opts = dict(
        on_error=args.on_error,
        error_file=args.error_file,
        overwrite=args.overwrite,
        progress=progress,
        on_start=on_start,
    )
    try:
        if rank is None:
            summary = score_file(rm, args.input, args.output, **opts)
        else:
            summary = score_file_sharded(
                rm,
                args.input,
                args.output,
                rank=rank.rank,
                world_size=rank.world_size,
                barrier=barrier,
                **opts,
            )
    finally:
        if bar is not None:
            bar.close()
    if main_rank:
        part = "" if rank is None else f" on rank 0 of {rank.world_size}, merged into {args.output}"
        print(
            f"scored {summary.rows} rows ({summary.tokens:,} tokens), {summary.resumed} resumed, "
            f"{summary.skipped} skipped{part}",
            file=sys.stderr,
        )
    return 0


@command("init-tiny", "write a tiny random reward model (offline; for smoke tests)")
def _init_tiny(p: argparse.ArgumentParser) -> Command:
    p.add_argument("directory")
    p.add_argument("--arch", choices=["qwen2", "llama"], default="qwen2")
    p.add_argument("--seed", type=int, default=0)

    def run(args: argparse.Namespace) -> int:
        from rewardkit.models.tiny import save_tiny_reward_model

        print(save_tiny_reward_model(args.directory, arch=args.arch, seed=args.seed))
        return 0

    return run


# Subcommands defined next to the code they drive; each module registers with @command.
SUBCOMMAND_MODULES = ("rewardkit.server.command", "rewardkit.eval.command", "rewardkit.train.command")


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, Command]]:
    import importlib.util

    for mod in SUBCOMMAND_MODULES:
        if importlib.util.find_spec(mod.rsplit(".", 1)[0]) and importlib.util.find_spec(mod):
            importlib.import_module(mod)
    parser = argparse.ArgumentParser(
        prog="rewardkit", description="Score, serve, train and evaluate reward models."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    runners: dict[str, Command] = {}
    for name, help_, build in _BUILDERS:
        runners[name] = build(sub.add_parser(name, help=help_, description=help_))
    return parser, runners


def main(argv: Sequence[str] | None = None) -> int:
    parser, runners = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    args.argv = argv  # --devices launches the same command line once per GPU
    rank = f" [rank {os.environ['RANK']}]" if "RANK" in os.environ else ""
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format=f"%(levelname)s %(name)s{rank}: %(message)s",
        stream=sys.stderr,
    )
    for noisy in ("httpx", "urllib3", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if not args.verbose:  # weight-loading bars of a few seconds are noise next to ours
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    try:
        return runners[args.command](args)
    except RewardkitError as e:
        print(f"rewardkit {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"rewardkit {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
