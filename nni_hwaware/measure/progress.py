"""Progress bars (tqdm) and the stderr handler of the package's log messages, shared by every command.

:func:`progress_bar` is the one way the package shows progress. On a terminal the bar is redrawn in place
(at most every :data:`TTY_INTERVAL` seconds); when stderr is no terminal (a log file, CI, NNI's trial log)
every redraw is a line of its own, at most every :data:`LOG_INTERVAL` seconds, so the log reads top to bottom.
:class:`Progress` is the bar of a measuring campaign (models done, rate, ETA, last latency, QC drift).

Library modules log with ``logging.getLogger(__name__)``; :func:`log_to_stderr` prints those messages bare on
stderr, above a bar on a terminal instead of through it. The command line installs it
(:func:`nni_hwaware.cli.configure_logging`), and so do the trial processes NNI starts (their stderr is the
trial log).
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any, TextIO

from tqdm import tqdm

#: Seconds between redraws on a terminal.
TTY_INTERVAL = 0.2
#: Seconds between progress lines when stderr is no terminal (a log).
LOG_INTERVAL = 10.0
#: Set to 1 for debug messages too.
DEBUG_ENV = "NNI_HWAWARE_DEBUG"

_STATS = "{desc} {n_fmt}/{total_fmt} ({percentage:.0f}%){bar}{rate_fmt}  ETA {remaining}{postfix}"
_TTY_FORMAT = _STATS.replace("{bar}", " |{bar:20}| ")
_LOG_FORMAT = _STATS.replace("{bar}", "  ")
_UNKNOWN_TOTAL_FORMAT = "{desc} {n_fmt}  {rate_fmt}{postfix}"


def _is_tty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


class _LogLines:
    """The file tqdm writes to when stderr is no terminal: each redraw becomes a line of its own, and a
    repeated line is left out (tqdm starts every redraw with a carriage return, which a log would show as one
    ever longer line)."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._last = ""

    def write(self, text: str) -> None:
        for part in text.split("\r"):
            line = part.strip()
            if line and line != self._last:
                self._stream.write(line + "\n")
                self._last = line

    def flush(self) -> None:
        self._stream.flush()


def progress_bar(total: int | None, desc: str, enabled: bool = True, unit: str = "model") -> tqdm:
    """A tqdm progress bar on stderr: ``desc done/total (pct%)``, the rate, the ETA and a postfix.

    Parameters
    ----------
    total
        How many ``unit`` there are to do (``None``: unknown; no percentage or ETA).
    desc
        What is being done, at the start of the line.
    enabled
        ``False``: a bar that draws and counts nothing (tqdm's ``disable``).
    unit
        What is counted, for the rate (``model/s``).

    Returns
    -------
    tqdm
        Advance it with ``update(n)``, show extra figures with ``set_postfix_str(text)``, end it with
        ``close()`` (or use it as a context manager).

    Examples
    --------
    >>> with progress_bar(3, "measure convnet", enabled=False) as bar:
    ...     bar.update(2)
    ...     bar.set_postfix_str("last 1.250 ms")
    """
    stream = sys.stderr
    tty = _is_tty(stream)
    bar_format = _UNKNOWN_TOTAL_FORMAT if total is None else _TTY_FORMAT if tty else _LOG_FORMAT
    return tqdm(total=total, desc=desc, unit=unit, disable=not enabled, leave=True,
                file=stream if tty else _LogLines(stream), bar_format=bar_format,
                mininterval=TTY_INTERVAL if tty else LOG_INTERVAL, ascii=None if tty else True)


class Progress:
    """Progress of a measuring campaign: models done, rate, ETA, the last latency and the QC drift.

    Parameters
    ----------
    total
        Models of the campaign (settable later: :attr:`total`).
    label
        Start of the line (``measure mobilenetv3``).
    enabled
        ``False`` silences it (library use, ``--quiet``).

    Examples
    --------
    >>> progress = Progress(4, "measure convnet", enabled=False)
    >>> progress.resume(1, note="1 already stored")
    >>> progress.update(2, last_ms=1.5, drift=0.004)
    >>> progress.postfix()
    'last 1.500 ms  QC drift 0.4%  1 already stored'
    >>> progress.close()
    """

    def __init__(self, total: int, label: str = "measure", enabled: bool = True) -> None:
        self.bar = progress_bar(total, label, enabled=enabled)
        self.last_ms: float | None = None
        self.drift: float | None = None
        self.note = ""

    @property
    def total(self) -> int:
        """Models of the campaign."""
        return int(self.bar.total)

    @total.setter
    def total(self, value: int) -> None:
        self.bar.total = value

    def resume(self, done: int, note: str = "") -> None:
        """Count ``done`` models measured before this run as done, without counting them in the rate."""
        self.note = note
        self.bar.n = self.bar.last_print_n = self.bar.initial = done
        self.bar.set_postfix_str(self.postfix(), refresh=False)
        self.bar.refresh()

    def update(self, done: int | None = None, *, last_ms: float | None = None, drift: float | None = None,
               note: str | None = None) -> None:
        """Record progress (models done so far, the last latency, the QC drift, a note); redraws when due."""
        if last_ms is not None:
            self.last_ms = last_ms
        if drift is not None:
            self.drift = drift
        if note is not None:
            self.note = note
        self.bar.set_postfix_str(self.postfix(), refresh=False)
        if done is not None and done != self.bar.n:
            self.bar.update(done - self.bar.n)

    def postfix(self) -> str:
        """The figures after the ETA: the last latency, the QC drift and the note."""
        parts = []
        if self.last_ms is not None:
            parts.append(f"last {self.last_ms:.3f} ms")
        if self.drift is not None:
            parts.append(f"QC drift {100 * self.drift:.1f}%")
        if self.note:
            parts.append(self.note)
        return "  ".join(parts)

    def close(self) -> None:
        """Draw the final state and end the line."""
        self.bar.close()


# ------------------------------------------------------------------------------------------ log messages
class StderrHandler(logging.Handler):
    """Prints each message bare to the ``sys.stderr`` of the moment (so a redirected stderr gets it), through
    tqdm on a terminal so that a progress bar is cleared and redrawn below the message."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record)
            stream = sys.stderr
            if _is_tty(stream):
                tqdm.write(text, file=stream)
            else:
                stream.write(text + "\n")
                stream.flush()
        except Exception:  # logging's contract: a failing handler reports and goes on
            self.handleError(record)


def log_to_stderr(level: int | None = None) -> logging.Handler:
    """Show the package's log messages (logger ``nni_hwaware``) on stderr; installs one handler, once.

    Parameters
    ----------
    level
        Lowest level shown; default INFO, or DEBUG when the environment variable ``NNI_HWAWARE_DEBUG`` is 1.

    Returns
    -------
    logging.Handler
        The handler (the same one on every call).
    """
    if level is None:
        level = logging.DEBUG if os.environ.get(DEBUG_ENV) == "1" else logging.INFO
    logger = logging.getLogger("nni_hwaware")
    handler = next((h for h in logger.handlers if isinstance(h, StderrHandler)), None)
    if handler is None:
        handler = StderrHandler()
        logger.addHandler(handler)
    logger.setLevel(level)
    return handler
