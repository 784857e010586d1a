"""``actool``: build, check, inspect, patch and discover App Container Images.

The command line of appc's actool, on the runtime's code (see :mod:`rkt.tools`)::

    actool build [--overwrite] [--no-compression] [--owner-root] [--mtime=SECONDS] DIR OUT.aci
    actool validate [--type=appimage|layout|manifest] FILE...
    actool cat-manifest [--pretty-print] IMAGE.aci
    actool patch-manifest [flags] IMAGE.aci [OUT.aci]
    actool discover [--json] [--insecure] NAME[:VERSION][,LABEL=VALUE...]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from rkt.errors import UsageError
from rkt.tools import EXIT_INVALID, ToolReporter, run_tool

TOOL = "actool"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog.removeprefix(TOOL + ' ')}: {message}"
                         if self.prog != TOOL else message)


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=TOOL, description="Build, check, inspect, patch and discover "
                     "App Container Images (ACIs).")
    parser.add_argument("--debug", action="store_true", help="print tracebacks and debug logs")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    build = commands.add_parser("build", help="archive an image layout (manifest + rootfs/)")
    build.add_argument("--overwrite", action="store_true", help="replace an existing OUT")
    build.add_argument("--no-compression", action="store_true", help="write a plain tar")
    build.add_argument("--owner-root", action="store_true",
                       help="make every file owned by 0:0 instead of its owner on disk")
    build.add_argument("--mtime", metavar="SECONDS", type=_seconds,
                       help="set every entry's time (default: $SOURCE_DATE_EPOCH, else "
                       "each file's own)")
    build.add_argument("directory", metavar="DIR", type=Path)
    build.add_argument("out", metavar="OUT.aci", type=Path)

    validate = commands.add_parser("validate", help="check images, layouts and manifests")
    validate.add_argument("--type", choices=("appimage", "layout", "manifest"),
                          help="what the files are (default: detected)")
    validate.add_argument("files", metavar="FILE", nargs="+", type=Path)

    cat = commands.add_parser("cat-manifest", help="print an image's manifest")
    cat.add_argument("--pretty-print", action="store_true", help="indent the JSON")
    cat.add_argument("image", metavar="IMAGE.aci", type=Path)

    patch = commands.add_parser("patch-manifest", help="change an image's manifest")
    patch.add_argument("--manifest", metavar="FILE", type=Path, help="the whole new manifest")
    patch.add_argument("--name", help="the image's name")
    patch.add_argument("--exec", dest="exec_", metavar="CMD", help='"/app --flag": the command')
    patch.add_argument("--user", help="the app's user")
    patch.add_argument("--group", help="the app's group")
    patch.add_argument("--capability", metavar="CAP,...",
                       help="the capabilities the app keeps (capabilities-retain-set)")
    patch.add_argument("--mounts", metavar="NAME,path=P[,readOnly=true][:...]")
    patch.add_argument("--ports", metavar="NAME,protocol=tcp,port=N[,count=N][:...]")
    patch.add_argument("--isolators", metavar="NAME,KEY=VALUE[,...][:...]")
    patch.add_argument("--supplementary-groups", metavar="GID,...")
    patch.add_argument("--replace", action="store_true", help="patch IMAGE.aci in place")
    patch.add_argument("--overwrite", action="store_true", help="replace an existing OUT")
    patch.add_argument("image", metavar="IMAGE.aci", type=Path)
    patch.add_argument("out", metavar="OUT.aci", type=Path, nargs="?")

    discover = commands.add_parser("discover", help="print the URLs discovery finds for a name")
    discover.add_argument("--json", action="store_true", help="print JSON")
    discover.add_argument("--insecure", action="store_true",
                          help="accept any TLS certificate and plain http")
    discover.add_argument("name", metavar="NAME[:VERSION][,LABEL=VALUE...]")
    return parser


def _seconds(text: str) -> int:
    try:
        value = int(text, 10)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f'"{text}" is not a number of seconds since the epoch')
    return value


def _source_date_epoch() -> int | None:
    text = os.environ.get("SOURCE_DATE_EPOCH")
    if text is None or text == "":
        return None
    try:
        return _seconds(text)
    except argparse.ArgumentTypeError:
        raise UsageError(f'SOURCE_DATE_EPOCH="{text}" is not a number of seconds since the '
                         "epoch") from None


def _build(ns: argparse.Namespace, reporter: ToolReporter) -> int:
    from rkt.aci.layout import BuildOptions, build_aci

    mtime = ns.mtime if ns.mtime is not None else _source_date_epoch()
    options = BuildOptions(compress=not ns.no_compression, owner_root=ns.owner_root,
                           mtime=mtime, overwrite=ns.overwrite)
    build_aci(ns.directory, ns.out, options, reporter.warn)
    return 0


def _validate(ns: argparse.Namespace) -> int:
    from rkt.tools.validation import FileType, validate

    wanted = FileType(ns.type) if ns.type else None
    status = 0
    for path in ns.files:
        verdict = validate(path, wanted)
        if verdict.valid:
            print(verdict.describe(), flush=True)
        else:
            print(f"{TOOL}: {verdict.describe()}", file=sys.stderr, flush=True)
            status = EXIT_INVALID
    return status


def _cat_manifest(ns: argparse.Namespace) -> int:
    from rkt.tools.patch import read_manifest

    manifest = read_manifest(ns.image)
    if ns.pretty_print:
        from rkt.schema.base import load_json_object

        text = json.dumps(load_json_object(manifest, f"manifest of {ns.image}"), indent=4,
                          ensure_ascii=False)
        sys.stdout.write(text + "\n")
    else:
        sys.stdout.buffer.write(manifest)
        if not manifest.endswith(b"\n"):
            sys.stdout.buffer.write(b"\n")
    sys.stdout.flush()
    return 0


def _patch_manifest(ns: argparse.Namespace) -> int:
    from rkt.tools.patch import Patch, patch_image

    patch = Patch(
        manifest_file=ns.manifest, name=ns.name, exec_=ns.exec_, user=ns.user, group=ns.group,
        capabilities=ns.capability, mounts=ns.mounts, ports=ns.ports, isolators=ns.isolators,
        supplementary_groups=ns.supplementary_groups)
    if patch.is_empty():
        raise UsageError("patch-manifest: nothing to patch (give --manifest or a field flag)")
    if patch.manifest_file is not None and any(
            getattr(patch, f) is not None for f in ("name", "exec_", "user", "group",
                                                    "capabilities", "mounts", "ports",
                                                    "isolators", "supplementary_groups")):
        raise UsageError("patch-manifest: --manifest replaces the whole manifest; give it "
                         "alone")
    if ns.replace:
        if ns.out is not None:
            raise UsageError("patch-manifest: --replace patches IMAGE.aci in place; give no "
                             "OUT.aci")
    elif ns.out is None:
        raise UsageError("patch-manifest: give OUT.aci, or --replace to patch IMAGE.aci in "
                         "place")
    patch_image(ns.image, ns.out, patch, overwrite=ns.overwrite)
    return 0


def _discover(ns: argparse.Namespace, reporter: ToolReporter) -> int:
    from rkt.context import Runtime
    from rkt.fetching import FetchSession, discover_endpoints
    from rkt.imageref import parse_appc_name

    name, labels = parse_appc_name(ns.name)
    insecure = frozenset({"tls", "http"}) if ns.insecure else frozenset()
    runtime = Runtime(insecure=insecure, reporter=reporter)
    with tempfile.TemporaryDirectory(prefix="actool-") as tmp:
        session = FetchSession(runtime=runtime, tmp_dir=Path(tmp))
        endpoints = discover_endpoints(runtime, name, labels, session)
    if ns.json:
        document = {"name": name, "labels": labels,
                    "aci": [{"aci": aci, "signature": asc} for aci, asc in endpoints.aci],
                    "keys": endpoints.keys}
        print(json.dumps(document, indent=4))
        return 0
    for aci, asc in endpoints.aci:
        print(f"ACI: {aci}, ASC: {asc}")
    for key in endpoints.keys:
        print(f"Keys: {key}")
    return 0


def _main(argv: list[str]) -> int:
    reporter = ToolReporter(TOOL)
    ns = _parser().parse_args(argv)
    if ns.command == "build":
        return _build(ns, reporter)
    if ns.command == "validate":
        return _validate(ns)
    if ns.command == "cat-manifest":
        return _cat_manifest(ns)
    if ns.command == "patch-manifest":
        return _patch_manifest(ns)
    return _discover(ns, reporter)


def main(argv: Sequence[str] | None = None) -> NoReturn:
    run_tool(TOOL, _main, argv)


if __name__ == "__main__":
    main()
