"""The public surface for plugin authors: everything a fetcher, discovery method,
verifier, store or stage1 backend needs, in one import.

    from rkt.api import FetchedImage, FetchSession, FetcherRegistry, hookimpl

Names listed in ``__all__`` are the plugin contract: they keep their meaning
across rkt's minor versions (hook specs only grow, see :mod:`rkt.hookspecs`).
Anything else in the core may change without notice. ``docs/plugins.md`` and
``docs/stage1.md`` describe how the pieces fit.

Each name is imported from its home module only when first used, so that a
plugin importing this module costs no more start-up than the names it touches.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rkt.console import EscapeDetector, run_with_console
    from rkt.context import Reporter, Runtime, StreamReporter
    from rkt.datadir import private_dir, private_file
    from rkt.errors import (
        ArchiveError,
        ConfigError,
        FetchError,
        ImageError,
        ImageNotFoundError,
        KeystoreError,
        ManifestError,
        NetworkError,
        PluginError,
        PodError,
        RktError,
        Stage1Error,
        StoreError,
        UnknownSignerError,
        UnsafeArchiveError,
        UsageError,
        VerificationError,
    )
    from rkt.fetching import (
        DiscoveredEndpoints,
        Discoverer,
        FetchedImage,
        Fetcher,
        FetchSession,
        RemoteRecord,
        Signer,
        Verifier,
        discover_endpoints,
    )
    from rkt.hookmarker import hookimpl
    from rkt.http import HttpClient, HttpSession, client_for, session_for
    from rkt.imageref import ImageRef
    from rkt.keystore import TrustedKey
    from rkt.log import get_logger
    from rkt.pod.contract import (
        AppMount,
        AppPort,
        NetAttachment,
        OverlayDirs,
        PlacedApp,
        PodCgroups,
        PodNetwork,
        PodRuntime,
        ResolvedApp,
        ResolvedPod,
        ResolvedVolume,
        Resources,
        SupervisorJob,
    )
    from rkt.pod.dirs import PID_FILE, PPID_FILE, Pod
    from rkt.pod.enter import children, enter, host_pid_of, namespace_pids, running_app_pid
    from rkt.pod.lifetime import ForkedStage1, spawn_stage1
    from rkt.pod.runtime import (
        build_job,
        host_resolv_conf,
        overlay_on_host,
        volume_host_path,
        write_job,
    )
    from rkt.pod.seccomp import oci_seccomp
    from rkt.pod.supervisor import (
        CAPABILITIES,
        MASKED_KERNEL_PATHS,
        READ_ONLY_KERNEL_PATHS,
        oom_kill_count,
        run_supervisor,
    )
    from rkt.progress import ProgressBar
    from rkt.registry import (
        DiscoveryRegistry,
        FetcherRegistry,
        Stage1Factory,
        Stage1Registry,
        StoreFactory,
        StoreRegistry,
        VerifierRegistry,
    )
    from rkt.stage1 import (
        INTERFACE_VERSION,
        STAGE1_FEATURES,
        SUPERVISOR_PATH,
        Stage1Backend,
    )
    from rkt.store import ImageInfo, ImageStore

#: public name -> the module that defines it
_HOMES: dict[str, str] = {
    # hooks and registries
    "hookimpl": "rkt.hookmarker",
    **dict.fromkeys(
        ("FetcherRegistry", "DiscoveryRegistry", "VerifierRegistry", "StoreRegistry",
         "StoreFactory", "Stage1Registry", "Stage1Factory"),
        "rkt.registry",
    ),
    # the core context a plugin is given
    **dict.fromkeys(("Runtime", "Reporter", "StreamReporter"), "rkt.context"),
    # fetchers, discovery, verifiers
    **dict.fromkeys(
        ("Fetcher", "FetchSession", "FetchedImage", "RemoteRecord", "Discoverer",
         "DiscoveredEndpoints", "Verifier", "Signer", "discover_endpoints"),
        "rkt.fetching",
    ),
    "ImageRef": "rkt.imageref",
    # HTTP with the user's TLS, proxy, auth.d, retry and timeout settings
    **dict.fromkeys(("HttpClient", "HttpSession", "client_for", "session_for"), "rkt.http"),
    "TrustedKey": "rkt.keystore",
    # stores
    "ImageStore": "rkt.store",
    "ImageInfo": "rkt.store",
    # what a store or plugin creates under the data directory is private (docs/security.md)
    **dict.fromkeys(("private_dir", "private_file"), "rkt.datadir"),
    # stage1 backends
    **dict.fromkeys(("Stage1Backend", "INTERFACE_VERSION", "SUPERVISOR_PATH", "STAGE1_FEATURES"),
                     "rkt.stage1"),
    **dict.fromkeys(("Pod", "PID_FILE", "PPID_FILE"), "rkt.pod.dirs"),
    # the typed stage1 contract (docs/stage1.md) and the supervisor's job
    **dict.fromkeys(
        ("PodRuntime", "ResolvedPod", "ResolvedApp", "ResolvedVolume", "AppMount", "AppPort",
         "SupervisorJob", "PlacedApp", "OverlayDirs", "PodCgroups", "Resources",
         "PodNetwork", "NetAttachment"),
        "rkt.pod.contract",
    ),
    # helpers a backend uses to start, enter and clean up a pod
    **dict.fromkeys(("build_job", "write_job", "volume_host_path", "overlay_on_host",
                     "host_resolv_conf"), "rkt.pod.runtime"),
    **dict.fromkeys(("enter", "running_app_pid", "children", "host_pid_of", "namespace_pids"),
                    "rkt.pod.enter"),
    # the terminal: a pod attached to it, and Ctrl+] three times, which kills the pod
    **dict.fromkeys(("run_with_console", "EscapeDetector"), "rkt.console"),
    # the app's seccomp filter as a rule list, for backends that hand apps to an OCI runtime
    "oci_seccomp": "rkt.pod.seccomp",
    # the pod lives exactly as long as the rkt process (docs/stage1.md)
    **dict.fromkeys(("spawn_stage1", "ForkedStage1"), "rkt.pod.lifetime"),
    # the supervisor in rkt's own process, for a stage1 that forks rather than execs it
    "run_supervisor": "rkt.pod.supervisor",
    # what the supervisor does to every app, for a stage1 that hands apps to another
    # runtime: capability numbers, the kernel paths made read-only or hidden, and the
    # OOM killer's count for an app's cgroups
    **dict.fromkeys(("CAPABILITIES", "READ_ONLY_KERNEL_PATHS", "MASKED_KERNEL_PATHS",
                     "oom_kill_count"), "rkt.pod.supervisor"),
    # user output, and log lines that cost nothing until logging is configured
    "ProgressBar": "rkt.progress",
    "get_logger": "rkt.log",
    # errors (rkt prints "rkt: <message>" for any of these)
    **dict.fromkeys(
        ("RktError", "UsageError", "ConfigError", "PluginError", "ImageError", "ArchiveError",
         "UnsafeArchiveError", "ManifestError", "ImageNotFoundError", "VerificationError",
         "UnknownSignerError", "KeystoreError", "FetchError", "StoreError", "Stage1Error",
         "PodError", "NetworkError"),
        "rkt.errors",
    ),
}

__all__ = [
    "CAPABILITIES",
    "INTERFACE_VERSION",
    "MASKED_KERNEL_PATHS",
    "PID_FILE",
    "PPID_FILE",
    "READ_ONLY_KERNEL_PATHS",
    "STAGE1_FEATURES",
    "SUPERVISOR_PATH",
    "AppMount",
    "AppPort",
    "ArchiveError",
    "ConfigError",
    "DiscoveredEndpoints",
    "Discoverer",
    "DiscoveryRegistry",
    "EscapeDetector",
    "FetchError",
    "FetchSession",
    "FetchedImage",
    "Fetcher",
    "FetcherRegistry",
    "ForkedStage1",
    "HttpClient",
    "HttpSession",
    "ImageError",
    "ImageInfo",
    "ImageNotFoundError",
    "ImageRef",
    "ImageStore",
    "KeystoreError",
    "ManifestError",
    "NetAttachment",
    "NetworkError",
    "OverlayDirs",
    "PlacedApp",
    "PluginError",
    "Pod",
    "PodCgroups",
    "PodError",
    "PodNetwork",
    "PodRuntime",
    "ProgressBar",
    "RemoteRecord",
    "Reporter",
    "ResolvedApp",
    "ResolvedPod",
    "ResolvedVolume",
    "Resources",
    "RktError",
    "Runtime",
    "Signer",
    "Stage1Backend",
    "Stage1Error",
    "Stage1Factory",
    "Stage1Registry",
    "StoreError",
    "StoreFactory",
    "StoreRegistry",
    "StreamReporter",
    "SupervisorJob",
    "TrustedKey",
    "UnknownSignerError",
    "UnsafeArchiveError",
    "UsageError",
    "VerificationError",
    "Verifier",
    "VerifierRegistry",
    "build_job",
    "children",
    "client_for",
    "discover_endpoints",
    "enter",
    "get_logger",
    "hookimpl",
    "host_pid_of",
    "host_resolv_conf",
    "namespace_pids",
    "oci_seccomp",
    "oom_kill_count",
    "overlay_on_host",
    "private_dir",
    "private_file",
    "run_supervisor",
    "run_with_console",
    "running_app_pid",
    "session_for",
    "spawn_stage1",
    "volume_host_path",
    "write_job",
]


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'rkt.api' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return __all__
