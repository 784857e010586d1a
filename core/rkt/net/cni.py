"""Running CNI plugins exactly as the CNI specification says (containernetworking/cni SPEC.md).

A plugin is an executable found on the plugin path by its ``type``. It gets
the operation in ``CNI_COMMAND`` (``ADD``, ``DEL``, ``CHECK``, ``VERSION``),
the container in ``CNI_CONTAINERID``/``CNI_NETNS``/``CNI_IFNAME``, extra
arguments in ``CNI_ARGS`` and the plugin path in ``CNI_PATH``; its
configuration is JSON on stdin: the plugin's own object plus the network's
``name`` and ``cniVersion``, ``prevResult`` (the previous plugin's result) in a
chain, and ``runtimeConfig`` for the capabilities it declares (``portMappings``).
It answers with a JSON result on stdout and exit status 0, or a JSON error
(``code``, ``msg``, ``details``) and a non-zero status.

Every call has a time limit (:data:`DEFAULT_TIMEOUT`, or ``RKT_CNI_TIMEOUT``
seconds): a hung plugin is killed with its process group and reported.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
from pathlib import Path
from typing import Any, NamedTuple

from rkt.errors import NetworkError
from rkt.log import get_logger
from rkt.net.config import SUPPORTED_VERSIONS, NetworkConfig

LOG = get_logger(__name__)

#: where distributions install the reference plugins (Debian: containernetworking-plugins)
SYSTEM_PLUGIN_DIRS = ("/usr/lib/rkt/plugins/net", "/usr/lib/cni", "/opt/cni/bin")
DEFAULT_TIMEOUT = 60.0
#: CHECK, and a cached result passed to DEL, exist from this version on
_CHECK_VERSION = (0, 4, 0)


def _version(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in text.split("."))
    except ValueError:
        return (0,)


def plugin_timeout() -> float:
    try:
        return float(os.environ.get("RKT_CNI_TIMEOUT", DEFAULT_TIMEOUT))
    except ValueError:
        return DEFAULT_TIMEOUT


class Invocation(NamedTuple):
    """The container side of every call: the CNI_* variables but the command."""

    container_id: str
    netns: str
    ifname: str
    args: str
    plugin_path: tuple[str, ...]


class PluginRunner:
    """Finds plugins on ``plugin_path`` and runs them with a time limit."""

    def __init__(self, plugin_path: tuple[str, ...], timeout: float | None = None) -> None:
        self.plugin_path = plugin_path
        self.timeout = plugin_timeout() if timeout is None else timeout

    def find(self, kind: str) -> Path:
        for directory in self.plugin_path:
            candidate = Path(directory) / kind
            if candidate.is_file() and os.access(candidate, os.X_OK):
                return candidate
        raise NetworkError(f'CNI plugin "{kind}" not found in {":".join(self.plugin_path)}')

    def call(self, command: str, kind: str, config: dict[str, Any],
             where: Invocation | None, network: str) -> dict[str, Any] | None:
        """Run one plugin; its parsed stdout for ADD and VERSION, None otherwise."""
        binary = self.find(kind)
        env = {k: v for k, v in os.environ.items() if not k.startswith("CNI_")}
        env["CNI_COMMAND"] = command
        env["CNI_PATH"] = ":".join(self.plugin_path)
        if where is not None:
            env.update(CNI_CONTAINERID=where.container_id, CNI_NETNS=where.netns,
                       CNI_IFNAME=where.ifname, CNI_ARGS=where.args)
        what = f'network "{network}": CNI plugin "{kind}" ({command})'
        LOG.debug("%s: %s", what, json.dumps(config))
        try:
            process = subprocess.Popen(
                [str(binary)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=subprocess.PIPE, env=env, start_new_session=True,
            )
        except OSError as exc:
            raise NetworkError(f"{what}: cannot run {binary}: {exc.strerror}") from exc
        try:
            out, err = process.communicate(json.dumps(config).encode(), timeout=self.timeout)
        except subprocess.TimeoutExpired:
            _kill_group(process)
            raise NetworkError(f"{what} did not finish within {self.timeout:g} s") from None
        LOG.debug("%s exited %d: %s %s", what, process.returncode, out[:2000], err[:2000])
        if process.returncode != 0:
            raise NetworkError(f"{what} failed: {_error_message(out, err, process.returncode)}")
        if command not in ("ADD", "VERSION"):
            return None
        try:
            result = json.loads(out)
        except ValueError:
            result = None
        if not isinstance(result, dict):
            raise NetworkError(f"{what} returned an invalid result: {_excerpt(out)}")
        return result

    def supported_versions(self, kind: str, network: str) -> tuple[str, ...]:
        """The plugin's answer to ``VERSION``."""
        answer = self.call("VERSION", kind, {"cniVersion": SUPPORTED_VERSIONS[-1]}, None,
                           network) or {}
        versions = answer.get("supportedVersions")
        if not isinstance(versions, list):
            raise NetworkError(f'network "{network}": CNI plugin "{kind}" gave no '
                               "supportedVersions")
        return tuple(str(v) for v in versions)


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.communicate()


