"""Checks of single values shared by the spaces layer: numbers in range, and safe one-line renderings.

Every message names the value by its parameter name (``seed``, ``input_size``) or by the path of the field
in a file (``units[2].width``), never by a command-line flag, so the same check serves the library and every
command. :func:`show` renders any value a user may have typed in a few characters: a message must stay one
short line even for a 4 MB string, a 10,000-digit integer or a list nested a million times.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

from nni_hwaware.errors import ParameterError
from nni_hwaware.spaces import limits

_SHOW_CHARS = 40  # longest rendering of a string or number in a message


def show(value: Any) -> str:
    """A short, JSON-like rendering of any value for an error message (never raises, never recurses).

    Examples
    --------
    >>> show(float("nan")), show(True), show([1, [2]]), show(10**5000)
    ('NaN', 'true', 'a list', 'an integer of 5001 digits')
    """
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, numbers.Integral):  # numpy integers print as Python's
        value = int(value)
    elif isinstance(value, numbers.Real):
        value = float(value)
    if isinstance(value, int):
        if value.bit_length() > 128:  # repr() of a huge int is slow, and refused above 4300 digits
            return f"an integer of {_digits(value)} digits"
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        if math.isinf(value):
            return "Infinity" if value > 0 else "-Infinity"
        return repr(value)
    if isinstance(value, str):
        text = value if len(value) <= _SHOW_CHARS else value[: _SHOW_CHARS - 3] + "..."
        return repr(text)
    names = {dict: "an object", list: "a list", tuple: "a list", bytes: "binary data"}
    for kind, name in names.items():
        if isinstance(value, kind):
            return name
    return f"a {type(value).__name__}"


def _digits(value: int) -> int:
    # log10 of 2**bits, +1: exact enough for a message, and works for any size of integer
    return int(abs(value).bit_length() * math.log10(2)) + 1


def is_int(value: Any) -> bool:
    """True for integers (numpy's too), but not for booleans (``True`` is an ``int`` in Python, not in JSON)."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def finite_real(value: Any) -> float | None:
    """The value as a finite float if it is a real number (not a boolean, NaN, infinity or a huge int)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return None
    try:
        number = float(value)
    except OverflowError:  # an int beyond the float range
        return None
    return number if math.isfinite(number) else None


def check_int(value: Any, name: str, lo: int, hi: int, what: str, why: str = "") -> int:
    """Return ``value`` if it is an integer in ``lo..hi``, else raise :class:`ParameterError`.

    Parameters
    ----------
    value
        The value to check.
    name
        The parameter name used in the message.
    lo, hi
        The inclusive range.
    what
        What the value must be, for the message when it is below ``lo`` or not an integer
        (``"a non-negative integer"``).
    why
        Why ``hi`` is the cap, for the message when the value is above it.
    """
    parameter = name if name.isidentifier() else None  # "counts[2]" is an element, not a parameter
    if not is_int(value) or value < lo:
        raise ParameterError(f"{name} must be {what}, got {show(value)}", parameter=parameter)
    if value > hi:
        reason = f" ({why})" if why else ""
        raise ParameterError(f"{name} must be at most {hi}{reason}, got {show(value)}", parameter=parameter)
    return int(value)


def check_positive_real(value: Any, name: str, hi: float, why: str = "") -> float:
    """Return ``value`` as a float if it is a finite number in ``(0, hi]``, else raise :class:`ParameterError`."""
    number = finite_real(value)
    parameter = name if name.isidentifier() else None
    if number is None or number <= 0:
        raise ParameterError(f"{name} must be a positive finite number, got {show(value)}", parameter=parameter)
    if number > hi:
        reason = f" ({why})" if why else ""
        raise ParameterError(f"{name} must be at most {hi:g}{reason}, got {show(value)}", parameter=parameter)
    return number


# ------------------------------------------------------------------------- parameters of the library
def check_seed(seed: Any) -> int:
    """A random seed: an integer in ``0..2**63-1`` (numpy refuses negative seeds; SQLite stores 64 bits)."""
    return check_int(
        seed, "seed", 0, limits.MAX_SEED, "a non-negative integer", "seeds are stored as 64-bit integers"
    )


def check_count(n: Any, name: str = "n") -> int:
    """A number of architectures to draw: ``0..MAX_SAMPLES``."""
    return check_int(
        n, name, 0, limits.MAX_SAMPLES, "a non-negative integer",
        "draw larger sets in several calls with different seeds",
    )


def check_bins(bins: Any) -> int:
    """A number of bins of total block count: a positive integer (more bins than totals are merged)."""
    if not is_int(bins) or bins < 1:
        raise ParameterError(f"bins must be a positive integer, got {show(bins)}", parameter="bins")
    return int(bins)


def check_input_size(input_size: Any) -> int:
    """An input resolution: an integer in ``1..MAX_INPUT_SIZE``."""
    return check_int(
        input_size, "input_size", 1, limits.MAX_INPUT_SIZE, "a positive integer",
        "larger inputs need tens of GB of memory",
    )


def check_width_mult(width_mult: Any) -> float:
    """A channel multiplier: a finite number in ``(0, MAX_WIDTH_MULT]``."""
    return check_positive_real(
        width_mult, "width_mult", limits.MAX_WIDTH_MULT, "wider networks exceed the memory caps"
    )


def check_num_classes(num_classes: Any) -> int:
    """A number of classifier outputs: an integer in ``1..MAX_NUM_CLASSES``."""
    return check_int(num_classes, "num_classes", 1, limits.MAX_NUM_CLASSES, "a positive integer")
