"""What a user asked of a pod's network: ``--net``, ``--port``, ``--dns*``, ``--hosts-entry``.

Parsed and checked here, before any pod directory moves, so a bad flag is one
line and nothing is set up (rkt-behaviour.md section 5 has rkt 1.x's rules).
"""

from __future__ import annotations

import ipaddress
import re
from typing import NamedTuple

from rkt.errors import UsageError

#: the networks that are not CNI networks
HOST = "host"
NONE = "none"
ALL = "all"
DEFAULT = "default"
DEFAULT_RESTRICTED = "default-restricted"

#: what CNI allows in a network name (libcni's ``ValidateContainerID`` alphabet)
_NET_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$")
_PORT_NAME = re.compile(r"^[a-z0-9]+([-._][a-z0-9]+)*$")


class NetSelection(NamedTuple):
    """One ``--net`` item: a network name and its ``CNI_ARGS`` (``K=V;K=V``)."""

    name: str
    args: tuple[tuple[str, str], ...] = ()

    def cni_args(self) -> str:
        return ";".join(f"{k}={v}" for k, v in self.args)


class PortRequest(NamedTuple):
    """``--port NAME:[HOSTIP:]HOSTPORT``: the app port named NAME on the host's HOSTPORT."""

    name: str
    host_port: int
    host_ip: str | None = None


class DnsRequest(NamedTuple):
    """``--dns``, ``--dns-search``, ``--dns-opt``, ``--dns-domain``.

    ``mode`` is ``"default"`` (CNI's DNS, else the image's), ``"host"`` (the
    host's resolv.conf), ``"none"`` (ignore CNI's DNS) or ``"flags"`` (a file
    made from the flags alone).
    """

    mode: str = "default"
    servers: tuple[str, ...] = ()
    search: tuple[str, ...] = ()
    options: tuple[str, ...] = ()
    domain: str | None = None


class NetworkRequest(NamedTuple):
    """Everything ``rkt run`` was asked about the pod's network.

    ``nets`` empty means "the stage1's default" (``default`` for stage1s that
    can join a network namespace, ``host`` for fly).
    """

    nets: tuple[NetSelection, ...] = ()
    ports: tuple[PortRequest, ...] = ()
    dns: DnsRequest = DnsRequest()
    #: ``--hosts-entry``: (IP, hostnames) in order; ``host_hosts`` for ``--hosts-entry=host``
    hosts_entries: tuple[tuple[str, tuple[str, ...]], ...] = ()
    host_hosts: bool = False

    def names(self) -> tuple[str, ...]:
        return tuple(n.name for n in self.nets)

    @property
    def special(self) -> str | None:
        """``host`` or ``none`` when the pod asked for one of them, else None."""
        names = self.names()
        return names[0] if names in ((HOST,), (NONE,)) else None


def _items(values: list[str]) -> list[str]:
    return [item.strip() for value in values for item in value.split(",") if item.strip()]


def parse_nets(values: list[str], *, private_net: bool = False) -> tuple[NetSelection, ...]:
    """``--net`` values (each a comma list, bare ``--net`` is ``default``) and ``--private-net``."""
    selections: list[NetSelection] = []
    for item in _items(values) + ([DEFAULT] if private_net else []):
        name, _, arg_text = item.partition(":")
        if not _NET_NAME.match(name):
            raise UsageError(f'--net={item}: invalid network name "{name}"')
        if private_net and name == DEFAULT and any(s.name == DEFAULT for s in selections):
            continue  # --private-net with --net=default says the same thing twice
        if any(s.name == name for s in selections):
            raise UsageError(f'--net: network "{name}" given more than once')
        args: list[tuple[str, str]] = []
        if arg_text:
            if name in (HOST, NONE, ALL):
                raise UsageError(f"--net={item}: {name} takes no arguments")
            for pair in arg_text.split(";"):
                key, sep, value = pair.partition("=")
                if not sep or not key.strip():
                    raise UsageError(f'--net={item}: "{pair}" is not KEY=VALUE')
                args.append((key.strip(), value.strip()))
        selections.append(NetSelection(name, tuple(args)))
    names = [s.name for s in selections]
    for special in (HOST, NONE):
        if special in names and len(names) > 1:
            raise UsageError(f"--net={special} cannot be combined with other networks")
    return tuple(selections)


