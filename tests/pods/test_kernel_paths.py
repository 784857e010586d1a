"""Host-wide kernel knobs are out of an app's reach (issue 10, acceptance 1).

``/proc/sys``, ``/proc/sysrq-trigger``, ``/proc/irq``, ``/proc/bus`` and
``/proc/fs`` are read-only in every app and ``/proc/kcore``, ``/proc/keys``,
``/proc/timer_list``, ``/sys/firmware`` & co. are masked, on every stage1 the
supervisor runs, unless ``--insecure-options=paths``. The apps run as root with
the default capabilities; nothing is ever written to these files: ``test -w``
only asks (coreutils' ``test``, which asks the kernel with access(2); busybox's
answers "writable" to root without asking).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from rkt_testing import AciBuilder, RktEnv
from rkt_testing.plugin import needs_oci_stage1, needs_root

pytestmark = [
    needs_root,
    pytest.mark.root,
    pytest.mark.skipif(shutil.which("systemd-nspawn") is None, reason="needs systemd-nspawn"),
]

STAGE1S = pytest.mark.parametrize(
    "stage1", ["nspawn", "fly", pytest.param("oci", marks=needs_oci_stage1)])

PROBE = """
for f in /proc/sys/kernel/core_pattern /proc/sysrq-trigger /proc/sys/vm/drop_caches; do
  if /usr/bin/test -w $f; then echo "writable $f"; else echo "read-only $f"; fi
done
if [ -e /proc/kcore ]; then echo "kcore $(wc -c < /proc/kcore)"; else echo "kcore absent"; fi
echo "keys $(wc -c < /proc/keys)"
echo "timer_list $(wc -c < /proc/timer_list)"
echo "firmware $(ls -A /sys/firmware | wc -l)"
"""

PROTECTED = [
    "read-only /proc/sys/kernel/core_pattern",
    "read-only /proc/sysrq-trigger",
    "read-only /proc/sys/vm/drop_caches",
    # some kernels have no /proc/kcore at all
    "kcore 0" if Path("/proc/kcore").exists() else "kcore absent",
    "keys 0",
    "timer_list 0",
    "firmware 0",
]


def coreutils_test(tar_path: Path) -> Path:
    """A tar of the host's /usr/bin/test and the libraries ldd names, at the same paths."""
    listing = subprocess.run(["ldd", "/usr/bin/test"], capture_output=True, text=True,
                             check=True).stdout
    paths = ["/usr/bin/test"] + [
        path for line in listing.splitlines()
        if (path := line.split("=>")[-1].split("(")[0].strip()).startswith("/")
    ]
    with tarfile.open(tar_path, "w") as tar:
        for path in paths:
            tar.add(os.path.realpath(path), "rootfs" + path)  # its mode: executable
    return tar_path


@pytest.fixture
def probe(aci_builder: AciBuilder, tmp_path: Path) -> Path:
    return aci_builder.build("probe.aci", name="example.com/probe", busybox=True,
                             exec_=["/bin/sh", "-c", PROBE],
                             extra_tar=coreutils_test(tmp_path / "test.tar"))


def run(env: RktEnv, stage1: str, image: Path, *flags: str) -> list[str]:
    result = env.run("--insecure-options=image" + "".join(f",{f}" for f in flags), "run",
                     f"--stage1-name=coreos.com/rkt/stage1-{stage1}", image)
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


@STAGE1S
def test_kernel_knobs_are_read_only_and_masked_in_every_app(
    rkt_env: RktEnv, probe: Path, stage1: str
) -> None:
    assert run(rkt_env, stage1, probe) == PROTECTED


@STAGE1S
def test_insecure_paths_leaves_them_as_the_kernel_has_them(
    rkt_env: RktEnv, probe: Path, stage1: str
) -> None:
    lines = run(rkt_env, stage1, probe, "paths")
    assert "writable /proc/sys/kernel/core_pattern" in lines
    assert "keys 0" not in lines
