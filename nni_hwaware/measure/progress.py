"""A dependency-free progress line on stderr: models done, rate, ETA, last latency and QC drift."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    """Progress of a measuring campaign, redrawn in place on a terminal and as sparse lines in logs.

    Parameters
    ----------
    total
        Models to measure in this run.
    label
        Prefix of the line.
    stream
        Where to write (stderr).
    enabled
        ``False`` silences it (library use).
    """

    def __init__(self, total: int, label: str = "measure", stream: TextIO | None = None, enabled: bool = True) -> None:
        self.total = total
        self.label = label
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.done = 0
        self.drift: float | None = None
        self.note = ""
        self._start = time.monotonic()
        self._last_draw = 0.0
        self._tty = bool(getattr(self.stream, "isatty", lambda: False)())

    def update(self, done: int | None = None, *, last_ms: float | None = None, drift: float | None = None,
               note: str | None = None) -> None:
        """Record progress and redraw (rate-limited)."""
        if done is not None:
            self.done = done
        if drift is not None:
            self.drift = drift
        if note is not None:
            self.note = note
        self._last_ms = last_ms if last_ms is not None else getattr(self, "_last_ms", None)
        now = time.monotonic()
        interval = 0.2 if self._tty else (0.0 if self.total <= 50 else 10.0)
        if self.enabled and (now - self._last_draw >= interval or self.done >= self.total):
            self._last_draw = now
            self._draw()

    def line(self) -> str:
        """The current progress line."""
        elapsed = time.monotonic() - self._start
        rate = self.done / elapsed * 60 if elapsed > 0 and self.done else 0.0
        eta = (self.total - self.done) / (rate / 60) if rate > 0 else None
        pct = 100.0 * self.done / self.total if self.total else 100.0
        parts = [f"{self.label} {self.done}/{self.total} ({pct:.0f}%)", f"{rate:.1f} models/min",
                 f"ETA {_hms(eta)}" if eta is not None else "ETA --"]
        if getattr(self, "_last_ms", None) is not None:
            parts.append(f"last {self._last_ms:.3f} ms")
        if self.drift is not None:
            parts.append(f"QC drift {100 * self.drift:.1f}%")
        if self.note:
            parts.append(self.note)
        return "  ".join(parts)

    def _draw(self) -> None:
        text = self.line()
        if self._tty:
            self.stream.write("\r\x1b[K" + text)
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def message(self, text: str) -> None:
        """Print a message on its own line without breaking the progress line."""
        if not self.enabled:
            return
        self.stream.write(("\r\x1b[K" if self._tty else "") + text + "\n")
        self.stream.flush()
        if self._tty:
            self._draw()

    def close(self) -> None:
        """End the progress line."""
        if self.enabled and self._tty:
            self._draw()
            self.stream.write("\n")
            self.stream.flush()


def _hms(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"
