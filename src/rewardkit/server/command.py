"""``rewardkit serve``: load a reward model and serve it over HTTP."""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
from pathlib import Path

from rewardkit.errors import ConfigError
from rewardkit.options import add_model_args, model_options

log = logging.getLogger(__name__)

API_KEY_ENV = "REWARDKIT_API_KEY"
DRAIN_INCOMPLETE = 1  # exit status when requests were cut by --shutdown-timeout


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def api_key(args: argparse.Namespace) -> str | None:
    """``--api-key``, else the first line of ``--api-key-file``, else ``$REWARDKIT_API_KEY``."""
    if args.api_key is not None and args.api_key_file is not None:
        raise ConfigError("give --api-key or --api-key-file, not both")
    if args.api_key_file is not None:
        try:
            lines = Path(args.api_key_file).read_text().splitlines()
        except OSError as e:
            raise ConfigError(f"--api-key-file {args.api_key_file}: {e.strerror or e}") from e
        return lines[0].strip() if lines else ""
    if args.api_key is not None:
        return args.api_key
    return os.environ.get(API_KEY_ENV) or None


def _raise_open_files_limit() -> None:
    """Many concurrent clients need many sockets: the soft limit on open files up to the hard one."""
    try:
        import resource
    except ImportError:  # not POSIX
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = 65536 if hard == resource.RLIM_INFINITY else hard
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            log.warning("could not raise the open-files limit from %d; clients beyond it are refused", soft)


HELP = "serve a reward model over HTTP (dynamic batching; OpenRLHF and vLLM compatible routes)"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help=HELP, description=HELP)
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
    p.add_argument("--port", type=int, default=8000)
    g = p.add_argument_group("access")
    g.add_argument(
        "--api-key",
        default=None,
        help=f"require 'Authorization: Bearer KEY' (visible to other users in the process list: "
        f"prefer --api-key-file or ${API_KEY_ENV})",
    )
    g.add_argument("--api-key-file", default=None, metavar="FILE", help="read the API key from FILE")
    g.add_argument(
        "--allow-key-in-path",
        action="store_true",
        help="also accept the key as a path prefix, http://HOST:PORT/key/KEY/get_reward (clients "
        "that cannot send a header, e.g. OpenRLHF)",
    )
    g.add_argument(
        "--served-model-name",
        nargs="+",
        default=None,
        metavar="NAME",
        help="model name in responses; every NAME is accepted as a request's 'model' (default: "
        "the model's directory name or hub id)",
    )
    g = p.add_argument_group("limits (413 beyond each, 429 for --max-queue)")
    g.add_argument("--max-wait-ms", type=float, default=5.0, help="longest wait for a batch to fill")
    g.add_argument("--max-queue", type=int, default=4096, help="conversations pending before 429")
    g.add_argument("--max-conversations", type=int, default=1024, help="conversations or texts per request")
    g.add_argument("--max-messages", type=int, default=256, help="messages per conversation")
    g.add_argument(
        "--max-conversation-chars", type=int, default=2**20, help="characters of one conversation or text"
    )
    g.add_argument("--max-request-chars", type=int, default=8 * 2**20, help="characters of one request")
    g.add_argument("--max-request-tokens", type=int, default=2**20, help="tokens of one request")
    g.add_argument(
        "--max-body-bytes", type=int, default=16 * 2**20, help="request body, counted as it arrives"
    )
    g.add_argument(
        "--read-timeout", type=float, default=30.0, help="seconds for a request's head, and its body (408)"
    )
    g.add_argument(
        "--shutdown-timeout",
        type=float,
        default=60.0,
        help="seconds to finish in-flight requests on SIGTERM/SIGINT; those left get 503 and the "
        f"exit status is {DRAIN_INCOMPLETE}",
    )
    add_model_args(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from rewardkit.server.app import create_app
    from rewardkit.server.runner import bind, run_server
    from rewardkit.server.service import ServerConfig

    # Everything that can fail without the model fails before the (slow) model load.
    config = ServerConfig(
        api_key=api_key(args),
        key_in_path=args.allow_key_in_path,
        served_model_name=args.served_model_name or (),
        max_wait_ms=args.max_wait_ms,
        max_queue=args.max_queue,
        max_conversations=args.max_conversations,
        max_messages=args.max_messages,
        max_conversation_chars=args.max_conversation_chars,
        max_request_chars=args.max_request_chars,
        max_request_tokens=args.max_request_tokens,
        max_body_bytes=args.max_body_bytes,
        read_timeout=args.read_timeout,
    )
    if args.shutdown_timeout < 0:
        raise ConfigError(f"--shutdown-timeout must be >= 0, got {args.shutdown_timeout}")
    if config.api_key is None and not _is_loopback(args.host):
        log.warning("serving on %s without an API key: anyone who can reach it can use it", args.host)
    sock = bind(args.host, args.port)
    try:
        _raise_open_files_limit()
        rm = model_options(args).load()
        drained = run_server(create_app(rm, config), sock=sock, shutdown_timeout=args.shutdown_timeout)
    finally:
        sock.close()
    return 0 if drained else DRAIN_INCOMPLETE
