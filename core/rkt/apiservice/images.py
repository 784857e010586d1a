"""Store images as ``v1alpha.Image`` messages, and rkt's image filters."""

from __future__ import annotations

import json
import posixpath
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from rkt import APPC_VERSION
from rkt.apiservice.pods import key_values
from rkt.apiservice.v1alpha import api_pb2 as api

if TYPE_CHECKING:
    from rkt.store import ImageInfo, ImageStore


def image_message(store: ImageStore, info: ImageInfo, *, detail: bool) -> api.Image:
    """The image as v1alpha describes it; ``detail`` adds its manifest's bytes."""
    raw = store.manifest_bytes(info.id)
    manifest: dict[str, Any] = json.loads(raw)
    message = api.Image(
        base_format=api.ImageFormat(type=api.IMAGE_TYPE_APPC, version=APPC_VERSION),
        id=info.id, name=info.name, version=info.version or "latest",
        import_timestamp=int(info.import_time), size=info.size + info.tree_size,
        annotations=key_values(manifest.get("annotations")),
        labels=key_values(manifest.get("labels")),
    )
    if detail:
        message.manifest = raw
    return message


def _contains_key_values(present: Sequence[api.KeyValue],
                         wanted: Sequence[api.KeyValue]) -> bool:
    values = {kv.Key: kv.value for kv in present}
    return all(kv.Key in values and values[kv.Key] == kv.value for kv in wanted)


def matches_filter(image: api.Image, wanted: api.ImageFilter) -> bool:
    """rkt's rule: every field set in the filter must hold; within a field, any value."""
    name = image.name
    checks = (
        not wanted.ids or image.id in wanted.ids,
        not wanted.full_names or name in wanted.full_names,
        not wanted.prefixes or any(name.startswith(p) for p in wanted.prefixes),
        not wanted.base_names or any(posixpath.basename(name) == b for b in wanted.base_names),
        not wanted.keywords or any(k in name for k in wanted.keywords),
        wanted.imported_after <= 0 or image.import_timestamp > wanted.imported_after,
        wanted.imported_before <= 0 or image.import_timestamp < wanted.imported_before,
        not wanted.labels or _contains_key_values(image.labels, wanted.labels),
        not wanted.annotations or _contains_key_values(image.annotations, wanted.annotations),
    )
    return all(checks)


def matches_any(image: api.Image, filters: Sequence[api.ImageFilter]) -> bool:
    return not filters or any(matches_filter(image, f) for f in filters)
