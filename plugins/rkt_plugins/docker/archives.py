"""Docker and OCI images from local files, named as skopeo names them.

* ``docker-archive:PATH[:NAME[:TAG]|:@N]``: a ``docker save`` tarball (plain or
  compressed), its ``manifest.json`` listing configs and layer files;
* ``oci:DIR[:REF]``: an OCI image layout directory (``oci-layout``, ``index.json``,
  ``blobs/<algorithm>/<hex>``);
* ``oci-archive:PATH[:REF]``: the same layout in a tar file.

As in skopeo, the path ends at the first ``:``. They convert exactly like images
from a registry (:mod:`.squash`, :mod:`.convert`), without a network: every blob of
an OCI layout is checked against its digest and every layer against the config's
``diff_ids``. Archive members are located with the foundation's strict tar reader
and read in place, never extracted.

Names: a docker-archive image is named by its repository tag (``busybox:latest``
becomes ``registry-1.docker.io/library/busybox``, version ``latest``); an OCI image by
its ``org.opencontainers.image.ref.name`` when that is a full reference, else by the
layout's file name, with the ref (or ``latest``) as its version.
"""

from __future__ import annotations

import io
import json
import os
import re
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from rkt.aci.archive import DEFAULT_LIMITS
from rkt.aci.compression import Compression, detect, open_decompressed
from rkt.aci.tarstream import REGULAR, SYMLINK, FileSource, TarReader, split_name
from rkt.api import (
    ArchiveError,
    FetchedImage,
    FetchSession,
    ImageError,
    ImageRef,
    RktError,
    UsageError,
)
from rkt_plugins.docker.convert import Origin, created_epoch, image_manifest, manifest_bytes
from rkt_plugins.docker.documents import (
    INDEX_TYPES,
    Descriptor,
    ImageConfig,
    digest_of,
    host_platform,
    media_type_of,
    parse_config,
    parse_index,
    parse_manifest,
)
from rkt_plugins.docker.fetcher import check_layer_count, refuse_unsigned
from rkt_plugins.docker.reference import (
    DockerReference,
    parse_docker_reference,
    sanitize_ac_identifier,
)
from rkt_plugins.docker.registry import MAX_CONFIG_SIZE, MAX_MANIFEST_SIZE
from rkt_plugins.docker.squash import Layer, PlainLayer, decompress_layer, squash_layers

REF_NAME = "org.opencontainers.image.ref.name"
_MAX_LINK_HOPS = 8
_INDEX_SUFFIX = re.compile(r"@(\d+)\Z")


def split_source(ref: ImageRef) -> tuple[Path, str | None]:
    """``scheme:PATH[:REF]`` to the path and the optional reference after it."""
    scheme, _, rest = ref.text.partition(":")
    path, sep, reference = rest.partition(":")
    if not path:
        raise UsageError(f'invalid image "{ref.text}": expected {scheme}:PATH[:REFERENCE]')
    return Path(os.path.abspath(path)), (reference if sep else None)


# -- reading files in place ------------------------------------------------------------
class _Range(io.RawIOBase):
    """``size`` bytes of a file descriptor from ``offset``, read with ``pread``."""

    def __init__(self, fd: int, offset: int, size: int) -> None:
        super().__init__()
        self._fd = fd
        self._pos = offset
        self._end = offset + size

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview | bytearray) -> int:  # type: ignore[override]
        view = memoryview(buffer).cast("B")
        count = min(len(view), self._end - self._pos)
        if count <= 0:
            return 0
        data = os.pread(self._fd, count, self._pos)
        if not data:
            raise ImageError("archive ends inside a member")
        view[: len(data)] = data
        self._pos += len(data)
        return len(data)


class _Files:
    """Named files of an image source: a directory, or the members of a tar."""

    def __init__(self, describe: str) -> None:
        self.describe = describe

    def open(self, name: str) -> BinaryIO:
        raise NotImplementedError

    def size(self, name: str) -> int:
        raise NotImplementedError

    def read(self, name: str, limit: int, what: str) -> bytes:
        if self.size(name) > limit:
            raise ImageError(f"{what} in {self.describe} is larger than {limit >> 20} MiB")
        with self.open(name) as stream:
            return stream.read(limit + 1)


class _DirectoryFiles(_Files):
    def __init__(self, root: Path) -> None:
        super().__init__(str(root))
        self.root = root

    def _path(self, name: str) -> Path:
        return self.root.joinpath(*split_name(name))

    def open(self, name: str) -> BinaryIO:
        try:
            return open(self._path(name), "rb")
        except FileNotFoundError:
            raise ImageError(f"{self.describe} has no {name}") from None
        except OSError as exc:
            raise ImageError(f"cannot read {name} in {self.describe}: {exc.strerror}") from exc

    def size(self, name: str) -> int:
        try:
            return self._path(name).stat().st_size
        except FileNotFoundError:
            raise ImageError(f"{self.describe} has no {name}") from None


