"""The image tools installed with rkt: ``actool`` and ``docker2aci``.

They are the App Container tools a publisher uses (docs/publishing.md), built on the
runtime's own code so that what they accept is what ``rkt`` accepts: the schema
(:mod:`rkt.schema`), the archive reader and writer (:mod:`rkt.aci`), discovery and
the Docker conversion through the installed plugins (:func:`rkt.fetching.discover_endpoints`,
the fetchers of ``docker://`` and the archive kinds).

* :mod:`rkt.tools.actool`: ``build``, ``validate``, ``cat-manifest``,
  ``patch-manifest``, ``discover`` (the command line);
* :mod:`rkt.tools.validation`: what ``actool validate`` checks, and the appc rule
  each failure breaks;
* :mod:`rkt.tools.patch`: ``patch-manifest``'s flags applied to a manifest, and the
  archive rewritten around it;
* :mod:`rkt.tools.docker2aci`: Docker and OCI images to ACI files.

Like ``rkt``, each tool prints one line per error (``actool: ...``) with a traceback
only under ``--debug``; unlike ``rkt`` (254), they exit 1 on bad input, as appc's did.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, NoReturn, TextIO

if TYPE_CHECKING:
    from rkt.keystore import KeyDescription

#: exit status for every user error (appc's tools exit 1)
EXIT_INVALID = 1
EXIT_INTERNAL = 2


class ToolReporter:
    """A :class:`rkt.context.Reporter` that speaks with the tool's name and never asks."""

    def __init__(self, tool: str, stderr: TextIO | None = None) -> None:
        self.tool = tool
        self.stderr = stderr or sys.stderr

    def info(self, message: str) -> None:
        # the fetchers speak as "rkt: ..."; here the tool is speaking
        print(f"{self.tool}: {message.removeprefix('rkt: ')}", file=self.stderr, flush=True)

    def warn(self, message: str) -> None:
        print(f"{self.tool}: warning: {message}", file=self.stderr, flush=True)

    def can_ask(self) -> bool:
        return False

    def review_key(self, prefix: str | None, origin: str, key: KeyDescription) -> bool:
        return False


def run_tool(tool: str, command: Callable[[list[str]], int],
             argv: Sequence[str] | None) -> NoReturn:
    """Run ``command`` with the arguments; turn every error into one line and an exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    # accepted anywhere on the line, before or after the subcommand
    debug = "--debug" in args
    args = [arg for arg in args if arg != "--debug"]
    if debug:
        import logging

        logging.basicConfig(level=logging.DEBUG, format=f"{tool}: debug: %(name)s: %(message)s")
    try:
        sys.exit(command(args))
    except KeyboardInterrupt:
        _fail(tool, "interrupted", 130, debug)
    except BrokenPipeError:
        sys.exit(EXIT_INVALID)
    except Exception as exc:  # the one place errors become a line
        from rkt.errors import RktError

        if isinstance(exc, RktError):
            _fail(tool, str(exc), EXIT_INVALID, debug)
        _fail(tool, f"internal error: {type(exc).__name__}: {exc}", EXIT_INTERNAL, debug)


def _fail(tool: str, message: str, code: int, debug: bool) -> NoReturn:
    if debug:
        import traceback

        traceback.print_exc()
    print(f"{tool}: {message}", file=sys.stderr, flush=True)
    sys.exit(code)
