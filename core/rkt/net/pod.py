"""Setting up and tearing down one pod's network: namespace, CNI attachments, ports.

:func:`setup_pod_network` runs in stage0 after the pod moved to ``run/`` and
before its stage1 starts; the stage1 receives the result as
``PodRuntime.network`` (a :class:`~rkt.pod.contract.PodNetwork`).
:func:`teardown_pod_network` runs when the pod is removed (``rkt gc``, ``rkt
rm``), whatever happened to the process that set it up.

What is set up is recorded in the pod directory *before* it is done, so a
teardown after a crash (``kill -9`` of rkt in the middle of an ADD) still runs
CNI DEL for it and removes the namespace:

- ``netns``: the namespace's path (rkt 1.x's file);
- ``net/state.json``: each attachment's network configuration, cniVersion,
  ``CNI_ARGS``, plugin path and ADD result (null while the ADD runs);
- ``net-info.json``: rkt 1.x's list of attachments, which ``rkt list`` and
  ``rkt status`` show.

The CNI modules (``rkt.net.cni``, ``rkt.net.config``) are imported only for a pod
with CNI networks: a ``--net=none`` or ``--net=host`` pod start does without them
(issue 14).
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rkt.errors import NetworkError
from rkt.log import get_logger
from rkt.net import dns, netns
from rkt.net.request import HOST, NONE, NetworkRequest, PortRequest
from rkt.pod.contract import NetAttachment, PodNetwork, ResolvedPod
from rkt.pod.dirs import NET_INFO_FILE, Pod

if TYPE_CHECKING:
    from rkt.net.config import NetworkConfig

LOG = get_logger(__name__)

NETNS_FILE = "netns"
STATE_FILE = "net/state.json"
#: chained after the network that carries ``--port`` traffic (unless it has one)
PORTMAP = {"type": "portmap", "capabilities": {"portMappings": True}, "snat": True}


def plugin_path(local_config: Path, stage1_rootfs: Path) -> tuple[str, ...]:
    """rkt's plugin lookup order, then where distributions put the CNI plugins."""
    from rkt.net import cni

    return (str(local_config / "net.d"), cni.SYSTEM_PLUGIN_DIRS[0],
            str(stage1_rootfs / "usr/lib/rkt/plugins/net"), *cni.SYSTEM_PLUGIN_DIRS[1:])


def port_mappings(ports: tuple[PortRequest, ...], resolved: ResolvedPod) -> list[dict[str, Any]]:
    """``--port`` as CNI's ``portMappings``; UsageError naming an unknown port."""
    from rkt.errors import UsageError

    declared = {p.name: p for app in resolved.apps for p in app.ports}
    mappings = []
    for request in ports:
        port = declared.get(request.name)
        if port is None:
            known = ", ".join(sorted(declared)) or "none"
            raise UsageError(f'--port={request.name}:...: the pod\'s apps have no port '
                             f'"{request.name}" (their ports: {known})')
        mapping: dict[str, Any] = {"hostPort": request.host_port, "containerPort": port.port,
                                   "protocol": port.protocol}
        if request.host_ip:
            mapping["hostIP"] = request.host_ip
        mappings.append(mapping)
    return mappings


def _forwarded_ports() -> set[tuple[str, int]]:
    """(protocol, port) pairs portmap already forwards, for any container on the host."""
    try:
        rules = subprocess.run(["iptables", "-w", "-t", "nat", "-S", "CNI-HOSTPORT-DNAT"],
                               capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return set()
    found: set[tuple[str, int]] = set()
    for rule in rules.splitlines():
        words = rule.split()
        if "-p" in words and "--dports" in words:
            protocol = words[words.index("-p") + 1]
            for port in words[words.index("--dports") + 1].split(","):
                low, _, high = port.partition(":")
                if low.isdigit():
                    found.update((protocol, p) for p in range(int(low), int(high or low) + 1))
    return found


def _check_ports_free(mappings: list[dict[str, Any]]) -> None:
    """A host port that something on the host listens on, or that is forwarded to
    another container already, cannot be forwarded."""
    forwarded = _forwarded_ports()
    for mapping in mappings:
        if (mapping["protocol"], mapping["hostPort"]) in forwarded:
            raise NetworkError(f"--port: host port {mapping['hostPort']}/"
                               f"{mapping['protocol']} is already forwarded to another pod")
        _check_port_free(mapping)


def _check_port_free(mapping: dict[str, Any]) -> None:
    import socket  # here: only --port needs it, and a pod start imports it for nothing else

    udp = mapping["protocol"] == "udp"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM if udp else socket.SOCK_STREAM) as s:
        try:
            s.bind((mapping.get("hostIP", "0.0.0.0"), mapping["hostPort"]))
        except OSError as exc:
            raise NetworkError(f"--port: host port {mapping['hostPort']}/{mapping['protocol']} "
                               f"is in use ({exc.strerror})") from exc