class _TarFiles(_Files):
    """Members of a plain tar, found by one pass of the strict reader over headers."""

    def __init__(self, fd: int, describe: str) -> None:
        super().__init__(describe)
        self.fd = fd
        self.members: dict[str, tuple[int, int]] = {}
        self.links: dict[str, str] = {}
        reader = TarReader(FileSource(fd), DEFAULT_LIMITS)
        for entry in reader:
            key = "/".join(split_name(entry.name))
            if entry.type == REGULAR:
                self.members[key] = (entry.offset_data, entry.size)
            elif entry.type == SYMLINK:
                # docker save links a layer.tar shared by two images to the first copy
                self.links[key] = entry.linkname
            reader.skip_data()

    def _resolve(self, name: str) -> tuple[int, int]:
        key = "/".join(split_name(name))
        for _ in range(_MAX_LINK_HOPS):
            if key in self.members:
                return self.members[key]
            target = self.links.get(key)
            if target is None:
                break
            base = key.rsplit("/", 1)[0] if "/" in key else ""
            joined = target.lstrip("/") if target.startswith("/") else f"{base}/{target}"
            key = "/".join(_normalize(joined))
        raise ImageError(f"{self.describe} has no member {name}")

    def open(self, name: str) -> BinaryIO:
        offset, size = self._resolve(name)
        return io.BufferedReader(_Range(self.fd, offset, size), 1 << 20)

    def size(self, name: str) -> int:
        return self._resolve(name)[1]


def _normalize(path: str) -> list[str]:
    parts: list[str] = []
    for part in path.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if parts:
                parts.pop()
            continue
        parts.append(part)
    return parts


@dataclass
class _OpenArchive:
    files: _TarFiles
    close: Callable[[], None]


def _open_tar(path: Path, tmp_dir: Path, describe: str) -> _OpenArchive:
    """Index a tar archive, decompressing it to a temp file first if it is compressed."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise UsageError(f"no such file: {path}") from None
    except IsADirectoryError:
        raise UsageError(f"{path} is a directory, not an archive") from None
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}") from exc
    temp: str | None = None
    try:
        try:
            compression = detect(os.pread(fd, 512, 0))
        except ArchiveError:
            raise ImageError(f"{path} is not a tar archive, plain or compressed") from None
        if compression is not Compression.NONE:
            handle, temp = tempfile.mkstemp(prefix="docker-archive-", dir=tmp_dir)
            with open(fd, "rb", closefd=False) as raw, os.fdopen(handle, "wb") as out:
                stream = open_decompressed(raw)
                while chunk := stream.read(1 << 20):
                    out.write(chunk)
            os.close(fd)
            fd = os.open(temp, os.O_RDONLY | os.O_CLOEXEC)
        files = _TarFiles(fd, describe)
    except BaseException:
        os.close(fd)
        if temp:
            os.unlink(temp)
        raise
    opened_fd, opened_temp = fd, temp

    def close() -> None:
        os.close(opened_fd)
        if opened_temp:
            os.unlink(opened_temp)

    return _OpenArchive(files, close)


# -- OCI layouts -----------------------------------------------------------------------------
def _blob_name(digest: str) -> str:
    algorithm, _, hexdigest = digest.partition(":")
    return f"blobs/{algorithm}/{hexdigest}"


def _read_blob(files: _Files, descriptor: Descriptor, limit: int, what: str) -> bytes:
    data = files.read(_blob_name(descriptor.digest), limit, what)
    if len(data) > limit:
        raise ImageError(f"{what} in {files.describe} is larger than {limit >> 20} MiB")
    got = digest_of(data, descriptor.digest.split(":")[0])
    if got != descriptor.digest:
        raise ImageError(
            f"{what} {descriptor.digest} in {files.describe} does not match its digest (got {got})"
        )
    return data


def _oci_image(
    files: _Files, wanted_ref: str | None, text: str
) -> tuple[Descriptor, bytes, str | None]:
    """The chosen image manifest's descriptor and bytes, and its ref name."""
    try:
        layout = json.loads(files.read("oci-layout", 1 << 16, "oci-layout"))
        version = layout.get("imageLayoutVersion") if isinstance(layout, dict) else None
    except ImageError:
        raise ImageError(
            f"{files.describe} is not an OCI image layout (no oci-layout file)"
        ) from None
    except (ValueError, UnicodeDecodeError):
        version = None
    if not isinstance(version, str):
        raise ImageError(f"{files.describe} is not an OCI image layout (bad oci-layout file)")
    data = files.read("index.json", MAX_MANIFEST_SIZE, "index.json")
    index = parse_index(data, "application/vnd.oci.image.index.v1+json",
                        f"index.json of {files.describe}")
    if wanted_ref is not None:
        chosen = [d for d in index.manifests if d.annotations.get(REF_NAME) == wanted_ref]
        if not chosen:
            names = sorted({d.annotations.get(REF_NAME, "") for d in index.manifests} - {""})
            raise ImageError(
                f'{files.describe} has no image named "{wanted_ref}" '
                f"(it has: {', '.join(names) or 'no named images'})"
            )
    else:
        chosen = index.manifests
        if len(chosen) != 1:
            names = sorted({d.annotations.get(REF_NAME, "") for d in chosen} - {""})
            raise UsageError(
                f'{files.describe} holds {len(chosen)} images: name one as "{text}:REF" '
                f"(refs: {', '.join(names) or 'none'})"
            )
    descriptor = chosen[0]
    ref_name = descriptor.annotations.get(REF_NAME)
    for _ in range(2):
        data = _read_blob(files, descriptor, MAX_MANIFEST_SIZE, "manifest")
        media_type = media_type_of(data, descriptor.media_type, f"manifest {descriptor.digest}")
        if media_type not in INDEX_TYPES:
            return descriptor, data, ref_name
        nested = parse_index(data, media_type, f"index {descriptor.digest}")
        platform = host_platform()
        found = nested.select(platform)
        if found is None:
            raise ImageError(
                f"{files.describe} has no image for {platform.os}/{platform.architecture} "
                f"(it has: {', '.join(nested.platforms()) or 'none'})"
            )
        descriptor = found
    raise ImageError(f"{files.describe}: nested indexes are not supported")


