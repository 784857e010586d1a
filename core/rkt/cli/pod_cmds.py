"""The commands that look after pods: list, status, enter, stop, rm, gc, cat-manifest, export.

They parse flags and say what happened; the work is done in ``rkt.pod``
(``status``, ``gc``, ``export``, ``lifecycle``), which reads only the pod
directories, so ``rkt list`` stays fast with thousands of pods.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from rkt.cli.context import GlobalOptions, RktArgumentParser
from rkt.errors import PodError, RktError, UsageError

TYPE_CHECKING = False  # not typing's: `rkt status` is polled (see rkt.context)
if TYPE_CHECKING:

    from rkt.pod.dirs import Pod, PodStore
    from rkt.pod.gc import GcEvent, GcReport, Stage1Lookup
    from rkt.stage1 import Stage1Backend

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600}


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


def _pods(options: GlobalOptions) -> PodStore:
    from rkt.pod.dirs import PodStore

    return PodStore(options.data_dir)


def _stage1_lookup(options: GlobalOptions) -> Stage1Lookup:
    from rkt.pod.lifecycle import backend_of

    return lambda pod: backend_of(options, pod)


def _stage1_gc_lookup(options: GlobalOptions) -> Stage1Lookup:
    """For ``gc`` and ``rm``, which remove a pod whose backend is gone all the same
    (rkt.pod.gc): the user hears that its own clean-up could not run."""
    from rkt.pod.lifecycle import backend_of

    # pods made with the same stage1 image have the same manifest: one lookup each
    # (reading and parsing it was a fifth of a gc of many pods' own work, issue 14)
    known: dict[bytes, Stage1Backend] = {}

    def lookup(pod: Pod) -> Stage1Backend:
        try:
            with open(f"{pod.path_text}/stage1/manifest", "rb") as handle:
                manifest = handle.read()
        except OSError:
            manifest = b""
        backend = known.get(manifest) if manifest else None
        if backend is not None:
            return backend
        try:
            backend = backend_of(options, pod)
        except RktError as exc:
            options.warn(f'pod "{pod.uuid}": its stage1 backend\'s gc could not run: {exc}')
            raise
        if manifest:
            known[manifest] = backend
        return backend

    return lookup


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


def _list(options: GlobalOptions, args: argparse.Namespace) -> int:
    from rkt.pod.status import AppStatus, api_v1_record, networks_summary, pod_status

    statuses = [pod_status(pod) for pod in _pods(options).iter_pods()]
    if args.format:
        out = [api_v1_record(s) for s in statuses]
        print(_go_json(out, pretty=args.format == "json-pretty"), file=options.stdout)
        return 0
    from rkt.cli.image import humanize_time, print_table  # the table's (shutil, datetime)

    rows: list[list[str]] = []
    if not args.no_legend:
        rows.append(["UUID", "APP", "IMAGE NAME", *(["IMAGE ID"] if args.full else []),
                     "STATE", "CREATED", "STARTED", "NETWORKS"])
    for status in statuses:
        uuid = status.uuid if args.full else status.uuid[:8]

        def when(value: float | None) -> str:
            if value is None:
                return ""
            return _iso(value) if args.full else humanize_time(value)

        no_app = AppStatus(name="-", image_name="-", image_id="", state="")
        for index, app in enumerate(status.apps or (no_app,)):
            first = index == 0
            image_id = app.image_id if args.full else app.image_id[:19]
            rows.append([
                uuid if first else "", app.name or "", app.image_name,
                *([image_id] if args.full else []),
                status.state if first else "", when(status.created) if first else "",
                when(status.started) if first else "",
                networks_summary(status.networks) if first else "",
            ])
    print_table(rows, options)
    return 0


def _go_json(value: object, *, pretty: bool) -> str:
    """JSON as rkt (Go's encoding/json) printed it: compact, or tab-indented."""
    if pretty:
        return json.dumps(value, indent="\t")
    return json.dumps(value, separators=(",", ":"))


def _wait_value(value: str | None) -> float | None:
    """``--wait``: None (don't), or a timeout in seconds (inf for plain true)."""
    if value is None or value.lower() == "false":
        return None
    if value.lower() == "true":
        return float("inf")
    return parse_duration(value)


def _status(options: GlobalOptions, args: argparse.Namespace) -> int:
    from rkt.pod.status import (
        api_v1_record,
        networks_summary,
        pod_status,
        wait_until_exited,
        wait_until_ready,
    )

    pods = _pods(options)
    pod = pods.find(_one_uuid(args))
    wait = _wait_value(args.wait)
    ready = _wait_value(args.wait_ready)
    if ready is not None and not wait_until_ready(pods, pod, ready):
        raise PodError(f'pod "{pod.uuid}" is not ready after {args.wait_ready}')
    if wait is not None and not wait_until_exited(pods, pod, wait):
        raise PodError(f'pod "{pod.uuid}" is still running after {args.wait}')
    status = pod_status(pod)
    pid = pod.pid()
    if args.format:
        out = api_v1_record(status, pid=pid if status.state == "running" else None)
        print(_go_json(out, pretty=args.format == "json-pretty"), file=options.stdout)
        return 0
    lines = [f"state={status.state}", f"created={_iso(status.created)}",
             f"started={_iso(status.started)}"]
    if status.state == "running":
        lines += [f"networks={networks_summary(status.networks)}",
                  f"pid={pid if pid is not None else ''}", "exited=false"]
    elif status.state in ("exited", "exited garbage"):
        lines.append("exited=true")
        for app in status.apps:
            if app.exit_code is not None:
                lines.append(f"app-{app.name}={app.exit_code}")
            elif app.state == "unknown":
                lines.append(f"app-{app.name}=unknown")
        if status.error is not None:
            lines.append(f"error={status.error}")
    print("\n".join(lines), file=options.stdout)
    return 0


def _enter(options: GlobalOptions, args: argparse.Namespace) -> int:
    from rkt.pod.lifecycle import backend_of, ensure_root
    from rkt.pod.prepare import load_resolved_pod

    ensure_root("enter")
    pod = _pods(options).find(args.uuid)
    if pod.state() != "running":
        raise PodError(f'pod "{pod.uuid}" is not running (state: {pod.state()})')
    resolved = load_resolved_pod(pod)
    apps = resolved.apps
    if args.app:
        chosen = resolved.app(args.app)
        if chosen is None:
            names = ", ".join(a.name for a in apps)
            raise UsageError(f'pod "{pod.uuid}" has no app "{args.app}" (apps: {names})')
        app = chosen
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
    from rkt.stage1 import backend_faults, refuse_unsupported

    backend = backend_of(options, pod)
    refuse_unsupported(backend, ["enter"])
    sys.stdout.flush()
    with backend_faults(backend.name):
        return backend.enter(pod, app, command)


def _uuids(args: argparse.Namespace) -> list[str]:
    from rkt.pod.dirs import uuid_from_file

    uuids = list(args.uuids)
    if args.uuid_file:
        uuids.append(uuid_from_file(args.uuid_file))
    if not uuids:
        raise UsageError("at least one pod UUID is required")
    return uuids


def _stop(options: GlobalOptions, args: argparse.Namespace) -> int:
    from rkt.pod.lifecycle import ensure_root, stop_pod

    ensure_root("stop")
    failed = 0
    for uuid in _uuids(args):
        try:
            pod = _pods(options).find(uuid)
            if not stop_pod(pod, _stage1_lookup(options), force=args.force):
                print(f'pod "{pod.uuid}" is already stopped', file=options.stderr)
                continue
            print(f'"{pod.uuid}"', file=options.stdout)
        except RktError as exc:
            print(f"rkt: {exc}", file=options.stderr)
            failed += 1
    return 254 if failed else 0


def _gc_reporter(options: GlobalOptions, grace_period: str) -> GcReport:
    """Says what happened to each pod, in rkt's words."""

    def report(event: GcEvent) -> None:
        uuid = event.uuid
        if event.action == "marked-exited":
            print(f'Moving pod "{uuid}" to garbage', file=options.stderr)
        elif event.action == "marked-aborted":
            print(f'Moving failed prepare "{uuid}" to garbage', file=options.stderr)
        elif event.action == "marked-expired":
            print(f'Moving expired prepared pod "{uuid}" to garbage', file=options.stderr)
        elif event.action == "within-grace":
            print(f'Pod "{uuid}" not removed: still within grace period ({grace_period})',
                  file=options.stderr)
        elif event.action == "collecting":
            print(f'Garbage collecting pod "{uuid}"', file=options.stdout)
        elif event.action == "failed":
            print(f"rkt: {event.error}", file=options.stderr)

    return report


def _rm(options: GlobalOptions, args: argparse.Namespace) -> int:
    from rkt.pod.gc import remove_pod
    from rkt.pod.lifecycle import ensure_root

    ensure_root("rm")
    failed = 0
    for uuid in _uuids(args):
        try:
            pod = remove_pod(_pods(options), uuid, _stage1_gc_lookup(options))
            print(f'"{pod.uuid}"', file=options.stdout)
        except RktError as exc:
            print(f"rkt: {exc}", file=options.stderr)
            failed += 1
    return 254 if failed else 0


def _gc(options: GlobalOptions, args: argparse.Namespace) -> int:
    from rkt.pod.gc import DETACH_ABOVE, collect_pods
    from rkt.pod.lifecycle import ensure_root

    ensure_root("gc")
    result = collect_pods(
        _pods(options),
        grace_period=parse_duration(args.grace_period),
        expire_prepared=parse_duration(args.expire_prepared),
        mark_only=args.mark_only,
        detach_above=DETACH_ABOVE,
        stage1_backend=_stage1_gc_lookup(options),
        report=_gc_reporter(options, args.grace_period),
    )
    if not args.mark_only:
        options.store.sweep_tmp()  # what a killed fetch or prepare left in the store
    return 254 if result.failed else 0


def _cat_manifest(options: GlobalOptions, args: argparse.Namespace) -> int:
    pod = _pods(options).find(_one_uuid(args))
    manifest = pod.manifest_json()
    indent = 4 if args.pretty_print else None
    separators = None if args.pretty_print else (",", ":")
    print(json.dumps(manifest, indent=indent, separators=separators), file=options.stdout)
    return 0


def _export(options: GlobalOptions, args: argparse.Namespace) -> int:
    """An exited pod's app, as it ended, as a new (unsigned, uncompressed) ACI."""
    from rkt.pod.export import export_app

    pod = _pods(options).find(args.uuid)
    export_app(pod, Path(args.output), app_name=args.app, overwrite=args.overwrite)
    return 0
