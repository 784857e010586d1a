"""The supervisor's job description (``/rkt/runtime.json``), built by a backend at run time.

``rkt.pod.prepare`` resolves the apps once (``apps.json``); a backend then says
where things are *inside its isolation*: where each app's rootfs is mounted,
where each volume appears, whether the supervisor mounts the overlays itself.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rkt.pod.dirs import Pod
from rkt.stage1 import RunOptions

RUNTIME_FILE = "runtime.json"


def hosts_file(hostname: str) -> str:
    """OS-SPEC.md: a provided /etc/hosts SHOULD have a localhost entry."""
    return (
        f"127.0.0.1\tlocalhost localhost.localdomain {hostname}\n"
        "::1\tlocalhost ip6-localhost ip6-loopback\n"
    )


def build_runtime(
    pod: Pod,
    apps_doc: dict[str, Any],
    options: RunOptions,
    *,
    mode: str,
    app_root: Callable[[dict[str, Any]], str],
    volume_source: Callable[[str, dict[str, Any]], str],
    overlay: Callable[[dict[str, Any]], dict[str, str] | None],
    status_dir: str = "/rkt/status",
    pids_dir: str = "/rkt/pids",
    resolv_conf: str | None = None,
) -> dict[str, Any]:
    hostname = options.hostname or f"rkt-{pod.uuid}"
    volumes = apps_doc["volumes"]
    apps = []
    for app in apps_doc["apps"]:
        etc_files = {"hosts": hosts_file(hostname)}
        if resolv_conf is not None:
            etc_files["resolv.conf"] = resolv_conf
        apps.append({
            "name": app["name"],
            "root": app_root(app),
            "overlay": overlay(app),
            "exec": app["exec"],
            "env": dict(app["env"]),
            "uid": app["uid"],
            "gid": app["gid"],
            "supplementary_gids": app["supplementary_gids"],
            "working_directory": app["working_directory"],
            "read_only_rootfs": app["read_only_rootfs"],
            "pre_start": app["pre_start"],
            "post_stop": app["post_stop"],
            "capabilities": app["capabilities"],
            "no_new_privileges": app["no_new_privileges"],
            "oom_score_adj": app.get("oom_score_adj"),
            "mounts": [
                {"source": volume_source(m["volume"], volumes[m["volume"]]),
                 "target": m["target"], "read_only": m["read_only"],
                 "recursive": m["recursive"]}
                for m in app["mounts"]
            ],
            "etc_files": etc_files,
        })
    return {
        "version": 1,
        "mode": mode,
        "uuid": pod.uuid,
        "hostname": hostname,
        "interactive": options.interactive,
        "status_dir": status_dir,
        "pids_dir": pids_dir,
        "apps": apps,
    }


def volume_host_path(pod: Pod, volume: dict[str, Any]) -> str:
    """Where a resolved volume is on the host (empty volumes live in the pod dir)."""
    source = str(volume["source"])
    return source if source.startswith("/") else str(pod.path / source)


def write_runtime(pod: Pod, runtime: dict[str, Any]) -> Path:
    path = pod.stage1_rootfs() / "rkt" / RUNTIME_FILE
    path.write_text(json.dumps(runtime, indent=1))
    return path


def host_resolv_conf() -> str | None:
    try:
        return Path("/etc/resolv.conf").read_text()
    except OSError:
        return None
