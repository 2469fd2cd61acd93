"""The exceptions the command line turns into a one-line message and a non-zero exit.

Everything a user can fix is a :class:`HwAwareError`; the subclasses say which kind of thing is wrong, so
library callers can catch one kind (a bad parameter is also a ``ValueError``).
"""


class HwAwareError(Exception):
    """A problem with the user's input or environment, phrased as what is wrong and what to do.

    The CLI prints ``error: <message>`` and exits with status 2; it never shows a traceback for it.
    """


class ArtifactError(HwAwareError):
    """A predictor folder or other saved artifact that is missing, corrupt, of another kind, or unsafe to load."""


class ParameterError(HwAwareError, ValueError):
    """A parameter out of its range or of the wrong type (a seed, a count, an input size, a width multiplier)."""


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
