"""The tree store: images rendered once into directories that pods mount read-only.

A tree is rendered into ``cas/tmp`` and renamed into ``cas/tree/<tree id>`` only
when it is complete (contents written, ``syncfs`` done, ``rendered`` marker
present), so a crash never leaves a half tree that looks whole. The tree ID is
rkt's: ``deps-`` + a SHA-512 over the comma-joined keys of the image and its
dependencies, so an image rendered with other dependencies gets another tree.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import posixpath
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rkt import faults
from rkt.errors import StoreError
from rkt.locks import key_lock
from rkt.log import get_logger
from rkt.store import key_from_digest

if TYPE_CHECKING:
    from rkt.store import ImageStore
    from rkt.store.cas import CasStore

LOG = get_logger(__name__)

RENDERED_MARKER = "rendered"


def tree_id_for(keys: list[str]) -> str:
    return "deps-" + key_from_digest(_sha512(",".join(keys).encode()).hexdigest())


def _sha512(data: bytes) -> Any:
    """SHA-512 of ``data``; CPython's own implementation where there is one: every
    pod start looks its trees up, and hashlib loads OpenSSL for it (2 ms)."""
    try:
        from _sha512 import sha512  # type: ignore[import-not-found]
    except ImportError:  # another Python, or 3.12+ (_sha2)
        from hashlib import sha512
    return sha512(data)


def tree_size(path: Path) -> int:
    total = 0
    for root, dirs, files in os.walk(path):
        for name in files + dirs:
            with contextlib.suppress(FileNotFoundError):
                total += os.lstat(os.path.join(root, name)).st_blocks * 512
    return total


#: more layers than this in one render is a hostile or broken dependency graph
MAX_LAYERS = 256


@dataclass(frozen=True)
class Layer:
    """One image's rootfs as it is laid down in a render, with its file filter."""

    image_id: str
    #: ``pathWhitelist``s of the image and of every image above it that has one
    #: (appc-spec/ace.md: a dependency's files are filtered by the whitelists of
    #: the images depending on it); a file is kept only if every one lists it
    whitelists: tuple[frozenset[str], ...] = ()

    def path_whitelist(self) -> frozenset[str] | None:
        if not self.whitelists:
            return None
        return frozenset.intersection(*self.whitelists)


def render_layers(store: ImageStore, image_id: str) -> list[Layer]:
    """The layers of ``image_id`` in the order they are extracted (later ones win).

    appc-spec/ace.md, filesystem setup: dependencies depth-first in list order, then
    the image itself; ``A -> [B, C], C -> [D]`` gives B, D, C, A and an image reached
    twice is laid down twice (``A -> [B, C], B -> [D], C -> [D]`` gives D, B, D, C, A).
    Dependencies are found in the store, by ``imageID`` when pinned, else by name and
    labels.
    """
    from rkt.errors import ImageError, ImageNotFoundError

    layers: list[Layer] = []

    def visit(key: str, above: tuple[frozenset[str], ...], chain: tuple[str, ...]) -> None:
        # Stored manifests were validated when imported: plain JSON is enough here, and
        # rendering (on a pod's first run) does not pay for loading the schema library.
        manifest = json.loads(store.manifest_bytes(key))
        name = manifest.get("name")
        # appc-spec/aci.md: an empty pathWhitelist means the same as none.
        own = manifest.get("pathWhitelist") or None
        whitelists = above if own is None else (*above, _normalized(own))
        for dependency in manifest.get("dependencies") or ():
            labels = {label["name"]: label["value"] for label in dependency.get("labels") or ()}
            try:
                if dependency.get("imageID"):
                    found = store.resolve(dependency["imageID"]).id
                else:
                    found = store.find_by_name(dependency["imageName"], labels).id
            except ImageNotFoundError as exc:
                raise ImageNotFoundError(
                    f'dependency "{dependency["imageName"]}" of image "{name}" is not '
                    f"in the store ({exc}); fetch the image again to get it"
                ) from exc
            if found in chain:
                raise ImageError(f'dependency cycle through image "{name}"')
            visit(found, whitelists, (*chain, found))
        layers.append(Layer(key, whitelists))
        if len(layers) > MAX_LAYERS:
            raise ImageError(
                f'image {image_id} has more than {MAX_LAYERS} layers of dependencies'
            )

    visit(image_id, (), (image_id,))
    return layers


def _normalized(paths: list[str]) -> frozenset[str]:
    return frozenset(posixpath.normpath("/" + path) for path in paths)


