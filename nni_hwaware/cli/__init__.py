"""The ``nni-hwaware`` command line: one sub-command module per stage of the data flow.

Every sub-command module exposes ``register(subparsers)``; errors a user can fix are raised as
:class:`~nni_hwaware.errors.HwAwareError` and printed as one line with exit status 2, the parameters it names
written as the flags of the command that ran (:mod:`nni_hwaware.cli.options`).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from nni_hwaware.cli.options import PARSER_KEY, error_message, remember_parsers
from nni_hwaware.errors import HwAwareError, silence_third_party_warnings

# Sub-command modules, in the order of the data flow; each registers its own parsers.
_COMMAND_MODULES = (
    "nni_hwaware.cli.spaces",
    "nni_hwaware.cli.measure",
    "nni_hwaware.cli.device",
    "nni_hwaware.cli.esm",
    "nni_hwaware.cli.predict",
    "nni_hwaware.cli.calibrate",
    "nni_hwaware.cli.jetson",
    "nni_hwaware.cli.nas",
    "nni_hwaware.cli.nnmeter",
)


class _Parser(argparse.ArgumentParser):
    """argparse, but usage errors are one line and exit 2 like every other error of ours."""

    def error(self, message: str) -> None:  # type: ignore[override]
        sys.stderr.write(f"error: {message} (see `{self.prog} --help`)\n")
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    """Build the full parser with every available sub-command."""
    parser = _Parser(prog="nni-hwaware", description="Hardware-aware NAS for NNI 3.0")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    subparsers.required = True
    for name in _COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ImportError as exc:  # a broken install must not just drop the command from --help
            raise HwAwareError(f"the command module {name} cannot be imported ({exc}); the installation is "
                               "incomplete: reinstall nni-hwaware (./run.sh test or pip install -e .)") from None
        module.register(subparsers)
    remember_parsers(parser)  # so an error names the options of the command that ran (cli.options)
    return parser


def _version() -> str:
    from nni_hwaware import __version__

    return __version__


def configure_logging() -> None:
    """Show the library's log messages while a command runs: the bare message on stderr, from INFO up (DEBUG
    too when ``NNI_HWAWARE_DEBUG=1``), above any progress bar. Results stay on stdout; calling it again
    changes nothing."""
    from nni_hwaware.measure.progress import log_to_stderr

    log_to_stderr()


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``nni-hwaware`` console script."""
    if not os.environ.get("NNI_HWAWARE_SHOW_WARNINGS"):
        silence_third_party_warnings()
    configure_logging()
    try:
        parser = build_parser()
    except HwAwareError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except HwAwareError as exc:  # the library names parameters; the command line shows them as its flags
        sys.stderr.write(f"error: {error_message(exc, getattr(args, PARSER_KEY, None))}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
