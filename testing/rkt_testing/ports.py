"""TCP ports for test servers and pods, and waiting for one to answer."""

from __future__ import annotations

import socket
import time
import urllib.request


def free_port() -> int:
    """A TCP port nothing listens on right now (on any address)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("0.0.0.0", 0))
        return int(probe.getsockname()[1])


def http_get(url: str, timeout: float = 20) -> str:
    """The body at ``url``, asked again until it answers or ``timeout`` seconds pass
    (a pod's server or a forwarded port comes up a moment after the pod)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                return str(response.read().decode())
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
