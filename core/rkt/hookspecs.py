"""Every hook a plugin can implement: the whole third-party contract.

Plugins implement hooks with :data:`hookimpl` (explicit markers only) and are
found in two ways: the built-ins listed in ``rkt.plugins.BUILTIN_PLUGINS`` and any
module named by an entry point in the ``rkt.plugins`` group. Stage1 backends are
additionally found through the ``rkt.stage1`` entry-point group, importing only
the backend that is chosen.

The hooks are *registry hooks*: each receives a registry and adds named things
to it. The core owns naming, conflicts (two plugins claiming one name is an
error that names both) and defaults, so nothing depends on the order in which
plugins happen to be called.

Compatibility promise: hook specs only ever grow by new keyword arguments; a
hook is never renamed or removed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

from rkt.hookmarker import hookimpl as _hookimpl

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from rkt.registry import (
        DiscoveryRegistry,
        FetcherRegistry,
        Stage1Registry,
        StoreRegistry,
        VerifierRegistry,
    )

PROJECT_NAME = "rkt"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
#: The marker plugins use on their hook implementations (pluggy-free: rkt.hookmarker).
hookimpl = _hookimpl


@hookspec
def rkt_register_fetchers(registry: FetcherRegistry) -> None:
    """Register image fetchers, keyed by the kind of image string they serve.

    Called once per process, when the first image is fetched. The core classifies
    every image string (see :func:`rkt.imageref.parse_image_ref`) into a *kind*:
    ``file``, ``https``, ``http``, ``docker`` or ``name`` (appc discovery), or the
    URL scheme of any other ``scheme:`` string a plugin registered. Add one
    fetcher per kind with ``registry.add(kind, fetcher)``; a fetcher implements
    :class:`rkt.fetching.Fetcher`.

    :param registry: the fetcher registry; adding a kind twice is a
        :class:`rkt.errors.PluginError` naming both plugins.
    """


@hookspec
def rkt_register_discovery(registry: DiscoveryRegistry) -> None:
    """Register appc discovery methods, keyed by a short method name.

    Called once per process, before fetching by appc name or discovering keys.
    A discoverer maps an image name and labels to candidate ACI, signature and
    public key URLs (``appc-spec/discovery.md``). Built-in: ``meta`` (HTML meta
    tags over HTTPS).

    :param registry: the discovery registry; ``registry.add(name, discoverer)``.
    """


@hookspec
def rkt_register_verifiers(registry: VerifierRegistry) -> None:
    """Register signature verifiers, keyed by signature format.

    Called once per process, before the first signature is checked. A verifier
    implements :class:`rkt.fetching.Verifier`: given the exact bytes being
    imported, a detached signature and the trusted keys, it returns the signer or
    raises :class:`rkt.errors.VerificationError`. The core then decides whether
    that signer is trusted for the image's name. Built-in: ``openpgp``.

    :param registry: the verifier registry; ``registry.add(format, verifier)``.
    """


@hookspec
def rkt_register_stores(registry: StoreRegistry) -> None:
    """Register image store implementations, keyed by name.

    Called once per process, when the store is first opened. A store factory is
    called with the data directory (``--dir``) and returns an object
    implementing :class:`rkt.store.ImageStore`. Built-in: ``cas`` (the default).

    :param registry: the store registry; ``registry.add(name, factory)``.
    """


@hookspec
def rkt_register_stage1_backends(registry: Stage1Registry) -> None:
    """Register stage1 backends programmatically, keyed by backend name.

    Most backends are declared instead as entry points in the ``rkt.stage1``
    group (``nspawn = rkt_stage1_nspawn.backend:NspawnStage1``), so that only the
    chosen one is ever imported. This hook exists for backends that a plugin
    builds at run time (for example a no-op stage1 in tests). A backend
    implements :class:`rkt.stage1.Stage1Backend`.

    :param registry: the stage1 registry; ``registry.add(name, backend_factory)``.
    """


@hookspec
def rkt_image_gc(data_dir: Path, grace_period: float, report: Callable[[str], None]) -> None:
    """Remove the plugin's own cached data that no longer needs keeping.

    Called by ``rkt image gc`` after it has removed unused rendered trees and
    images, with the store's lock held, so no fetch runs meanwhile. A plugin that
    keeps a cache of its own under the data directory (the Docker fetcher keeps
    layers) removes what has not been used for ``grace_period`` seconds.

    :param data_dir: the data directory (``--dir``) whose store is collected.
    :param grace_period: remove what was last used longer ago than this, in seconds.
    :param report: call with one line per removed thing, for the user.
    """
