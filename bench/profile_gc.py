"""Where ``rkt gc`` of many exited pods goes (issue 14): phases, a profile, system calls.

Makes N exited pods the way ``bench_pods.py`` does (copies of one real exited
nspawn pod under new UUIDs), then collects them, ``--rounds`` times, with one of:

- ``wall``: ``rkt gc --grace-period=0s`` as a process, timed (what the bench times);
- ``phases``: ``rkt.cli.main.main`` in this process, with the time spent in each
  phase of the collection (listing, marking, locking, the stage1's ``gc``, cgroups,
  network and metadata clean-up, the move into the trash, the wait for deletion);
- ``cprofile``: the same under cProfile (the 25 largest cumulative entries);
- ``strace``: ``strace -c -f`` of the ``rkt gc`` process (needs strace).

Usage: ``python profile_gc.py [--pods 1000] [--rounds 3] [--mode wall,phases]``.
The pods are written and ``sync``-ed before each collection, so that the disk's
write-back of making them is not counted in removing them.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import functools
import io
import os
import pstats
import shutil
import subprocess
import sys
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from common import RKT, Env, wait_for_trash, workdir

from rkt_testing.aci import build_aci, image_manifest

NAME = "bench.example/busybox"


def make_template(env: Env, base: Path) -> Path:
    image = build_aci(base / "busybox.aci", busybox=True, compression="none",
                      manifest=image_manifest(NAME, exec_=["/bin/true"]), files={"usr/": b""})
    insecure = "--insecure-options=image"
    env.rkt(insecure, "fetch", "--full", str(image))
    env.rkt(insecure, "run", "--net=none", NAME)
    pod = next((env.data / "pods" / "run").iterdir())
    # one gc for the real pod (its cgroups), then the directory is kept outside the
    # pods dir as the model of every copy
    template = base / "template"
    shutil.copytree(pod, template, symlinks=True)
    env.rkt("gc", "--grace-period=0s")
    return template


def make_pods(env: Env, template: Path, count: int) -> None:
    run = env.data / "pods" / "run"
    for _ in range(count):
        shutil.copytree(template, run / str(uuid.uuid4()), symlinks=True)
    subprocess.run(["sync"], check=True)


def gc_argv(env: Env) -> list[str]:
    return [*env.flags(), "gc", "--grace-period=0s"]


def wall(env: Env) -> str:
    start = time.perf_counter()
    subprocess.run([RKT, *gc_argv(env)], check=True, capture_output=True)
    return f"wall {time.perf_counter() - start:.3f} s"


class PhaseClock:
    """Wraps functions to add up the time spent in each."""

    def __init__(self) -> None:
        self.total: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self._undo: list[tuple[object, str, object]] = []

    def wrap(self, owner: object, attribute: str, label: str | None = None) -> None:
        original = getattr(owner, attribute, None)
        if original is None:
            return  # not in this version of rkt (the script also profiles older ones)
        label = label or attribute
        clock = self

        @functools.wraps(original)
        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                clock.total[label] += time.perf_counter() - start
                clock.calls[label] += 1

        self._undo.append((owner, attribute, original))
        setattr(owner, attribute, timed)

    def wrap_iterator(self, owner: object, attribute: str, label: str) -> None:
        """For generators: the time spent producing their items."""
        original = getattr(owner, attribute)
        clock = self

        def timed(*args: Any, **kwargs: Any) -> Iterator[Any]:
            iterator = original(*args, **kwargs)
            while True:
                start = time.perf_counter()
                try:
                    item = next(iterator)
                except StopIteration:
                    clock.total[label] += time.perf_counter() - start
                    return
                clock.total[label] += time.perf_counter() - start
                clock.calls[label] += 1
                yield item

        self._undo.append((owner, attribute, original))
        setattr(owner, attribute, timed)

    def restore(self) -> None:
        for owner, attribute, original in reversed(self._undo):
            setattr(owner, attribute, original)
        self._undo.clear()


def run_main(argv: list[str]) -> None:
    from rkt.cli.main import main

    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        try:
            main(argv)
        except SystemExit as exc:
            if exc.code not in (0, None):
                raise RuntimeError(f"rkt gc exited {exc.code}") from None


def phases(env: Env) -> str:
    import rkt.pod.gc as gc
    import rkt.pod.trash as trash
    from rkt.pod.dirs import Pod, PodStore

    clock = PhaseClock()
    clock.wrap(gc, "mark_pods", "mark (all)")
    clock.wrap(gc, "sweep_pods", "sweep (all)")
    clock.wrap_iterator(PodStore, "iter_pods", "listing")
    clock.wrap(Pod, "lock", "lock")
    clock.wrap(Pod, "is_locked_by_other", "probe lock")
    clock.wrap(Pod, "move", "rename to a garbage phase")
    clock.wrap(gc, "_release_pod", "release (all)")
    clock.wrap(PodStore, "refresh", "  refresh")
    for name in ("forget_pod", "remove_pod_cgroups", "_teardown_network"):
        clock.wrap(gc, name, f"  {name}")
    clock.wrap(PodStore, "discard", "rename into the trash")
    clock.wrap(trash.Remover, "add", "remover.add (starts rm)")
    clock.wrap(trash.Remover, "finish", "remover.finish (waits for rm)")
    clock.wrap(trash, "lock_trash", "lock the trash")
    clock.wrap(trash, "delete_detached", "start the detached deleter")
    clock.wrap(os, "stat", "os.stat")
    # the stage1 lookup and its gc, through the function the CLI hands to the sweep
    original_sweep = gc.sweep_pods

    def sweep(pods: Any, *, stage1_backend: Callable[[Any], Any], **kwargs: Any) -> Any:
        def lookup(pod: Any) -> Any:
            start = time.perf_counter()
            backend = stage1_backend(pod)
            clock.total["  stage1 lookup"] += time.perf_counter() - start
            clock.calls["  stage1 lookup"] += 1
            return _TimedBackend(backend, clock)

        return original_sweep(pods, stage1_backend=lookup, **kwargs)

    gc.sweep_pods = sweep  # type: ignore[assignment]
    start = time.perf_counter()
    try:
        run_main(gc_argv(env))
    finally:
        gc.sweep_pods = original_sweep
        clock.restore()
    total = time.perf_counter() - start
    lines = [f"in-process main() {total:.3f} s"]
    for label in sorted(clock.total, key=lambda k: -clock.total[k]):
        lines.append(f"  {label:<34} {clock.total[label]:7.3f} s  {clock.calls[label]:6d} calls")
    return "\n".join(lines)


class _TimedBackend:
    def __init__(self, backend: Any, clock: PhaseClock) -> None:
        self._backend = backend
        self._clock = clock

    def gc(self, pod: Any) -> None:
        start = time.perf_counter()
        try:
            self._backend.gc(pod)
        finally:
            self._clock.total["  stage1 gc"] += time.perf_counter() - start
            self._clock.calls["  stage1 gc"] += 1


def profile(env: Env) -> str:
    profiler = cProfile.Profile()
    start = time.perf_counter()
    profiler.enable()
    try:
        run_main(gc_argv(env))
    finally:
        profiler.disable()
    total = time.perf_counter() - start
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(25)
    return f"in-process main() under cProfile {total:.3f} s\n{out.getvalue()}"


def strace(env: Env) -> str:
    if shutil.which("strace") is None:
        return "strace is not installed"
    out = env.base / "strace.txt"
    start = time.perf_counter()
    subprocess.run(["strace", "-c", "-f", "-o", str(out), RKT, *gc_argv(env)], check=True,
                   capture_output=True)
    total = time.perf_counter() - start
    return f"under strace {total:.3f} s\n{out.read_text()}"


MODES: dict[str, Callable[[Env], str]] = {
    "wall": wall, "phases": phases, "cprofile": profile, "strace": strace,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pods", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--mode", default="wall,phases",
                        help=f"comma-separated, run in turn each round: {', '.join(MODES)}")
    args = parser.parse_args()
    modes = args.mode.split(",")
    for mode in modes:
        if mode not in MODES:
            parser.error(f"unknown mode {mode}")
    base = workdir("rkt-profile-gc-")
    try:
        env = Env(base / "env")
        template = make_template(env, base)
        inodes = 1 + sum(len(d) + len(f) for _, d, f in os.walk(template))
        print(f"{args.pods} pods of {inodes} inodes each", flush=True)
        for round_ in range(args.rounds):
            for mode in modes:
                make_pods(env, template, args.pods)
                start = time.perf_counter()
                result = MODES[mode](env)
                left = sum(1 for _ in (env.data / "pods").glob("*/*"))
                deleted = wait_for_trash(env.data) - start
                print(f"round {round_ + 1} {mode}: {result}  ({left} left in pods/*/*, "
                      f"all deleted {deleted:.3f} s after the start)", flush=True)
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
