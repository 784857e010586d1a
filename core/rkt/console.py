"""The pod's terminal for stage1s that run apps as rkt's own children (fly, kvm).

systemd-nspawn already gives a container a pseudo-terminal and kills it when
Ctrl+] is pressed three times within a second; this module does the same for
the other stage1s. With ``--interactive`` the app gets a pty of its own that is
relayed to the user's terminal; without it the app's output goes straight to
rkt's, and the terminal is only watched for the escape sequence.

The terminal modules (``pty``, ``tty``, ``termios``) are imported only when there
is a terminal to look after, not on a pod start from a script (issue 14).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, overload

from rkt.pod.lifetime import ForkedStage1, Stage1Target, spawn_stage1

ESCAPE = 0x1D  # Ctrl+]
ESCAPE_COUNT = 3
ESCAPE_WINDOW = 1.0


class EscapeDetector:
    """Counts Ctrl+] presses; three within a second means "kill the pod"."""

    def __init__(self) -> None:
        self.presses: list[float] = []

    def feed(self, data: bytes, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        for byte in data:
            if byte == ESCAPE:
                self.presses = [t for t in self.presses if now - t < ESCAPE_WINDOW] + [now]
                if len(self.presses) >= ESCAPE_COUNT:
                    return True
            else:
                self.presses.clear()
        return False


@contextlib.contextmanager
def _terminal_mode(fd: int, raw: bool) -> Iterator[None]:
    import termios
    import tty

    saved = termios.tcgetattr(fd)
    try:
        if raw:
            tty.setraw(fd)
        else:
            tty.setcbreak(fd)  # no echo, no line buffering; output processing stays
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def _copy_size(source: int, target: int) -> None:
    import termios

    with contextlib.suppress(OSError):
        size = fcntl.ioctl(source, termios.TIOCGWINSZ, b"\0" * 8)
        fcntl.ioctl(target, termios.TIOCSWINSZ, size)


@overload
def run_with_console(
    command: Sequence[str],
    *,
    interactive: bool,
    kill: Callable[[subprocess.Popen[bytes]], None],
    pass_fds: Sequence[int] = (),
    on_start: Callable[[subprocess.Popen[bytes]], None] | None = None,
    env: dict[str, str] | None = None,
    stop: Callable[[], None] | None = None,
) -> int: ...


@overload
def run_with_console(
    command: Callable[[], int],
    *,
    interactive: bool,
    kill: Callable[[ForkedStage1], None],
    pass_fds: Sequence[int] = (),
    on_start: Callable[[ForkedStage1], None] | None = None,
    env: None = None,
    stop: Callable[[], None] | None = None,
) -> int: ...


def run_with_console(
    command: Stage1Target,
    *,
    interactive: bool,
    kill: Callable[[Any], None],
    pass_fds: Sequence[int] = (),
    on_start: Callable[[Any], None] | None = None,
    env: dict[str, str] | None = None,
    stop: Callable[[], None] | None = None,
) -> int:
    """Run ``command`` (the pod's supervisor), relaying the terminal; return its exit code.

    ``command`` is a program and its arguments, or a function run in a fork of
    rkt (see :func:`rkt.pod.lifetime.spawn_stage1`).

    ``stop`` is the pod's graceful stop for :func:`rkt.pod.lifetime.spawn_stage1`
    (default: SIGTERM to the process), called when rkt gets a stop signal.

    The process is started with :func:`rkt.pod.lifetime.spawn_stage1`: it dies
    with rkt, and a stop signal to rkt (Ctrl+C included) stops it gracefully.
    Outside a pod command (no lifetime installed) rkt ignores SIGINT while the
    process runs, so that the pod, not rkt, decides what Ctrl+C does.
    """
    from rkt.pod.lifetime import current_lifetime

    ignore = current_lifetime() is None
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN) if ignore else None
    try:
        return _run(command, interactive=interactive, kill=kill, pass_fds=pass_fds,
                    on_start=on_start, env=env, stop=stop)
    finally:
        if ignore:
            signal.signal(signal.SIGINT, previous)


def _run(
    command: Stage1Target,
    *,
    interactive: bool,
    kill: Callable[[Any], None],
    pass_fds: Sequence[int],
    on_start: Callable[[Any], None] | None,
    env: dict[str, str] | None,
    stop: Callable[[], None] | None,
) -> int:
    if env is not None:
        popen: dict[str, Any] = {"env": env}
    else:
        popen = {}  # a forked function takes no environment of its own
    stdin_tty = sys.stdin.isatty()
    if not stdin_tty:
        # No terminal, no escape sequence to watch: the plain case.
        process = spawn_stage1(
            command, stop=stop, pass_fds=pass_fds,
            stdin=None if interactive else subprocess.DEVNULL, **popen,
        )
        if on_start:
            on_start(process)
        return _wait(process)

    master = slave = None
    if interactive:
        import pty

        master, slave = pty.openpty()
        _copy_size(sys.stdin.fileno(), slave)
    process = spawn_stage1(
        command, stop=stop, pass_fds=pass_fds,
        stdin=slave if interactive else subprocess.DEVNULL,
        stdout=slave if interactive else None,
        stderr=slave if interactive else None, **popen,
    )
    if slave is not None:
        os.close(slave)
    if on_start:
        on_start(process)
    detector = EscapeDetector()
    stdin_fd = sys.stdin.fileno()
    if interactive:
        def on_winch(signum: int, frame: object) -> None:
            del signum, frame
            assert master is not None
            _copy_size(stdin_fd, master)

        signal.signal(signal.SIGWINCH, on_winch)
    with _terminal_mode(stdin_fd, raw=interactive):
        watched = [stdin_fd] + ([master] if master is not None else [])
        while process.poll() is None:
            try:
                ready, _, _ = select.select(watched, [], [], 0.1)
            except InterruptedError:
                continue
            if stdin_fd in ready:
                data = os.read(stdin_fd, 1024)
                if not data:
                    watched.remove(stdin_fd)
                elif detector.feed(data):
                    kill(process)
                    process.wait()
                    break
                elif master is not None:
                    os.write(master, data)
            if master is not None and master in ready:
                try:
                    data = os.read(master, 65536)
                except OSError:  # EIO: the app closed its terminal
                    data = b""
                if not data:
                    watched.remove(master)
                else:
                    os.write(sys.stdout.fileno(), data)
        if master is not None:
            _drain(master)
            os.close(master)
    if detector.presses and len(detector.presses) >= ESCAPE_COUNT:
        print("\r\nrkt: pod killed (Ctrl+] pressed three times)", file=sys.stderr)
    return _wait(process)


def _drain(master: int) -> None:
    while True:
        try:
            ready, _, _ = select.select([master], [], [], 0)
            if not ready:
                return
            data = os.read(master, 65536)
        except OSError:
            return
        if not data:
            return
        os.write(sys.stdout.fileno(), data)


def _wait(process: subprocess.Popen[bytes] | ForkedStage1) -> int:
    code = process.wait()
    return code if code >= 0 else 128 - code
