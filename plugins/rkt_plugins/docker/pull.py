"""One image pulled from a registry and converted: the part of a fetch that downloads.

Imported only when a fetch has something to download or convert (a re-fetch of an
unchanged tag never loads it). :class:`ImagePull` locks and stages what the cache
lacks (:mod:`.cache`), downloads the missing layers on worker threads that unpack
each one as it arrives (and check the cached ones), and squashes the layers in order
(:mod:`.squash`) while the others are still on their way.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path

from rkt.api import FetchError, FetchSession, ImageError
from rkt_plugins.docker.cache import CONFIGS, LAYERS, BlobCache
from rkt_plugins.docker.convert import Origin, created_epoch, image_manifest, manifest_bytes
from rkt_plugins.docker.documents import (
    Descriptor,
    ImageConfig,
    ImageManifest,
    digest_of,
    parse_config,
)
from rkt_plugins.docker.fetcher import check_layer_count
from rkt_plugins.docker.progress import LayerProgress
from rkt_plugins.docker.reference import DockerReference
from rkt_plugins.docker.registry import MAX_CONFIG_SIZE, RegistryClient
from rkt_plugins.docker.squash import (
    Layer,
    PlainLayer,
    decompress_layer,
    squash_layers,
    verified_layer,
)

LOG = logging.getLogger(__name__)


class _Cancelled(Exception):
    """Stops a download thread after the fetch failed elsewhere."""


class ImagePull:
    """Downloads and conversion of one image; owns the threads and the staged blobs."""

    def __init__(
        self,
        client: RegistryClient,
        ref: DockerReference,
        image: ImageManifest,
        origin: Origin,
        session: FetchSession,
    ) -> None:
        self.client = client
        self.ref = ref
        self.image = image
        self.origin = origin
        self.session = session
        store = session.runtime.store
        self.cache = BlobCache(store.data_dir, session.tmp_dir)
        self.progress = LayerProgress(session.runtime.reporter.stderr)
        self.cancelled = threading.Event()

    def run(self) -> Path:
        image = self.image
        cache = self.cache
        try:
            config_missing = cache.lock_missing(CONFIGS, [image.config.digest])
            config = self._config(image.config, bool(config_missing))
            where = f'image "{self.ref}"'
            check_layer_count(image, config, where)
            manifest = manifest_bytes(
                image_manifest(self.origin, config, warn=self.session.runtime.reporter.warn), where
            )
            # Layers are cached by diff_id; without diff_ids nothing can be cached.
            diff_ids: list[str | None] = list(config.diff_ids) or [None] * len(image.layers)
            missing = cache.lock_missing(LAYERS, [d for d in diff_ids if d is not None])
            # One job per distinct layer: check the cached copy, or download and
            # unpack it; the jobs run in parallel while the main thread applies the
            # layers in order.
            jobs: list[Callable[[], PlainLayer]] = []
            job_of: dict[str, int] = {}
            order = []
            for layer, diff_id in zip(image.layers, diff_ids, strict=True):
                key = diff_id or layer.digest
                if key not in job_of:
                    job_of[key] = len(jobs)
                    jobs.append(self._job(layer, diff_id, cached=(
                        diff_id is not None and diff_id not in missing)))
                order.append(job_of[key])
            path = squash_layers(self.session.tmp_dir, manifest, jobs, order,
                                 epoch=created_epoch(config), cancelled=self.cancelled)
            self.progress.finish()
            try:
                cache.commit()
            except OSError as exc:
                LOG.warning("cannot keep the downloaded layers: %s", exc)
            return path
        finally:
            self.cancelled.set()
            cache.release()

    def _config(self, descriptor: Descriptor, download: bool) -> ImageConfig:
        where = f'config of "{self.ref}"'
        if download:
            data = self.client.blob_bytes(self.ref.repository, descriptor, "config")
            self.cache.stage(CONFIGS, descriptor.digest).write_bytes(data)
        else:
            path = self.cache.used(CONFIGS, descriptor.digest)
            data = path.read_bytes()[: MAX_CONFIG_SIZE + 1]
            if digest_of(data, descriptor.digest.split(":")[0]) != descriptor.digest:
                self.cache.evict(CONFIGS, descriptor.digest)
                raise FetchError(
                    f"cached config {descriptor.digest} was corrupt and has been removed; "
                    "fetch again"
                )
        try:
            return parse_config(data, where)
        except ImageError as exc:
            raise FetchError(str(exc)) from exc

    def _job(self, layer: Descriptor, diff_id: str | None, *, cached: bool
             ) -> Callable[[], PlainLayer]:
        cache = self.cache
        if cached:
            assert diff_id is not None
            path = cache.used(LAYERS, diff_id)
            return lambda: verified_layer(
                f"cached layer {diff_id}", path, diff_id,
                on_mismatch=lambda: cache.evict(LAYERS, diff_id),
            )
        out = cache.stage(LAYERS, diff_id) if diff_id is not None else None

        def download_and_unpack() -> PlainLayer:
            # One pass: the bytes are verified as they arrive and unpacked at once.
            label = layer.short

            def advance(count: int) -> None:
                if self.cancelled.is_set():
                    raise _Cancelled
                self.progress.advance(label, count)

            return decompress_layer(Layer(
                f"layer {layer.digest}",
                lambda: self.client.open_blob(
                    self.ref.repository, layer, "layer",
                    started=lambda: self.progress.add(label, layer.size), advance=advance,
                ),  # type: ignore[arg-type, return-value]
                None, diff_id,
            ), self.session.tmp_dir, out=out)

        return download_and_unpack
