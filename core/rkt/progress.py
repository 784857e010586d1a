"""Progress bars for long work, drawn only on a terminal.

When stderr is not a TTY (a script, CI, a pipe) nothing is drawn at all, so
logs stay clean; callers print their own one-line summaries instead.
"""

from __future__ import annotations

import time
from typing import IO


def human_size(size: float) -> str:
    """``3.79 MB`` style sizes (decimal units, as rkt's bars used)."""
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if size < 1000 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.2f} {unit}"
        size /= 1000
    raise AssertionError("unreachable")


class ProgressBar:
    """``Downloading ACI: [=======>      ] 1.20 MB/3.79 MB`` on a terminal."""

    #: at most this many redraws a second; drawing is not free
    REDRAW_INTERVAL = 0.1

    def __init__(self, label: str, total: int | None, stream: IO[str]) -> None:
        self.label = label
        self.total = total
        self.stream = stream
        self.done = 0
        self.enabled = bool(getattr(stream, "isatty", lambda: False)())
        self._last_draw = 0.0

    def advance(self, amount: int) -> None:
        self.done += amount
        if self.enabled:
            now = time.monotonic()
            if now - self._last_draw >= self.REDRAW_INTERVAL:
                self._last_draw = now
                self._draw()

    def finish(self) -> None:
        if self.enabled:
            if self.total is not None:
                self.done = max(self.done, self.total)
            self._draw()
            self.stream.write("\n")
            self.stream.flush()

    def _draw(self) -> None:
        sizes = human_size(self.done)
        if self.total:
            sizes += f"/{human_size(self.total)}"
        import shutil  # here: a pod start opens the store, which imports this module

        columns = shutil.get_terminal_size((80, 24)).columns
        width = max(10, columns - len(self.label) - len(sizes) - 6)
        if self.total:
            filled = min(width, int(width * self.done / self.total))
            bar = "=" * filled + " " * (width - filled)
        else:
            bar = ("=" * (self.done // 1_000_000 % width)).ljust(width)
        self.stream.write(f"\r{self.label}: [{bar}] {sizes}")
        self.stream.flush()
