"""The content-addressed image store (the built-in ``cas`` store).

Layout under the data directory (rkt's, so its documentation still applies)::

    cas/blob/sha512/<2 hex>/sha512-<64 hex>          uncompressed ACI tars
    cas/imageManifest/sha512/<2 hex>/sha512-<64 hex> their manifests
    cas/tree/deps-sha512-<64 hex>/                   rendered trees (manifest, rootfs/)
    cas/db/index.sqlite                              the index
    cas/imagelocks/, cas/treestorelocks/             per-key flock files
    cas/tmp/                                         downloads and imports in progress

Every write goes to ``cas/tmp`` (same filesystem) and is renamed into place, so a
crash or a full disk never leaves a half-written blob, manifest or tree where
the store would find it. The index row is written last: an image exists for
rkt only once its blob and manifest are complete.
"""

from __future__ import annotations

import errno
import os
import re
import time
from collections.abc import Collection, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import IO, TYPE_CHECKING, BinaryIO

from rkt import faults
from rkt.datadir import private_dir, private_file
from rkt.errors import ImageNotFoundError, StoreError, UsageError
from rkt.locks import key_lock
from rkt.log import get_logger
from rkt.progress import ProgressBar
from rkt.store import AcceptManifest, ImageInfo, key_from_digest
from rkt.store.index import ImageIndex, RemoteEntry
from rkt.store.scratch import ScratchArea
from rkt.store.space import SpaceGuard
from rkt.store.tree import TreeStore

if TYPE_CHECKING:
    import queue

LOG = get_logger(__name__)

_ID_PREFIX = re.compile(r"^sha512-[0-9a-f]{2,128}$")
#: decompressed bytes handed to the hash and the blob per read
CHUNK = 1 << 20
_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


class _CountingReader:
    """Counts the compressed bytes read, to drive the progress bar."""

    def __init__(self, raw: BinaryIO, progress: ProgressBar | None) -> None:
        self._raw = raw
        self._progress = progress

    def read(self, size: int = -1) -> bytes:
        data = self._raw.read(size)
        if self._progress is not None:
            self._progress.advance(len(data))
        return data

    def readinto(self, buffer: bytearray | memoryview) -> int:
        count = self._raw.readinto(buffer)  # type: ignore[attr-defined]
        if self._progress is not None:
            self._progress.advance(count or 0)
        return int(count or 0)

    def __getattr__(self, name: str) -> object:
        return getattr(self._raw, name)


class _HashingTee:
    """Everything read through it is hashed and written to the blob being built.

    The archive is validated by reading through this object, so the bytes that
    are checked, hashed and stored are the same bytes, in one pass. Hashing and
    writing happen on a second thread while this one decompresses and parses the
    next chunk: SHA-512, zlib and file writes all release the GIL, so an import
    uses two cores instead of adding the three costs up.
    """

    def __init__(self, source: BinaryIO, sink: IO[bytes] | None,
                 space: SpaceGuard | None = None) -> None:
        self._source = source
        self._sink = sink
        self._space = space
        # here, not at import: a pod start opens the store but imports nothing
        import hashlib
        import queue
        import threading

        self.hash = hashlib.sha512()
        self.size = 0
        #: bytes the worker has written to the blob (read by the space check)
        self.written = 0
        self._queue: queue.Queue[bytes | None] = queue.Queue(maxsize=8)
        self._error: BaseException | None = None
        self._worker = threading.Thread(target=self._consume, name="rkt-import", daemon=True)
        self._worker.start()

    def _consume(self) -> None:
        while (data := self._queue.get()) is not None:
            if self._error is not None:
                continue  # keep draining so the reader never blocks on a full queue
            try:
                self.hash.update(data)
                if self._sink is not None:
                    self._sink.write(data)
                    self.written += len(data)
            except BaseException as exc:  # surfaced by the reader (ENOSPC, EIO)
                self._error = exc

    def read(self, size: int = -1) -> bytes:
        if self._error is not None:
            raise self._error
        data = self._source.read(size if size and size > 0 else CHUNK)
        if data:
            self.size += len(data)
            if self._space is not None:
                pending = self.size - self.written if self._sink is not None else 0
                self._space.check(self.size, pending)
            self._queue.put(bytes(data))
        return data

    def drain(self) -> None:
        while self.read(CHUNK):
            pass

    def finish(self) -> None:
        """Wait for the hash and the blob to be complete; raise what the worker hit."""
        self._queue.put(None)
        self._worker.join()
        if self._error is not None:
            raise self._error

    def abandon(self) -> None:
        if self._worker.is_alive():
            self._error = self._error or RuntimeError("import abandoned")
            self._queue.put(None)
            self._worker.join()