def _oci_layers(files: _Files, descriptors: list[Descriptor], config: ImageConfig) -> list[Layer]:
    layers = []
    for index, descriptor in enumerate(descriptors):
        name = _blob_name(descriptor.digest)
        layers.append(Layer(
            f"layer {descriptor.digest} of {files.describe}",
            _opener(files, name),
            descriptor.digest,
            config.diff_ids[index] if config.diff_ids else None,
        ))
    return layers


# -- the fetchers --------------------------------------------------------------------------
def _build(
    session: FetchSession, origin: Origin, config: ImageConfig, layers: list[Layer], where: str
) -> Path:
    warn = session.runtime.reporter.warn
    manifest = manifest_bytes(image_manifest(origin, config, warn=warn), where)
    jobs = [_unpack(layer, session.tmp_dir) for layer in layers]
    return squash_layers(session.tmp_dir, manifest, jobs, range(len(jobs)),
                         epoch=created_epoch(config))


def _unpack(layer: Layer, tmp_dir: Path) -> Callable[[], PlainLayer]:
    return lambda: decompress_layer(layer, tmp_dir)


def _opener(files: _Files, name: str) -> Callable[[], BinaryIO]:
    return lambda: files.open(name)


def _name_from_path(path: Path) -> str:
    """``hello.oci.tar.gz`` -> ``hello``."""
    stem = path.name
    suffixes = (".gz", ".tgz", ".zst", ".xz", ".bz2", ".tar", ".oci")
    while any(stem.endswith(suffix) and stem != suffix for suffix in suffixes):
        stem = next(stem[: -len(s)] for s in suffixes if stem.endswith(s))
    return sanitize_ac_identifier(stem) or "image"


def _oci_origin(path: Path, wanted: str | None, ref_name: str | None, text: str,
                manifest: Descriptor, config_digest: str) -> Origin:
    named: DockerReference | None = None
    if ref_name and ("/" in ref_name or ":" in ref_name):
        try:
            named = parse_docker_reference(ref_name, what="image reference")
        except UsageError:
            named = None
    if named is not None:
        return Origin(
            name=named.aci_name, version=named.version, original_name=text,
            registry=named.registry, repository=named.repository, tag=named.tag,
            manifest_digest=manifest.digest, image_id=config_digest,
        )
    version = wanted or ref_name or "latest"
    return Origin(
        name=_name_from_path(path), version=version, original_name=text, tag=version,
        manifest_digest=manifest.digest, image_id=config_digest,
    )


def _convert_oci(files: _Files, path: Path, wanted: str | None, text: str,
                 session: FetchSession) -> Path:
    descriptor, data, ref_name = _oci_image(files, wanted, text)
    where = text
    image = parse_manifest(data, media_type_of(data, descriptor.media_type, where), where)
    config = parse_config(_read_blob(files, image.config, MAX_CONFIG_SIZE, "config"), where)
    check_layer_count(image, config, where)
    origin = _oci_origin(path, wanted, ref_name, text, descriptor, image.config.digest)
    return _build(session, origin, config, _oci_layers(files, image.layers, config), where)


