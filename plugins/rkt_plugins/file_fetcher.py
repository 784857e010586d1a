"""Images from local files: ``rkt fetch ./hello.aci`` and ``file://`` URLs."""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from pathlib import Path

from rkt.api import (
    FetchedImage,
    FetcherRegistry,
    FetchError,
    FetchSession,
    ImageRef,
    StoreError,
    UsageError,
    hookimpl,
)


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
        )


@hookimpl
def rkt_register_fetchers(registry: FetcherRegistry) -> None:
    registry.add("file", FileFetcher())
