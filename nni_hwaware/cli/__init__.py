"""The ``nni-hwaware`` command line: one sub-command module per stage of the data flow.

Every sub-command module exposes ``register(subparsers)``; errors a user can fix are raised as
:class:`~nni_hwaware.errors.HwAwareError` and printed as one line with exit status 2.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

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
    return parser


def _version() -> str:
    from nni_hwaware import __version__

    return __version__


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``nni-hwaware`` console script."""
    if not os.environ.get("NNI_HWAWARE_SHOW_WARNINGS"):
        silence_third_party_warnings()
    try:
        parser = build_parser()
    except HwAwareError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except HwAwareError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
