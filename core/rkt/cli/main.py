"""The ``rkt`` command: global flags, command dispatch and error reporting.

Start-up is kept lean on purpose: this module imports only the standard library,
finds the command by name (any unambiguous prefix works, as with rkt 1.x), and
imports that one command module. ``rkt version`` and ``rkt help`` load no plugins.
"""

from __future__ import annotations

import os
import sys

# Not ``typing.TYPE_CHECKING``: importing typing (and the re, enum and collections it
# imports) is a third of a plain `rkt version`. Type checkers treat this name alike.
TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse
    from collections.abc import Sequence
    from typing import NoReturn, TextIO

    from rkt.cli.context import RktArgumentParser

#: command name -> (module, one-line summary). Nested commands (``rkt image list``)
#: are dispatched by their group module.
COMMANDS: dict[str, tuple[str, str]] = {
    "api-service": ("rkt.cli.api_service", "Run the API service (read-only gRPC, v1alpha)"),
    "cat-manifest": ("rkt.cli.pod_cmds", "Inspect and print the pod manifest"),
    "config": ("rkt.cli.config_cmd", "Print the merged configuration"),
    "enter": ("rkt.cli.pod_cmds", "Enter the namespaces of an app within a rkt pod"),
    "export": ("rkt.cli.pod_cmds", "Export an app from an exited pod to an ACI file"),
    "fetch": ("rkt.cli.fetch", "Fetch image(s) and store them in the local store"),
    "gc": ("rkt.cli.pod_cmds", "Garbage collect rkt pods no longer in use"),
    "help": ("rkt.cli.main", "Help about any command"),
    "image": ("rkt.cli.image", "Operate on image(s) in the local store"),
    "install": ("rkt.cli.install", "Create the rkt data and config directories"),
    "list": ("rkt.cli.pod_cmds", "List pods"),
    "metadata-service": ("rkt.cli.metadata_service", "Run the appc metadata service"),
    "prepare": ("rkt.cli.run", "Prepare to run image(s) in a pod"),
    "rm": ("rkt.cli.pod_cmds", "Remove all files and resources associated with exited pods"),
    "run": ("rkt.cli.run", "Run image(s) in a pod"),
    "run-prepared": ("rkt.cli.run", "Run a prepared pod"),
    "status": ("rkt.cli.pod_cmds", "Check the status of a rkt pod"),
    "stop": ("rkt.cli.pod_cmds", "Stop a pod"),
    "trust": ("rkt.cli.trust", "Trust a key for image verification"),
    "version": ("rkt.cli.version", "Print the version and exit"),
}

USAGE = "rkt [global flags] COMMAND [flags] [args]"


def _root_parser() -> RktArgumentParser:
    """The parser of what comes before the command; built once (a parser is
    reusable, and building one costs a formatter for each flag)."""
    global _ROOT_PARSER
    if _ROOT_PARSER is not None:
        return _ROOT_PARSER
    import argparse

    from rkt.cli.context import RktArgumentParser, add_global_flags

    parser = RktArgumentParser(prog="rkt", usage=USAGE, add_help=False)
    add_global_flags(parser, top_level=True)
    parser.add_argument("-h", "--help", action="store_true", dest="help")
    parser.add_argument("command", nargs="?")
    parser.add_argument("args", nargs=argparse.REMAINDER)
    _ROOT_PARSER = parser
    return parser


_ROOT_PARSER: RktArgumentParser | None = None


def resolve_command(name: str) -> str:
    """Return the full command name for ``name`` or one of its unambiguous prefixes."""
    from rkt.errors import UsageError

    if name in COMMANDS:
        return name
    matches = sorted(c for c in COMMANDS if c.startswith(name))
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise UsageError(f"ambiguous command {name!r}: could be {', '.join(matches)}")
    raise UsageError(f"unknown command {name!r}; see 'rkt help'")


def print_help(stream: TextIO | None = None) -> None:
    out = stream or sys.stdout
    width = max(len(c) for c in COMMANDS)
    lines = [
        "rkt: an App Container (appc) runtime",
        "",
        f"Usage:\n  {USAGE}",
        "",
        "Commands:",
        *(f"  {name:<{width}}  {summary}" for name, (_, summary) in sorted(COMMANDS.items())),
        "",
        "Global flags:",
        "  --debug                    print debugging information and tracebacks",
        "  --dir=DIR                  rkt data directory (default /var/lib/rkt)",
        "  --local-config=DIR         local configuration directory (default /etc/rkt)",
        "  --system-config=DIR        system configuration directory (default /usr/lib/rkt)",
        "  --user-config=DIR          user configuration directory",
        "  --insecure-options=OPTS    comma-separated: none,image,tls,http,pubkey,"
        "capabilities,paths,seccomp,all-fetch,all-run,all",
        "  --insecure-skip-verify     same as --insecure-options=image",
        "  --trust-keys-from-https    automatically trust keys fetched over https",
        "",
        "Use 'rkt help COMMAND' or 'rkt COMMAND --help' for more about a command.",
    ]
    print("\n".join(lines), file=out)


