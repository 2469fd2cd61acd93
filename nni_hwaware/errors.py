"""The one exception type the command line turns into a one-line message and a non-zero exit."""


class HwAwareError(Exception):
    """A problem with the user's input or environment, phrased as what is wrong and what to do.

    The CLI prints ``error: <message>`` and exits with status 2; it never shows a traceback for it.
    """
