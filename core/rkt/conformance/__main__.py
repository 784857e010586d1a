"""``python -m rkt.conformance STAGE1-NAME``: run the suite, print the table.

Exit status: 0 when every check the stage1 claims passed, 1 when one failed,
2 when the suite could not run (no busybox, no such stage1, not root).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path

from rkt.errors import RktError

EXIT_FAILED = 1
EXIT_SETUP = 2


def parse(argv: list[str]) -> argparse.Namespace:
    from rkt.conformance.checks import CHECKS

    parser = argparse.ArgumentParser(
        prog="python -m rkt.conformance",
        description="Check an installed stage1 against rkt's pod behaviour (docs/stage1.md).")
    parser.add_argument("stage1", metavar="STAGE1-NAME",
                        help="the stage1 image's name, e.g. coreos.com/rkt/stage1-nspawn")
    parser.add_argument("--rkt", help="the rkt command to drive (default: the one next to "
                                      "this Python, else rkt on PATH)")
    parser.add_argument("--jobs", type=int, default=2,
                        help="checks run at once (default: 2)")
    parser.add_argument("--check", action="append", default=[], choices=[c.name for c in CHECKS],
                        metavar="NAME", help="run only this check (repeatable)")
    parser.add_argument("--work-dir", type=Path,
                        help="where the throw-away world is made (default: the temp dir)")
    parser.add_argument("--keep", action="store_true",
                        help="keep the world (data dir, images, pods) for a look afterwards")
    parser.add_argument("--timeout", type=float, default=300,
                        help="seconds any one rkt command may take (default: 300)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    from rkt.conformance.suite import FAIL, read_claims, run_suite, summary, table
    from rkt.conformance.world import World, rkt_binary

    world = None
    # SIGTERM unwinds like Ctrl+C, so the world (pods, cgroups, files) is removed
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    try:
        claims = read_claims(args.stage1)
        if os.geteuid() != 0:
            raise RktError("the suite runs pods, so it needs root")
        world = World.create(args.stage1, rkt_binary(args.rkt), args.work_dir)
        world.net, world.timeout = claims.everyday_net(), args.timeout
        results = run_suite(world, claims, jobs=args.jobs, only=args.check)
    except RktError as exc:
        print(f"rkt conformance: {exc}", file=sys.stderr, flush=True)
        return EXIT_SETUP
    finally:
        if world is not None:
            if args.keep:
                print(f"rkt conformance: the world is kept in {world.root}", file=sys.stderr)
            else:
                killed = world.remove()
                if killed:
                    print(f"rkt conformance: killed {len(killed)} process(es) of pods that "
                          f"outlived their rkt: {' '.join(map(str, killed))}", file=sys.stderr)
    print(table(results))
    print(summary(args.stage1, results))
    return EXIT_FAILED if any(r.outcome == FAIL for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
