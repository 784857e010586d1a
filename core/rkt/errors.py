"""The one place where rkt's user-facing errors are defined.

Every error a user can cause derives from :class:`RktError`. The command line
catches it, prints ``rkt: <message>`` on one line of stderr and exits with
``exit_code`` (254, as rkt 1.x did); a traceback appears only under ``--debug``.
Library errors are translated at the boundary (``raise FetchError(...) from exc``)
so that no foreign exception reaches the user.

::

    RktError
    ├── UsageError              bad flags or arguments
    ├── ConfigError             a config file (auth.d, paths.d, stage1.d, ...) is invalid
    ├── PluginError             a plugin failed to load, or two claim the same name
    ├── ImageError              anything wrong with an image
    │   ├── ArchiveError        not an ACI: bad compression, bad tar, extra entries, bombs
    │   │   └── UnsafeArchiveError   an entry would escape the rootfs
    │   ├── ManifestError       manifest is not JSON or fails the appc schema
    │   └── ImageNotFoundError  no such image in the store
    ├── VerificationError       signature missing, bad, or by an untrusted key
    │   └── UnknownSignerError  made by a key that is not trusted for anything
    ├── KeystoreError           a key could not be read, parsed or stored
    ├── FetchError              an image or signature could not be retrieved
    ├── StoreError              the local store is unusable (disk full, corrupt index)
    ├── Stage1Error             the stage1 image or backend is unusable
    ├── NetworkError            a pod network could not be set up or torn down (CNI)
    ├── PodError                pod lookup or lifecycle failures
    │   └── PodNotFoundError    unknown or ambiguous UUID
    └── MetadataError           the metadata service cannot start, or cannot be reached

    KeyboardInterrupt
    └── PodInterrupted          SIGINT, SIGTERM or SIGHUP before the pod's stage1 started

:class:`PodInterrupted` is a ``KeyboardInterrupt``, as Ctrl+C is: it must unwind
through any ``except Exception`` (a plugin loader, a fetcher) so that every
cleanup on the way runs; the CLI prints it as one line and exits 128 + N.
"""

from __future__ import annotations


class RktError(Exception):
    """Base of every error rkt reports to its user.

    ``str(error)`` is the whole message: one line, no trailing period, naming the
    thing that was wrong (a file, a field, a key, a URL).
    """

    exit_code: int = 254


class UsageError(RktError):
    """The command line was wrong: an unknown flag, a missing argument, a conflict."""


class ConfigError(RktError):
    """A configuration file is invalid; the message names the file."""


class PluginError(RktError):
    """A plugin could not be imported or registered; the message names the plugin."""


class ImageError(RktError):
    """Something is wrong with an image."""


class ArchiveError(ImageError):
    """The file is not a valid ACI archive (compression, tar structure, layout, size)."""


class UnsafeArchiveError(ArchiveError):
    """An archive entry would be written outside the directory it is extracted into."""


class ManifestError(ImageError):
    """An image or pod manifest is not JSON or does not follow the appc schema."""

    def __init__(self, message: str, *, field: str = "") -> None:
        super().__init__(message)
        #: the offending field (``app.ports[0].port``); empty when the document as a
        #: whole is wrong (not JSON, not an object)
        self.field = field


class ImageNotFoundError(ImageError):
    """No image in the store matches the given ID, prefix or name."""


class VerificationError(RktError):
    """A signature is missing, malformed, over other bytes, or made by an untrusted key."""


class UnknownSignerError(VerificationError):
    """The signature was made by a key that is trusted for no prefix at all."""


class KeystoreError(RktError):
    """A trusted key could not be read, parsed or written."""


class FetchError(RktError):
    """An image, signature or key could not be retrieved from its source."""


class StoreError(RktError):
    """The local image store failed (for example the disk is full)."""


class Stage1Error(RktError):
    """The stage1 image is missing or unusable, or names a backend that is not installed."""


class NetworkError(RktError):
    """A pod's network could not be set up or torn down: an unknown or malformed
    network, a CNI plugin that failed, hung or answered garbage, a port in use."""


class PodError(RktError):
    """A pod could not be found, prepared, run, entered or removed."""


class PodNotFoundError(PodError):
    """No pod, or more than one pod, matches the given UUID or UUID prefix."""


class MetadataError(RktError):
    """The metadata service could not start, or a pod could not be registered with it."""


class PodInterrupted(KeyboardInterrupt):
    """SIGINT, SIGTERM or SIGHUP arrived before the pod's stage1 started (exit 128+N)."""

    def __init__(self, signum: int, message: str) -> None:
        super().__init__(message)
        self.signum = signum
        self.exit_code = 128 + signum
