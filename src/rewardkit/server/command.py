"""``rewardkit serve``: load a reward model and serve it over HTTP."""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os

from rewardkit.options import add_model_args, model_options

log = logging.getLogger(__name__)

API_KEY_ENV = "REWARDKIT_API_KEY"


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


HELP = "serve a reward model over HTTP (dynamic batching; OpenRLHF and vLLM compatible routes)"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help=HELP, description=HELP)
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument(
        "--api-key", default=None, help=f"require 'Authorization: Bearer KEY' (default: ${API_KEY_ENV})"
    )
    p.add_argument("--served-model-name", default=None, help="model name in responses (default: --model)")
    p.add_argument("--max-wait-ms", type=float, default=5.0, help="longest wait for a batch to fill")
    p.add_argument("--max-queue", type=int, default=4096, help="conversations pending before 429")
    p.add_argument("--max-conversations", type=int, default=1024, help="conversations per request (413)")
    p.add_argument("--max-request-tokens", type=int, default=2**20, help="tokens per request (413)")
    p.add_argument("--max-body-bytes", type=int, default=64 * 2**20, help="request body size (413)")
    p.add_argument(
        "--shutdown-timeout", type=float, default=60.0, help="seconds to finish in-flight requests on SIGTERM"
    )
    add_model_args(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from rewardkit.server.app import create_app
    from rewardkit.server.runner import run_server
    from rewardkit.server.service import ServerConfig

    config = ServerConfig(  # validated before the (slow) model load
        api_key=args.api_key if args.api_key is not None else os.environ.get(API_KEY_ENV) or None,
        served_model_name=args.served_model_name,
        max_wait_ms=args.max_wait_ms,
        max_queue=args.max_queue,
        max_conversations=args.max_conversations,
        max_request_tokens=args.max_request_tokens,
        max_body_bytes=args.max_body_bytes,
    )
    if config.api_key is None and not _is_loopback(args.host):
        log.warning("serving on %s without an API key: anyone who can reach it can use it", args.host)
    rm = model_options(args).load()
    run_server(create_app(rm, config), host=args.host, port=args.port, shutdown_timeout=args.shutdown_timeout)
    return 0