def tree_id_of(layers: list[Layer]) -> str:
    """rkt's tree ID: its dependency list is the image first, i.e. the layers reversed."""
    return tree_id_for([layer.image_id for layer in reversed(layers)])


def render_image(
    store: ImageStore,
    image_id: str,
    dest: Path,
    *,
    rootfs_only: bool = False,
    layers: list[Layer] | None = None,
) -> None:
    """Render ``image_id`` (with its dependencies) into ``dest`` as stage2 sees it.

    ``dest`` receives ``manifest`` and ``rootfs/`` (or the rootfs's contents with
    ``rootfs_only``). The caller owns ``dest`` and removes it if this raises.
    """
    from rkt.aci.extract import extract_tar

    manifest_bytes = store.manifest_bytes(image_id)
    rootfs = dest if rootfs_only else dest / "rootfs"
    rootfs.mkdir(parents=True, exist_ok=True)
    for layer in layers if layers is not None else render_layers(store, image_id):
        extract_tar(store.blob_path(layer.image_id), rootfs, strip_prefix="rootfs/",
                    path_whitelist=layer.path_whitelist())
    if not rootfs_only:
        (dest / "manifest").write_bytes(manifest_bytes)


class TreeStore:
    def __init__(self, store: CasStore) -> None:
        self.store = store
        self.tree_dir = store.cas_dir / "tree"
        self.lock_dir = store.cas_dir / "treestorelocks"

    def tree_path(self, tree_id: str) -> Path:
        return self.tree_dir / tree_id

    def is_rendered(self, tree_id: str) -> bool:
        return (self.tree_path(tree_id) / RENDERED_MARKER).exists()

    def render(self, image_id: str) -> Path:
        layers = render_layers(self.store, image_id)
        tree_id = tree_id_of(layers)
        final = self.tree_path(tree_id)
        if self.is_rendered(tree_id):
            return final
        with key_lock(self.lock_dir, tree_id):
            if self.is_rendered(tree_id):  # another process won the race
                return final
            import shutil
            import tempfile

            work = Path(tempfile.mkdtemp(prefix=f"render-{tree_id[:20]}-", dir=self.store.tmp_dir))
            try:
                render_image(self.store, image_id, work, layers=layers)
                faults.point("render:extracted")
                (work / "image").write_text(image_id)
                _syncfs(work)
                (work / RENDERED_MARKER).touch()
                if final.exists():  # a stale tree without its marker
                    shutil.rmtree(final)
                os.rename(work, final)
            except BaseException as exc:
                shutil.rmtree(work, ignore_errors=True)
                if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
                    raise StoreError(f"no space left on device while rendering {image_id}") from exc
                raise
        self.store.index.set_tree_size(image_id, tree_size(final))
        return final

    def remove_for_image(self, image_id: str) -> None:
        for entry in self.tree_dir.iterdir():
            try:
                owner = (entry / "image").read_text().strip()
            except (FileNotFoundError, NotADirectoryError):
                owner = None
            if owner == image_id or (owner is None and entry.name == tree_id_for([image_id])):
                self.remove_tree(entry.name)

    def rendered_for(self, image_id: str) -> list[Path]:
        """The complete trees rendered for ``image_id`` (one per set of dependencies)."""
        found = []
        for tree in sorted(self.tree_dir.iterdir()):
            try:
                owner = (tree / "image").read_text().strip()
            except OSError:
                continue
            if owner == image_id and self.is_rendered(tree.name):
                found.append(tree)
        return found

    def remove_unused(self, in_use: Collection[str]) -> list[str]:
        """Remove every tree whose ID is not in ``in_use``; return the IDs removed."""
        removed = []
        for tree in sorted(self.tree_dir.iterdir()):
            if tree.name not in in_use:
                self.remove_tree(tree.name)
                removed.append(tree.name)
        return removed

    def remove_tree(self, tree_id: str) -> None:
        path = self.tree_path(tree_id)
        with key_lock(self.lock_dir, tree_id):
            # Drop the marker first: a crash mid-delete must not look rendered.
            (path / RENDERED_MARKER).unlink(missing_ok=True)
            faults.point("image-gc:trees")
            import shutil

            shutil.rmtree(path, ignore_errors=True)


def _syncfs(path: Path) -> None:
    """Flush the filesystem holding ``path`` once, rather than fsync per file."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        import ctypes

        if ctypes.CDLL(None, use_errno=True).syncfs(fd) != 0:
            os.sync()
    finally:
        os.close(fd)