def _is_plain_tar(path: Path) -> bool:
    from rkt.aci.compression import Compression, detect
    from rkt.errors import ArchiveError

    try:
        with open(path, "rb") as raw:
            return detect(raw.read(512)) is Compression.NONE
    except (OSError, ArchiveError):
        return False


def _no_space(exc: OSError) -> bool:
    return exc.errno in _NO_SPACE


class CasStore:
    """The built-in image store; see the module docstring for its layout."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.cas_dir = data_dir / "cas"
        self.scratch = ScratchArea.at(self.cas_dir / "tmp")
        try:
            for sub in ("blob/sha512", "imageManifest/sha512", "tree", "tmp", "imagelocks",
                        "treestorelocks", "db"):
                private_dir(self.cas_dir / sub)
        except PermissionError as exc:
            raise StoreError(f"cannot use store at {data_dir}: {exc.strerror}") from exc
        except OSError as exc:
            raise StoreError(f"cannot create store at {data_dir}: {exc.strerror}") from exc
        self.index = ImageIndex(self.cas_dir / "db" / "index.sqlite")
        self.trees = TreeStore(self)

    @property
    def tmp_dir(self) -> Path:
        """This process's own work directory in ``cas/tmp`` (see :mod:`rkt.store.scratch`)."""
        try:
            return self.scratch.own_dir()
        except OSError as exc:
            if _no_space(exc):
                raise StoreError(f"no space left on device in {self.scratch.root}") from exc
            raise StoreError(f"cannot use {self.scratch.root}: {exc.strerror or exc}") from exc

    # -- paths ---------------------------------------------------------------------
    def blob_path(self, image_id: str) -> Path:
        return self.cas_dir / "blob" / "sha512" / image_id[7:9] / image_id

    def manifest_path(self, image_id: str) -> Path:
        return self.cas_dir / "imageManifest" / "sha512" / image_id[7:9] / image_id

    # -- import --------------------------------------------------------------------
    def import_file(
        self,
        path: Path,
        *,
        accept: AcceptManifest,
        origin: str,
        progress: ProgressBar | None = None,
        adopt: bool = False,
    ) -> ImageInfo:
        """Import ``path``; with ``adopt``, a plain tar that is a private file in the
        store's tmp directory becomes the blob itself (renamed, not copied)."""
        if adopt and path.parent == self.tmp_dir and _is_plain_tar(path):
            # Hashed and validated where it is; the rename is the commit.
            manifest_bytes, tee = self._read(path, None, origin, progress)
            return self._accept_and_commit(path, manifest_bytes, tee, accept, origin)
        with self._temp_file("import-") as (tmp_path, sink):
            manifest_bytes, tee = self._read(path, sink, origin, progress)
            return self._accept_and_commit(tmp_path, manifest_bytes, tee, accept, origin)

    def _read(
        self, path: Path, sink: IO[bytes] | None, origin: str, progress: ProgressBar | None
    ) -> tuple[bytes, _HashingTee]:
        """One pass over ``path``: decompress, validate, hash (and copy to ``sink``)."""
        from rkt.aci.archive import scan_aci
        from rkt.aci.compression import open_decompressed

        try:
            with open(path, "rb") as raw:
                if progress is not None and progress.total is None:
                    progress.total = os.fstat(raw.fileno()).st_size
                counted = _CountingReader(raw, progress)
                space = SpaceGuard.from_env(self.cas_dir, origin)
                tee = _HashingTee(open_decompressed(counted), sink, space)  # type: ignore[arg-type,unused-ignore]
                try:
                    manifest_bytes = scan_aci(tee)  # type: ignore[arg-type,unused-ignore]
                    tee.drain()
                    tee.finish()
                finally:
                    tee.abandon()
                if sink is None:
                    os.fsync(raw.fileno())  # the file itself becomes the blob
            if sink is not None:
                sink.flush()
                os.fsync(sink.fileno())
        except FileNotFoundError as exc:
            raise UsageError(f"no such file: {path}") from exc
        except IsADirectoryError as exc:
            raise UsageError(f"{path} is a directory, not an ACI file") from exc
        except OSError as exc:
            if _no_space(exc):
                raise StoreError(f"no space left on device while importing {origin}") from exc
            raise StoreError(f"cannot import {origin}: {exc.strerror or exc}") from exc
        finally:
            if progress is not None:
                progress.finish()
        return manifest_bytes, tee

    def _accept_and_commit(
        self, blob: Path, manifest_bytes: bytes, tee: _HashingTee, accept: AcceptManifest,
        origin: str,
    ) -> ImageInfo:
        from rkt.schema.image import ImageManifest

        manifest = ImageManifest.parse(manifest_bytes, source=f"{origin}: manifest")
        accept(manifest)
        faults.point("import:written")
        info = ImageInfo(
            id=key_from_digest(tee.hash.hexdigest()),
            name=manifest.name,
            labels={label.name: label.value for label in manifest.labels or ()},
            size=tee.size,
            latest=manifest.label("version") in (None, "latest"),
        )
        return self._commit(info, blob, manifest_bytes)

    @contextmanager
    def _temp_file(self, prefix: str) -> Iterator[tuple[Path, IO[bytes]]]:
        import tempfile

        fd, name = tempfile.mkstemp(prefix=prefix, dir=self.tmp_dir)
        tmp_path = Path(name)
        try:
            with os.fdopen(fd, "wb", buffering=CHUNK) as sink:
                yield tmp_path, sink
        finally:
            tmp_path.unlink(missing_ok=True)

    def _commit(self, info: ImageInfo, tmp_blob: Path, manifest_bytes: bytes) -> ImageInfo:
        blob = self.blob_path(info.id)
        manifest_file = self.manifest_path(info.id)
        with key_lock(self.cas_dir / "imagelocks", info.id):
            try:
                if not blob.exists():
                    private_dir(blob.parent)
                    private_file(tmp_blob)
                    os.rename(tmp_blob, blob)
                    faults.point("import:blob-committed")
                self._write_atomically(manifest_file, manifest_bytes)
            except OSError as exc:
                if _no_space(exc):
                    raise StoreError("no space left on device while storing image") from exc
                raise StoreError(f"cannot store image: {exc.strerror or exc}") from exc
            return self.index.upsert(info)

    def _write_atomically(self, target: Path, data: bytes) -> None:
        private_dir(target.parent)
        import tempfile

        fd, name = tempfile.mkstemp(prefix="manifest-", dir=self.tmp_dir)
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
            private_file(name)
            os.rename(name, target)
        except BaseException:
            with suppress(FileNotFoundError):
                os.unlink(name)
            raise

    # -- lookup --------------------------------------------------------------------
    def resolve(self, image_id: str) -> ImageInfo:
        if not _ID_PREFIX.match(image_id):
            raise ImageNotFoundError(
                f'invalid image ID "{image_id}": expected sha512- and at least 2 hex digits'
            )
        prefix = image_id[: len("sha512-") + 64]
        matches = self.index.with_prefix(prefix)
        if not matches:
            raise ImageNotFoundError(f'no image with ID "{image_id}" in the store')
        if len(matches) > 1:
            raise ImageNotFoundError(
                f'image ID "{image_id}" is ambiguous: it matches {len(matches)} images'
            )
        return matches[0]

    def find_by_name(self, name: str, labels: dict[str, str]) -> ImageInfo:
        candidates = [
            info for info in self.index.by_name(name)
            if all(info.labels.get(key) == value for key, value in labels.items())
        ]
        if not candidates:
            version = f":{labels['version']}" if "version" in labels else ""
            wanted = name + version + "".join(
                f",{k}={v}" for k, v in sorted(labels.items()) if k != "version"
            )
            raise ImageNotFoundError(f'no image named "{wanted}" in the store')
        if "version" not in labels:
            latest = [info for info in candidates if info.latest]
            if latest:
                return latest[-1]
        return candidates[-1]

    def lookup(self, text: str) -> ImageInfo:
        if text.startswith("sha512-"):
            return self.resolve(text)
        from rkt.imageref import parse_appc_name

        name, labels = parse_appc_name(text)
        return self.find_by_name(name, labels)

    def list_images(self) -> list[ImageInfo]:
        return self.index.all()

    def manifest_bytes(self, image_id: str) -> bytes:
        try:
            return self.manifest_path(image_id).read_bytes()
        except FileNotFoundError as exc:
            raise ImageNotFoundError(f'manifest of image "{image_id}" is missing') from exc

    def open_blob(self, image_id: str) -> BinaryIO:
        try:
            return open(self.blob_path(image_id), "rb")
        except FileNotFoundError as exc:
            raise ImageNotFoundError(f'blob of image "{image_id}" is missing') from exc

    # -- trees, use, removal -------------------------------------------------------
    def render(self, image_id: str) -> Path:
        return self.trees.render(image_id)

    def record_verification(self, image_id: str, verification: str,
                            signer: str | None = None) -> None:
        self.index.set_verification(image_id, verification, signer)

    def touch(self, image_id: str) -> None:
        self.index.set_last_used(image_id, time.time())

    def remove(self, image_id: str) -> None:
        with key_lock(self.cas_dir / "imagelocks", image_id):
            # The index row goes first: from then on the image is invisible, and a
            # crash part-way leaves only unreferenced files for gc to sweep.
            self.index.delete(image_id)
            faults.point("image-rm:forgotten")
            self.trees.remove_for_image(image_id)
            self.manifest_path(image_id).unlink(missing_ok=True)
            self.blob_path(image_id).unlink(missing_ok=True)

    def forget(self, image_id: str) -> None:
        with key_lock(self.cas_dir / "imagelocks", image_id):
            self.index.delete(image_id)

    def remove_unused_trees(self, in_use: Collection[str]) -> list[str]:
        return self.trees.remove_unused(in_use)

    def remove_orphans(self, in_use: Collection[str]) -> list[str]:
        found = {entry.name for top in ("blob", "imageManifest")
                 for entry in (self.cas_dir / top / "sha512").glob("*/sha512-*")}
        removed = []
        for image_id in sorted(found - set(in_use)):
            with key_lock(self.cas_dir / "imagelocks", image_id):
                if self.index.get(image_id) is not None:  # imported meanwhile, or always
                    continue
                self.manifest_path(image_id).unlink(missing_ok=True)
                self.blob_path(image_id).unlink(missing_ok=True)
            removed.append(image_id)
        return removed

    def verify(self, image_id: str, *, trees_in_use: Collection[str] = ()) -> None:
        """The blob against the ID, then each rendered tree against a fresh render."""
        from rkt.store.verify import verify_blob, verify_trees

        verify_blob(self, image_id)
        verify_trees(self, image_id, self.trees.rendered_for(image_id),
                     remove=lambda tree: self.trees.remove_tree(tree.name),
                     in_use=trees_in_use)

    def cached_remote(self, url: str) -> tuple[str | None, str] | None:
        return self.index.get_remote(url)

    def remote_entry(self, url: str) -> RemoteEntry | None:
        """Everything the remote cache holds for ``url``: ETag, max-age, download time."""
        return self.index.get_remote_entry(url)

    def record_remote(
        self, url: str, etag: str | None, image_id: str, *,
        signature_url: str | None = None, max_age: int = 0,
    ) -> None:
        self.index.put_remote(url, etag, image_id, signature_url=signature_url, max_age=max_age)

    def sweep_tmp(self, older_than: float = 0) -> None:
        """Remove what interrupted work left in ``cas/tmp`` (rkt#3794 let it fill disks):
        everything whose owning process is gone, at once; ``older_than`` is not needed."""
        del older_than
        for name in self.scratch.sweep():
            LOG.debug("removed leftover %s of interrupted work", name)
