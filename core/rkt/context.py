"""The core context: the services every part of rkt below the command line uses.

Fetchers, the fetch pipeline, stage1 selection and pod code receive a
:class:`Runtime`, never the command line's options: the core does not know who
called it. The ``rkt`` command builds one from its flags (in its ``cli`` package);
an embedding program or a test builds one directly::

    runtime = Runtime(data_dir_override=Path("/tmp/rkt"), local_config=Path("/tmp/etc-rkt"))
    info = fetch_image(runtime, "/images/hello.aci")

Services (the config, the plugins, the store, the keystore) are built on first
use, so that what a command does not need costs nothing. User-facing output and
questions go through a narrow :class:`Reporter`, which the CLI implements for a
terminal.
"""

from __future__ import annotations

import sys
from functools import cached_property
from pathlib import Path

# Neither typing nor dataclasses at run time: every command imports this module, and
# those two (with the inspect, ast and dis that dataclasses imports) cost more than
# a `rkt status`. Type checkers treat this TYPE_CHECKING like typing's.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import IO, Protocol

    from rkt.config import Config
    from rkt.facade import Plugins
    from rkt.keystore import KeyDescription, TrustedKeystore
    from rkt.store import ImageStore
else:
    Protocol = object  # Reporter is a protocol for type checkers only

DEFAULT_DATA_DIR = Path("/var/lib/rkt")
DEFAULT_LOCAL_CONFIG = Path("/etc/rkt")
DEFAULT_SYSTEM_CONFIG = Path("/usr/lib/rkt")
#: the store used when ``paths.d`` names none (``"store": "NAME"``)
DEFAULT_STORE = "cas"

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


class Reporter(Protocol):
    """How the core talks to the user: progress and status lines, warnings, questions.

    Results (an image ID, a table) are the caller's to print; the reporter carries
    what happens along the way, on the diagnostic stream.
    """

    #: where progress bars draw (only when it is a terminal)
    stderr: IO[str]

    def info(self, message: str) -> None:
        """A progress or status line for the user."""
        ...

    def warn(self, message: str) -> None:
        """Something the user should know that does not stop the command."""
        ...

    def can_ask(self) -> bool:
        """Whether somebody is there to answer :meth:`review_key`."""
        ...

    def review_key(self, prefix: str | None, origin: str, key: KeyDescription) -> bool:
        """Show a key's fingerprint and ask whether to trust it for ``prefix``.

        ``prefix`` is None for a root key (trusted for every image). Returns the
        answer; raises :class:`rkt.errors.UsageError` when nobody can answer.
        """
        ...


class StreamReporter:
    """A reporter that writes lines to a stream and cannot ask questions.

    What an embedding program or a test uses; the ``rkt`` command's reporter
    (``TerminalReporter``, in the ``cli`` package) adds the terminal dialogue.
    """

    def __init__(self, stderr: IO[str] | None = None) -> None:
        self.stderr: IO[str] = stderr if stderr is not None else sys.stderr

    def info(self, message: str) -> None:
        print(message, file=self.stderr, flush=True)

    def warn(self, message: str) -> None:
        print(f"rkt: warning: {message}", file=self.stderr, flush=True)

    def can_ask(self) -> bool:
        return False

    def review_key(self, prefix: str | None, origin: str, key: KeyDescription) -> bool:
        from rkt.errors import UsageError

        raise UsageError(f'unable to ask user to review the fingerprint of "{origin}"')


class Runtime:
    """The directories and policy rkt runs with, and the services built from them."""

    def __init__(
        self,
        data_dir_override: Path | None = None,
        local_config: Path = DEFAULT_LOCAL_CONFIG,
        system_config: Path = DEFAULT_SYSTEM_CONFIG,
        user_config: Path | None = None,
        insecure: frozenset[str] = frozenset(),
        trust_keys_from_https: bool = False,
        debug: bool = False,
        reporter: Reporter | None = None,
    ) -> None:
        #: ``--dir``; None means ``paths.d``'s ``data``, else :data:`DEFAULT_DATA_DIR`
        self.data_dir_override = data_dir_override
        self.local_config = local_config
        self.system_config = system_config
        self.user_config = user_config
        #: the ``--insecure-options`` in force, expanded (see :data:`INSECURE_OPTIONS`)
        self.insecure = insecure
        #: trust keys found by discovery over verified https without asking
        self.trust_keys_from_https = trust_keys_from_https
        self.debug = debug
        self.reporter: Reporter = reporter if reporter is not None else StreamReporter()

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(data_dir_override={self.data_dir_override!r}, "
                f"local_config={self.local_config!r}, system_config={self.system_config!r}, "
                f"user_config={self.user_config!r}, insecure={self.insecure!r}, "
                f"debug={self.debug!r})")

    def is_insecure(self, option: str) -> bool:
        return option in self.insecure

    # -- services, built on first use -------------------------------------------
    @cached_property
    def config(self) -> Config:
        from rkt.config import Config

        config = Config.load(self.system_config, self.local_config, self.user_config)
        for path in config.exposed_secrets:
            self.reporter.warn(f"{path} holds credentials and is readable by other users; "
                               f"make it private: chmod o-rwx {path}")
        return config

    @cached_property
    def data_dir(self) -> Path:
        """``--dir`` if given, else ``paths.d``'s ``data``, else the default."""
        if self.data_dir_override is not None:
            return self.data_dir_override
        configured = self.config.paths.get("data")
        return Path(configured) if configured else DEFAULT_DATA_DIR

    @cached_property
    def plugins(self) -> Plugins:
        from rkt.facade import Plugins

        return Plugins.load()

    @cached_property
    def store(self) -> ImageStore:
        """The image store named by ``paths.d``'s ``store`` (default ``cas``)."""
        return self.plugins.open_store(self.data_dir, self.config.paths.get("store")
                                       or DEFAULT_STORE)

    @cached_property
    def keystore(self) -> TrustedKeystore:
        from rkt.keystore import TrustedKeystore

        return TrustedKeystore(self.system_config, self.local_config)
