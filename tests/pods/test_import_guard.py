"""What the commands that run most often may import (issue 14). Not a timing test.

A pod start, ``rkt status`` (which schedulers poll) and ``rkt version`` (which Nomad
runs every 30 s) pay for every module they import. These run the real command
under an audit hook that records each import of a forbidden module, and each read
of installed distributions' metadata, as it happens (so a stage0 that execs its
stage1 is still watched up to the exec).

The lists follow measurements on the project's machine (``docs/benchmarks.md``):
typing and dataclasses are still imported on a pod start (the stage1 contract's
named tuples, the image arguments), but not pluggy, stevedore or
``importlib.metadata`` (the built-in plugins are called directly while they are the
only ones, and a stage1 backend is imported from the cached entry points), no
distribution's metadata is read, only the built-in plugin whose hook is called (the
store's), and neither logging (rkt.log), OpenSSL's hashlib, tempfile, shutil nor
the status and keystore modules; nor pod gc, the CNI modules (for ``--net=none`` and
``--net=host``), the terminal modules or socket.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from rkt_testing import AciBuilder, RktEnv
from rkt_testing.plugin import FLY, NSPAWN, OCI, needs_oci_stage1, needs_root

#: heavy on every path: the plugin manager and entry-point scans, the schema library,
#: the signature and TLS stacks
ALWAYS = ("pluggy", "importlib.metadata", "stevedore", "pydantic", "pydantic_core",
          "rkt.schema", "cryptography", "pysequoia", "rkt.http", "http.client", "ssl",
          "tarfile")
#: a cached `rkt run NAME`, on nspawn and fly: what issue 14 took off its path
RUN = (*ALWAYS, "logging", "hashlib", "_hashlib", "tempfile", "shutil", "rkt.keystore",
       "rkt.pod.status", "rkt.pod.export", "rkt_plugins.file_fetcher",
       "rkt_plugins.https_fetcher", "rkt_plugins.name_fetcher", "rkt_plugins.discovery",
       "rkt_plugins.openpgp", "rkt_plugins.docker",
       # the third pass: pod gc (the prepare lock is rkt.locks'), the CNI modules (none
       # and host networks need neither), the terminal modules (no terminal here), and
       # socket (the network namespace's loopback is brought up through libc)
       "rkt.pod.gc", "rkt.net.cni", "rkt.net.config", "pty", "tty", "termios", "socket")
#: `rkt status` and `rkt list` read pod directories only: no plugins, no store, and
#: plain records (typing, dataclasses and the inspect it imports were 10-15 ms here);
#: shutil is what argparse imports to measure the terminal unless told its width.
#: (A pod with CNI networks still imports the stage1 contract, and so typing, for its
#: attachments; the pods here have none.)
POLLED = (*ALWAYS, "rkt_plugins", "rkt.facade", "rkt.store", "sqlite3", "logging", "typing",
          "dataclasses", "inspect", "shutil", "rkt.pod.contract", "rkt.cli.image",
          "datetime")
#: a plain `rkt version`: the standard library's cheapest
VERSION = (*POLLED, "argparse", "re", "enum", "pathlib", "json")

GUARD = r"""
import sys

forbidden = frozenset(sys.argv[1].split(","))
report = sys.argv[2]


def watch(event, args):
    seen = None
    if event == "import" and args[0] in forbidden:
        seen = "import " + args[0]
    elif event == "open" and isinstance(args[0], str) and ".dist-info/" in args[0]:
        seen = "read " + args[0]
    if seen is not None:
        with open(report, "a") as handle:
            handle.write(seen + "\n")


sys.addaudithook(watch)
sys.argv = ["rkt", *sys.argv[3:]]
from rkt.cli.main import main

main()
"""


def guarded(env: RktEnv, tmp_path: Path, forbidden: tuple[str, ...], *args: str | Path,
            global_flags: bool = True) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    """Run ``rkt ARGS`` under the guard; returns its result and what the guard saw."""
    report = tmp_path / "guard-report"
    report.unlink(missing_ok=True)
    flags = env.global_flags() if global_flags else []
    result = subprocess.run(
        [sys.executable, "-c", GUARD, ",".join(forbidden), str(report), *flags,
         *map(str, args)],
        capture_output=True, text=True, timeout=120,
        env={**os.environ, **env.env, "XDG_CACHE_HOME": str(tmp_path / "cache")},
    )
    seen = report.read_text().splitlines() if report.exists() else []
    return result, seen


def test_the_guard_sees_forbidden_imports_and_metadata_reads(
    rkt_env: RktEnv, tmp_path: Path
) -> None:
    # `rkt image list` opens the store (rkt.store), and with an empty entry-point
    # cache it reads the installed distributions' entry points once
    result, seen = guarded(rkt_env, tmp_path, ("rkt.store",), "image", "list")
    assert result.returncode == 0, result.stderr
    assert [line for line in seen if line.startswith("import ")] == ["import rkt.store"]
    assert any(line.endswith("/entry_points.txt") for line in seen)
    # and with the cache filled, never again
    result, seen = guarded(rkt_env, tmp_path, ("rkt.store",), "image", "list")
    assert seen == ["import rkt.store"]


def test_version_imports_nothing_heavy(rkt_env: RktEnv, tmp_path: Path) -> None:
    result, seen = guarded(rkt_env, tmp_path, VERSION, "version", global_flags=False)
    assert result.returncode == 0, result.stderr
    assert "rkt Version:" in result.stdout
    assert seen == []




@needs_root
@pytest.mark.skipif(shutil.which("systemd-nspawn") is None, reason="needs systemd-nspawn")
@pytest.mark.parametrize(("stage1", "net"), [
    (NSPAWN, "--net=none"), (FLY, "--net=host"),
    pytest.param(OCI, "--net=none", marks=needs_oci_stage1),
], ids=["nspawn", "fly", "oci"])
def test_a_cached_run_and_the_polled_commands_stay_lean(
    rkt_env: RktEnv, aci_builder: AciBuilder, tmp_path: Path, stage1: str, net: str
) -> None:
    image = aci_builder.build("lean.aci", name="example.com/lean", busybox=True,
                              exec_=["/bin/true"])
    rkt_env.run("--insecure-options=image", "fetch", image, check=True)
    # the first run imports the stage1 image and fills the entry-point cache
    first, _ = guarded(rkt_env, tmp_path, ALWAYS, "--insecure-options=image", "run", stage1,
                       net, "example.com/lean")
    assert first.returncode == 0, first.stderr
    result, seen = guarded(rkt_env, tmp_path, RUN, "--insecure-options=image", "run", stage1,
                           net, "example.com/lean")
    assert result.returncode == 0, result.stderr
    assert seen == []

    uuid = rkt_env.run("list", "--no-legend", "--full", check=True).stdout.split()[0]
    for command in (("status", "--format=json", uuid), ("list", "--format=json")):
        result, seen = guarded(rkt_env, tmp_path, POLLED, *command)
        assert result.returncode == 0, result.stderr
        assert seen == [], command
