"""``rkt version``: what Nomad's driver fingerprints every 30 s; imports no plugin.

Its output names, in rkt 1.x's format, the rkt release whose command line this
implements (``rkt Version:``) and the appc spec's version, which Nomad parses
with ``rkt [vV]ersion[:]? (\\d[.\\d]+)`` and ``appc [vV]ersion[:]? (\\d[.\\d]+)``;
then this project's own version (``rkt-python Version:``), see docs/schedulers.md.
"""

from __future__ import annotations

import os
import sys

from rkt import APPC_VERSION, RKT_COMPAT_VERSION, __version__

TYPE_CHECKING = False  # not typing's: see rkt.cli.main
if TYPE_CHECKING:
    import argparse
    from typing import IO

    from rkt.cli.context import GlobalOptions, RktArgumentParser


def print_version(out: IO[str]) -> None:
    machine = os.uname().machine
    python = f"{sys.implementation.name} {sys.version.split()[0]}"
    out.write(
        f"rkt Version: {RKT_COMPAT_VERSION}\nappc Version: {APPC_VERSION}\n"
        f"rkt-python Version: {__version__}\n"
        f"Python Version: {python}\nOS/Arch: {sys.platform}/{machine}\n"
    )


def add_arguments(command: str, parser: RktArgumentParser) -> None:
    del command, parser  # no flags of its own


def run(command: str, options: GlobalOptions, args: argparse.Namespace) -> int:
    del command, args
    print_version(options.stdout)
    return 0
