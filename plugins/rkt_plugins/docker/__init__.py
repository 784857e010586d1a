"""Docker images: ``docker://`` from registries, and local Docker/OCI archives.

rkt runs Docker images by converting them to ACIs, as rkt 1.x did with docker2aci:
the layers are squashed into one rootfs and the image config becomes an appc image
manifest. Unlike docker2aci, downloaded layers are kept by digest, so an image that
shares layers with one fetched before downloads only what is new, and a re-fetch of
an unchanged tag costs one manifest request.

Modules, in the order a fetch uses them: :mod:`.reference` (the ``docker://``
syntax), :mod:`.registry` (the registry API over :mod:`rkt.http`, and its
authentication), :mod:`.documents` (manifests, indexes, configs), :mod:`.cache`
(the layer cache), :mod:`.squash` (layers to an ACI), :mod:`.convert` (config to
manifest), :mod:`.fetcher` (the ``docker`` fetcher) and :mod:`.archives` (the
``docker-archive:``, ``oci:`` and ``oci-archive:`` fetchers).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from rkt.api import FetcherRegistry, hookimpl

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from rkt.api import FetchedImage, FetchSession, ImageRef

#: kind of image string -> the class serving it, imported only when one is fetched
FETCHERS = {
    "docker": "rkt_plugins.docker.fetcher:DockerFetcher",
    "docker-archive": "rkt_plugins.docker.archives:DockerArchiveFetcher",
    "oci": "rkt_plugins.docker.archives:OciLayoutFetcher",
    "oci-archive": "rkt_plugins.docker.archives:OciArchiveFetcher",
}


class _LazyFetcher:
    """Registers a kind without importing its code (a ``rkt fetch ./x.aci`` needs none)."""

    #: archives are local files, and docker:// answers from its own cache of tags
    answers_offline = True

    def __init__(self, target: str) -> None:
        self.target = target

    def fetch(self, ref: ImageRef, session: FetchSession) -> FetchedImage:
        module_name, _, class_name = self.target.partition(":")
        fetcher = getattr(importlib.import_module(module_name), class_name)()
        result: FetchedImage = fetcher.fetch(ref, session)
        return result


@hookimpl
def rkt_image_gc(data_dir: Path, grace_period: float, report: Callable[[str], None]) -> None:
    """Remove cached layers and configs that no fetch has used within the grace period."""
    from rkt_plugins.docker.cache import BlobCache

    for removed in BlobCache(data_dir, data_dir / "cas" / "tmp").sweep(grace_period):
        report(f"removed docker {removed}")


@hookimpl
def rkt_register_fetchers(registry: FetcherRegistry) -> None:
    for kind, target in FETCHERS.items():
        registry.add(kind, _LazyFetcher(target))
