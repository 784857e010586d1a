"""The process that runs a pod is the pod's lifetime (rkt's stage0 exec'd its stage1).

A scheduler (Nomad's rkt driver, a systemd unit) starts ``rkt run`` or ``rkt
run-prepared`` and later signals that process. So, as when rkt 1.x's stage0
became the stage1:

- SIGINT, SIGTERM or SIGHUP to it stop the pod gracefully: the stage1 process
  gets the backend's stop (by default SIGTERM, which the shared supervisor
  turns into each app's stop and, after its ``stop_timeout``, SIGKILL); the pod
  exits and its apps' exit codes are recorded. Should the pod still run well
  after that, rkt kills the stage1 process.
- SIGKILL to it ends the pod too: :func:`spawn_stage1` starts the stage1
  process with a parent-death signal (``PR_SET_PDEATHSIG``, SIGKILL), and the
  stage1 passes it on (the supervisor's ``die_with_parent``), so nothing of the
  pod outlives ``rkt``. The pod lock, held by rkt and the stage1, then reads as
  exited.
- A signal while the pod is being prepared unwinds the preparation (nothing is
  left in the store or pod directories); one that arrives after the pod moved to
  ``run/`` but before the stage1 started is held until the next checkpoint, so
  the pod never runs half-configured (see :func:`rkt.pod.lifecycle.run_pod`).

docs/stage1.md says what a backend must do for this to hold.
"""

from __future__ import annotations

import contextlib
import gc
import math
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from types import FrameType
from typing import Any, overload

from rkt.errors import PodError, PodInterrupted
from rkt.log import get_logger

LOG = get_logger(__name__)

#: the signals that ask a pod to stop; SIGHUP too: the terminal or session went away
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
PR_SET_PDEATHSIG = 1
#: how long after a graceful stop request rkt waits before it kills the stage1
#: process itself (beyond the supervisor's own ``stop_timeout``)
STOP_GRACE = 5.0


class PodLifetime:
    """Signal handling for one ``rkt run`` / ``run-prepared`` / ``prepare`` process.

    Three phases: *preparing* (a stop signal raises :class:`PodInterrupted` at
    once, and the preparation's own cleanup runs), *starting* (the signal is
    remembered and :meth:`checkpoint` raises it), and *running* (once
    :meth:`started` registered the stage1 process: the signal becomes the
    backend's graceful stop).
    """

    def __init__(self, stop_timeout: float = 10.0, grace: float = STOP_GRACE) -> None:
        self.stop_timeout = stop_timeout
        self.grace = grace
        self.deferred = False
        self.received: int | None = None
        self.process: subprocess.Popen[bytes] | ForkedStage1 | None = None
        self._stop: Callable[[], None] | None = None
        self._stopping = False
        self._previous: dict[int, Any] = {}

    # -- installing ------------------------------------------------------------------
    def install(self) -> None:
        global _CURRENT
        for signum in STOP_SIGNALS:
            previous = signal.getsignal(signum)
            if signum == signal.SIGHUP and previous == signal.SIG_IGN:
                continue  # started under nohup: the caller wants SIGHUP ignored
            self._previous[signum] = previous
            signal.signal(signum, self._on_signal)
        self._previous[signal.SIGALRM] = signal.getsignal(signal.SIGALRM)
        _CURRENT = self

    def uninstall(self) -> None:
        global _CURRENT
        signal.alarm(0)
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
        self._previous.clear()
        if _CURRENT is self:
            _CURRENT = None

    # -- phases ----------------------------------------------------------------------
    def defer(self) -> None:
        """From now on a stop signal waits for :meth:`checkpoint` or :meth:`started`."""
        self.deferred = True
        self.checkpoint()

    def checkpoint(self) -> None:
        """Raise :class:`PodInterrupted` if a stop signal arrived and nothing runs yet."""
        if self.received is not None and self.process is None:
            raise PodInterrupted(self.received, _interrupted(self.received))

    def started(self, process: subprocess.Popen[bytes] | ForkedStage1,
                stop: Callable[[], None] | None = None) -> None:
        """The stage1 process runs: stop signals now stop it (``stop``, else SIGTERM)."""
        self.process = process
        self._stop = stop
        if self.received is not None:
            self._request_stop()

    # -- signals ---------------------------------------------------------------------
    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        del frame
        if self.received is None:
            self.received = signum
        if self.process is not None:
            self._request_stop()
        elif not self.deferred:
            raise PodInterrupted(signum, _interrupted(signum))

    def _request_stop(self) -> None:
        if self._stopping:
            return
        self._stopping = True
        process = self.process
        assert process is not None
        LOG.debug("stop signal: stopping the pod (stage1 process %d)", process.pid)
        try:
            if self._stop is not None:
                self._stop()
            else:
                process.send_signal(signal.SIGTERM)
        except (OSError, PodError) as exc:
            LOG.debug("graceful stop failed (%s): killing the stage1", exc)
            self._kill()
            return
        signal.signal(signal.SIGALRM, lambda signum, frame: self._kill())
        signal.alarm(max(1, math.ceil(self.stop_timeout + self.grace)))

    def _kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            LOG.debug("the pod did not stop in time: killing stage1 process %d",
                      self.process.pid)
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()


