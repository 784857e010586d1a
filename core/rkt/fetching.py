"""Getting an image into the store: the contracts fetch plugins implement, and the pipeline.

The pipeline, for every source (file, https, discovery, plugin schemes):

1. the fetcher puts the image's exact bytes in a local file and returns its
   detached signature, if any (:class:`FetchedImage`);
2. the verifier checks the signature over *those bytes* against every trusted
   key and names the signer; nothing in the archive has been read yet;
3. the store imports the file in one streaming pass (decompress, hash, write,
   validate the layout) into a temporary blob and parses the manifest;
4. the core checks that the signer is trusted for the manifest's *name* (and
   that the name and labels are the ones asked for); only then does the store
   commit the blob. Any failure leaves the store exactly as it was.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from rkt import faults
from rkt.errors import (
    ImageNotFoundError,
    RktError,
    UnknownSignerError,
    UsageError,
    VerificationError,
)
from rkt.imageref import ImageRef, has_scheme, parse_image_ref
from rkt.log import get_logger

if TYPE_CHECKING:
    from rkt.context import Runtime
    from rkt.keystore import TrustedKey
    from rkt.schema.image import ImageManifest
    from rkt.store import ImageInfo

LOG = get_logger(__name__)


# -- contracts -----------------------------------------------------------------------
@dataclass
class FetchedImage:
    """An image's bytes on local disk, ready to be verified and imported."""

    #: a local file holding exactly the bytes that were fetched
    path: Path
    #: where it came from, for messages ("/root/hello.aci", "https://...")
    origin: str
    #: the armored detached signature, or None when there is none
    signature: bytes | None = None
    #: where the signature came from (or was looked for), for messages
    signature_origin: str | None = None
    #: the signature's format: picks the verifier (``rkt_register_verifiers``)
    signature_format: str = "openpgp"
    #: False for sources that cannot be signed (Docker); they need --insecure-options=image
    signable: bool = True
    #: delete ``path`` once imported (temporary downloads)
    temporary: bool = False
    #: the appc name and labels the user asked for, checked against the manifest
    expected_name: str | None = None
    expected_labels: dict[str, str] = field(default_factory=dict)
    #: for downloads: what the store's remote cache should remember about the source
    remote: RemoteRecord | None = None
    #: set (instead of bytes in ``path``) when the source says the stored image with
    #: this ID is still current, e.g. an HTTP ``304 Not Modified``
    stored_id: str | None = None

    @classmethod
    def unchanged(
        cls, image_id: str, origin: str, remote: RemoteRecord | None = None
    ) -> FetchedImage:
        """The stored image ``image_id`` is what ``origin`` holds: nothing to import."""
        return cls(path=Path(os.devnull), origin=origin, stored_id=image_id, remote=remote)


@dataclass(frozen=True)
class RemoteRecord:
    """A download's source as the remote cache keeps it (rkt's ``remote`` table)."""

    url: str
    etag: str | None = None
    #: Cache-Control max-age in seconds; 0 means "ask again every time"
    max_age: int = 0
    signature_url: str | None = None


@dataclass(frozen=True)
class Signer:
    """Who made a valid signature: the primary key's fingerprint and its user IDs."""

    fingerprint: str
    user_ids: tuple[str, ...] = ()


class Fetcher(Protocol):
    """Retrieves the bytes (and signature) of one kind of image string.

    A fetcher may also set ``answers_offline = True`` when it can serve
    ``--pull-policy=never`` without the network (a local file, or a cache of its
    own); otherwise the core answers "not in the store" for it.
    """

    def fetch(self, ref: ImageRef, session: FetchSession) -> FetchedImage:
        """Return the image's bytes on disk; raise FetchError naming the source."""
        ...


class Verifier(Protocol):
    """Checks a detached signature over a file."""

    def verify(self, data: Path, signature: bytes, keys: Sequence[TrustedKey]) -> Signer:
        """Return the signer among ``keys``; raise VerificationError otherwise."""
        ...


class Discoverer(Protocol):
    """Maps an appc name (and labels) to image, signature and key URLs."""

    def discover(
        self, name: str, labels: dict[str, str], session: FetchSession
    ) -> DiscoveredEndpoints:
        ...


@dataclass
class DiscoveredEndpoints:
    aci: list[tuple[str, str]] = field(default_factory=list)  # (aci url, signature url)
    keys: list[str] = field(default_factory=list)