def _write_json(path: Path, document: Any) -> None:
    path.parent.mkdir(mode=0o750, exist_ok=True)  # under the data dir: nothing for others
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(document, indent=1))
    os.replace(tmp, path)


def _config_json(config: NetworkConfig) -> dict[str, Any]:
    return {"name": config.name, "path": config.path, "cniVersion": config.cni_version,
            "plugins": list(config.plugins)}


def _config_from_json(data: dict[str, Any]) -> NetworkConfig:
    from rkt.net.config import NetworkConfig

    return NetworkConfig(name=data["name"], path=data["path"], cni_version=data["cniVersion"],
                         plugins=tuple(data["plugins"]))


def setup_pod_network(pod: Pod, resolved: ResolvedPod, request: NetworkRequest, *,
                      hostname: str, local_config: Path, stage1_rootfs: Path) -> PodNetwork:
    """Give the pod what ``request`` asks (``request.nets`` already says which networks).

    Raises NetworkError or UsageError with everything set up so far torn down.
    """
    hosts = dns.pod_hosts(request.hosts_entries, request.host_hosts, hostname)
    special = request.special
    if request.ports and special in (HOST, NONE):
        from rkt.errors import UsageError

        raise UsageError(f"--port needs a contained network, not --net={special}")
    mappings = port_mappings(request.ports, resolved)
    if special == HOST:
        return PodNetwork(mode="host", resolv_conf=dns.pod_resolv_conf(request.dns, []),
                          hosts=hosts)
    networks: list[tuple[NetworkConfig, Any]] = []
    if special != NONE:
        from rkt.net.config import select_networks

        networks = select_networks(request.nets, local_config)
    if mappings:
        _check_ports_free(mappings)
    if (pod.path / NETNS_FILE).exists():
        # a run-prepared that was killed while setting up: start from nothing
        for error in teardown_pod_network(pod):
            LOG.warning("%s", error)
    path = netns.path_for(pod.uuid)
    (pod.path / NETNS_FILE).write_text(str(path))
    state: dict[str, Any] = {"netns": str(path), "attachments": []}
    _write_json(pod.path / STATE_FILE, state)
    try:
        netns.create(path)
        attachments: list[NetAttachment] = []
        answers: list[dict[str, Any]] = []
        if networks:
            attachments, answers = _attach(pod, path, networks, mappings, state,
                                           plugin_path(local_config, stage1_rootfs))
    except BaseException:
        errors = teardown_pod_network(pod)
        for error in errors:
            LOG.warning("%s", error)
        raise
    _write_json(pod.path / NET_INFO_FILE, [a.to_json() for a in attachments])
    return PodNetwork(mode="none" if special == NONE else "contained", netns=str(path),
                      attachments=tuple(attachments),
                      resolv_conf=dns.pod_resolv_conf(request.dns, answers), hosts=hosts)


