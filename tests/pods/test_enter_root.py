"""``rkt.api.enter`` lands in the app's root whichever way the backend made it.

A backend that chroots the app (rather than pivot_root-ing, as the shared
supervisor does) leaves its mount namespace's root at the host's ``/``; joining
that namespace alone would put the entered command on the host's filesystem
(issue 16). The app here is a real process that ``unshare(1)`` and ``chroot(8)``
isolated, as such a backend would; the helper is the one backends call.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from rkt.api import ResolvedApp, children, enter
from rkt_testing.aci import BUSYBOX
from rkt_testing.plugin import needs_root

pytestmark = [needs_root,
              pytest.mark.skipif(shutil.which("unshare") is None, reason="needs unshare")]


@pytest.fixture
def chrooted_app(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    """A ``sleep`` chrooted into a busybox rootfs in its own mount and PID namespaces:
    (its host PID, its rootfs)."""
    rootfs = tmp_path / "rootfs"
    (rootfs / "bin").mkdir(parents=True)
    (rootfs / "proc").mkdir()
    shutil.copy2(BUSYBOX, rootfs / "bin" / "busybox")
    (rootfs / "only-in-the-app").write_text("")
    process = subprocess.Popen(["unshare", "--mount", "--pid", "--fork", "--kill-child",
                                "sh", "-c", 'mount -t proc proc "$0/proc" && '
                                'exec chroot "$0" /bin/busybox sleep 600', str(rootfs)])
    try:
        app_pid = None
        for _ in range(500):  # until unshare has forked and chroot has exec'd busybox
            for child in children(process.pid):
                if os.readlink(f"/proc/{child}/root") == str(rootfs):
                    app_pid = child
            if app_pid:
                break
            time.sleep(0.01)
        assert app_pid, "the chrooted app did not start"
        yield app_pid, rootfs
    finally:
        process.kill()
        process.wait()


def test_enter_lands_in_a_chrooted_apps_root_not_the_hosts(
    chrooted_app: tuple[int, Path], tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    app_pid, rootfs = chrooted_app
    app = ResolvedApp(name="app", image_name="example.com/app", image_id="sha512-0",
                      tree="", lower=str(rootfs), overlay=False,
                      exec=("/bin/busybox", "sleep", "600"), env=(), uid=0, gid=0)
    code = enter(app_pid, app, ["/bin/busybox", "sh", "-c",
                                "/bin/busybox stat -c %i /; /bin/busybox ls /"])
    captured = capfd.readouterr()
    out = captured.out.split()
    assert code == 0, captured.err
    assert int(out[0]) == os.stat(rootfs).st_ino  # the app's root, not the host's
    assert "only-in-the-app" in out[1:]
    assert tmp_path.parts[1] not in out[1:]  # the host's top-level directory is not seen
