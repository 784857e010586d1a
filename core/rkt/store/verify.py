"""``rkt image verify``: is what the store holds still what the image ID says?

Two checks: the blob's SHA-512 must still be the image ID (the blob is the
source of truth), and each rendered tree of the image must still be what
rendering that blob gives. A tree is compared with a fresh render rather than
with a hash recorded at render time, so rendering (on every first run of an
image) pays nothing for a check that is run rarely. A tree that differs is
removed, so the next pod renders it again: detected and repaired.

The checks use only the :class:`rkt.store.ImageStore` protocol, so any store's
``verify`` can use them; the built-in store's is :meth:`rkt.store.cas.CasStore.verify`.
"""

from __future__ import annotations

import filecmp
import hashlib
import os
import stat
import tempfile
from collections.abc import Callable, Collection, Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from rkt.errors import ImageError
from rkt.store import key_from_digest
from rkt.store.tree import render_image

if TYPE_CHECKING:
    from rkt.store import ImageStore

#: compared for every entry (and the content of regular files, and link targets)
_FIELDS = ("st_mode", "st_uid", "st_gid")


def _missing_or_changed(expected: Path, actual: Path) -> list[str]:
    """Entries of ``expected`` that ``actual`` lacks or holds differently."""
    found: list[str] = []
    for root, dirs, files in os.walk(expected):
        rel_root = Path(root).relative_to(expected)
        for name in sorted(dirs + files):
            rel = rel_root / name
            want, have = expected / rel, actual / rel
            try:
                have_info = os.lstat(have)
            except FileNotFoundError:
                found.append(f"/{rel}: missing")
                continue
            want_info = os.lstat(want)
            changed = next((f[3:] for f in _FIELDS
                            if getattr(want_info, f) != getattr(have_info, f)), None)
            if changed:
                found.append(f"/{rel}: {changed} differs")
            elif stat.S_ISLNK(want_info.st_mode) and os.readlink(want) != os.readlink(have):
                found.append(f"/{rel}: link target differs")
            elif stat.S_ISREG(want_info.st_mode) and not filecmp.cmp(want, have, shallow=False):
                found.append(f"/{rel}: content differs")
    return found


def tree_differences(expected: Path, actual: Path) -> list[str]:
    extra = [p.replace(": missing", ": not in the image")
             for p in _missing_or_changed(actual, expected) if p.endswith(": missing")]
    return _missing_or_changed(expected, actual) + extra


def verify_blob(store: ImageStore, image_id: str) -> None:
    """Raise :class:`ImageError` unless the stored ACI's SHA-512 is still ``image_id``."""
    digest = hashlib.sha512()
    with store.open_blob(image_id) as blob:
        while chunk := blob.read(1 << 20):
            digest.update(chunk)
    if key_from_digest(digest.hexdigest()) != image_id:
        raise ImageError(f'image "{image_id}": the stored blob no longer matches its ID')


def verify_trees(store: ImageStore, image_id: str, trees: Iterable[Path],
                 remove: Callable[[Path], None], in_use: Collection[str] = ()) -> None:
    """Compare each of ``image_id``'s rendered ``trees`` with a fresh render.

    The first tree that differs is removed with ``remove`` and reported as an
    :class:`ImageError`; one whose name is in ``in_use`` is only reported, since
    a pod's rootfs is built on it (its overlay's lower directory).
    """
    for tree in trees:
        with tempfile.TemporaryDirectory(prefix="verify-", dir=store.tmp_dir) as work:
            fresh = Path(work) / "tree"
            render_image(store, image_id, fresh)
            problems = tree_differences(fresh / "rootfs", tree / "rootfs")
        if problems:
            what = (f'image "{image_id}": rendered tree {tree.name} differs from the image '
                    f"({len(problems)} difference(s), first: {problems[0]}); ")
            if tree.name in in_use:
                raise ImageError(what + "a pod still uses it, so it was kept: run "
                                 "'rkt image verify' again once 'rkt gc' has removed that pod")
            remove(tree)
            raise ImageError(what + "removed it, it will be rendered again")
