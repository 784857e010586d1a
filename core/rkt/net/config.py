"""Network configurations: rkt's built-in ``default`` and ``default-restricted``, and
the user's CNI files in ``<local-config>/net.d``.

A user's directory may hold rkt 1.x's single-plugin ``*.conf`` files and CNI's
``*.conflist`` chains (what podman and containerd write); both become a
:class:`NetworkConfig`, a list of plugin configurations run in order. A user
network named like a built-in replaces it (rkt-behaviour.md section 5).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, NamedTuple

from rkt.errors import NetworkError
from rkt.log import get_logger
from rkt.net.request import ALL, DEFAULT, DEFAULT_RESTRICTED, NetSelection

LOG = get_logger(__name__)

#: what the built-ins report as their file (rkt kept them in the stage1 image)
BUILTIN_DIR = "builtin:/etc/rkt/net.d"
#: the file names a user's net.d may hold, as libcni reads them
CONFIG_SUFFIXES = (".conf", ".json", ".conflist")
#: the CNI versions this rkt reads results of
SUPPORTED_VERSIONS = ("0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0")
#: the version the built-ins declare: chains (prevResult), CHECK and cached DEL need 0.4.0
BUILTIN_VERSION = "0.4.0"


class NetworkConfig(NamedTuple):
    """One CNI network: its name, where it came from and its plugins in order."""

    name: str
    #: the file it came from (``builtin:...`` for the built-ins)
    path: str
    #: the ``cniVersion`` it declares, or None (negotiated with the plugins)
    cni_version: str | None
    #: each plugin's configuration, as the file has it (without name/cniVersion)
    plugins: tuple[dict[str, Any], ...]

    @property
    def masquerades(self) -> bool:
        """True when a plugin masquerades the pod's traffic (rkt picks such a network
        for ``--port``)."""
        return any(p.get("ipMasq") for p in self.plugins)

    @property
    def sort_key(self) -> str:
        return Path(self.path).name


def _builtin(name: str, filename: str, subnet: str, masq: bool,
             routes: list[dict[str, str]]) -> NetworkConfig:
    return NetworkConfig(
        name=name, path=f"{BUILTIN_DIR}/{filename}", cni_version=BUILTIN_VERSION,
        plugins=({"type": "ptp", "ipMasq": masq,
                  "ipam": {"type": "host-local", "subnet": subnet, "routes": routes}},),
    )


#: rkt 1.x's stage1/net/rootfs/etc/rkt/net.d/99-default*.conf
BUILTINS = {
    DEFAULT: _builtin(DEFAULT, "99-default.conf", "172.16.28.0/24", True,
                      [{"dst": "0.0.0.0/0"}]),
    DEFAULT_RESTRICTED: _builtin(DEFAULT_RESTRICTED, "99-default-restricted.conf",
                                 "172.31.0.0/16", False, []),
}


def parse_config(path: Path, data: bytes) -> NetworkConfig:
    """A ``.conf`` (one plugin) or ``.conflist`` (a chain) file; NetworkError if malformed."""
    try:
        document = json.loads(data)
    except ValueError as exc:
        raise NetworkError(f"network config {path}: not valid JSON ({exc})") from exc
    if not isinstance(document, dict):
        raise NetworkError(f"network config {path}: not a JSON object")
    name = document.get("name")
    if not isinstance(name, str) or not name:
        raise NetworkError(f'network config {path}: no "name"')
    version = document.get("cniVersion")
    if version is not None and version not in SUPPORTED_VERSIONS:
        raise NetworkError(f'network config {path}: unsupported cniVersion "{version}" '
                           f"(rkt reads {', '.join(SUPPORTED_VERSIONS)})")
    if "plugins" in document:
        plugins = document["plugins"]
        if (not isinstance(plugins, list) or not plugins
                or not all(isinstance(p, dict) for p in plugins)):
            raise NetworkError(f'network config {path}: "plugins" must be a non-empty list '
                               "of objects")
    else:
        if path.suffix == ".conflist":
            raise NetworkError(f'network config {path}: a .conflist needs "plugins"')
        plugins = [{k: v for k, v in document.items() if k not in ("name", "cniVersion")}]
    for plugin in plugins:
        kind = plugin.get("type")
        if not isinstance(kind, str) or not kind or "/" in kind:
            raise NetworkError(f'network config {path}: a plugin has no valid "type"')
    return NetworkConfig(name=name, path=str(path), cni_version=version,
                         plugins=tuple(plugins))


def user_networks(local_config: Path) -> list[NetworkConfig]:
    """The networks of ``<local-config>/net.d``, in file name order; the first of a name wins."""
    directory = local_config / "net.d"
    try:
        files = sorted(p for p in directory.iterdir() if p.suffix in CONFIG_SUFFIXES)
    except OSError:
        return []
    networks: dict[str, NetworkConfig] = {}
    for path in files:
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise NetworkError(f"network config {path}: {exc.strerror}") from exc
        config = parse_config(path, data)
        if config.name in networks:
            LOG.debug("network %s in %s is already defined in %s; ignored", config.name, path,
                      networks[config.name].path)
            continue
        networks[config.name] = config
    return list(networks.values())


def select_networks(selections: tuple[NetSelection, ...],
                    local_config: Path) -> list[tuple[NetworkConfig, NetSelection]]:
    """The CNI networks ``--net`` names, in the order they are applied (file names).

    ``all`` is every user network plus ``default``; a name neither built in nor
    in ``net.d`` is an error naming every such network.
    """
    users = {n.name: n for n in user_networks(local_config)}
    known = {**BUILTINS, **users}
    wanted = {s.name: s for s in selections}
    if ALL in wanted:
        chosen = {name: NetSelection(name) for name in users}
        chosen.setdefault(DEFAULT, NetSelection(DEFAULT))
        chosen.update({k: v for k, v in wanted.items() if k != ALL})
        wanted = chosen
    missing = [name for name in wanted if name not in known]
    if missing:
        raise NetworkError(f"networks not found: {', '.join(missing)}")
    picked = [(known[name], selection) for name, selection in wanted.items()]
    return sorted(picked, key=lambda pair: pair[0].sort_key)
