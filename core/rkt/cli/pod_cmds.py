"""The commands that look after pods: list, status, enter, stop, rm, gc, cat-manifest, export.

None of them reads an image: everything shown comes from the pod directory
(its manifest, its lock, a few timestamps), so ``rkt list`` stays fast with
thousands of pods.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from rkt.cli.context import GlobalOptions, RktArgumentParser
from rkt.errors import PodError, RktError, UsageError

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600}

LOG = logging.getLogger(__name__)


def parse_duration(text: str) -> float:
    """Go's duration syntax, as rkt's flags take it: ``30m0s``, ``24h``, ``0s``, ``1.5h``."""
    if text in ("0", ""):
        return 0.0
    position = 0
    total = 0.0
    for match in _DURATION.finditer(text):
        if match.start() != position:
            break
        total += float(match.group(1)) * _UNITS[match.group(2)]
        position = match.end()
    if position != len(text):
        raise UsageError(f'invalid duration "{text}" (examples: 30m0s, 24h, 0s)')
    return total


def add_arguments(command: str, parser: RktArgumentParser) -> None:
    uuid_help = "pod UUID (any unambiguous prefix)"
    if command == "list":
        parser.add_bool_flag("--full", help="full UUIDs, image IDs and absolute times")
        parser.add_bool_flag("--no-legend", help="do not print the header line")
        parser.add_argument("--format", choices=("", "json", "json-pretty"), default="")
    elif command == "status":
        parser.add_argument("uuid", nargs="?", metavar="UUID", help=uuid_help)
        parser.add_argument("--uuid-file", help="read the UUID from this file")
        parser.add_argument("--wait", nargs="?", const="true", default=None,
                            help="wait for the pod to exit (true, or a duration)")
        parser.add_argument("--wait-ready", nargs="?", const="true", default=None,
                            help="wait for the pod to be running (true, or a duration)")
        parser.add_argument("--format", choices=("", "json", "json-pretty"), default="")
    elif command == "enter":
        parser.add_argument("--app", help="the app to enter (required with several apps)")
        parser.add_argument("uuid", metavar="UUID", help=uuid_help)
        parser.add_argument("cmd", nargs=argparse.REMAINDER, metavar="CMD")
    elif command in ("stop", "rm"):
        parser.add_argument("uuids", nargs="*", metavar="UUID", help=uuid_help)
        parser.add_argument("--uuid-file", help="read the UUID from this file")
        if command == "stop":
            parser.add_bool_flag("--force", help="kill the pod instead of stopping it")
    elif command == "gc":
        parser.add_argument("--grace-period", default="30m0s",
                            help="how long exited pods stay before removal (default 30m0s)")
        parser.add_argument("--expire-prepared", default="24h0m0s",
                            help="how long prepared pods stay (default 24h0m0s)")
        parser.add_bool_flag("--mark-only", help="only move exited pods to exited-garbage")
    elif command == "cat-manifest":
        parser.add_argument("uuid", nargs="?", metavar="UUID", help=uuid_help)
        parser.add_argument("--uuid-file", help="read the UUID from this file")
        parser.add_bool_flag("--pretty-print", help="indent the JSON (default true)")
        parser.set_defaults(pretty_print=True)
    elif command == "export":
        parser.add_argument("--app", help="the app to export (required with several apps)")
        parser.add_bool_flag("--overwrite", help="overwrite the output file")
        parser.add_argument("uuid", metavar="UUID", help=uuid_help)
        parser.add_argument("output", metavar="OUTPUT.aci")


def run(command: str, options: GlobalOptions, args: argparse.Namespace) -> int:
    handler = {
        "list": _list, "status": _status, "enter": _enter, "stop": _stop, "rm": _rm,
        "gc": _gc, "cat-manifest": _cat_manifest, "export": _export,
    }[command]
    return handler(options, args)


def _pods(options: GlobalOptions) -> Any:
    from rkt.pod.dirs import PodStore

    return PodStore(options.data_dir)


def _one_uuid(args: argparse.Namespace) -> str:
    from rkt.pod.dirs import uuid_from_file

    if getattr(args, "uuid_file", None):
        if getattr(args, "uuid", None):
            raise UsageError("give either a UUID or --uuid-file, not both")
        return uuid_from_file(args.uuid_file)
    if not getattr(args, "uuid", None):
        raise UsageError("a pod UUID is required")
    return str(args.uuid)


def _iso(when: float | None) -> str:
    if when is None:
        return ""
    from rkt.cli.image import rfc3339

    return rfc3339(when)


def _pod_record(pod: Any) -> dict[str, Any]:
    """What list and status show, from the pod directory alone."""
    try:
        manifest = pod.manifest_json()
    except PodError:
        manifest = {}
    apps = manifest.get("apps") or []
    state = pod.state()
    record: dict[str, Any] = {
        "name": pod.uuid,
        "state": state,
        "networks": [],
        "app_names": [a.get("name") for a in apps],
        "apps": [],
        "created": pod.created(),
        "started": pod.started() if pod.phase in ("run", "exited-garbage") else None,
    }
    codes = pod.app_exit_codes() if pod.phase in ("run", "exited-garbage") else {}
    for app in apps:
        image = app.get("image") or {}
        entry = {"name": app.get("name"), "image_name": image.get("name", ""),
                 "image_id": image.get("id", "")}
        if app.get("name") in codes:
            entry["exit_code"] = codes[app["name"]]
        entry["state"] = (
            "running" if state == "running" else "exited" if "exit_code" in entry
            else state
        )
        record["apps"].append(entry)
    return record


def _list(options: GlobalOptions, args: argparse.Namespace) -> int:
    from rkt.cli.image import humanize_time, print_table

    records = [_pod_record(pod) for pod in _pods(options).iter_pods()]
    if args.format:
        out = [_json_record(r) for r in records]
        print(json.dumps(out, indent=2 if args.format == "json-pretty" else None),
              file=options.stdout)
        return 0
    rows: list[list[str]] = []
    if not args.no_legend:
        rows.append(["UUID", "APP", "IMAGE NAME", *(["IMAGE ID"] if args.full else []),
                     "STATE", "CREATED", "STARTED", "NETWORKS"])
    for record in records:
        uuid = record["name"] if args.full else record["name"][:8]

        def when(value: float | None) -> str:
            if value is None:
                return ""
            return _iso(value) if args.full else humanize_time(value)

        for index, app in enumerate(record["apps"] or [{"name": "-", "image_name": "-",
                                                        "image_id": ""}]):
            first = index == 0
            image_id = app["image_id"] if args.full else app["image_id"][:19]
            rows.append([
                uuid if first else "", app["name"], app["image_name"],
                *([image_id] if args.full else []),
                record["state"] if first else "", when(record["created"]) if first else "",
                when(record["started"]) if first else "", "",
            ])
    print_table(rows, options)
    return 0


def _json_record(record: dict[str, Any]) -> dict[str, Any]:
    """rkt's api/v1 Pod shape, which Nomad's driver parses."""
    out = dict(record)
    out["created_at"] = int(record["created"] * 1e9) if record["created"] else None
    out["started_at"] = int(record["started"] * 1e9) if record["started"] else None
    del out["created"], out["started"]
    return out


def _wait_value(value: str | None) -> float | None:
    """``--wait``: None (don't), or a timeout in seconds (inf for plain true)."""
    if value is None or value.lower() == "false":
        return None
    if value.lower() == "true":
        return float("inf")
    return parse_duration(value)


def _status(options: GlobalOptions, args: argparse.Namespace) -> int:
    pods = _pods(options)
    pod = pods.find(_one_uuid(args))
    wait = _wait_value(args.wait)
    ready = _wait_value(args.wait_ready)
    if ready is not None:
        deadline = time.monotonic() + ready
        while pod.state() not in ("running", "exited", "exited garbage") or (
            pod.state() == "running" and pod.pid() is None
        ):
            if time.monotonic() > deadline:
                raise PodError(f'pod "{pod.uuid}" is not ready after {args.wait_ready}')
            time.sleep(0.1)
            pods.refresh(pod)
    if wait is not None:
        deadline = time.monotonic() + wait
        while pod.state() in ("embryo", "preparing", "prepared", "running"):
            if time.monotonic() > deadline:
                raise PodError(f'pod "{pod.uuid}" is still running after {args.wait}')
            time.sleep(0.1)
            pods.refresh(pod)
    record = _pod_record(pod)
    pid = pod.pid()
    if args.format:
        out = _json_record(record)
        out["pid"] = pid
        print(json.dumps(out, indent=2 if args.format == "json-pretty" else None),
              file=options.stdout)
        return 0
    lines = [f"state={record['state']}", f"created={_iso(record['created'])}",
             f"started={_iso(record['started'])}"]
    if record["state"] == "running":
        lines += ["networks=", f"pid={pid if pid is not None else ''}", "exited=false"]
    elif record["state"] in ("exited", "exited garbage"):
        lines.append("exited=true")
        for app in record["apps"]:
            if "exit_code" in app:
                lines.append(f"app-{app['name']}={app['exit_code']}")
    print("\n".join(lines), file=options.stdout)
    return 0


def _enter(options: GlobalOptions, args: argparse.Namespace) -> int:
    from rkt.pod.lifecycle import backend_of, ensure_root
    from rkt.pod.prepare import load_apps

    ensure_root("enter")
    pod = _pods(options).find(args.uuid)
    if pod.state() != "running":
        raise PodError(f'pod "{pod.uuid}" is not running (state: {pod.state()})')
    apps = load_apps(pod)["apps"]
    if args.app:
        chosen = [a for a in apps if a["name"] == args.app]
        if not chosen:
            names = ", ".join(a["name"] for a in apps)
            raise UsageError(f'pod "{pod.uuid}" has no app "{args.app}" (apps: {names})')
        app = chosen[0]
    elif len(apps) == 1:
        app = apps[0]
    else:
        raise UsageError("the pod has several apps: choose one with --app")
    command = list(args.cmd)
    if command[:1] == ["--"]:
        command = command[1:]
    if not command:
        print('No command specified, assuming "/bin/bash"', file=options.stderr)
        command = ["/bin/bash"]
    sys.stdout.flush()
    return backend_of(options, pod).enter(pod, app, command)


def _uuids(args: argparse.Namespace) -> list[str]:
    from rkt.pod.dirs import uuid_from_file

    uuids = list(args.uuids)
    if args.uuid_file:
        uuids.append(uuid_from_file(args.uuid_file))
    if not uuids:
        raise UsageError("at least one pod UUID is required")
    return uuids


def _stop(options: GlobalOptions, args: argparse.Namespace) -> int:
    from rkt.pod.lifecycle import backend_of, ensure_root

    ensure_root("stop")
    failed = 0
    for uuid in _uuids(args):
        try:
            pod = _pods(options).find(uuid)
            if pod.state() != "running":
                print(f'pod "{pod.uuid}" is already stopped', file=options.stderr)
                continue
            backend_of(options, pod).stop(pod, force=args.force)
            print(f'"{pod.uuid}"', file=options.stdout)
        except RktError as exc:
            print(f"rkt: {exc}", file=options.stderr)
            failed += 1
    return 254 if failed else 0


def remove_pod(options: GlobalOptions, pod: Any) -> None:
    """Delete an exited or garbage pod: lock it, let the stage1 clean up, remove the dir."""
    from rkt.pod.lifecycle import backend_of

    pods = _pods(options)
    if not pod.lock():
        raise PodError(f'pod "{pod.uuid}" is in use')
    try:
        pods.refresh(pod)
        if pod.phase == "run":
            pod.move("exited-garbage")
        elif pod.phase in ("prepare", "prepared"):
            pod.move("garbage")
        try:
            backend_of(options, pod).gc(pod)
        except RktError as exc:
            LOG.debug("stage1 gc of %s: %s", pod.uuid, exc)
        pods.delete(pod)
    finally:
        pod.release()


def _rm(options: GlobalOptions, args: argparse.Namespace) -> int:
    from rkt.pod.lifecycle import ensure_root

    ensure_root("rm")
    failed = 0
    for uuid in _uuids(args):
        try:
            pod = _pods(options).find(uuid)
            state = pod.state()
            if state in ("running", "preparing", "deleting", "exited deleting", "embryo"):
                raise PodError(f'pod "{pod.uuid}" is {state}; only exited pods can be removed')
            remove_pod(options, pod)
            print(f'"{pod.uuid}"', file=options.stdout)
        except RktError as exc:
            print(f"rkt: {exc}", file=options.stderr)
            failed += 1
    return 254 if failed else 0


def _gc(options: GlobalOptions, args: argparse.Namespace) -> int:
    from rkt.pod.lifecycle import ensure_root

    ensure_root("gc")
    grace = parse_duration(args.grace_period)
    expire = parse_duration(args.expire_prepared)
    pods = _pods(options)
    now = time.time()
    # Mark: exited pods, aborted prepares, expired prepared pods.
    for pod in pods.iter_pods(("run", "prepare", "prepared")):
        try:
            if pod.phase == "run" and not pod.is_locked_by_other():
                pod.move("exited-garbage")
                print(f'Moving pod "{pod.uuid}" to garbage', file=options.stderr)
            elif pod.phase == "prepare" and not pod.is_locked_by_other():
                pod.move("garbage")
                print(f'Moving failed prepare "{pod.uuid}" to garbage', file=options.stderr)
            elif pod.phase == "prepared":
                created = pod.created() or now
                if now - created > expire and pod.lock():
                    try:
                        pod.move("garbage")
                    finally:
                        pod.release()
                    print(f'Moving expired prepared pod "{pod.uuid}" to garbage',
                          file=options.stderr)
        except FileNotFoundError:
            continue  # another gc or rm won the race
    if args.mark_only:
        return 0
    # Sweep: exited pods past their grace period (counted from the mark, the rename's
    # ctime), and garbage at once.
    now = time.time()
    failed = 0
    for pod in pods.iter_pods(("exited-garbage", "garbage")):
        try:
            if pod.phase == "exited-garbage":
                marked = os.stat(pod.path).st_ctime
                if now - marked < grace:
                    print(f'Pod "{pod.uuid}" not removed: still within grace period '
                          f"({args.grace_period})", file=options.stderr)
                    continue
            if pod.is_locked_by_other():
                continue
            print(f'Garbage collecting pod "{pod.uuid}"', file=options.stdout)
            remove_pod(options, pod)
        except FileNotFoundError:
            continue
        except RktError as exc:
            print(f"rkt: {exc}", file=options.stderr)
            failed += 1
    return 254 if failed else 0


def _cat_manifest(options: GlobalOptions, args: argparse.Namespace) -> int:
    pod = _pods(options).find(_one_uuid(args))
    manifest = pod.manifest_json()
    indent = 4 if args.pretty_print else None
    separators = None if args.pretty_print else (",", ":")
    print(json.dumps(manifest, indent=indent, separators=separators), file=options.stdout)
    return 0


def _export(options: GlobalOptions, args: argparse.Namespace) -> int:
    """An exited pod's app, as it ended, as a new (unsigned, uncompressed) ACI."""
    import tarfile
    import tempfile

    from rkt.pod.prepare import load_apps

    pod = _pods(options).find(args.uuid)
    if pod.state() not in ("exited", "exited garbage"):
        raise PodError(f'pod "{pod.uuid}" has not exited (state: {pod.state()})')
    output = Path(args.output)
    if output.suffix != ".aci":
        raise UsageError(f"export: output file must end in .aci: {output}")
    if output.exists() and not args.overwrite:
        raise UsageError(f"export: {output} already exists (use --overwrite)")
    apps = load_apps(pod)["apps"]
    if args.app:
        apps = [a for a in apps if a["name"] == args.app]
        if not apps:
            raise UsageError(f'pod "{pod.uuid}" has no app "{args.app}"')
    elif len(apps) > 1:
        raise UsageError("the pod has several apps: choose one with --app")
    app = apps[0]
    manifest = (pod.path / "appsinfo" / app["name"] / "manifest").read_bytes()
    with tempfile.TemporaryDirectory(dir=pod.path) as work:
        rootfs = Path(work) / "rootfs"
        if app["overlay"]:
            _merge_overlay(Path(app["lower"]),
                           pod.path / "overlay" / app["tree"] / "upper" / app["name"], rootfs)
        else:
            shutil.copytree(pod.stage1_rootfs() / "opt" / "stage2" / app["name"] / "rootfs",
                            rootfs, symlinks=True)
        tmp = output.with_name(f".{output.name}.tmp")
        with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar:
            manifest_file = Path(work) / "manifest"
            manifest_file.write_bytes(manifest)
            tar.add(manifest_file, "manifest")
            tar.add(rootfs, "rootfs")
        os.rename(tmp, output)
    return 0


def _merge_overlay(lower: Path, upper: Path, dest: Path) -> None:
    """lower + upper as overlayfs would show them (whiteouts are 0:0 char devices)."""
    from rkt.pod.prepare import copy_tree

    copy_tree(lower, dest)
    for root, dirs, files in os.walk(upper):
        rel = Path(root).relative_to(upper)
        for name in [*files, *dirs]:
            source = Path(root) / name
            target = dest / rel / name
            info = source.lstat()
            is_whiteout = (os.major(info.st_rdev) == 0 and os.minor(info.st_rdev) == 0
                           and not source.is_dir() and (info.st_mode & 0o170000) == 0o020000)
            if target.is_dir() and not target.is_symlink() and (is_whiteout or not
                                                                 source.is_dir()):
                shutil.rmtree(target)
            elif (target.exists() or target.is_symlink()) and not (
                source.is_dir() and target.is_dir()
            ):
                target.unlink()
            if is_whiteout:
                continue
            if source.is_dir() and not source.is_symlink():
                target.mkdir(exist_ok=True)
                shutil.copystat(source, target)
            else:
                shutil.copy2(source, target, follow_symlinks=False)
