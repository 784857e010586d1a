"""``rkt install``: create rkt's directories (rkt 0.5.4) and build the stage1 images.

A stage1 image is built for every installed stage1 backend (the ``rkt.stage1``
entry points) into the default stage1 directory, where rkt trusts it by location,
labelled with the version of the backend's distribution; it is rebuilt only when
that version or the files it is built from changed.
"""

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
    del command
    parser.add_bool_flag("--no-stage1", help="do not build the stage1 images")


def run(command: str, options: GlobalOptions, args: argparse.Namespace) -> int:
    del command
    data_dir = options.data_dir
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
    if not args.no_stage1:
        return _build_stage1_images(options)
    return 0


def _build_stage1_images(options: GlobalOptions) -> int:
    """Build every backend's image; one that cannot be built (no kernel for kvm,
    say) is reported and does not keep the others from being built."""
    from rkt.plugins import installed_stage1_backends
    from rkt.stage1 import ensure_stage1_image, stage1_images_dir, stage1_source

    directory = stage1_images_dir(options)
    failed = 0
    for name in installed_stage1_backends():
        out = directory / f"stage1-{name}.aci"
        try:
            backend = options.plugins.stage1_backend(name)
            source = stage1_source(name)
            built = ensure_stage1_image(backend, out, source,
                                        options.config.stage1_options.get(name))
        except RktError as exc:
            print(f"rkt: stage1 image for {name!r} not built: {exc}", file=options.stderr)
            failed += 1
            continue
        what = "built stage1 image {}" if built else "stage1 image {} is up to date"
        print(f"{what.format(out)} ({source.distribution} {source.version})",
              file=options.stdout)
    return 254 if failed else 0
