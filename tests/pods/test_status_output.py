"""``rkt status`` and ``rkt list`` print exactly what they printed before they were
made faster (issue 14): the output for pods of every state is compared byte for
byte with ``status_output.golden``, recorded from the earlier implementation.

The pods are made by hand with fixed UUIDs and timestamps (no stage1 runs); a
"locked" pod is one this test holds the flock of, as a running ``rkt`` would.
Regenerate the file with ``RKT_WRITE_GOLDEN=1`` only when a change of the output
is intended.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from rkt_testing import RktEnv

GOLDEN = Path(__file__).with_name("status_output.golden")
T0 = 1_764_000_000.25  # 2025-11-24, a quarter second past, so nanoseconds show

IMAGE = {"name": "example.com/app", "id": "sha512-" + "ab" * 32,
         "labels": [{"name": "os", "value": "linux"}]}
OTHER = {"name": "example.com/other", "id": "sha512-" + "cd" * 32}

#: one attachment as rkt.net.pod writes it into net-info.json
NET_INFO = [{"netName": "default", "netConf": "builtin:default", "pluginPath": "ptp",
             "ifName": "eth0", "ip": "172.16.28.7", "args": "", "mask": "255.255.255.0",
             "gateway": "172.16.28.1"},
            {"netName": "extra", "netConf": "/etc/rkt/net.d/extra.conf",
             "pluginPath": "bridge", "ifName": "eth1", "ip": None, "args": "K=V",
             "mask": None, "gateway": None}]


def manifest(*apps: dict[str, object], **extra: object) -> dict[str, object]:
    return {"acVersion": "0.8.11", "acKind": "PodManifest", "apps": list(apps),
            "volumes": [], "isolators": None, "annotations": [], "ports": [], **extra}


def app(name: str, image: dict[str, object] = IMAGE, **extra: object) -> dict[str, object]:
    return {"name": name, "image": image, "app": {"exec": ["/bin/true"], "user": "0",
                                                  "group": "0"}, "mounts": [], **extra}


#: (phase, locked, manifest or None, {file: (content, mtime offset)}) per pod
PODS: dict[str, tuple[str, bool, dict[str, object] | None, dict[str, tuple[str, float]]]] = {
    "embryo": ("embryo", False, None, {}),
    "preparing": ("prepare", True, manifest(app("app")), {"pod-created": ("", 0)}),
    "aborted": ("prepare", False, manifest(app("app")), {"pod-created": ("", 1)}),
    "prepared": ("prepared", False, manifest(
        app("app", mounts=[{"volume": "data", "path": "/data"},
                           {"volume": "inline", "path": "/inline",
                            "appVolume": {"name": "inline", "kind": "empty"}}],
            app={"exec": ["/bin/true"], "user": "0", "group": "0",
                 "userAnnotations": {"team": "x"}, "userLabels": {"tier": "web"}}),
        volumes=[{"name": "data", "kind": "host", "source": "/srv/data", "readOnly": True}],
        userAnnotations={"owner": "nomad"}, userLabels={"job": "web"},
    ), {"pod-created": ("", 2)}),
    "running": ("run", True, manifest(app("app"), app("side", OTHER)), {
        "pod-created": ("", 3), "pod-started": ("", 4), "pid": ("4242\n", 4),
        "ppid": ("4241\n", 4), "net-info.json": (json.dumps(NET_INFO), 4),
        "stage1/rootfs/rkt/status/app-started": ("", 5),
        "stage1/rootfs/rkt/status/side-started": ("", 6),
        "stage1/rootfs/rkt/status/side": ("0\n", 7),
    }),
    "exited": ("run", False, manifest(app("app"), app("side", OTHER), app("never")), {
        "pod-created": ("", 8), "pid": ("4343\n", 9),
        "net-info.json": ("[]", 9),
        "stage1/rootfs/rkt/status/app-started": ("", 10),
        "stage1/rootfs/rkt/status/app": ("3\n", 11),
        "stage1/rootfs/rkt/status/side-started": ("", 10),
        "stage1/rootfs/rkt/status/side": ("137\n", 12),
        "stage1/rootfs/rkt/status/side-oom": ("", 12),
        "stage1/rootfs/rkt/status/junk": ("not a number\n", 12),
    }),
    "exited-no-pid": ("run", False, manifest(app("app")), {
        "pod-created": ("", 13), "ppid": ("99\n", 14), "net-info.json": ("{broken", 14),
        "stage1/rootfs/rkt/status/app": ("0\n", 15),
    }),
    "exited-garbage": ("exited-garbage", False, manifest(app("app")), {
        "pod-created": ("", 16), "pod-started": ("", 17),
        "stage1/rootfs/rkt/status/app": ("1\n", 18),
    }),
    "exited-deleting": ("exited-garbage", True, manifest(app("app")), {
        "pod-created": ("", 19), "pod-started": ("", 20),
    }),
    "garbage": ("garbage", False, manifest(app("app")), {"pod-created": ("", 21)}),
    "deleting": ("garbage", True, manifest(app("app")), {"pod-created": ("", 22)}),
    "no-apps": ("prepared", False, manifest(), {"pod-created": ("", 23)}),
    # the stage1 failed the pod (stage0's record), and wrote garbage for one app
    "stage1-failed": ("run", False, manifest(app("app"), app("side", OTHER), app("never")), {
        "pod-created": ("", 24), "pod-started": ("", 25),
        "stage1-error": ("stage1 backend raised: boom\n", 26),
        "stage1/rootfs/rkt/status/app": ("0\n", 26),
        "stage1/rootfs/rkt/status/side": ("garbage\n", 26),
    }),
    "garbage-exit-code": ("exited-garbage", False, manifest(app("app")), {
        "pod-created": ("", 27), "pod-started": ("", 28),
        "stage1/rootfs/rkt/status/app": ("x\n", 29),
    }),
}
UUIDS = {name: f"{index:08x}-0000-4000-8000-{index:012x}"
         for index, name in enumerate(PODS, 1)}


@pytest.fixture
def pods(rkt_env: RktEnv) -> Iterator[dict[str, str]]:
    """The pods of :data:`PODS` in ``rkt_env``'s data dir, the locked ones locked."""
    locks: list[int] = []
    try:
        for name, (phase, locked, content, files) in PODS.items():
            path = rkt_env.data_dir / "pods" / phase / UUIDS[name]
            path.mkdir(parents=True)
            if content is not None:
                (path / "pod").write_text(json.dumps(content))
            for relative, (text, offset) in files.items():
                file = path / relative
                file.parent.mkdir(parents=True, exist_ok=True)
                file.write_text(text)
                os.utime(file, (T0 + offset, T0 + offset))
            if locked:
                fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
                fcntl.flock(fd, fcntl.LOCK_EX)
                locks.append(fd)
        yield UUIDS
    finally:
        for fd in locks:
            os.close(fd)


def outputs(rkt_env: RktEnv, uuids: dict[str, str]) -> str:
    """Every polled form of status and list, one section each."""
    commands: list[tuple[str, ...]] = [("list", "--format=json"), ("list", "--format=json-pretty"),
                                       ("list", "--full"), ("list", "--full", "--no-legend")]
    for name in PODS:
        commands += [("status", "--format=json", uuids[name]),
                     ("status", "--format=json-pretty", uuids[name]),
                     ("status", uuids[name])]
    commands.append(("status", "--format=json", uuids["running"][:8]))  # a prefix
    sections = []
    for command in commands:
        result = rkt_env.run(*command, env={"TZ": "UTC"})
        sections.append(f"$ rkt {' '.join(command)}\nexit {result.returncode}\n"
                        f"{result.stdout}{result.stderr}")
    return "\n".join(sections)


def test_status_and_list_print_what_they_printed_before(
    rkt_env: RktEnv, pods: dict[str, str]
) -> None:
    text = outputs(rkt_env, pods)
    if os.environ.get("RKT_WRITE_GOLDEN"):
        GOLDEN.write_text(text)
    assert text == GOLDEN.read_text()