def _fail(message: str, code: int, debug: bool) -> NoReturn:
    if debug:
        import traceback

        traceback.print_exc()
    print(f"rkt: {one_line(message)}", file=sys.stderr)
    raise SystemExit(code)


def one_line(message: str) -> str:
    """``message`` with control characters escaped: what a user typed (a newline in a
    flag's value) must not break the one-line error or play tricks on a terminal."""
    if message.isprintable():
        return message
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in message)


def _log_to_stderr() -> None:
    """``--debug``: the core's and plugins' diagnostic log lines go to stderr.

    Library code only logs (``LOG.debug``); this is the one place that decides
    where log lines go, so an embedding program keeps control of its own logging.
    """
    import logging

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("rkt: debug: %(name)s: %(message)s"))
    for name in ("rkt", "rkt_plugins", "rkt_stage1_nspawn", "rkt_stage1_kvm",
                 "rkt_stage1_oci"):
        logger = logging.getLogger(name)
        logger.setLevel(logging.DEBUG)
        logger.addHandler(handler)


def main(argv: Sequence[str] | None = None, *, process_exits: bool = False) -> NoReturn:
    """Run the ``rkt`` command ``argv``; raises SystemExit with its exit code.

    ``process_exits``: the caller ends the process right after (the ``rkt`` script),
    see :attr:`rkt.cli.context.GlobalOptions.process_exits`.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if len(argv) == 1 and argv[0] and "version".startswith(argv[0]):
        # The fast path for a plain `rkt version`, which schedulers run every few
        # seconds: no argument parser, no option objects.
        from rkt.cli.version import print_version

        print_version(sys.stdout)
        raise SystemExit(0)
    debug = any(a == "--debug" or a.startswith("--debug=t") for a in argv)
    try:
        code = _dispatch(_root_parser().parse_args(argv), argv, process_exits)
    except KeyboardInterrupt as exc:
        # Ctrl+C, or rkt.errors.PodInterrupted (a stop signal to a pod command)
        _fail(str(exc) or "interrupted", getattr(exc, "exit_code", 130), debug)
    except SystemExit:
        raise
    except BrokenPipeError:
        # `rkt image list | head`: the reader left; that is not an error of ours.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        raise SystemExit(0) from None
    except Exception as exc:
        from rkt.errors import RktError

        if isinstance(exc, RktError):
            _fail(str(exc), exc.exit_code, debug)
        _fail(f"internal error: {type(exc).__name__}: {exc}", 254, debug)
    raise SystemExit(code)


def _dispatch(ns: argparse.Namespace, argv: list[str], process_exits: bool = False) -> int:
    if ns.command is None:
        print_help(sys.stdout if ns.help else sys.stderr)
        return 0 if ns.help else 2
    command = resolve_command(ns.command)
    if command == "help":
        rest = [a for a in ns.args if not a.startswith("-")]
        if not rest:
            print_help()
            return 0
        return _dispatch(_root_parser().parse_args([rest[0], "--help"]), [rest[0], "--help"])
    # Everything after the command name is parsed by the command's own parser, which
    # also knows the global flags (rkt's are "persistent": allowed after the command).
    position = argv.index(ns.command)
    before, after = argv[:position], argv[position + 1 :]
    import importlib

    from rkt.cli.context import GlobalOptions, RktArgumentParser, add_global_flags

    module = importlib.import_module(COMMANDS[command][0])
    parser = RktArgumentParser(prog=f"rkt {command}", description=COMMANDS[command][1])
    add_global_flags(parser, top_level=False)
    module.add_arguments(command, parser)
    # Commands that take images with per-image flags split those off first.
    splitter = getattr(module, "split_arguments", None)
    extra: object = None
    if splitter is not None and "-h" not in after and "--help" not in after:
        after, extra = splitter(command, parser, after)
    args = parser.parse_args(after)
    args.split = extra
    options = GlobalOptions.from_namespaces(_root_parser().parse_args(before), args)
    options.process_exits = process_exits
    if options.debug:
        _log_to_stderr()
    result: int = module.run(command, options, args)
    return result