def _interrupted(signum: int) -> str:
    return f"interrupted by {signal.Signals(signum).name} before the pod started"


_CURRENT: PodLifetime | None = None


def current_lifetime() -> PodLifetime | None:
    """The lifetime installed in this process, if a pod command is running."""
    return _CURRENT


@contextlib.contextmanager
def pod_lifetime(stop_timeout: float = 10.0, grace: float = STOP_GRACE
                 ) -> Iterator[PodLifetime]:
    lifetime = PodLifetime(stop_timeout, grace)
    lifetime.install()
    try:
        yield lifetime
    finally:
        lifetime.uninstall()


@contextlib.contextmanager
def start_deadline(pid_file: os.PathLike[str], backend: str, seconds: float) -> Iterator[None]:
    """Give a backend's ``run`` ``seconds`` to write the pod's ``pid_file``.

    One SIGALRM at the deadline, one ``stat``: a pod that started by then runs
    as long as it likes. One that did not is taken to hang: its stage1 process
    (if :func:`spawn_stage1` started one) is killed and :class:`Stage1Error`
    interrupts ``run``. Nothing is armed off the main thread (an embedding
    program's) or with ``seconds`` 0.
    """
    from rkt.errors import Stage1Error

    def on_alarm(signum: int, frame: FrameType | None) -> None:
        del signum, frame
        if os.path.exists(pid_file):
            return
        lifetime = _CURRENT
        if lifetime is not None and lifetime.process is not None:
            with contextlib.suppress(ProcessLookupError):
                lifetime.process.kill()
        raise Stage1Error(f'stage1 "{backend}" did not start the pod within {seconds:g} s '
                          f"(no {pid_file}; RKT_STAGE1_START_TIMEOUT sets the limit)")

    if seconds <= 0:
        yield
        return
    try:
        previous = signal.signal(signal.SIGALRM, on_alarm)
    except ValueError:  # not the main thread
        yield
        return
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        # a stop signal meanwhile armed its own alarm (PodLifetime): leave that be
        if signal.getsignal(signal.SIGALRM) is on_alarm:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, signal.SIG_DFL if previous is None else previous)


_PRCTL: Any = None


def _prctl() -> Any:
    global _PRCTL
    if _PRCTL is None:
        import ctypes

        _PRCTL = ctypes.CDLL(None, use_errno=True).prctl
    return _PRCTL


