"""Images from local files: ``rkt fetch ./hello.aci`` and ``file://`` URLs."""

from __future__ import annotations

import errno
import logging
import os
import shutil
import tempfile
from pathlib import Path

from rkt.api import (
    FetchedImage,
    FetcherRegistry,
    FetchError,
    FetchSession,
    ImageNotFoundError,
    ImageRef,
    RemoteRecord,
    StoreError,
    UsageError,
    hookimpl,
)

LOG = logging.getLogger(__name__)


def default_signature_path(path: Path) -> Path:
    """``hello.aci`` -> ``hello.aci.asc``, as rkt and the appc spec name signatures."""
    return path.with_name(path.name + ".asc")


#: copy_file_range(2) refusing to copy between these two files
_NO_COPY_RANGE = (errno.EXDEV, errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP)


def _private_copy(path: Path, tmp_dir: Path) -> Path:
    # Verify and import a copy nobody else can write to, so the bytes that were
    # verified are the bytes that get imported even if the user's file changes.
    fd, name = tempfile.mkstemp(prefix="file-", dir=tmp_dir)
    try:
        with open(path, "rb") as src, os.fdopen(fd, "wb") as dst:
            try:
                # in-kernel copy (a reflink where the filesystem can)
                while os.copy_file_range(src.fileno(), dst.fileno(), 1 << 30):
                    pass
            except OSError as exc:
                if exc.errno not in _NO_COPY_RANGE:
                    raise
                shutil.copyfileobj(src, dst, 1 << 20)  # another filesystem: plain copy
    except OSError as exc:
        os.unlink(name)
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise StoreError(f"no space left on device while importing {path}") from exc
        raise
    except BaseException:
        os.unlink(name)
        raise
    return Path(name)


def file_identity(path: Path) -> str:
    """What tells a file's bytes apart without reading them: device, inode, size,
    mtime and ctime (ns). A write, truncation or rename into place changes the
    ctime, which no program can set back, so the same identity means the same bytes
    (``os.utime`` restores an mtime, not the ctime)."""
    st = os.stat(path)
    return f"{st.st_dev}:{st.st_ino}:{st.st_size}:{st.st_mtime_ns}:{st.st_ctime_ns}"


def _imported_before(path: Path, identity: str, session: FetchSession) -> str | None:
    """The stored image this very file was imported as, if the store remembers it."""
    store = session.runtime.store
    cached = store.cached_remote(path.resolve().as_uri())
    if cached is None or cached[0] != identity:
        return None
    try:
        return store.resolve(cached[1]).id
    except ImageNotFoundError:
        return None  # removed since: import it again


class FileFetcher:
    #: a local file needs no network, so it is read even with --pull-policy=never
    answers_offline = True

    def fetch(self, ref: ImageRef, session: FetchSession) -> FetchedImage:
        assert ref.path is not None
        path = ref.path
        if not path.exists():
            raise UsageError(f"no such file: {path}")
        if not path.is_file():
            raise UsageError(f"{path} is not a regular file")
        # Taken before the bytes are read: a change while they are copied changes
        # the ctime, so the next fetch sees another identity and reads them again.
        identity = file_identity(path)
        if session.runtime.is_insecure("image"):
            # Nothing to verify: a file imported before is not hashed again. (A
            # signed file is verified, so read, every time: trust may have changed.)
            stored = _imported_before(path, identity, session)
            if stored is not None:
                LOG.debug("%s was imported before as %s and is unchanged: not read again",
                          path, stored)
                session.runtime.reporter.warn("image signature verification has been disabled")
                return FetchedImage.unchanged(stored, str(path))
        signature: bytes | None = None
        signature_path = session.signature_file or default_signature_path(path)
        if not session.runtime.is_insecure("image"):
            try:
                signature = signature_path.read_bytes()
            except FileNotFoundError:
                if session.signature_file is not None:
                    raise UsageError(f"no such signature file: {signature_path}") from None
            except OSError as exc:
                raise FetchError(f"error opening signature file {signature_path}: {exc}") from exc
        try:
            copy = _private_copy(path, session.tmp_dir)
        except PermissionError as exc:
            raise FetchError(f"cannot read {path}: {exc.strerror}") from exc
        return FetchedImage(
            path=copy,
            origin=str(path),
            signature=signature,
            signature_origin=str(signature_path),
            temporary=True,
            remote=RemoteRecord(path.resolve().as_uri(), identity),
        )


@hookimpl
def rkt_register_fetchers(registry: FetcherRegistry) -> None:
    registry.add("file", FileFetcher())