@dataclass
class FetchSession:
    """What a fetcher may use: the core context and a scratch directory in the store."""

    runtime: Runtime
    tmp_dir: Path
    #: per-image ``--signature`` file given on the command line
    signature_file: Path | None = None
    #: ``new``, ``update`` or ``never`` (``--pull-policy``), for fetchers with a cache
    pull_policy: str = "update"
    #: plain http allowed besides ``--insecure-options=http`` (``rkt trust --insecure-allow-http``)
    allow_http: bool = False


def discover_endpoints(
    runtime: Runtime, name: str, labels: dict[str, str], session: FetchSession
) -> DiscoveredEndpoints:
    """Ask each installed discovery method in turn; the first with ACI endpoints wins.

    The name fetcher and ``actool discover`` both find images through this.
    """
    registry = runtime.plugins.discovery
    if not registry.names():
        raise UsageError(
            f'cannot discover "{name}": no discovery method is installed to find it; '
            "give a file, an https URL or an image ID instead"
        )
    first_error: RktError | None = None
    keys_only: DiscoveredEndpoints | None = None
    for method in registry.names():
        discoverer = registry.get(method)
        if discoverer is None:
            continue
        try:
            endpoints = discoverer.discover(name, labels, session)
        except RktError as exc:
            first_error = first_error or exc
            continue
        if endpoints.aci:
            return endpoints
        keys_only = keys_only or endpoints
    if keys_only is not None:
        return keys_only
    assert first_error is not None
    raise first_error


# -- pipeline ------------------------------------------------------------------------
def fetch_image(
    runtime: Runtime,
    text: str,
    *,
    signature_file: Path | None = None,
    pull_policy: str = "update",
) -> ImageInfo:
    """Resolve ``text`` to a stored image, fetching and verifying it if needed.

    The image's ``dependencies`` are fetched too (recursively, with the same pull
    policy), so that it can be rendered (``appc-spec/aci.md``, dependency matching).
    """
    # the fetchers (every fetcher plugin imported) only when a scheme could name one:
    # a plain name already in the store, a pod start's usual case, needs none
    schemes = runtime.plugins.fetchers.names() if has_scheme(text) else ()
    ref = parse_image_ref(text, plugin_schemes=schemes)
    info = _fetch_one(runtime, ref, signature_file, pull_policy)
    fetch_dependencies(runtime, info, pull_policy=pull_policy)
    return info


def _fetch_one(
    runtime: Runtime, ref: ImageRef, signature_file: Path | None, pull_policy: str
) -> ImageInfo:
    plugins = runtime.plugins
    store = runtime.store
    text = ref.text
    LOG.debug('image "%s": kind %s, pull policy %s', text, ref.kind, pull_policy)
    if ref.kind == "hash":
        return require_verified(runtime, store.resolve(text))
    if ref.kind == "name" and pull_policy in ("new", "never"):
        try:
            found = store.find_by_name(ref.name or "", ref.labels)
            LOG.debug('image "%s" is in the store: %s', text, found.id)
            return require_verified(runtime, found)
        except ImageNotFoundError:
            if pull_policy == "never":
                raise
    if pull_policy == "never" and ref.kind in ("https", "http") and ref.url:
        # rkt 1.x: a URL fetched before is found through the remote cache.
        cached = store.cached_remote(ref.url)
        if cached is not None:
            try:
                found = store.resolve(cached[1])
            except ImageNotFoundError:
                pass
            else:
                return require_verified(runtime, found)
    fetcher = plugins.fetcher(ref.kind)
    if fetcher is None:
        raise UsageError(f'no fetcher is installed for "{ref.kind}" images ("{text}")')
    # "never" leaves the decision to fetchers that need no network (local files) or
    # keep their own cache keys (the Docker plugin's)
    if pull_policy == "never" and not getattr(fetcher, "answers_offline", False):
        raise ImageNotFoundError(f'image "{text}" is not in the store and --pull-policy=never')
    session = FetchSession(
        runtime=runtime, tmp_dir=store.tmp_dir, signature_file=signature_file,
        pull_policy=pull_policy,
    )
    LOG.debug('fetching "%s" with the %s fetcher (%s)', text, ref.kind,
              plugins.fetchers.provider(ref.kind))
    fetched = fetcher.fetch(ref, session)
    faults.point("fetch:fetched")
    try:
        if fetched.stored_id is not None:
            try:
                stored = store.resolve(fetched.stored_id)
            except ImageNotFoundError:
                # removed (image rm, image gc) since the fetcher found it: asked
                # again, the fetcher finds it gone and brings the bytes
                fetched = fetcher.fetch(ref, session)
                if fetched.stored_id is not None:
                    stored = store.resolve(fetched.stored_id)
        if fetched.stored_id is not None:
            info = require_verified(runtime, stored)
        else:
            info = import_fetched(runtime, fetched)
    finally:
        if fetched.temporary:
            fetched.path.unlink(missing_ok=True)
    if fetched.remote is not None:
        remote = fetched.remote
        store.record_remote(
            remote.url, remote.etag, info.id,
            signature_url=remote.signature_url, max_age=remote.max_age,
        )
    return info


