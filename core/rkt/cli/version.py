"""``rkt version``: what Nomad's fingerprinting reads; imports no plugin."""

from __future__ import annotations

import argparse
import platform
import sys

from rkt import APPC_VERSION, __version__
from rkt.cli.context import GlobalOptions, RktArgumentParser


def add_arguments(command: str, parser: RktArgumentParser) -> None:
    del command, parser  # no flags of its own


def run(command: str, options: GlobalOptions, args: argparse.Namespace) -> int:
    del command, args
    python = f"{platform.python_implementation()} {platform.python_version()}"
    lines = [
        f"rkt Version: {__version__}",
        f"appc Version: {APPC_VERSION}",
        f"Python Version: {python}",
        f"OS/Arch: {sys.platform}/{platform.machine()}",
    ]
    print("\n".join(lines), file=options.stdout)
    return 0
