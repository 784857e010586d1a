"""``rkt fetch IMAGE [--signature FILE] ...``: import images and print their IDs."""

from __future__ import annotations

import argparse
from pathlib import Path

from rkt.cli.context import GlobalOptions, RktArgumentParser
from rkt.cli.imageargs import ImageArgs, split_image_args
from rkt.errors import UsageError

PULL_POLICIES = ("new", "update", "never")


def add_arguments(command: str, parser: RktArgumentParser) -> None:
    del command
    parser.add_argument("image", nargs="*", metavar="IMAGE",
                        help="image file, URL, appc name or docker:// reference")
    parser.add_argument("--signature", metavar="FILE",
                        help="local signature file for the preceding image")
    parser.add_argument("--pull-policy", choices=PULL_POLICIES, default="update",
                        help="when to fetch from remote: new, update (default) or never")
    parser.add_bool_flag("--full", help="print the full image hash")
    parser.add_bool_flag("--store-only", help="deprecated: same as --pull-policy=never")
    parser.add_bool_flag("--no-store", help="deprecated: same as --pull-policy=update")


def split_arguments(
    command: str, parser: RktArgumentParser, tokens: list[str]
) -> tuple[list[str], list[ImageArgs]]:
    del command
    return split_image_args(parser, tokens, {"--signature"})


def signature_of(image: ImageArgs) -> Path | None:
    """The ``--signature`` written after an image, if any."""
    found: str | None = None
    flags = iter(image.flags)
    for flag in flags:
        value = flag.split("=", 1)[1] if "=" in flag else next(flags)
        if found is not None:
            raise UsageError(f"two signatures given for image {image.image}")
        found = value
    return Path(found) if found else None


def run(command: str, options: GlobalOptions, args: argparse.Namespace) -> int:
    from rkt.fetching import fetch_image
    from rkt.store import short_id

    del command
    images: list[ImageArgs] = args.split or []
    if not images:
        raise UsageError("fetch: at least one image is required")
    if args.store_only and args.no_store:
        raise UsageError("--store-only and --no-store cannot be used together")
    policy = "never" if args.store_only else args.pull_policy
    for image in images:
        info = fetch_image(
            options, image.image, signature_file=signature_of(image), pull_policy=policy
        )
        print(info.id if args.full else short_id(info.id), file=options.stdout, flush=True)
    return 0
