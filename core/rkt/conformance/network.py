"""A CNI network of the suite's own for the ``net-contained`` check.

rkt's built-in ``default`` network is shared with every rkt on the machine (its
leases, its address range), so the check gives its pod a user network instead,
in the world's ``net.d``: a bridge of its own name, a /24 in 10.0.0.0/8 that no
route on the host touches, and host-local leases inside the world.
"""

from __future__ import annotations

import ipaddress
import json
import random
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager

from rkt.conformance.world import World


def free_subnet() -> ipaddress.IPv4Network:
    """A /24 in 10.0.0.0/8 that no route on the host touches."""
    routes = subprocess.run(["ip", "-4", "route", "show", "table", "all"], capture_output=True,
                            text=True).stdout
    used = []
    for line in routes.splitlines():
        word = line.split()[0] if line.split() else ""
        if word[:1].isdigit():
            used.append(ipaddress.ip_network(word, strict=False))
    while True:
        candidate = ipaddress.IPv4Network(
            f"10.{random.randint(100, 250)}.{random.randint(0, 255)}.0/24")
        if not any(candidate.overlaps(u) for u in used):
            return candidate


@contextmanager
def private_network(world: World) -> Iterator[tuple[str, ipaddress.IPv4Network]]:
    """(name, subnet) of a bridge network in the world's ``net.d``; the bridge is
    deleted afterwards (``rkt gc`` removes the pods' ends of it)."""
    tag = world.cgroup_parent.rsplit("-", 1)[-1][:8]
    name, bridge, subnet = f"conformance-{tag}", f"rkt-c{tag[:8]}", free_subnet()
    net_d = world.local_config / "net.d"
    net_d.mkdir(exist_ok=True)
    (net_d / f"{name}.conf").write_text(json.dumps({
        "cniVersion": "0.4.0", "name": name, "type": "bridge", "bridge": bridge,
        "isGateway": True, "ipMasq": False,
        "ipam": {"type": "host-local", "subnet": str(subnet),
                 "dataDir": str(world.root / "leases")},
    }))
    try:
        yield name, subnet
    finally:
        world.run("gc", "--grace-period=0s")
        subprocess.run(["ip", "link", "del", bridge], capture_output=True)