def require_verified(runtime: Runtime, info: ImageInfo) -> ImageInfo:
    """``info``, unless it came into the store unverified and verification is on.

    An image fetched once with ``--insecure-options=image`` is not trusted by a
    later command that asks for verification (issue 10: rkt 1.x ran it from the
    cache). The store holds no signature to check again, so the command refuses.
    """
    if info.verified or runtime.is_insecure("image"):
        return info
    raise VerificationError(
        f'image "{info.name}" ({info.short_id}) is in the store unverified (it came in '
        "with --insecure-options=image); remove it (rkt image rm) and fetch it again "
        "with its signature, or pass --insecure-options=image"
    )


#: dependency chains deeper than this are refused (a cycle, or a hostile manifest)
MAX_DEPENDENCY_DEPTH = 32


def fetch_dependencies(
    runtime: Runtime,
    info: ImageInfo,
    *,
    pull_policy: str = "new",
    _chain: tuple[str, ...] = (),
    _done: set[str] | None = None,
) -> None:
    """Make sure every dependency of ``info`` (recursively) is in the store.

    A dependency pinned by ``imageID`` is taken from the store when it is there;
    otherwise it is fetched by name and labels through the ordinary pipeline
    (discovery, signature, name and label checks) and must then match the pin.
    """
    import json

    from rkt.errors import ImageError, RktError

    store = runtime.store
    raw = store.manifest_bytes(info.id)
    # Most images have no dependencies: say so without loading the schema library,
    # whose import costs more than starting a pod (the manifest was validated at import).
    if not json.loads(raw).get("dependencies"):
        return
    from rkt.schema.image import ImageManifest

    done = set() if _done is None else _done
    chain = (*_chain, info.id)
    if len(chain) > MAX_DEPENDENCY_DEPTH:
        raise ImageError(
            f'dependencies of image "{info.name}" are nested more than '
            f"{MAX_DEPENDENCY_DEPTH} deep"
        )
    manifest = ImageManifest.parse(raw, source=f"image {info.id}: manifest")
    for dependency in manifest.dependencies or ():
        labels = {label.name: label.value for label in dependency.labels or ()}
        wanted = dependency.image_name + "".join(f",{k}={v}" for k, v in labels.items())
        found: ImageInfo | None = None
        try:
            if dependency.image_id:
                try:
                    found = store.resolve(dependency.image_id)
                except ImageNotFoundError:
                    found = None
            if found is None:
                ref = ImageRef(wanted, "name", name=dependency.image_name, labels=labels)
                found = _fetch_one(runtime, ref, None, pull_policy)
        except RktError as exc:
            raise type(exc)(f'dependency "{wanted}" of image "{manifest.name}": {exc}') from exc
        if not dependency.matches(found.id):
            raise VerificationError(
                f'dependency "{wanted}" of image "{manifest.name}" is pinned to imageID '
                f"{dependency.image_id}, but the image found is {found.id}"
            )
        if found.id in chain:
            raise ImageError(
                f'dependency cycle: image "{manifest.name}" depends on "{found.name}", '
                "which depends on it"
            )
        if found.id not in done:
            fetch_dependencies(
                runtime, found, pull_policy=pull_policy, _chain=chain, _done=done
            )
    done.add(info.id)