def parse_ports(values: list[str]) -> tuple[PortRequest, ...]:
    ports: list[PortRequest] = []
    for value in values:
        parts = value.split(":")
        if len(parts) not in (2, 3) or not parts[0]:
            raise UsageError(f"--port={value}: expected NAME:[HOSTIP:]HOSTPORT")
        name, host_ip = parts[0], (parts[1] if len(parts) == 3 else None)
        if not _PORT_NAME.match(name):
            raise UsageError(f'--port={value}: invalid port name "{name}"')
        try:
            host_port = int(parts[-1])
        except ValueError:
            host_port = 0
        if not 0 < host_port < 65536:
            raise UsageError(f'--port={value}: invalid host port "{parts[-1]}"')
        if host_ip is not None:
            try:
                host_ip = str(ipaddress.IPv4Address(host_ip))
            except ValueError as exc:
                raise UsageError(f'--port={value}: invalid host IPv4 address "{host_ip}"') from exc
        clash = next((p for p in ports if p.host_port == host_port
                      and (p.host_ip is None or host_ip is None or p.host_ip == host_ip)), None)
        if clash is not None:
            raise UsageError(f"--port={value}: host port {host_port} is already forwarded "
                             f"to port {clash.name}")
        ports.append(PortRequest(name, host_port, host_ip))
    return tuple(ports)


def parse_dns(servers: list[str], search: list[str], options: list[str],
              domain: str | None) -> DnsRequest:
    items = _items(servers)
    search_items, option_items = tuple(_items(search)), tuple(_items(options))
    if not items and not search_items and not option_items and not domain:
        return DnsRequest()
    if items in ([HOST], [NONE]):
        if search_items or option_items or domain:
            raise UsageError(f"--dns={items[0]} cannot be combined with --dns-search, "
                             "--dns-opt or --dns-domain")
        return DnsRequest(mode=items[0])
    for item in items:
        if item in (HOST, NONE):
            raise UsageError(f"--dns={item} cannot be combined with nameserver addresses")
        try:
            ipaddress.ip_address(item)
        except ValueError as exc:
            raise UsageError(f'--dns: "{item}" is not an IP address, "host" or "none"') from exc
    for name in (*search_items, *([domain] if domain else [])):
        if any(c.isspace() for c in name):
            raise UsageError(f'--dns-search/--dns-domain: "{name}" contains white space')
    return DnsRequest(mode="flags", servers=tuple(items), search=search_items,
                      options=option_items, domain=domain or None)


def parse_hosts_entries(values: list[str]) -> tuple[tuple[tuple[str, tuple[str, ...]], ...], bool]:
    """``--hosts-entry IP=HOST[,IP=HOST]`` (one IP collects its hostnames) or ``host``."""
    items = _items(values)
    if items == [HOST]:
        return (), True
    entries: dict[str, list[str]] = {}
    for item in items:
        address, sep, hostname = item.partition("=")
        if item == HOST:
            raise UsageError("--hosts-entry=host cannot be combined with other entries")
        if not sep or not hostname or any(c.isspace() for c in hostname):
            raise UsageError(f"--hosts-entry={item}: expected IP=HOSTNAME")
        try:
            address = str(ipaddress.ip_address(address))
        except ValueError as exc:
            raise UsageError(f'--hosts-entry={item}: "{address}" is not an IP address') from exc
        entries.setdefault(address, []).append(hostname)
    return tuple((ip, tuple(names)) for ip, names in entries.items()), False