class ForkedStage1:
    """A stage1 process that is a fork of rkt running a function (the fly
    supervisor), with what the lifetime and the console use of a ``Popen``."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None

    def _reap(self, flags: int) -> int | None:
        if self.returncode is None:
            try:
                pid, status = os.waitpid(self.pid, flags)
            except ChildProcessError:  # reaped elsewhere: no code to tell
                self.returncode = 255
                return self.returncode
            if pid == self.pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def poll(self) -> int | None:
        return self._reap(os.WNOHANG)

    def wait(self) -> int:
        code = self._reap(0)
        assert code is not None
        return code

    def send_signal(self, signum: int) -> None:
        if self.returncode is None:
            os.kill(self.pid, signum)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


#: what :func:`spawn_stage1` starts: a command, or a function run in a fork of rkt
Stage1Target = Sequence[str] | Callable[[], int]


def _fork_stage1(target: Callable[[], int], in_child: Callable[[], None], *,
                 stdin: int | None = None, stdout: int | None = None,
                 stderr: int | None = None, pass_fds: Sequence[int] = ()) -> ForkedStage1:
    """Fork and run ``target`` in the child, which exits with what it returns.

    The child is set up as ``Popen`` would set up an exec'd one: standard streams
    (``subprocess.DEVNULL`` or a file descriptor), every other descriptor closed
    but ``pass_fds``, signal dispositions back to the defaults. It never returns
    into rkt's code: it ends with ``os._exit``, running no cleanup of rkt's.
    """
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    pid = os.fork()
    if pid:
        return ForkedStage1(pid)
    code = 254
    try:
        # the parent's objects (open files, the store's database) are never
        # finalized here, so their descriptors, closed below, are not closed twice
        gc.freeze()
        # rkt's handlers are not the child's: reset them before in_child unblocks the
        # stop signals held since before the fork
        for signum in (*STOP_SIGNALS, signal.SIGALRM, signal.SIGWINCH, signal.SIGCHLD):
            signal.signal(signum, signal.SIG_DFL)
        in_child()
        for fd, wanted in ((0, stdin), (1, stdout), (2, stderr)):
            if wanted == subprocess.DEVNULL:
                null = os.open(os.devnull, os.O_RDWR)
                os.dup2(null, fd)
                os.close(null)
            elif wanted is not None:
                os.dup2(wanted, fd)
        keep = {0, 1, 2, *pass_fds}
        for name in os.listdir("/proc/self/fd"):
            if int(name) not in keep:
                with contextlib.suppress(OSError):
                    os.close(int(name))
        code = target()
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.write(2, f"rkt: stage1: {type(exc).__name__}: {exc}\n".encode())
    finally:
        os._exit(code)


@overload
def spawn_stage1(command: Sequence[str], *, stop: Callable[[], None] | None = None,
                 helper: bool = False, **popen: Any) -> subprocess.Popen[bytes]: ...


@overload
def spawn_stage1(command: Callable[[], int], *, stop: Callable[[], None] | None = None,
                 helper: bool = False, **popen: Any) -> ForkedStage1: ...


def spawn_stage1(
    command: Stage1Target,
    *,
    stop: Callable[[], None] | None = None,
    helper: bool = False,
    **popen: Any,
) -> subprocess.Popen[bytes] | ForkedStage1:
    """Start a pod's stage1 process so that it lives no longer than this rkt.

    ``command`` is a program and its arguments, or a function that a fork of rkt
    runs (no second interpreter to start: the fly stage1's supervisor); its
    return value is the process's exit code. For a function, ``popen`` may hold
    only ``stdin``, ``stdout``, ``stderr`` and ``pass_fds``.

    The child gets ``PR_SET_PDEATHSIG`` = SIGKILL (it survives ``exec`` of a
    program that is not set-user-ID), so SIGKILL to rkt kills it; while rkt
    lives, stop signals to rkt become ``stop()`` (default: SIGTERM to the
    child). A ``helper`` (a process the pod needs beside its stage1 process,
    e.g. a file server for a VM) dies with rkt too but is not what a stop
    signal stops. ``popen`` is passed to :class:`subprocess.Popen`. Raises
    :class:`PodInterrupted` without starting anything if a stop signal arrived
    while the pod was being set up.
    """
    lifetime = _CURRENT
    if lifetime is not None:
        lifetime.checkpoint()
    prctl = _prctl()
    parent = os.getpid()

    def in_child() -> None:
        prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:
            os._exit(1)  # rkt died between fork and prctl: the pod must not start
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)

    # A stop signal between fork and registering the child would find no
    # process to stop: hold them until the child is known.
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        process: subprocess.Popen[bytes] | ForkedStage1
        if callable(command):
            process = _fork_stage1(command, in_child, **popen)
        else:
            process = subprocess.Popen(command, preexec_fn=in_child, **popen)
        if lifetime is not None and not helper:
            lifetime.started(process, stop)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
    return process