def import_fetched(
    runtime: Runtime, fetched: FetchedImage, *, verify: bool = True
) -> ImageInfo:
    """Steps 2-4 of the pipeline for bytes already on disk.

    ``verify=False`` is for images rkt trusts by where they are (the stage1
    images installed next to rkt), never for anything a user pointed at.
    """
    signer: Signer | None = None
    if not verify:
        LOG.debug("%s is trusted by its location: not verifying", fetched.origin)
    elif runtime.is_insecure("image"):
        runtime.reporter.warn("image signature verification has been disabled")
    elif not fetched.signable:
        raise VerificationError(
            f"signature verification for {fetched.origin} is not supported "
            "(try --insecure-options=image)"
        )
    elif fetched.signature is None:
        where = fetched.signature_origin or f"{fetched.path}.asc"
        raise VerificationError(
            f"no signature for {fetched.origin} (looked for {where}); "
            "pass --signature FILE, or --insecure-options=image to skip verification"
        )
    else:
        keys = runtime.keystore.all_keys()
        try:
            verifier = runtime.plugins.verifier(fetched.signature_format)
            signer = verifier.verify(fetched.path, fetched.signature, keys)
        except UnknownSignerError as exc:
            name = fetched.expected_name or _claimed_name(fetched.path)
            prefix = f'"{name}"' if name else "IMAGE-NAME-PREFIX"
            raise UnknownSignerError(
                f"{exc}; if you trust that key, add it with: rkt trust --prefix {prefix} KEYFILE"
            ) from exc

    def accept(manifest: ImageManifest) -> None:
        _check_expected(fetched, manifest)
        if signer is not None:
            _check_signer_trusted(runtime, signer, manifest.name)

    from rkt.progress import ProgressBar

    progress = ProgressBar("Importing ACI", None, runtime.reporter.stderr)
    info = runtime.store.import_file(
        fetched.path, accept=accept, origin=fetched.origin, progress=progress,
        adopt=fetched.temporary,
    )
    if signer is not None or not verify:
        how, fingerprint = ("signature", signer.fingerprint) if signer else ("location", None)
        runtime.store.record_verification(info.id, how, fingerprint)
        info = replace(info, verification=how, signer=fingerprint)
    if signer is not None:
        runtime.reporter.info("rkt: signature verified:")
        for uid in signer.user_ids or (signer.fingerprint,):
            runtime.reporter.info(f"  {uid}")
    return info


def _claimed_name(path: Path) -> str | None:
    """The name an image that failed verification claims, for the hint only.

    Read with the same hostile-input-safe scan as any import and never trusted:
    it only tells the user which prefix the trust command would be for.
    """
    import json

    from rkt.aci.archive import scan_aci
    from rkt.aci.compression import open_decompressed
    from rkt.errors import RktError

    try:
        with open(path, "rb") as raw:
            name = json.loads(scan_aci(open_decompressed(raw))).get("name")
    except (RktError, OSError, ValueError, AttributeError):
        return None
    return name if isinstance(name, str) and name.isprintable() and len(name) < 256 else None


def _check_expected(fetched: FetchedImage, manifest: ImageManifest) -> None:
    # A signature proves who signed, not that this is the image that was asked for
    # (a signed downgrade is still signed); appc-spec/discovery.md "Validation".
    if fetched.expected_name is not None and manifest.name != fetched.expected_name:
        raise VerificationError(
            f'image name mismatch: asked for "{fetched.expected_name}", '
            f'{fetched.origin} contains "{manifest.name}"'
        )
    for label, wanted in fetched.expected_labels.items():
        have = manifest.label(label)
        # discovery.md: a discovery label must be in the manifest with the same value;
        # os and arch may be absent (aci.md: the image does not depend on them).
        if have is None and label in ("os", "arch"):
            continue
        if have != wanted:
            found = f'{label}="{have}"' if have is not None else f"no {label} label"
            raise VerificationError(
                f'image label mismatch: asked for {label}="{wanted}", '
                f"{fetched.origin} has {found}"
            )


def _check_signer_trusted(runtime: Runtime, signer: Signer, name: str) -> None:
    trusted = runtime.keystore.fingerprints_for(name)
    if signer.fingerprint.lower() not in trusted:
        raise VerificationError(
            f'image "{name}" is signed by key {signer.fingerprint.upper()}, '
            f"which is not trusted for this name; to trust it run: "
            f'rkt trust --prefix "{name}" KEYFILE'
        )