def _excerpt(data: bytes, limit: int = 120) -> str:
    text = " ".join(data.decode(errors="replace").split())
    if not text:
        return "(no output)"
    return text if len(text) <= limit else text[:limit] + "..."


def _error_message(out: bytes, err: bytes, status: int) -> str:
    """The plugin's JSON error (``msg: details``), else what it printed, else its status."""
    for stream in (out, err):
        try:
            error = json.loads(stream)
        except ValueError:
            continue
        if isinstance(error, dict) and error.get("msg"):
            details = error.get("details")
            return f"{error['msg']}: {details}" if details else str(error["msg"])
    for stream in (err, out):
        if stream.strip():
            return _excerpt(stream, 300)
    return f"exit status {status}"


def negotiate_version(runner: PluginRunner, config: NetworkConfig) -> str:
    """The cniVersion to speak: the network's own, or, when it declares none, the
    newest version every plugin of the chain and this rkt support."""
    if config.cni_version is not None:
        return config.cni_version
    common = set(SUPPORTED_VERSIONS)
    for plugin in config.plugins:
        common &= set(runner.supported_versions(plugin["type"], config.name))
    if not common:
        raise NetworkError(f'network "{config.name}": its plugins share no CNI version '
                           "with rkt")
    return max(common, key=_version)


def _plugin_config(config: NetworkConfig, plugin: dict[str, Any], version: str,
                   runtime_config: dict[str, Any],
                   prev_result: dict[str, Any] | None) -> dict[str, Any]:
    document = {**plugin, "name": config.name, "cniVersion": version}
    capabilities = plugin.get("capabilities") or {}
    wanted = {k: v for k, v in runtime_config.items() if capabilities.get(k)}
    if wanted:
        document["runtimeConfig"] = wanted
    if prev_result is not None:
        document["prevResult"] = prev_result
    return document


def add(runner: PluginRunner, config: NetworkConfig, version: str, where: Invocation,
        runtime_config: dict[str, Any]) -> dict[str, Any]:
    """ADD every plugin of the chain in order, each given the previous result."""
    result: dict[str, Any] | None = None
    for plugin in config.plugins:
        document = _plugin_config(config, plugin, version, runtime_config, result)
        answer = runner.call("ADD", plugin["type"], document, where, config.name)
        assert answer is not None
        result = answer
    assert result is not None
    return result


def delete(runner: PluginRunner, config: NetworkConfig, version: str, where: Invocation,
           runtime_config: dict[str, Any], result: dict[str, Any] | None) -> list[str]:
    """DEL every plugin of the chain in reverse order; the errors, not raised, so that
    one failing plugin does not keep the others from releasing what they hold."""
    cached = result if _version(version) >= _CHECK_VERSION else None
    errors = []
    for plugin in reversed(config.plugins):
        document = _plugin_config(config, plugin, version, runtime_config, cached)
        try:
            runner.call("DEL", plugin["type"], document, where, config.name)
        except NetworkError as exc:
            errors.append(str(exc))
    return errors


def check(runner: PluginRunner, config: NetworkConfig, version: str, where: Invocation,
          runtime_config: dict[str, Any], result: dict[str, Any]) -> None:
    """CHECK every plugin of the chain with the ADD result; NetworkError if one objects."""
    if _version(version) < _CHECK_VERSION:
        raise NetworkError(f'network "{config.name}": cniVersion {version} has no CHECK')
    for plugin in config.plugins:
        document = _plugin_config(config, plugin, version, runtime_config, result)
        runner.call("CHECK", plugin["type"], document, where, config.name)


class Address(NamedTuple):
    """An address from a result: ``cidr`` (``172.16.28.7/24``), its gateway, its interface."""

    cidr: str
    gateway: str | None
    interface: str | None

    @property
    def ip(self) -> str:
        return self.cidr.split("/")[0]

    @property
    def mask(self) -> str:
        import ipaddress

        return str(ipaddress.ip_interface(self.cidr).network.netmask)


def result_addresses(result: dict[str, Any]) -> list[Address]:
    """The IPv4 addresses of a result of any version (0.1/0.2 ``ip4``, 0.3+ ``ips``)."""
    found: list[Address] = []
    interfaces = result.get("interfaces") or []
    legacy = result.get("ip4")
    if isinstance(legacy, dict) and legacy.get("ip"):
        found.append(Address(str(legacy["ip"]), legacy.get("gateway"), None))
    for entry in result.get("ips") or []:
        if not isinstance(entry, dict) or ":" in str(entry.get("address", ":")):
            continue
        interface = None
        index = entry.get("interface")
        if isinstance(index, int) and 0 <= index < len(interfaces):
            interface = interfaces[index].get("name")
        found.append(Address(str(entry["address"]), entry.get("gateway"), interface))
    return found


def result_dns(result: dict[str, Any]) -> dict[str, Any]:
    dns = result.get("dns")
    return dns if isinstance(dns, dict) else {}
