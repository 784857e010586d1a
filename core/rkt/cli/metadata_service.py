"""``rkt metadata-service``: serve the appc metadata service until stopped.

rkt 1.x's flag is ``--listen-port``; ``--socket`` moves the registration socket
(``rkt run --mds-socket`` must then name the same one).
"""

from __future__ import annotations

import argparse
import signal

from rkt.cli.context import GlobalOptions, RktArgumentParser
from rkt.errors import UsageError
from rkt.metadata import DEFAULT_PORT, DEFAULT_SOCKET, STATE_SUBDIR


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 0 < port < 65536:
        raise argparse.ArgumentTypeError(f"invalid port {text!r}")
    return port


def add_arguments(command: str, parser: RktArgumentParser) -> None:
    del command
    parser.add_argument("--listen-port", type=_port, default=DEFAULT_PORT, metavar="PORT",
                        help=f"the TCP port pods reach the service on (default {DEFAULT_PORT})")
    parser.add_argument("--socket", default=str(DEFAULT_SOCKET), metavar="PATH",
                        help=f"the registration socket (default {DEFAULT_SOCKET}; "
                             "ignored under systemd socket activation)")


def run(command: str, options: GlobalOptions, args: argparse.Namespace) -> int:
    del command
    from pathlib import Path

    from rkt.metadata.service import open_service, running_pods_of

    if not args.socket:
        raise UsageError("--socket must not be empty")
    data_dir = options.data_dir
    service = open_service(socket_path=Path(args.socket).absolute(), port=args.listen_port,
                           state_dir=data_dir / STATE_SUBDIR, keep=running_pods_of(data_dir))
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: service.shutdown())
    where = service.socket_path or "the socket systemd passed"
    print(f"Metadata service running: registrations on {where}, pods on port "
          f"{service.public_port} ({len(service.store)} pods registered)",
          file=options.stdout, flush=True)
    service.serve()
    print("Metadata service stopped", file=options.stdout, flush=True)
    return 0
