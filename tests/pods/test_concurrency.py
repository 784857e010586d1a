"""Eight ``rkt`` processes at once on one data directory (issue 10, "Tests that stay").

Two fetch, two prepare, one runs pods, one runs ``gc``, one ``image gc
--grace-period=0s`` and one ``image rm``, all for ``RKT_TEST_CONCURRENCY_SECONDS``
(default 25: the issue's minute is more than CI affords; the race test in
test_image_use.py runs the prepare/image-gc pair 200 times on top). No command
may fail other than ``image rm`` of an image that is gone already, nothing may
print a traceback, and afterwards every prepared pod runs, every image verifies
and the store's scratch space is empty. The stage1 is fly (no container start-up
per pod), so the loops turn over quickly.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from rkt_testing import AciBuilder, RktEnv, wait_for_file
from rkt_testing.plugin import FLY, needs_root

pytestmark = [
    needs_root,
    pytest.mark.root,
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("systemd-nspawn") is None, reason="needs systemd-nspawn"),
]

SECONDS = float(os.environ.get("RKT_TEST_CONCURRENCY_SECONDS", "25"))
NAMES = ("alpha", "beta", "gamma", "delta")


def test_eight_processes_at_once(rkt_env: RktEnv, aci_builder: AciBuilder) -> None:
    images = {name: aci_builder.build(f"{name}.aci", name=f"example.com/{name}",
                                      busybox=True, exec_=["/bin/echo", f"{name} ran"])
              for name in NAMES}
    deadline = time.monotonic() + SECONDS
    prepared: list[tuple[str, str]] = []
    failures: list[str] = []
    rounds: dict[str, int] = {}
    lock = threading.Lock()

    def rkt(*args: str | Path) -> subprocess.CompletedProcess[str]:
        result = rkt_env.run("--insecure-options=image", *args, timeout=300)
        if "Traceback" in result.stderr or "internal error" in result.stderr:
            with lock:
                failures.append(f"{args}: {result.stderr}")
        return result

    def expect_ok(result: subprocess.CompletedProcess[str]) -> None:
        if result.returncode != 0:
            with lock:
                failures.append(f"{result.args[4:]} exited {result.returncode}: "
                                f"{result.stderr}")

    def fetch() -> None:
        expect_ok(rkt("fetch", images[random.choice(NAMES)]))

    def prepare() -> None:
        name = random.choice(NAMES)
        result = rkt("prepare", "--quiet", FLY, images[name])
        expect_ok(result)
        if result.returncode == 0:
            with lock:
                prepared.append((result.stdout.strip(), name))

    def run() -> None:
        name = random.choice(NAMES)
        result = rkt("run", FLY, images[name])
        expect_ok(result)
        if result.returncode == 0 and result.stdout != f"{name} ran\n":
            with lock:
                failures.append(f"run {name} printed {result.stdout!r}")

    def image_rm() -> None:
        result = rkt("image", "rm", f"example.com/{random.choice(NAMES)}")
        if result.returncode != 0 and 'no image named "example.com/' not in result.stderr:
            expect_ok(result)

    workers: list[tuple[str, Callable[[], None]]] = [
        ("fetch-1", fetch), ("fetch-2", fetch), ("prepare-1", prepare),
        ("prepare-2", prepare), ("run", run),
        ("gc", lambda: expect_ok(rkt("gc", "--grace-period=0s"))),
        ("image-gc", lambda: expect_ok(rkt("image", "gc", "--grace-period=0s"))),
        ("image-rm", image_rm),
    ]

    def loop(name: str, step: Callable[[], None]) -> None:
        while time.monotonic() < deadline:
            step()
            with lock:
                rounds[name] = rounds.get(name, 0) + 1

    threads = [threading.Thread(target=loop, args=worker) for worker in workers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    print(f"rounds: {rounds}, prepared pods: {len(prepared)}")
    assert failures == []
    assert all(rounds.get(name, 0) > 0 for name, _ in workers), rounds

    for uuid, name in prepared:
        ran = rkt_env.run("run-prepared", uuid)
        assert (ran.returncode, ran.stdout) == (0, f"{name} ran\n"), ran.stderr
    assert rkt_env.run("gc", "--grace-period=0s").returncode == 0
    ids = rkt_env.image_ids()
    if ids:
        verified = rkt_env.run("image", "verify", *ids)
        assert verified.returncode == 0, verified.stderr
    assert list((rkt_env.data_dir / "cas" / "tmp").iterdir()) == []


#: runs the ``rkt`` script with an exit handler that waits for a gate file: the
#: moment between the pod's end and rkt's exit, held open
HELD_EXIT = """\
import atexit, os, runpy, sys, time
script, reached, gate = sys.argv[1:4]
def wait_at_exit():
    with open(reached, "w") as handle:
        handle.write("exiting")
    deadline = time.monotonic() + 60
    while not os.path.exists(gate) and time.monotonic() < deadline:
        time.sleep(0.05)
atexit.register(wait_at_exit)
sys.argv = [script, *sys.argv[4:]]
runpy.run_path(script, run_name="__main__")
"""


def test_gc_leaves_a_pod_whose_rkt_has_not_exited_yet(rkt_env: RktEnv, aci_builder: AciBuilder,
                                                      tmp_path: Path) -> None:
    """``rkt run`` stays in its pod's cgroups until it exits, so the pod is running
    until then: ``gc --grace-period=0s`` in that moment neither collects it nor kills
    rkt as a straggler of the pod (rkt used to exit -9, not with the app's code)."""
    image = aci_builder.build("seven.aci", name="example.com/seven", busybox=True,
                              exec_=["/bin/sh", "-c", "exit 7"])
    rkt = rkt_env.rkt_binary()
    interpreter = Path(rkt).read_text().splitlines()[0].removeprefix("#!").strip()
    reached, gate = tmp_path / "reached", tmp_path / "gate"
    process = subprocess.Popen(
        [interpreter, "-c", HELD_EXIT, rkt, str(reached), str(gate), *rkt_env.global_flags(),
         "--insecure-options=image", "run", FLY, str(image)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, **rkt_env.env})
    try:
        wait_for_file(reached, process=process)
        status = rkt_env.run("list", "--no-legend", check=True).stdout
        assert "running" in status, status
        rkt_env.run("gc", "--grace-period=0s", check=True)
        gate.touch()
        _, stderr = process.communicate(timeout=60)
        assert process.returncode == 7, stderr
        assert "exited" in rkt_env.run("list", "--no-legend", check=True).stdout
    finally:
        gate.touch()
        if process.poll() is None:
            process.kill()
            process.wait()
    rkt_env.run("gc", "--grace-period=0s", check=True)
    assert rkt_env.run("list", "--no-legend", check=True).stdout == ""
