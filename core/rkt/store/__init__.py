"""The local image store: what a store plugin provides, and the image record.

Image IDs are ``sha512-`` + the SHA-512 of the *uncompressed* ACI tar
(``appc-spec/types.md``). Like rkt, the store keys images by the first half of
the digest (``sha512-`` + 64 hex); users see 32 hex digits and may type any
unambiguous prefix.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Protocol

if TYPE_CHECKING:
    from rkt.progress import ProgressBar
    from rkt.schema.image import ImageManifest

#: hex digits kept in a store key
KEY_HEX_LENGTH = 64
#: hex digits shown by default (``rkt fetch``, ``rkt image list``)
SHORT_HEX_LENGTH = 32


def key_from_digest(hexdigest: str) -> str:
    return "sha512-" + hexdigest[:KEY_HEX_LENGTH]


def short_id(key: str, hex_length: int = SHORT_HEX_LENGTH) -> str:
    return key[: len("sha512-") + hex_length]


@dataclass(frozen=True)
class ImageInfo:
    """One image in the store, as the index records it."""

    id: str
    name: str
    labels: dict[str, str] = field(default_factory=dict)
    import_time: float = field(default_factory=time.time)
    last_used: float = field(default_factory=time.time)
    #: size of the uncompressed ACI in bytes
    size: int = 0
    #: size of its rendered tree(s) in bytes, 0 when not rendered
    tree_size: int = 0
    latest: bool = False
    #: how the image was verified when it entered the store: ``signature`` (by
    #: ``signer``), ``location`` (a stage1 image installed next to rkt) or ``none``
    verification: str = "none"
    #: the fingerprint of the key whose signature was verified, when there was one
    signer: str | None = None

    @property
    def verified(self) -> bool:
        return self.verification != "none"

    @property
    def short_id(self) -> str:
        return short_id(self.id)

    @property
    def version(self) -> str | None:
        return self.labels.get("version")

    @property
    def name_version(self) -> str:
        return f"{self.name}:{self.version}" if self.version else self.name


#: Called with the parsed manifest before an import is committed; raising aborts it.
AcceptManifest = Callable[["ImageManifest"], None]


class ImageStore(Protocol):
    """What a store plugin implements (``rkt_register_stores``).

    rkt reaches a store only through these methods (``rkt image gc`` and ``verify``
    included), so a third-party store can replace the built-in ``cas`` one.
    """

    data_dir: Path

    @property
    def tmp_dir(self) -> Path:
        """Scratch space on the store's filesystem, for downloads (renames stay atomic),
        private to this process: what is left there when it dies is swept by gc."""
        ...

    def import_file(
        self,
        path: Path,
        *,
        accept: AcceptManifest,
        origin: str,
        progress: ProgressBar | None = None,
        adopt: bool = False,
    ) -> ImageInfo:
        """Import an ACI file (any supported compression) in one streaming pass.

        ``adopt`` says the file is a private temporary one the store may take over
        (a plain tar can then become the blob by a rename instead of a copy).

        ``accept`` sees the parsed manifest before anything is committed; if it
        raises, the store is left exactly as it was.
        """
        ...

    def resolve(self, image_id: str) -> ImageInfo:
        """Look up a full ID or an unambiguous ``sha512-`` prefix."""
        ...

    def find_by_name(self, name: str, labels: dict[str, str]) -> ImageInfo:
        """The best image with this name and these labels (latest wins)."""
        ...

    def lookup(self, text: str) -> ImageInfo:
        """An ID, ID prefix or ``name[:version]``, as ``rkt image`` commands accept."""
        ...

    def list_images(self) -> list[ImageInfo]:
        ...

    def manifest_bytes(self, image_id: str) -> bytes:
        ...

    def open_blob(self, image_id: str) -> BinaryIO:
        """The uncompressed ACI tar."""
        ...

    def blob_path(self, image_id: str) -> Path:
        ...

    def render(self, image_id: str) -> Path:
        """The image's rendered tree (``manifest`` + ``rootfs/``), rendering it once."""
        ...

    def remove(self, image_id: str) -> None:
        """Remove the image, its manifest and its rendered trees."""
        ...

    def forget(self, image_id: str) -> None:
        """Remove the image's name (its index entry) but keep its files.

        ``rkt image rm`` does this for an image that a pod still uses: the image is
        gone for every command, and its blob, manifest and trees stay until
        :meth:`remove_orphans` finds no pod using them.
        """
        ...

    def record_verification(self, image_id: str, verification: str,
                            signer: str | None = None) -> None:
        """Record how the image was just verified (see :attr:`ImageInfo.verification`).

        Called after an import that verified the image; an import that did not
        leaves what an earlier one recorded.
        """
        ...

    def touch(self, image_id: str) -> None:
        """Record that the image was just used."""
        ...

    def cached_remote(self, url: str) -> tuple[str | None, str] | None:
        """(ETag, image ID) last recorded for ``url``, if any."""
        ...

    def record_remote(
        self, url: str, etag: str | None, image_id: str, *,
        signature_url: str | None = None, max_age: int = 0,
    ) -> None:
        """Remember where an image came from, for the remote cache."""
        ...

    # -- upkeep: ``rkt image gc`` and ``rkt image verify`` --------------------------------
    def remove_unused_trees(self, in_use: Collection[str]) -> list[str]:
        """Remove every rendered tree whose ID is not in ``in_use``; return the IDs removed.

        A tree's ID is the name of the directory :meth:`render` returned: pods record
        it, and ``rkt image gc`` passes the IDs recorded by every pod that is not
        garbage, holding the lock that keeps a new pod from choosing a tree meanwhile.
        """
        ...

    def remove_orphans(self, in_use: Collection[str]) -> list[str]:
        """Remove the files of every image that has no index entry (forgotten, or left
        by an interrupted removal) unless its ID is in ``in_use``; return the IDs."""
        ...

    def sweep_tmp(self, older_than: float = ...) -> None:
        """Remove leftovers of interrupted work (downloads, imports, renders); called by
        ``rkt gc`` and ``rkt image gc``.

        A store that knows whether the process that made a leftover is alive (the
        built-in one: each process owns its scratch directory through a lock) removes
        every orphan at once; ``older_than`` seconds is for stores that cannot tell.
        """
        ...

    def verify(self, image_id: str, *, trees_in_use: Collection[str] = ()) -> None:
        """Check that the stored image still is what its ID says, and that each of its
        rendered trees still is what rendering it gives.

        Raise :class:`rkt.errors.ImageError` naming the first problem; remove a tree
        that differs, so the next pod renders it again, unless its name is in
        ``trees_in_use`` (a pod runs on it: removing it would pull the pod's rootfs
        away). :mod:`rkt.store.verify` has the checks, written against this
        protocol, for any store to use.
        """
        ...
