"""What every command receives: the global options and lazily built services.

Nothing here imports a plugin, pydantic or the store at module import time; the
services (plugin manager, store, keystore, config) are built on first use so that
cheap commands stay cheap.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rkt.config import Config
    from rkt.facade import Plugins
    from rkt.keystore import TrustedKeystore
    from rkt.store import ImageStore

DEFAULT_DATA_DIR = "/var/lib/rkt"
DEFAULT_LOCAL_CONFIG = "/etc/rkt"
DEFAULT_SYSTEM_CONFIG = "/usr/lib/rkt"

#: rkt 1.x's ``--insecure-options`` values and what the composite ones expand to.
INSECURE_OPTIONS: dict[str, frozenset[str]] = {
    "none": frozenset(),
    "image": frozenset({"image"}),
    "tls": frozenset({"tls"}),
    "http": frozenset({"http"}),
    "pubkey": frozenset({"pubkey"}),
    "capabilities": frozenset({"capabilities"}),
    "paths": frozenset({"paths"}),
    "seccomp": frozenset({"seccomp"}),
    "ondisk": frozenset(),  # accepted and ignored, as rkt 1.26+ does
    "all-fetch": frozenset({"image", "tls", "http", "pubkey"}),
    "all-run": frozenset({"capabilities", "paths", "seccomp"}),
    "all": frozenset(
        {"image", "tls", "http", "pubkey", "capabilities", "paths", "seccomp"}
    ),
}

_TRUE = {"1", "t", "true", "yes", "y", "on"}
_FALSE = {"0", "f", "false", "no", "n", "off"}


def parse_bool(value: str) -> bool:
    lowered = value.lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise argparse.ArgumentTypeError(f"invalid boolean value {value!r}")


class RktArgumentParser(argparse.ArgumentParser):
    """argparse with rkt's conventions.

    Boolean flags accept ``--flag``, ``--flag=true`` and ``--flag=false`` (Nomad and
    kubelet pass the explicit forms), and a usage error is one line raised as
    :class:`rkt.errors.UsageError` rather than argparse's usage dump and exit 2.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
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


@dataclass
class GlobalOptions:
    """The global flags after parsing, plus the services commands share."""

    data_dir: Path
    local_config: Path
    system_config: Path
    user_config: Path | None
    debug: bool = False
    insecure: frozenset[str] = frozenset()
    trust_keys_from_https: bool = False
    data_dir_explicit: bool = False
    stdout: IO[str] = field(default_factory=lambda: sys.stdout)
    stderr: IO[str] = field(default_factory=lambda: sys.stderr)

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
            data_dir=_absolute_dir("--dir", merged.get("dir", DEFAULT_DATA_DIR)),
            data_dir_explicit="dir" in merged,
            local_config=_absolute_dir(
                "--local-config", merged.get("local_config", DEFAULT_LOCAL_CONFIG)
            ),
            system_config=_absolute_dir(
                "--system-config", merged.get("system_config", DEFAULT_SYSTEM_CONFIG)
            ),
            user_config=_absolute_dir("--user-config", user_config) if user_config else None,
            debug=bool(merged.get("debug", False)),
            insecure=insecure,
            trust_keys_from_https=bool(merged.get("trust_keys_from_https", False)),
        )

    def is_insecure(self, option: str) -> bool:
        return option in self.insecure

    # -- user-facing output ------------------------------------------------------
    def info(self, message: str) -> None:
        """A progress or status line for the user, on stderr (stdout is for results)."""
        print(message, file=self.stderr, flush=True)

    def warn(self, message: str) -> None:
        print(f"rkt: warning: {message}", file=self.stderr, flush=True)

    def debug_log(self, message: str) -> None:
        if self.debug:
            print(f"rkt: debug: {message}", file=self.stderr, flush=True)

    # -- services, built on first use -------------------------------------------
    @cached_property
    def config(self) -> Config:
        from rkt.config import Config

        return Config.load(self.system_config, self.local_config, self.user_config)

    @cached_property
    def plugins(self) -> Plugins:
        from rkt.facade import Plugins

        return Plugins.load()

    @cached_property
    def store(self) -> ImageStore:
        return self.plugins.open_store(self.resolved_data_dir)

    @cached_property
    def keystore(self) -> TrustedKeystore:
        from rkt.keystore import TrustedKeystore

        return TrustedKeystore(self.system_config, self.local_config)

    @property
    def resolved_data_dir(self) -> Path:
        """``--dir`` if given, else ``paths.d``'s ``data``, else the default."""
        if self.data_dir_explicit:
            return self.data_dir
        configured = self.config.paths.get("data")
        return Path(configured) if configured else self.data_dir
