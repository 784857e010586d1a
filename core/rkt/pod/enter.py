"""``rkt enter``: run a command in a running app with the app's own isolation, no more.

rkt's CVE-2019-10144/10145/10147 came from entering with more than the app had:
all capabilities, no cgroup. Here the command joins the app's cgroups and every
namespace it has (mount, UTS, IPC, network, PID, cgroup), takes the app's root
directory (``/proc/<pid>/root``, so a backend that chroots is entered as safely as
one that pivot_roots), and then becomes the
app exactly as the supervisor made it (``supervisor.exec_app``): the same
capability sets, user and groups, no_new_privs and seccomp filter, and its
environment.
"""

from __future__ import annotations

import ctypes
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

from rkt.errors import PodError
from rkt.pod import supervisor
from rkt.pod.contract import ResolvedApp

if TYPE_CHECKING:
    from rkt.pod.dirs import Pod

_libc = ctypes.CDLL(None, use_errno=True)

#: joined in this order; mount last, because it changes what /proc/<pid> paths mean
NAMESPACES = ("cgroup", "ipc", "uts", "net", "pid", "mnt")


def children(pid: int) -> list[int]:
    """The host PIDs of ``pid``'s children (empty if it is gone)."""
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def namespace_pids(pid: int) -> list[int]:
    """``pid`` as each nested PID namespace sees it, outermost first (``NSpid``)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return []
    for line in status.splitlines():
        if line.startswith("NSpid:"):
            return [int(p) for p in line.split()[1:]]
    return []


def host_pid_of(container_pid: int, parent_host_pid: int) -> int | None:
    """The host PID of a child of ``parent_host_pid`` that is ``container_pid`` inside."""
    for child in children(parent_host_pid):
        pids = namespace_pids(child)
        if pids and pids[-1] == container_pid:
            return child
    return None


def running_app_pid(pod: Pod, app_name: str, *, timeout: float = 10,
                    poll: float = 0.05) -> int:
    """The host PID of a running app of ``pod``, for ``enter``.

    rkt's contract: ``enter`` on a pod that is still starting waits for it. So this
    waits (at most ``timeout`` seconds, and only while something holds the pod's
    lock) for ``<pod>/pid`` and for the supervisor's ``rkt/pids/<app>`` in the
    stage1 rootfs, which hold the PID as the pod's PID namespace sees it, and maps
    that PID to the host's below the pod's PID 1. Every way it can fail is a
    one-line :class:`PodError`.
    """
    pid_file = f"stage1/rootfs/rkt/pids/{app_name}"
    deadline = time.monotonic() + timeout
    while True:
        pid1 = pod.pid()
        inner = pod.read_int(pid_file)  # None while missing or still being written
        if pid1 is not None and inner is not None:
            # the supervisor writes the file after the fork: the app exists by now
            host = host_pid_of(inner, pid1)
            if host is None:
                raise PodError(f'app "{app_name}" is not running (it has exited)')
            return host
        if not pod.is_locked_by_other():
            raise PodError(f'pod "{pod.uuid}" is not running')
        if time.monotonic() >= deadline:
            what = "pod" if pid1 is None else f'app "{app_name}"'
            raise PodError(f"{what} has not started within {timeout:g} s")
        time.sleep(poll)


def _join_cgroups(pid: int) -> None:
    try:
        lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
    except OSError as exc:
        raise PodError(f"cannot read cgroups of pid {pid}: {exc.strerror}") from exc
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controllers == "":
            candidates = [Path("/sys/fs/cgroup/unified"), Path("/sys/fs/cgroup")]
        else:
            name = controllers.removeprefix("name=")
            candidates = [Path("/sys/fs/cgroup") / name]
        for base in candidates:
            directory = base / path.lstrip("/")
            if (directory / "cgroup.procs").exists():
                try:
                    supervisor.join_cgroup(str(directory))
                except OSError:
                    continue
                break


def enter(app_pid: int, app: ResolvedApp, command: list[str]) -> int:
    """Fork a child inside the app's namespaces and cgroups; return its exit code."""
    fds = {}
    try:
        for name in NAMESPACES:
            try:
                fds[name] = os.open(f"/proc/{app_pid}/ns/{name}", os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError as exc:
                raise PodError(f"app process {app_pid} is gone") from exc
        # The app's root, held before joining: a backend that chroots (rather than
        # pivot_root-ing) leaves the mount namespace's root at the host's /, which
        # is where joining the namespace alone would land the command.
        try:
            fds["root"] = os.open(f"/proc/{app_pid}/root",
                                  os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        except FileNotFoundError as exc:
            raise PodError(f"app process {app_pid} is gone") from exc
        except OSError as exc:
            raise PodError(f"cannot open the root of app process {app_pid}: "
                           f"{exc.strerror}") from exc
        same = {n for n in NAMESPACES
                if os.stat(f"/proc/self/ns/{n}").st_ino == os.fstat(fds[n]).st_ino}
        # Everything that may import a module is done before joining the mount
        # namespace: the app's rootfs has no Python standard library.
        process = app.process_json()
        environment = app.environment()
        program = supervisor.seccomp_program(process)
        pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the child
            try:
                _join_cgroups(app_pid)
                for name in NAMESPACES:
                    if name not in same and _libc.setns(fds[name], 0) != 0:
                        raise supervisor.SetupError(
                            f"join {name} namespace: {os.strerror(ctypes.get_errno())}"
                        )
                os.fchdir(fds["root"])
                os.chroot(".")
                os.chdir("/")
                child = os.fork()  # a PID namespace applies to children only
                if child == 0:
                    # the supervisor's own last steps, given the same fields
                    if not os.path.isdir(app.working_directory):
                        process["working_directory"] = "/"
                    supervisor.exec_app(process, command, environment, program)
                _, status = os.waitpid(child, 0)
                code = os.waitstatus_to_exitcode(status)
                os._exit(code if code >= 0 else 128 - code)
            except supervisor.SetupError as exc:
                os.write(2, f"rkt: enter: {exc}\n".encode())
            except BaseException as exc:
                os.write(2, f"rkt: enter: {type(exc).__name__}: {exc}\n".encode())
            os._exit(254)
        _, status = os.waitpid(pid, 0)
        code = os.waitstatus_to_exitcode(status)
        return code if code >= 0 else 128 - code
    finally:
        for fd in fds.values():
            os.close(fd)
