"""The rules a tar entry obeys when it is applied to a tree, written once.

Two appliers follow them: :func:`rkt.aci.extract.extract_tar` writes entries into a
directory through file descriptors, and the Docker plugin's squash
(``rkt_plugins.docker.squash``) applies layers' headers to a tree in memory. This
module decides what an entry means and where it may reach; each applier only does
what it is told to its own kind of tree. A differential test
(``tests/plugins/docker/test_squash.py``) checks that the two trees agree.

The rules, per kind of hostile input:

* **Names** that are absolute or contain a ``..`` component are refused
  (:func:`~rkt.aci.tarstream.split_name`), as GNU tar refuses them. Entries outside
  the archive's prefix (``rootfs/`` for an ACI) are skipped; the entry for the prefix
  itself describes the root and must be a directory.
* **Parent directories** resolve inside the root as the kernel would resolve them if
  the root were ``/`` (chroot semantics, like ``openat2(RESOLVE_IN_ROOT)``): a
  symlink on the way is followed, an absolute target restarts at the root, ``..``
  never climbs above it, at most :data:`MAX_SYMLINK_HOPS` symlinks,
  :data:`MAX_WALK_STEPS` components and :data:`MAX_DEPTH` nested directories
  (:class:`RootedWalk`). Missing parents are made (mode 0755); a parent that is
  neither a directory nor a symlink is an error.
* **An entry over an existing path** replaces it, never following it (a symlink to a
  directory is replaced: appc-spec/ace.md); only a directory over a directory
  merges. Directory metadata is applied when the archive ends, the last entry for a
  path winning, to whatever directory is then at that path (:meth:`ArchivePass.defer`).
* **Symlinks** are made as written, and never followed when they are made; an empty
  target is an error.
* **Hard links** must name an entry under the prefix (:meth:`ArchivePass.link_target`),
  resolved like a parent but with its last component not followed; the target must
  exist and not be a directory. A link to itself changes nothing. The link shares the
  target's inode and gets none of the entry's metadata (CVE-2021-32760).
* **Whiteouts** (Docker/OCI layers only): ``.wh.NAME`` removes NAME, never following
  it, below a parent resolved like any parent; ``.wh..wh..opq`` empties its directory
  of what earlier archives put there; other ``.wh..wh.`` names are AUFS metadata and
  are ignored, as is anything below them; ``.wh.``, ``.wh..`` and ``.wh...`` are
  refused.
* **Extended attributes**: only ``user.*`` and ``security.capability`` are kept
  (:func:`kept_xattrs`).

Device nodes, fifos, setuid/setgid bits and owners are kept as the entry says; the
extractor makes device nodes and fifos only when running as root.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable, Iterator
from typing import Final

from rkt.aci.tarstream import DIRECTORY, TarEntry, quote_name, split_name
from rkt.errors import ArchiveError, UnsafeArchiveError

LOG = logging.getLogger(__name__)

#: Symlinks followed while resolving one path (the kernel's limit too).
MAX_SYMLINK_HOPS: Final = 40
#: Deeper trees break recursive removal (shutil.rmtree) and no real image needs them.
MAX_DEPTH: Final = 512
#: Components walked while resolving one path, symlink targets included.
MAX_WALK_STEPS: Final = 8192
#: The mode of a missing parent directory made on the way to an entry.
IMPLICIT_DIR_MODE: Final = 0o755
#: A directory entry's mode until its own metadata is applied at the end.
PENDING_DIR_MODE: Final = 0o700

WHITEOUT_PREFIX: Final = ".wh."
WHITEOUT_META_PREFIX: Final = ".wh..wh."
WHITEOUT_OPAQUE: Final = ".wh..wh..opq"
#: File capabilities; every other ``security.*``, ``trusted.*`` or ``system.*``
#: attribute is the host's business, not the image's.
KEPT_XATTR: Final = "security.capability"
KEPT_XATTR_PREFIX: Final = "user."

#: What :class:`RootedWalk` gives to go to the parent directory (never the root).
UP: Final = ".."
#: What :class:`RootedWalk` gives to go (back) to the root.
ROOT: Final = "/"


class StepKind(enum.Enum):
    """What applying an entry does to the tree."""

    #: Make the entry at ``parent``/``name``, replacing what is there.
    MEMBER = "member"
    #: Remove ``name`` from ``parent`` if it is there, without following it.
    WHITEOUT = "whiteout"
    #: Remove from ``parent`` what earlier archives put there (:meth:`ArchivePass.earlier`).
    OPAQUE = "opaque"


class Step:
    """One entry's effect: a kind, the parent directory's components (relative to the
    root, resolved with :class:`RootedWalk`), and a name in it."""

    __slots__ = ("key", "kind", "name", "parent")

    def __init__(self, kind: StepKind, parent: list[str], name: str, key: str) -> None:
        self.kind = kind
        self.parent = parent
        #: the member's name, the whiteout's victim; "" for an opaque whiteout
        self.name = name
        #: ``parent/name`` joined, the path relative to the root (for an opaque
        #: whiteout, the directory it empties)
        self.key = key


class ArchivePass:
    """One archive applied to a tree: turns entries into :class:`Step` s, and remembers
    what the rules need until the archive ends.

    ``strip_prefix`` keeps only the entries below it; ``whiteouts`` applies Docker/OCI
    whiteout files instead of making them; ``keep`` (a path whitelist) may skip a
    member, given the entry and its key, before it counts as made by this archive.
    """

    def __init__(
        self,
        strip_prefix: str = "",
        *,
        whiteouts: bool = False,
        keep: Callable[[TarEntry, str], bool] | None = None,
    ) -> None:
        self.prefix = split_name(strip_prefix)
        self.whiteouts = whiteouts
        self.keep = keep
        #: directories whose metadata is applied when the archive ends
        self.deferred: dict[str, TarEntry] = {}
        #: keys of the members this archive made (for opaque whiteouts)
        self.unpacked: set[str] = set()

    def place(self, entry: TarEntry) -> Step | None:
        """What ``entry`` does to the tree; None when it does nothing now (outside the
        prefix, skipped, ignored, or the root's own entry, whose metadata is deferred).

        Raises :class:`~rkt.errors.UnsafeArchiveError` for a name that would escape.
        """
        parts = split_name(entry.name)
        prefix = self.prefix
        if prefix:
            plen = len(prefix)
            if parts[:plen] != prefix:
                return None
            parts = parts[plen:]
        if not parts:
            if entry.type != DIRECTORY:
                raise UnsafeArchiveError(
                    f"archive entry {entry.describe()} would replace the extraction root"
                )
            self.defer("", entry)
            return None
        key = "/".join(parts)
        name = parts.pop()
        if self.whiteouts:
            if name.startswith(WHITEOUT_PREFIX):
                return self._whiteout(entry, parts, name)
            if WHITEOUT_META_PREFIX in key and any(
                part.startswith(WHITEOUT_META_PREFIX) for part in parts
            ):
                LOG.debug("ignoring whiteout metadata entry %s", entry.describe())
                return None
        if self.keep is not None and not self.keep(entry, key):
            return None
        if self.whiteouts:
            self.unpacked.add(key)
        return Step(StepKind.MEMBER, parts, name, key)

    @staticmethod
    def _whiteout(entry: TarEntry, parent: list[str], name: str) -> Step | None:
        if name == WHITEOUT_OPAQUE:
            return Step(StepKind.OPAQUE, parent, "", "/".join(parent))
        if name.startswith(WHITEOUT_META_PREFIX):
            LOG.debug("ignoring whiteout metadata entry %s", entry.describe())
            return None
        victim = name[len(WHITEOUT_PREFIX) :]
        if victim in ("", ".", ".."):
            raise UnsafeArchiveError(f"invalid whiteout entry {entry.describe()}")
        return Step(StepKind.WHITEOUT, parent, victim, "/".join([*parent, victim]))

    def earlier(self, step: Step, names: list[str]) -> list[str]:
        """Of ``names`` in the directory of an opaque ``step``, those that no entry of
        this archive made: what the opaque whiteout removes."""
        base = step.key
        return [name for name in names if (f"{base}/{name}" if base else name) not in self.unpacked]

    def defer(self, key: str, entry: TarEntry) -> None:
        """Apply directory ``entry``'s metadata to ``key`` when the archive ends."""
        self.deferred.pop(key, None)  # the last entry for a path wins, in its place
        self.deferred[key] = entry

    def finished_dirs(self) -> Iterator[tuple[str, TarEntry]]:
        """The deferred directories, last first (children before their parents), for
        the applier to set metadata on whatever directory is then at each key."""
        return reversed(self.deferred.items())

    def link_target(self, entry: TarEntry, step: Step) -> list[str] | None:
        """The components (relative to the root) of the file a hard link ``entry``
        names; None for a link to itself. Raises if it names anything outside the tree.
        """
        try:
            target = split_name(entry.linkname)
        except UnsafeArchiveError:
            target = []
        plen = len(self.prefix)
        if len(target) <= plen or target[:plen] != self.prefix:
            raise UnsafeArchiveError(
                f"hard link {entry.describe()} points outside the extracted tree: "
                f"{quote_name(entry.linkname)}"
            )
        target = target[plen:]
        if target[-1] == step.name and target[:-1] == step.parent:
            return None  # a link to itself: the file is already there
        return target


def symlink_target(entry: TarEntry) -> str:
    """The target a symlink entry is made with; an empty one is an error."""
    if not entry.linkname:
        raise ArchiveError(f"symlink {entry.describe()} has an empty target")
    return entry.linkname


def missing_link_target(entry: TarEntry) -> ArchiveError:
    """The error for a hard link whose target does not exist (or is gone)."""
    return ArchiveError(
        f"hard link {entry.describe()} points to a missing file {quote_name(entry.linkname)}"
    )


def link_to_directory(entry: TarEntry) -> ArchiveError:
    """The error for a hard link to a directory."""
    return ArchiveError(
        f"hard link {entry.describe()} points to a directory {quote_name(entry.linkname)}"
    )


def kept_xattrs(xattrs: dict[str, bytes] | None) -> dict[str, bytes] | None:
    """The extended attributes an entry keeps; None when it keeps none."""
    if not xattrs:
        return None
    kept = {
        name: value
        for name, value in xattrs.items()
        if name.startswith(KEPT_XATTR_PREFIX) or name == KEPT_XATTR
    }
    return kept or None


class RootedWalk:
    """The resolution of a directory path inside a root, step by step, without I/O.

    It owns the containment rules (``.`` and empty components skipped, ``..`` never
    above the root, absolute symlink targets restarting at the root, the bounds on
    hops, steps and depth); the applier owns its tree. Iterating gives what to do
    next, starting at the root::

        walk = RootedWalk(parts)
        for name in walk:
            if name == UP:      go to the parent directory (never the root)
            elif name == ROOT:  go to the root
            elif <name is a directory here>:  go into it
            elif <name is a symlink here>:    walk.follow(its target)
            elif <missing, and making parents>:  make it, go into it
            else: stop (raise walk.not_a_directory(name) when making parents)

    When the loop ends, the applier is in the directory ``parts`` names. (Iterating
    is a generator: one resume per component, which keeps the squash's walks cheap.)
    """

    __slots__ = ("_followed", "parts")

    def __init__(self, parts: list[str]) -> None:
        self.parts = parts
        self._followed: list[str] = []  # the target of the symlink just given

    def __iter__(self) -> Iterator[str]:
        todo = self.parts[::-1]
        pop = todo.pop
        followed = self._followed
        depth = hops = steps = 0  # depth: directories entered below the root
        while todo:
            comp = pop()
            if not comp or comp == ".":
                continue
            steps += 1
            if comp == "..":
                if steps > MAX_WALK_STEPS:
                    raise self._too_far()
                if depth:
                    depth -= 1
                    yield UP if depth else ROOT
                continue
            if steps > MAX_WALK_STEPS:
                raise self._too_far()
            if depth >= MAX_DEPTH:
                raise ArchiveError(
                    f"cannot extract below {self._path()}: "
                    f"directories nested more than {MAX_DEPTH} deep"
                )
            depth += 1
            yield comp
            if followed:  # a symlink, not entered: walk its target instead
                target = followed.pop()
                depth -= 1
                hops += 1
                if hops > MAX_SYMLINK_HOPS:
                    raise UnsafeArchiveError(f"too many levels of symbolic links in {self._path()}")
                todo.extend(reversed(target.split("/")))
                if target.startswith("/") and depth:
                    depth = 0
                    yield ROOT

    def follow(self, target: str) -> None:
        """The name just given is a symlink to ``target``: walk that instead."""
        self._followed.append(target)

    def not_a_directory(self, name: str) -> ArchiveError:
        """The error when ``name``, needed as a directory, is something else."""
        return ArchiveError(
            f"cannot extract below {self._path()}: {quote_name(name)} is not a directory"
        )

    def _too_far(self) -> UnsafeArchiveError:
        return UnsafeArchiveError(f"symbolic links below {self._path()} expand too far")

    def _path(self) -> str:
        return quote_name("/".join(self.parts))
