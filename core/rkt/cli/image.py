"""``rkt image SUBCOMMAND``: list, rm, cat-manifest, export, extract, render, fetch."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from rkt.cli.context import GlobalOptions, RktArgumentParser, add_global_flags
from rkt.errors import RktError, UsageError

SUBCOMMANDS = {
    "list": "List images in the local store",
    "rm": "Remove one or more images from the local store",
    "cat-manifest": "Inspect and print the image manifest",
    "export": "Export a stored image to an ACI file",
    "extract": "Extract a stored image to a directory",
    "render": "Render a stored image, with its dependencies, to a directory",
    "fetch": "Fetch image(s) into the local store (same as rkt fetch)",
    "gc": "Remove rendered trees no pod uses, and images unused for a grace period",
    "verify": "Check stored images and their rendered trees against their IDs",
}

LIST_FIELDS = ("id", "name", "version", "size", "importtime", "lastused")
FIELD_TITLES = {
    "id": "ID", "name": "NAME", "version": "VERSION", "size": "SIZE",
    "importtime": "IMPORT TIME", "lastused": "LAST USED",
}
DEFAULT_FIELDS = "id,name,size,importtime,lastused"


def add_arguments(command: str, parser: RktArgumentParser) -> None:
    del command
    sub = parser.add_subparsers(
        dest="subcommand", metavar="SUBCOMMAND", parser_class=RktArgumentParser
    )
    for name, summary in SUBCOMMANDS.items():
        sub_parser: RktArgumentParser = sub.add_parser(name, help=summary, description=summary)
        add_global_flags(sub_parser, top_level=False)  # rkt's flags are persistent
        _SUBCOMMAND_FLAGS[name](sub_parser)


def _list_flags(parser: RktArgumentParser) -> None:
    parser.add_argument("--fields", default=DEFAULT_FIELDS,
                        help=f"comma-separated fields to show ({','.join(LIST_FIELDS)})")
    parser.add_argument("--sort", default="importtime",
                        help="field to sort by: name, importtime, lastused or size")
    parser.add_argument("--order", choices=("asc", "desc"), default="asc")
    parser.add_bool_flag("--full", help="show full image IDs and absolute times")
    parser.add_bool_flag("--no-legend", help="do not print the header line")
    parser.add_argument("--format", choices=("", "json", "json-pretty"), default="")


def _rm_flags(parser: RktArgumentParser) -> None:
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="ID, ID prefix or name")


def _cat_flags(parser: RktArgumentParser) -> None:
    parser.add_argument("image", metavar="IMAGE")
    parser.add_bool_flag("--pretty-print", help="indent the JSON (default true)")
    parser.set_defaults(pretty_print=True)


def _export_flags(parser: RktArgumentParser) -> None:
    parser.add_argument("image", metavar="IMAGE")
    parser.add_argument("output", metavar="OUTPUT.aci")
    parser.add_bool_flag("--overwrite", help="overwrite the output file if it exists")


def _dir_flags(parser: RktArgumentParser) -> None:
    parser.add_argument("image", metavar="IMAGE")
    parser.add_argument("directory", metavar="DIR")
    parser.add_bool_flag("--overwrite", help="replace DIR if it exists")
    parser.add_bool_flag("--rootfs-only", help="only the rootfs, without the manifest")


def _fetch_flags(parser: RktArgumentParser) -> None:
    from rkt.cli import fetch

    fetch.add_arguments("fetch", parser)


def _gc_flags(parser: RktArgumentParser) -> None:
    parser.add_argument("--grace-period", default="24h0m0s",
                        help="remove images not used for this long (default 24h0m0s)")


def _verify_flags(parser: RktArgumentParser) -> None:
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="ID, ID prefix or name")


_SUBCOMMAND_FLAGS = {
    "list": _list_flags, "rm": _rm_flags, "cat-manifest": _cat_flags,
    "export": _export_flags, "extract": _dir_flags, "render": _dir_flags, "fetch": _fetch_flags,
    "gc": _gc_flags, "verify": _verify_flags,
}


def split_arguments(
    command: str, parser: RktArgumentParser, tokens: list[str]
) -> tuple[list[str], object]:
    # `rkt image fetch` takes per-image --signature flags like `rkt fetch`.
    rest = [t for t in tokens if not t.startswith("-")]
    if rest[:1] == ["fetch"]:
        from rkt.cli import fetch

        position = tokens.index("fetch")
        fetch_parser = RktArgumentParser(prog="rkt image fetch")
        fetch.add_arguments("fetch", fetch_parser)
        common, images = fetch.split_arguments("fetch", fetch_parser, tokens[position + 1 :])
        return [*tokens[: position + 1], *common], images
    return tokens, None


def run(command: str, options: GlobalOptions, args: argparse.Namespace) -> int:
    del command
    if args.subcommand is None:
        raise UsageError("image: a subcommand is required: " + ", ".join(SUBCOMMANDS))
    handler = {
        "list": _list, "rm": _rm, "cat-manifest": _cat_manifest, "export": _export,
        "extract": _extract, "render": _render, "fetch": _fetch, "gc": _gc,
        "verify": _verify,
    }[args.subcommand]
    return handler(options, args)


# -- list ----------------------------------------------------------------------------
def humanize_time(when: float, now: float | None = None) -> str:
    seconds = int((now or time.time()) - when)
    if seconds < 2:
        return "just now"
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60), ("second", 1)):
        if seconds >= size:
            count = seconds // size
            return f"{count} {unit}{'s' if count != 1 else ''} ago"
    return "just now"


def rfc3339(when: float) -> str:
    return datetime.fromtimestamp(when, tz=UTC).isoformat().replace("+00:00", "Z")


def _list(options: GlobalOptions, args: argparse.Namespace) -> int:
    from rkt.progress import human_size
    from rkt.store import short_id

    fields = [f.strip().lower() for f in args.fields.split(",") if f.strip()]
    if not fields:
        raise UsageError(f"--fields: give at least one of {', '.join(LIST_FIELDS)}")
    unknown = [f for f in fields if f not in LIST_FIELDS]
    if unknown:
        raise UsageError(f"unknown field(s) {', '.join(unknown)}; valid: {', '.join(LIST_FIELDS)}")
    sort_keys = {
        "name": lambda i: i.name, "importtime": lambda i: i.import_time,
        "lastused": lambda i: i.last_used, "size": lambda i: i.size + i.tree_size,
        "id": lambda i: i.id,
    }
    if args.sort not in sort_keys:
        raise UsageError(f"cannot sort by {args.sort!r}; valid: {', '.join(sort_keys)}")
    images = sorted(options.store.list_images(), key=sort_keys[args.sort],
                    reverse=args.order == "desc")
    if args.format:
        records = [
            {
                "id": info.id, "name": info.name, "version": info.version,
                "labels": info.labels, "import_time": rfc3339(info.import_time),
                "last_used": rfc3339(info.last_used), "size": info.size + info.tree_size,
                "verification": info.verification, "signer": info.signer,
            }
            for info in images
        ]
        indent = 2 if args.format == "json-pretty" else None
        print(json.dumps(records, indent=indent), file=options.stdout)
        return 0
    rows: list[list[str]] = []
    if not args.no_legend:
        rows.append([FIELD_TITLES[f] for f in fields])
    for info in images:
        values = {
            "id": info.id if args.full else short_id(info.id, 12),
            "name": info.name_version,
            "version": info.version or "",
            "size": str(info.size + info.tree_size) if args.full
            else human_size(info.size + info.tree_size),
            "importtime": rfc3339(info.import_time) if args.full
            else humanize_time(info.import_time),
            "lastused": rfc3339(info.last_used) if args.full else humanize_time(info.last_used),
        }
        rows.append([values[f] for f in fields])
    print_table(rows, options)
    return 0


def print_table(rows: list[list[str]], options: GlobalOptions) -> None:
    if not rows:
        return
    widths = [max(len(row[col]) for row in rows) for col in range(len(rows[0]))]
    for row in rows:
        cells = [cell.ljust(widths[i]) for i, cell in enumerate(row[:-1])] + [row[-1]]
        print("  ".join(cells).rstrip(), file=options.stdout)


# -- rm, cat-manifest ----------------------------------------------------------------
def _rm(options: GlobalOptions, args: argparse.Namespace) -> int:
    from rkt.locks import prepare_lock
    from rkt.pod.dirs import PodStore
    from rkt.pod.gc import pod_references
    from rkt.store.gc import remove_image

    store = options.store
    removed = 0
    failed = 0
    seen: set[str] = set()
    with prepare_lock(options.data_dir):
        in_use = pod_references(PodStore(options.data_dir))
        for text in args.images:
            try:
                info = store.lookup(text)
            except RktError as exc:
                options.info(f"rkt: {exc}")
                failed += 1
                continue
            if info.id in seen:
                continue
            seen.add(info.id)
            users = in_use.images.get(info.id, ())
            remove_image(store, info.id, used_by=users)
            removed += 1
            print(f'successfully removed aci for image: "{info.id}" ("{info.name}")',
                  file=options.stdout)
            if users:
                options.info(f'rkt: image "{info.id}" is used by pod(s) {", ".join(users)}: '
                             "its files are kept until they are removed (rkt gc, rkt image gc)")
    if removed:
        print(f"{removed} image(s) successfully removed", file=options.stdout)
    return 254 if failed else 0


def _cat_manifest(options: GlobalOptions, args: argparse.Namespace) -> int:
    info = options.store.lookup(args.image)
    raw = options.store.manifest_bytes(info.id)
    if args.pretty_print:
        print(json.dumps(json.loads(raw), indent=4), file=options.stdout)
    else:
        print(json.dumps(json.loads(raw), separators=(",", ":")), file=options.stdout)
    return 0


# -- export, extract, render -----------------------------------------------------------
def _export(options: GlobalOptions, args: argparse.Namespace) -> int:
    info = options.store.lookup(args.image)
    output = Path(args.output)
    if output.suffix != ".aci":
        raise UsageError(f"export: output file must end in .aci: {output}")
    if output.exists() and not args.overwrite:
        raise UsageError(f"export: {output} already exists (use --overwrite)")
    # Always the uncompressed ACI, written beside the target and renamed into place.
    fd, tmp = tempfile.mkstemp(prefix=f".{output.name}.", dir=output.parent or Path("."))
    try:
        with options.store.open_blob(info.id) as blob, os.fdopen(fd, "wb") as out:
            shutil.copyfileobj(blob, out, 1 << 20)
        os.chmod(tmp, 0o644)
        os.rename(tmp, output)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return 0


def _prepare_dir(directory: Path, overwrite: bool, what: str) -> None:
    if directory.exists() or directory.is_symlink():
        if not overwrite:
            raise UsageError(f"{what}: {directory} already exists (use --overwrite)")
        if directory.is_dir() and not directory.is_symlink():
            shutil.rmtree(directory)
        else:
            directory.unlink()
    directory.mkdir(parents=True)


def _extract(options: GlobalOptions, args: argparse.Namespace) -> int:
    from rkt.aci.extract import extract_tar

    info = options.store.lookup(args.image)
    directory = Path(args.directory)
    _prepare_dir(directory, args.overwrite, "extract")
    try:
        extract_tar(options.store.blob_path(info.id), directory,
                    strip_prefix="rootfs/" if args.rootfs_only else "")
    except BaseException:
        shutil.rmtree(directory, ignore_errors=True)
        raise
    return 0


def _render(options: GlobalOptions, args: argparse.Namespace) -> int:
    from rkt.store.tree import render_image

    info = options.store.lookup(args.image)
    directory = Path(args.directory)
    _prepare_dir(directory, args.overwrite, "render")
    try:
        render_image(options.store, info.id, directory, rootfs_only=args.rootfs_only)
    except BaseException:
        shutil.rmtree(directory, ignore_errors=True)
        raise
    return 0


def _fetch(options: GlobalOptions, args: argparse.Namespace) -> int:
    from rkt.cli import fetch

    return fetch.run("fetch", options, args)


# -- gc, verify ------------------------------------------------------------------------
def _gc(options: GlobalOptions, args: argparse.Namespace) -> int:
    from rkt.cli.pod_cmds import parse_duration
    from rkt.locks import prepare_lock
    from rkt.pod.dirs import PodStore
    from rkt.pod.gc import pod_references
    from rkt.store.gc import collect_images

    grace = parse_duration(args.grace_period)
    store = options.store
    data_dir = options.data_dir

    def report(line: str) -> None:
        print(line, file=options.stdout)

    with prepare_lock(data_dir):
        in_use = pod_references(PodStore(data_dir))
        collect_images(store, trees_in_use=in_use.trees, images_in_use=in_use.images,
                       grace_period=grace, report=report)
        options.plugins.image_gc(data_dir, grace, report)
    return 0


def _verify(options: GlobalOptions, args: argparse.Namespace) -> int:
    from rkt.locks import prepare_lock
    from rkt.pod.dirs import PodStore
    from rkt.pod.gc import pod_references

    failed = 0
    # exclusively, as image gc does: no pod starts on a tree while it may be removed
    with prepare_lock(options.data_dir):
        trees_in_use = pod_references(PodStore(options.data_dir)).trees
        for text in args.images:
            failed += _verify_one(options, text, trees_in_use)
    return 254 if failed else 0


def _verify_one(options: GlobalOptions, text: str, trees_in_use: frozenset[str]) -> int:
    """Verify one image; 1 if it failed (reported on stderr), else 0."""
    try:
        info = options.store.lookup(text)
        options.store.verify(info.id, trees_in_use=trees_in_use)
    except RktError as exc:
        print(f"rkt: {exc}", file=options.stderr)
        return 1
    print(f'successfully verified checksum for image: "{info.id}" ("{info.name}")',
          file=options.stdout)
    return 0
