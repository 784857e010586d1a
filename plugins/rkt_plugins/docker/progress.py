"""Per-layer download progress, safe to update from the download threads.

On a terminal every layer has its own bar, redrawn in place (the cursor moves back
up over the block of bars); anywhere else each download is announced once with a
``Downloading layer: <hex digest>`` line, as rkt printed it (the seed article).
"""

from __future__ import annotations

import shutil
import threading
import time
from typing import IO

from rkt.progress import human_size


class LayerProgress:
    REDRAW_INTERVAL = 0.1

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream
        self.terminal = bool(getattr(stream, "isatty", lambda: False)())
        self._lock = threading.Lock()
        self._bars: dict[str, list[int]] = {}  # label -> [done, total]
        self._drawn = 0
        self._last = 0.0

    def add(self, label: str, total: int) -> None:
        """Announce a download (a new bar on a terminal, a line elsewhere)."""
        with self._lock:
            self._bars[label] = [0, total]
            if not self.terminal:
                self.stream.write(f"Downloading layer: {label}\n")
                self.stream.flush()
            else:
                self._draw(force=True)

    def advance(self, label: str, amount: int) -> None:
        if not self.terminal:
            return
        with self._lock:
            self._bars[label][0] += amount
            self._draw(force=False)

    def finish(self) -> None:
        if self.terminal and self._bars:
            with self._lock:
                for bar in self._bars.values():
                    bar[0] = bar[1]
                self._draw(force=True)

    def _draw(self, *, force: bool) -> None:
        now = time.monotonic()
        if not force and now - self._last < self.REDRAW_INTERVAL:
            return
        self._last = now
        columns = shutil.get_terminal_size((80, 24)).columns
        lines = []
        for label, (done, total) in self._bars.items():
            short = label[:12]
            sizes = f"{human_size(done)}/{human_size(total)}"
            width = max(10, columns - len(short) - len(sizes) - 25)
            filled = min(width, int(width * done / total)) if total else width
            lines.append(f"Downloading layer {short}: [{'=' * filled}{' ' * (width - filled)}]"
                          f" {sizes}")
        up = f"\x1b[{self._drawn}F" if self._drawn else ""
        self.stream.write(up + "".join(f"\x1b[2K{line}\n" for line in lines))
        self.stream.flush()
        self._drawn = len(lines)
