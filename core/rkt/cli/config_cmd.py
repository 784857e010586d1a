"""``rkt config``: the configuration rkt would use, merged from all config dirs."""

from __future__ import annotations

import argparse
import json

from rkt.cli.context import GlobalOptions, RktArgumentParser


def add_arguments(command: str, parser: RktArgumentParser) -> None:
    del command
    parser.add_bool_flag("--pretty-print", help="indent the JSON (default true)")
    parser.set_defaults(pretty_print=True)
    parser.add_bool_flag("--raw", help="show passwords and tokens instead of REDACTED")


def run(command: str, options: GlobalOptions, args: argparse.Namespace) -> int:
    del command
    document = options.config.to_json(redact=not args.raw)
    print(json.dumps(document, indent=4 if args.pretty_print else None), file=options.stdout)
    return 0
