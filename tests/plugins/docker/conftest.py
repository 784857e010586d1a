"""Real Docker registries for the docker fetcher's tests.

One CA and three ``docker-registry`` processes per session (open, htpasswd basic
auth, token auth with a loopback token service), started from private configs on
free loopback ports. Images are built with tarfile and pushed with skopeo.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from docker_world import PASSWORD, USER, Registries

from rkt_testing.docker_registry import (
    Entry,
    RegistryServer,
    TestCA,
    TokenServer,
    busybox_layer,
    image_config,
    layer_tar,
)


@pytest.fixture(scope="session")
def busybox_layers() -> list[bytes]:
    return [busybox_layer()]


@pytest.fixture(scope="session")
def busybox_config(busybox_layers: list[bytes]) -> dict[str, Any]:
    return image_config(
        busybox_layers,
        cmd=["/bin/sh", "-c", 'echo "greeting=$GREETING"; echo "cwd=$(pwd)"; id -u'],
        env=["PATH=/usr/bin:/bin", "GREETING=hello from docker"],
        working_dir="/tmp",
        exposed_ports=["80/tcp", "53/udp"],
        volumes=["/data"],
        labels={"maintainer": "rkt tests"},
    )


@pytest.fixture(scope="session")
def registries(
    tmp_path_factory: pytest.TempPathFactory,
    busybox_layers: list[bytes],
    busybox_config: dict[str, Any],
) -> Iterator[Registries]:
    base = tmp_path_factory.mktemp("registries")
    ca = TestCA(base / "ca")
    tokens = TokenServer(base / "tokens", ca, users={USER: PASSWORD}).start()
    started: list[RegistryServer] = []
    try:
        open_registry = RegistryServer(base / "open", ca).start()
        started.append(open_registry)
        basic = RegistryServer(base / "basic", ca, auth="htpasswd",
                               users={USER: PASSWORD}).start()
        started.append(basic)
        token = RegistryServer(base / "token", ca, auth="token", users={USER: PASSWORD},
                               token_server=tokens).start()
        started.append(token)
        world = Registries(ca, open_registry, basic, token, tokens, base / "work")
        open_registry.push_image("library/busybox:latest", busybox_layers, busybox_config,
                                 world.work)
        basic.push_image(f"{USER}/privateapp:latest", busybox_layers, busybox_config, world.work)
        token.push_image(f"{USER}/tokenapp:latest", busybox_layers, busybox_config, world.work)
        yield world
    finally:
        for server in started:
            server.stop()
        tokens.stop()


@pytest.fixture(scope="session")
def whiteout_layers() -> list[bytes]:
    """A base with busybox and two files; a top layer that deletes one of them (a
    whiteout), empties a directory (an opaque whiteout) and adds a hard link."""
    base = busybox_layer()
    files = layer_tar({
        "etc/": "",
        "etc/doomed.conf": "delete me\n",
        "etc/kept.conf": "keep me\n",
        "var/": "",
        "var/cache/": "",
        "var/cache/old-1": "stale\n",
        "var/cache/old-2": "stale\n",
    })
    top = layer_tar({
        "etc/": "",
        "etc/.wh.doomed.conf": "",
        "var/": "",
        "var/cache/": "",
        "var/cache/.wh..wh..opq": "",
        "var/cache/fresh": "new\n",
        "etc/kept-link.conf": Entry(b"1", linkname="etc/kept.conf"),
    })
    return [base, files, top]
