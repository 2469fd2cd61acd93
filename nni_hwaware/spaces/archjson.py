"""Reading architectures from text and files, refusing what ``json`` would let through or crash on.

Python's ``json`` accepts ``NaN``, ``Infinity`` and ``-Infinity``, turns ``1e400`` into infinity, raises
``RecursionError`` on deeply nested input and ``ValueError`` on integers of more than 4300 digits; a file may
be huge or binary. Every one of these becomes an :class:`~nni_hwaware.errors.HwAwareError` here, so that
:meth:`SearchSpace.validate <nni_hwaware.spaces.schema.SearchSpace.validate>`, ``--arch @FILE`` and
``--archs FILE`` files all fail with one clear line.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nni_hwaware.errors import HwAwareError
from nni_hwaware.spaces import limits

if TYPE_CHECKING:
    from nni_hwaware.spaces.schema import Architecture, SearchSpace


class _BadNumber(ValueError):
    """A JSON number Python would read as NaN or infinity."""


def _no_constant(name: str) -> Any:
    raise _BadNumber(f"{name} is not a number an architecture can hold (JSON has no NaN or Infinity)")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _BadNumber(f"{text[:40]} is beyond the range of numbers")
    return value


def parse_json_text(text: str | bytes | bytearray, what: str = "architecture") -> Any:
    """Parse JSON text, refusing non-finite numbers, huge or deeply nested input, and non-UTF-8 bytes.

    Parameters
    ----------
    text
        The JSON text (bytes are decoded as UTF-8).
    what
        What the text is, for messages (``"architecture"``, ``"arch.json line 3"``).

    Raises
    ------
    HwAwareError
        If the text is not valid JSON or holds NaN, Infinity or a number beyond the float range.
    """
    if len(text) > limits.MAX_ARCH_JSON_BYTES:
        raise HwAwareError(f"{what} is {len(text):,} characters long; an architecture is at most "
                           f"{limits.MAX_ARCH_JSON_BYTES:,}")
    if isinstance(text, bytes | bytearray):
        try:
            text = bytes(text).decode("utf-8")
        except UnicodeDecodeError:
            raise HwAwareError(f"{what} is not UTF-8 text (a binary file?)") from None
    try:
        return json.loads(text, parse_constant=_no_constant, parse_float=_finite_float)
    except _BadNumber as exc:
        raise HwAwareError(f"{what}: {exc}") from None
    except json.JSONDecodeError as exc:
        raise HwAwareError(f"{what} is not valid JSON ({exc.msg} at char {exc.pos})") from None
    except RecursionError:
        raise HwAwareError(f"{what}: JSON nested too deeply for an architecture") from None
    except ValueError:  # int() refuses integers of more than 4300 digits
        raise HwAwareError(f"{what}: an integer of more than 4300 digits is not a number of an architecture"
                           ) from None


def read_text_file(path: str | Path, what: str, max_bytes: int) -> str:
    """The UTF-8 text of a regular file of at most ``max_bytes`` bytes.

    Raises
    ------
    HwAwareError
        If the file is missing, not a regular file, unreadable, too large or not UTF-8 text.
    """
    try:
        size = os.stat(path).st_size
        if not Path(path).is_file():
            raise HwAwareError(f"{what} {path} is not a regular file")
        if size > max_bytes:
            raise HwAwareError(f"{what} {path} is {size:,} bytes; at most {max_bytes:,} are read")
        with open(path, "rb") as fh:
            data = fh.read(max_bytes + 1)
    except (OSError, ValueError) as exc:  # ValueError: a path with a NUL character
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise HwAwareError(f"cannot read {what} {path}: {reason}") from None
    if len(data) > max_bytes:  # it grew since stat()
        raise HwAwareError(f"{what} {path} is over {max_bytes:,} bytes")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise HwAwareError(f"{what} {path} is not UTF-8 text (a binary file?)") from None


def read_architecture_argument(value: str) -> str:
    """An ``--arch`` value: JSON text as it is, or the text of the file named by ``@FILE``."""
    if value.startswith("@"):
        return read_text_file(value[1:], "architecture file", limits.MAX_ARCH_JSON_BYTES)
    return value


def read_architecture_lines(path: str | Path, space: SearchSpace) -> list[Architecture]:
    """The canonical architectures of a file with one architecture JSON per line (blank lines skipped).

    Raises
    ------
    HwAwareError
        If the file cannot be read, holds no architecture or more than ``MAX_SAMPLES``, or a line is not a
        valid architecture of ``space``; the message names the line number.
    """
    text = read_text_file(path, "architectures file", limits.MAX_ARCHS_FILE_BYTES)
    archs: list[Architecture] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        if len(archs) >= limits.MAX_SAMPLES:
            raise HwAwareError(f"{path} holds more than {limits.MAX_SAMPLES:,} architectures; split it")
        try:
            archs.append(space.validate(parse_json_text(line, "architecture")))
        except HwAwareError as exc:
            raise HwAwareError(f"{path} line {number}: {exc}") from None
    if not archs:
        raise HwAwareError(f"{path} holds no architecture (one JSON per line)")
    return archs
