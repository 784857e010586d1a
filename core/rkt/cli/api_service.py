"""``rkt api-service [--listen=HOST:PORT]``: serve rkt's read-only gRPC API until
SIGINT or SIGTERM (``rkt.apiservice``, imported only here)."""

from __future__ import annotations

import signal
import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import argparse

    from rkt.cli.context import GlobalOptions, RktArgumentParser

DEFAULT_LISTEN = "localhost:15441"


def add_arguments(command: str, parser: RktArgumentParser) -> None:
    del command
    parser.add_argument("--listen", default=DEFAULT_LISTEN, metavar="HOST:PORT",
                        help=f"address to listen on (default {DEFAULT_LISTEN}; port 0 "
                             "picks a free one, printed on stderr)")


def run(command: str, options: GlobalOptions, args: argparse.Namespace) -> int:
    del command
    from rkt.apiservice.server import start_api_service

    done = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        del signum, frame
        done.set()

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, on_signal)
    print("API service starting...", file=options.stderr, flush=True)
    service = start_api_service(options, args.listen)
    print(f"Listening on {service.listen}", file=options.stderr, flush=True)
    print("API service running", file=options.stderr, flush=True)
    try:
        while not done.wait(1.0):
            pass
    finally:
        print("API service exiting...", file=options.stderr, flush=True)
        service.stop()
    return 0