def _attach(pod: Pod, path: Path, networks: list[tuple[NetworkConfig, Any]],
            mappings: list[dict[str, Any]], state: dict[str, Any],
            search_path: tuple[str, ...]) -> tuple[list[NetAttachment], list[dict[str, Any]]]:
    from rkt.net import cni

    runner = cni.PluginRunner(search_path)
    # rkt 1.x: ports go through the first masquerading network, else the last one
    forwarding = next((i for i, (c, _) in enumerate(networks) if c.masquerades),
                      len(networks) - 1)
    attachments: list[NetAttachment] = []
    answers: list[dict[str, Any]] = []
    for index, (config, selection) in enumerate(networks):
        runtime_config: dict[str, Any] = {}
        if mappings and index == forwarding:
            runtime_config["portMappings"] = mappings
            if not any((p.get("capabilities") or {}).get("portMappings")
                       for p in config.plugins):
                config = config._replace(plugins=(*config.plugins, PORTMAP))
        version = cni.negotiate_version(runner, config)
        if mappings and index == forwarding and cni._version(version) < (0, 3, 0):
            raise NetworkError(f'network "{config.name}": --port needs cniVersion 0.3.0 or '
                               f"later (it says {version})")
        where = cni.Invocation(pod.uuid, str(path), f"eth{index}", selection.cni_args(),
                               search_path)
        record: dict[str, Any] = {"network": _config_json(config), "version": version,
                                  "ifname": where.ifname, "args": where.args,
                                  "plugin_path": list(search_path),
                                  "runtime_config": runtime_config, "result": None}
        state["attachments"].append(record)
        _write_json(pod.path / STATE_FILE, state)  # before ADD: a crash still gets a DEL
        result = cni.add(runner, config, version, where, runtime_config)
        record["result"] = result
        _write_json(pod.path / STATE_FILE, state)
        addresses = cni.result_addresses(result)
        own = [a for a in addresses if a.interface in (None, where.ifname)] or addresses
        first = own[0] if own else None
        attachments.append(NetAttachment(
            name=config.name, conf_path=config.path,
            plugin_path=str(runner.find(config.plugins[0]["type"])), ifname=where.ifname,
            ip=first.ip if first else None, mask=first.mask if first else None,
            gateway=first.gateway if first else None, args=where.args,
        ))
        answers.append(cni.result_dns(result))
    return attachments, answers


def teardown_pod_network(pod: Pod) -> list[str]:
    """CNI DEL for every attachment (last first), then remove the namespace.

    Idempotent: what was torn down is struck off the state first, and a second
    call finds nothing to do. Returns the errors (a plugin that failed its DEL),
    having done everything else.
    """
    state_path = pod.path / STATE_FILE
    try:
        state: dict[str, Any] = json.loads(state_path.read_text())
    except FileNotFoundError:
        state = {}
    except ValueError:
        state = {}
    netns_path = state.get("netns")
    if netns_path is None:
        try:
            netns_path = (pod.path / NETNS_FILE).read_text().strip() or None
        except OSError:
            return []
    errors: list[str] = []
    attachments: list[dict[str, Any]] = state.get("attachments") or []
    while attachments:
        from rkt.net import cni  # only a pod with CNI attachments needs it

        record = attachments[-1]
        try:
            config = _config_from_json(record["network"])
            runner = cni.PluginRunner(tuple(record["plugin_path"]))
            where = cni.Invocation(pod.uuid, str(netns_path), record["ifname"], record["args"],
                                   runner.plugin_path)
            errors += cni.delete(runner, config, record["version"], where,
                                 record.get("runtime_config") or {}, record.get("result"))
        except (KeyError, TypeError) as exc:
            errors.append(f"pod {pod.uuid}: unreadable network state {state_path}: {exc}")
        attachments.pop()
        _write_json(state_path, state)
    netns.remove(Path(str(netns_path)))
    return errors


def check_pod_network(pod: Pod) -> None:
    """CNI CHECK of every attachment of a running pod; NetworkError if one is broken."""
    from rkt.net import cni

    state = json.loads((pod.path / STATE_FILE).read_text())
    for record in state["attachments"]:
        runner = cni.PluginRunner(tuple(record["plugin_path"]))
        where = cni.Invocation(pod.uuid, state["netns"], record["ifname"], record["args"],
                               runner.plugin_path)
        cni.check(runner, _config_from_json(record["network"]), record["version"], where,
                  record.get("runtime_config") or {}, record["result"])
