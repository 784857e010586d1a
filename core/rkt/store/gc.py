"""``rkt image gc``: remove what the store holds that no pod needs.

Written against the :class:`rkt.store.ImageStore` protocol, so it collects
whichever store is in use. The caller says what pods still need
(:func:`rkt.pod.gc.pod_references`: every tree and image of every pod that is not
garbage) and holds the lock that keeps a pod being prepared from choosing an image
or a tree meanwhile (:func:`rkt.locks.prepare_lock`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rkt.store import ImageStore


def collect_images(
    store: ImageStore,
    *,
    trees_in_use: Collection[str],
    images_in_use: Collection[str],
    grace_period: float,
    report: Callable[[str], None],
) -> None:
    """Remove rendered trees not in ``trees_in_use``, images not in ``images_in_use``
    unused for ``grace_period`` seconds, the files of images ``rkt image rm`` kept for
    pods that are gone now, and leftovers of interrupted work; ``report``
    gets one line per tree or image removed."""
    for tree_id in store.remove_unused_trees(trees_in_use):
        report(f'removed treestore "{tree_id}"')
    now = time.time()
    for info in store.list_images():
        if info.id in images_in_use or now - info.last_used < grace_period:
            continue
        store.remove(info.id)
        report(f'successfully removed aci for image: "{info.id}" ("{info.name}")')
    for image_id in store.remove_orphans(images_in_use):
        report(f'removed the files of image "{image_id}", which no pod uses any more')
    store.sweep_tmp()


def remove_image(store: ImageStore, image_id: str, *, used_by: Collection[str]) -> None:
    """``rkt image rm``: remove the image, or, while pods in ``used_by`` still use it,
    only its name; ``rkt image gc`` removes its files once the last of them is gone.

    (Refusing would leave a user no way to drop a name a long-lived prepared pod
    uses; keeping the files is what a Unix ``rm`` of an open file does.)
    """
    if used_by:
        store.forget(image_id)
    else:
        store.remove(image_id)
