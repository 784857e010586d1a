"""What every command receives: the core context built from the global flags.

:class:`GlobalOptions` is the core's :class:`rkt.context.Runtime` (services built
on first use, so cheap commands stay cheap) plus what only the command line has:
its output stream and the terminal dialogue (:class:`TerminalReporter`). The core
receives it as a ``Runtime`` and never imports this module.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from rkt.context import (
    DEFAULT_LOCAL_CONFIG,
    DEFAULT_SYSTEM_CONFIG,
    INSECURE_OPTIONS,
    Runtime,
    StreamReporter,
)

TYPE_CHECKING = False  # not typing's: see rkt.context
if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import IO, Any

    from rkt.keystore import KeyDescription

_TRUE = {"1", "t", "true", "yes", "y", "on"}
_FALSE = {"0", "f", "false", "no", "n", "off"}


def parse_bool(value: str) -> bool:
    lowered = value.lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise argparse.ArgumentTypeError(f"invalid boolean value {value!r}")


class HelpFormatter(argparse.HelpFormatter):
    """argparse's, finding the terminal's width as ``shutil.get_terminal_size``
    does but without importing shutil (and its bz2 and lzma): argparse builds a
    formatter for every ``add_argument``, so every command paid for it."""

    def __init__(self, prog: str, indent_increment: int = 2, max_help_position: int = 24,
                 width: int | None = None) -> None:
        if width is None:
            width = _terminal_columns() - 2
        super().__init__(prog, indent_increment, max_help_position, width)


def _terminal_columns() -> int:
    try:
        columns = int(os.environ["COLUMNS"])
    except (KeyError, ValueError):
        columns = 0
    if columns <= 0:
        try:
            columns = os.get_terminal_size(sys.__stdout__.fileno()).columns  # type: ignore[union-attr]
        except (AttributeError, ValueError, OSError):
            columns = 0
    return columns or 80


class RktArgumentParser(argparse.ArgumentParser):
    """argparse with rkt's conventions.

    Boolean flags accept ``--flag``, ``--flag=true`` and ``--flag=false`` (Nomad and
    kubelet pass the explicit forms), and a usage error is one line raised as
    :class:`rkt.errors.UsageError` rather than argparse's usage dump and exit 2.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)
        self._bool_flags: set[str] = set()

    def add_bool_flag(self, *names: str, help: str, dest: str | None = None) -> None:
        self._bool_flags.update(names)
        self.add_argument(
            *names, nargs="?", const=True, default=False, type=parse_bool,
            metavar="BOOL", help=help, dest=dest,
        )

    def _expand_bools(self, args: Sequence[str]) -> list[str]:
        out: list[str] = []
        for index, arg in enumerate(args):
            if arg == "--":
                return out + list(args[index:])
            out.append(f"{arg}=true" if arg in self._bool_flags else arg)
        return out

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        expanded = self._expand_bools(sys.argv[1:] if args is None else args)
        return super().parse_known_args(expanded, namespace)

    def error(self, message: str) -> Any:
        from rkt.errors import UsageError

        where = "" if self.prog == "rkt" else f"{self.prog.removeprefix('rkt ')}: "
        raise UsageError(f"{where}{message}")


def add_global_flags(parser: RktArgumentParser, *, top_level: bool) -> None:
    """Add rkt's persistent flags.

    On a command's parser the defaults are suppressed, so a flag given before the
    command is not overwritten by the default of the same flag after it.
    """
    default: Any = None if top_level else argparse.SUPPRESS
    group = parser.add_argument_group("global flags")
    for name in ("--dir", "--local-config", "--system-config", "--user-config"):
        group.add_argument(name, metavar="DIR", default=default)
    group.add_argument("--insecure-options", default=default, metavar="OPTS")
    for name in ("--debug", "--insecure-skip-verify", "--trust-keys-from-https"):
        parser._bool_flags.add(name)
        group.add_argument(
            name, nargs="?", const=True, type=parse_bool, default=default, metavar="BOOL"
        )


def _absolute_dir(flag: str, value: str) -> Path:
    from rkt.errors import UsageError

    if value == "":
        raise UsageError(f"{flag} must not be empty")
    return Path(os.path.abspath(value))


def parse_insecure_options(value: str | None) -> frozenset[str]:
    from rkt.errors import UsageError

    if not value:
        return frozenset()
    chosen: set[str] = set()
    for item in value.split(","):
        item = item.strip()
        if item not in INSECURE_OPTIONS:
            raise UsageError(
                f"unknown insecure option {item!r}; valid: {', '.join(INSECURE_OPTIONS)}"
            )
        chosen |= INSECURE_OPTIONS[item]
    return frozenset(chosen)


