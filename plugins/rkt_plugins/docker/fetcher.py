"""``docker://`` images: pull from a registry, convert to an ACI, hand it to the store.

What a fetch does, and what it skips when it can:

1. parse the reference; refuse at once without ``--insecure-options=image``
   (Docker images carry no signature, so nothing is downloaded to be refused later);
2. ``GET /v2/`` and the manifest (a manifest list or OCI index picks the host's
   platform, then the image manifest by digest);
3. if the store's remote cache says the image stored for this reference was
   converted from this very manifest by these rules (:func:`stored_conversion`),
   that image is returned as it is: a re-fetch of an unchanged tag costs one
   manifest request, and with ``--pull-policy=new`` not even that;
4. otherwise :mod:`.pull` takes over: the config and the layers the cache
   (:mod:`.cache`) lacks are downloaded in parallel and verified, each layer
   unpacked as it arrives, and the layers are squashed base first into an ACI
   (:mod:`.squash`), which the pipeline imports like any other image.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from rkt.api import (
    FetchedImage,
    FetchError,
    FetchSession,
    ImageError,
    ImageNotFoundError,
    ImageRef,
    RemoteRecord,
    VerificationError,
    client_for,
)
from rkt_plugins.docker.convert import CONVERTER_VERSION, Origin
from rkt_plugins.docker.documents import (
    INDEX_TYPES,
    ImageConfig,
    ImageManifest,
    host_platform,
    parse_index,
    parse_manifest,
)
from rkt_plugins.docker.reference import (
    DOCKER_HUB_ALIASES,
    DockerReference,
    parse_docker_reference,
    strip_scheme,
)
from rkt_plugins.docker.registry import Credentials, RegistryClient

if TYPE_CHECKING:
    from rkt.api import ImageStore
    from rkt.config import Config

LOG = logging.getLogger(__name__)


def refuse_unsigned(session: FetchSession, origin: str) -> None:
    """Docker images cannot be verified: refuse before any download unless insecure."""
    if not session.runtime.is_insecure("image"):
        # The same words as the pipeline's refusal of any unsignable image.
        raise VerificationError(
            f"signature verification for {origin} is not supported "
            "(try --insecure-options=image)"
        )


def registry_credentials(config: Config, registry: str) -> Credentials | None:
    """The ``dockerAuth`` entry for ``registry`` (local config over system, as loaded).

    Entries are matched by host; ``https://``, a path (``https://index.docker.io/v1/``)
    and any of Docker Hub's names are accepted for Docker Hub.
    """
    wanted = {registry} | (set(DOCKER_HUB_ALIASES) if registry in DOCKER_HUB_ALIASES else set())
    for key, entry in config.docker_auth.items():
        host = key.lower().split("://", 1)[-1].split("/", 1)[0]
        if host in wanted:
            return Credentials(entry.user, entry.password, str(entry.source))
    return None


def remote_etag(manifest_digest: str) -> str:
    """What the remote cache keeps for a converted image: the Docker manifest it came
    from and the rules it was converted by (the image changes when either does)."""
    return f"{manifest_digest} {CONVERTER_VERSION}"


def stored_conversion(store: ImageStore, url: str, manifest_digest: str | None) -> str | None:
    """The ID of the stored image last converted from ``url``, if it is still in the
    store and (when ``manifest_digest`` is given) came from that manifest."""
    row = store.cached_remote(url)
    if row is None:
        return None
    etag, image_id = row
    digest, _, converter = (etag or "").partition(" ")
    if converter != CONVERTER_VERSION or (manifest_digest and digest != manifest_digest):
        return None
    try:
        return store.resolve(image_id).id
    except ImageError:
        return None


def check_layer_count(image: ImageManifest, config: ImageConfig, where: str) -> None:
    if config.diff_ids and len(config.diff_ids) != len(image.layers):
        raise ImageError(
            f"{where}: the config lists {len(config.diff_ids)} layers, the manifest "
            f"{len(image.layers)}"
        )


class DockerFetcher:
    """The fetcher for ``docker://`` and ``docker:`` image strings."""

    def fetch(self, ref: ImageRef, session: FetchSession) -> FetchedImage:
        docker_ref = parse_docker_reference(ref.text)
        refuse_unsigned(session, docker_ref.url)
        runtime = session.runtime
        store = runtime.store
        url = docker_ref.url
        if session.pull_policy in ("new", "never"):
            # rkt 1.x: "new" fetches only what the store does not have yet, "never"
            # nothing at all.
            known = stored_conversion(store, url, None)
            if known is not None:
                return FetchedImage.unchanged(known, url)
            if session.pull_policy == "never":
                raise ImageNotFoundError(
                    f'image "{ref.text}" is not in the store and --pull-policy=never'
                )
        runtime.reporter.info(f"rkt: fetching image from {ref.text}")
        http = client_for(runtime)
        try:
            client = RegistryClient(
                docker_ref.registry, http,
                credentials=registry_credentials(runtime.config, docker_ref.registry),
                allow_http=runtime.is_insecure("http"),
            )
            client.connect(docker_ref.repository)
            image, digest = self._image_manifest(client, docker_ref)
            remote = RemoteRecord(url, remote_etag(digest))
            unchanged = stored_conversion(store, url, digest)
            if unchanged is not None:
                LOG.debug("%s is unchanged: reusing %s", docker_ref, unchanged)
                return FetchedImage.unchanged(unchanged, url, remote)
            origin = Origin(
                name=docker_ref.aci_name, version=docker_ref.version,
                original_name=strip_scheme(ref.text), registry=docker_ref.registry,
                repository=docker_ref.repository, tag=docker_ref.tag,
                manifest_digest=digest, image_id=image.config.digest,
            )
            from rkt_plugins.docker.pull import ImagePull

            path = ImagePull(client, docker_ref, image, origin, session).run()
        finally:
            http.close()
        return FetchedImage(
            path=path, origin=url, signable=False, temporary=True, remote=remote
        )

    @staticmethod
    def _image_manifest(
        client: RegistryClient, ref: DockerReference
    ) -> tuple[ImageManifest, str]:
        document = client.manifest(ref.repository, ref.reference, str(ref))
        where = f'manifest of "{ref}"'
        if document.media_type in INDEX_TYPES:
            index = parse_index(document.data, document.media_type, where)
            wanted = host_platform()
            chosen = index.select(wanted)
            if chosen is None:
                have = ", ".join(index.platforms()) or "none"
                raise FetchError(
                    f'docker image "{ref}" has no image for {wanted.os}/{wanted.architecture} '
                    f"(it has: {have})"
                )
            shown = f"{ref.registry}/{ref.repository}@{chosen.digest}"
            document = client.manifest(ref.repository, chosen.digest, shown)
            where = f'manifest of "{shown}"'
            if document.media_type in INDEX_TYPES:
                raise FetchError(f"{where} is another index: nested indexes are not supported")
        try:
            return parse_manifest(document.data, document.media_type, where), document.digest
        except ImageError as exc:
            raise FetchError(str(exc)) from exc