class OciLayoutFetcher:
    """``oci:DIR[:REF]``."""

    def fetch(self, ref: ImageRef, session: FetchSession) -> FetchedImage:
        path, wanted = split_source(ref)
        refuse_unsigned(session, ref.text)
        if not path.is_dir():
            raise UsageError(f"no such OCI layout directory: {path}")
        out = _translate(lambda: _convert_oci(_DirectoryFiles(path), path, wanted, ref.text,
                                              session), ref.text)
        return FetchedImage(path=out, origin=ref.text, signable=False, temporary=True)


class OciArchiveFetcher:
    """``oci-archive:PATH[:REF]``."""

    def fetch(self, ref: ImageRef, session: FetchSession) -> FetchedImage:
        path, wanted = split_source(ref)
        refuse_unsigned(session, ref.text)

        def convert() -> Path:
            archive = _open_tar(path, session.tmp_dir, str(path))
            try:
                return _convert_oci(archive.files, path, wanted, ref.text, session)
            finally:
                archive.close()

        out = _translate(convert, ref.text)
        return FetchedImage(path=out, origin=ref.text, signable=False, temporary=True)


class DockerArchiveFetcher:
    """``docker-archive:PATH[:NAME[:TAG]|:@N]``."""

    def fetch(self, ref: ImageRef, session: FetchSession) -> FetchedImage:
        path, wanted = split_source(ref)
        refuse_unsigned(session, ref.text)

        def convert() -> Path:
            archive = _open_tar(path, session.tmp_dir, str(path))
            try:
                return self._convert(archive.files, path, wanted, ref.text, session)
            finally:
                archive.close()

        out = _translate(convert, ref.text)
        return FetchedImage(path=out, origin=ref.text, signable=False, temporary=True)

    def _convert(self, files: _TarFiles, path: Path, wanted: str | None, text: str,
                 session: FetchSession) -> Path:
        data = files.read("manifest.json", MAX_MANIFEST_SIZE, "manifest.json")
        try:
            entries = json.loads(data)
        except (ValueError, UnicodeDecodeError):
            entries = None
        if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
            raise ImageError(f"manifest.json of {path} is not a list of images")
        entry, named = self._choose(entries, wanted, path, text)
        config_name = entry.get("Config")
        layer_names = entry.get("Layers")
        if not isinstance(config_name, str) or not isinstance(layer_names, list) or not all(
            isinstance(name, str) for name in layer_names
        ):
            raise ImageError(f"manifest.json of {path}: an image lacks Config or Layers")
        config_bytes = files.read(config_name, MAX_CONFIG_SIZE, "image config")
        config = parse_config(config_bytes, f"{config_name} in {path}")
        if config.diff_ids and len(config.diff_ids) != len(layer_names):
            raise ImageError(
                f"{path}: the config lists {len(config.diff_ids)} layers, manifest.json "
                f"{len(layer_names)}"
            )
        layers = [
            Layer(f"layer {name} of {path}", _opener(files, name), None,
                  config.diff_ids[index] if config.diff_ids else None)
            for index, name in enumerate(layer_names)
        ]
        config_digest = digest_of(config_bytes)
        if named is not None:
            origin = Origin(
                name=named.aci_name, version=named.version, original_name=text,
                registry=named.registry, repository=named.repository, tag=named.tag,
                image_id=config_digest,
            )
        else:
            origin = Origin(name=_name_from_path(path), version="latest", original_name=text,
                            image_id=config_digest)
        return _build(session, origin, config, layers, text)

    @staticmethod
    def _choose(
        entries: list[dict[str, object]], wanted: str | None, path: Path, text: str
    ) -> tuple[dict[str, object], DockerReference | None]:
        def tags(entry: dict[str, object]) -> list[str]:
            found = entry.get("RepoTags")
            return [t for t in found if isinstance(t, str)] if isinstance(found, list) else []

        if wanted is not None and (match := _INDEX_SUFFIX.match(wanted)):
            number = int(match[1])
            if number >= len(entries):
                raise UsageError(f"{path} holds {len(entries)} images; there is no @{number}")
            entry = entries[number]
        elif wanted is not None:
            target = parse_docker_reference(wanted, what="image reference")
            for entry in entries:
                for tag in tags(entry):
                    try:
                        if parse_docker_reference(tag, what="tag") == target:
                            return entry, target
                    except UsageError:
                        continue
            raise ImageError(f'{path} has no image tagged "{wanted}"')
        elif len(entries) == 1:
            entry = entries[0]
        else:
            raise UsageError(
                f'{path} holds {len(entries)} images: name one as "{text}:NAME:TAG" or '
                f'"{text}:@N"'
            )
        for tag in tags(entry):
            try:
                return entry, parse_docker_reference(tag, what="tag")
            except UsageError:
                continue
        return entry, None


def _translate(convert: Callable[[], Path], text: str) -> Path:
    try:
        return convert()
    except RktError:
        raise
    except OSError as exc:
        raise ImageError(f"cannot read {text}: {exc.strerror or exc}") from exc
