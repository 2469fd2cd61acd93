"""The exceptions the command line turns into a one-line message and a non-zero exit.

Everything a user can fix is a :class:`HwAwareError`; the subclasses say which kind of thing is wrong, so
library callers can catch one kind (a bad parameter is also a ``ValueError``).

Messages are written for the library's users: a bad parameter is named as the Python caller knows it
(``input_size must be ...``), never by a command-line flag. The command line maps parameter names to its
flags in one place, :mod:`nni_hwaware.cli.options`, when it prints the error.
"""

from __future__ import annotations


class HwAwareError(Exception):
    """A problem with the user's input or environment, phrased as what is wrong and what to do.

    The CLI prints ``error: <message>`` and exits with status 2; it never shows a traceback for it.

    Parameters
    ----------
    message
        What is wrong and what to do. A message about a parameter starts with the parameter's Python name
        (``input_size must be a positive integer, got 0``).
    parameter
        The library's name of the parameter the message is about (``"input_size"``), if any.
    mentions
        Other parameter names the message uses (``min_runs (9) exceeds runs (5)``: ``("runs",)``).

    The command line writes ``parameter`` as its flag where it starts the message (``--input-size must be
    ...``), and each of ``mentions`` wherever the message uses it as a whole word, so a message uses a
    mentioned name only to mean that parameter (:func:`nni_hwaware.cli.options.error_message`).

    Examples
    --------
    >>> exc = ParameterError("input_size must be a positive integer, got 0", parameter="input_size")
    >>> exc.parameter, isinstance(exc, ValueError), isinstance(exc, HwAwareError)
    ('input_size', True, True)
    >>> import pickle
    >>> pickle.loads(pickle.dumps(exc)).parameter  # survives the way back from a worker process
    'input_size'
    """

    def __init__(self, message: str = "", *, parameter: str | None = None, mentions: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.parameter = parameter
        self.mentions = tuple(mentions)

    def __reduce__(self) -> tuple:
        # Exception pickles as cls(*args): the keywords would be lost on the way back from a worker process
        return _rebuild, (type(self), str(self), self.parameter, self.mentions)


def _rebuild(cls: type[HwAwareError], message: str, parameter: str | None, mentions: tuple[str, ...]) -> HwAwareError:
    """Unpickle a :class:`HwAwareError` (or subclass) with its parameter names."""
    return cls(message, parameter=parameter, mentions=mentions)


class ArtifactError(HwAwareError):
    """A predictor folder or other saved artifact that is missing, corrupt, of another kind, or unsafe to load."""


class ParameterError(HwAwareError, ValueError):
    """A parameter out of its range or of the wrong type (a seed, a count, an input size, a width multiplier).

    Raise it with the parameter's name: ``ParameterError(f"test_size must be ...", parameter="test_size")``.
    """


class DeviceError(HwAwareError):
    """A measuring device that cannot be reached, stopped answering, refused us, or is not the one expected."""


class HwAwareWarning(UserWarning):
    """A warning of ours (a deprecation, a doubtful setting); shown even where third-party warnings are not."""


def silence_third_party_warnings() -> None:
    """Ignore the warnings other packages raise on import and use (NNI, nn-Meter and torch warn about versions
    and ``pkg_resources``; users cannot act on them), but keep showing ours (:class:`HwAwareWarning`)."""
    import warnings

    warnings.filterwarnings("ignore")
    warnings.filterwarnings("default", category=HwAwareWarning)