class TerminalReporter(StreamReporter):
    """The ``rkt`` command's reporter: lines on stderr, and the key review dialogue
    (rkt 1.x's reviewKey) when stdin and stderr are a terminal."""

    def can_ask(self) -> bool:
        return sys.stdin.isatty() and self.stderr.isatty()

    def review_key(self, prefix: str | None, origin: str, key: KeyDescription) -> bool:
        self.show_key(prefix, origin, key)
        return self._ask_yes_no()

    def show_key(self, prefix: str | None, origin: str, key: KeyDescription) -> None:
        """The fingerprint, subkeys and user IDs of a key about to be trusted."""
        from datetime import UTC, datetime

        from rkt.keystore import format_fingerprint

        lines = [
            f'Prefix: "{prefix}"' if prefix is not None
            else 'Prefix: "" (root key: every image)',
            f'Key: "{origin}"',
            f"GPG key fingerprint is: {format_fingerprint(key.fingerprint)}",
            *(f"\tSubkey fingerprint: {format_fingerprint(fp)}"
              for fp in key.subkey_fingerprints),
            *(f"\t{uid}" for uid in key.user_ids),
        ]
        if key.revoked:
            lines.append("\tWARNING: this key has been revoked by its owner")
        if key.expires is not None and key.expires <= datetime.now(UTC):
            lines.append(f"\tWARNING: this key expired on {key.expires:%Y-%m-%d}")
        for line in lines:
            self.info(line)

    def _ask_yes_no(self) -> bool:
        """Ask until the answer is exactly ``yes`` or ``no``."""
        from rkt.errors import UsageError

        interactive = sys.stdin.isatty()
        while True:
            print(
                "Are you sure you want to trust this key (yes/no)?",
                end=" " if interactive else "\n", file=self.stderr, flush=True,
            )
            line = sys.stdin.readline()
            if line == "":
                raise UsageError("unable to ask user to review fingerprint: no input")
            answer = line.removesuffix("\n").removesuffix("\r")
            if answer == "yes":
                return True
            if answer == "no":
                return False
            self.info("Please enter 'yes' or 'no'")


class GlobalOptions(Runtime):
    """The global flags after parsing: the core context plus the command's output."""

    reporter: TerminalReporter
    #: the process ends when the command returns (the ``rkt`` script, not a program or
    #: test calling ``main``): a pod command may leave undone what only matters to a
    #: process that goes on (moving out of the pod's cgroups)
    process_exits = False

    def __init__(self, *args: Any, stdout: IO[str] | None = None,
                 reporter: TerminalReporter | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.reporter = reporter if reporter is not None else TerminalReporter()
        self.stdout: IO[str] = stdout if stdout is not None else sys.stdout

    @classmethod
    def from_namespaces(cls, *namespaces: argparse.Namespace) -> GlobalOptions:
        """Merge the global flags given before and after the command name."""
        merged: dict[str, Any] = {}
        for ns in namespaces:
            for key in (
                "dir", "local_config", "system_config", "user_config", "debug",
                "insecure_options", "insecure_skip_verify", "trust_keys_from_https",
            ):
                value = getattr(ns, key, None)
                if value is not None:
                    merged[key] = value
        insecure = parse_insecure_options(merged.get("insecure_options"))
        if merged.get("insecure_skip_verify"):
            insecure |= {"image"}
        user_config = merged.get("user_config")
        return cls(
            data_dir_override=_absolute_dir("--dir", merged["dir"]) if "dir" in merged
            else None,
            local_config=_absolute_dir(
                "--local-config", merged.get("local_config", str(DEFAULT_LOCAL_CONFIG))
            ),
            system_config=_absolute_dir(
                "--system-config", merged.get("system_config", str(DEFAULT_SYSTEM_CONFIG))
            ),
            user_config=_absolute_dir("--user-config", user_config) if user_config else None,
            debug=bool(merged.get("debug", False)),
            insecure=insecure,
            trust_keys_from_https=bool(merged.get("trust_keys_from_https", False)),
        )

    @property
    def stderr(self) -> IO[str]:
        return self.reporter.stderr

    def info(self, message: str) -> None:
        self.reporter.info(message)

    def warn(self, message: str) -> None:
        self.reporter.warn(message)
