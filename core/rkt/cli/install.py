"""``rkt install``: create the data and config directories with rkt's modes (rkt 0.5.4)."""

from __future__ import annotations

import argparse
import os

from rkt.cli.context import GlobalOptions, RktArgumentParser
from rkt.errors import RktError

#: relative directory -> mode, after rkt's tmpfiles.d/rkt.conf
DATA_DIRS = {
    "": 0o2750, "tmp": 0o2750, "locks": 0o2750, "cas": 0o2770, "cas/db": 0o2770,
    "cas/tree": 0o2700, "cas/treestorelocks": 0o2700, "cas/tmp": 0o2770,
    "cas/imagelocks": 0o2770, "pods": 0o2750,
    **{f"pods/{state}": 0o2750 for state in
       ("embryo", "prepare", "prepared", "run", "exited-garbage", "garbage")},
}


def add_arguments(command: str, parser: RktArgumentParser) -> None:
    del command, parser


def run(command: str, options: GlobalOptions, args: argparse.Namespace) -> int:
    del command, args
    data_dir = options.resolved_data_dir
    try:
        for rel, mode in DATA_DIRS.items():
            path = data_dir / rel if rel else data_dir
            path.mkdir(parents=True, exist_ok=True)
            os.chmod(path, mode)
        for sub in ("trustedkeys/prefix.d", "trustedkeys/root.d", "auth.d", "paths.d",
                    "stage1.d", "net.d"):
            (options.local_config / sub).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RktError(f"install: cannot create {exc.filename}: {exc.strerror}") from exc
    print(f"rkt directories ready under {data_dir} and {options.local_config}",
          file=options.stdout)
    return 0
