"""Warnings and start-up: the command line hides other packages' warnings but shows ours, the suite fails on
ours, and a command module that cannot be imported is an error."""

from __future__ import annotations

import warnings

import pytest

from nni_hwaware.errors import HwAwareWarning, silence_third_party_warnings


def test_the_cli_filter_keeps_our_warnings_and_drops_the_rest():
    with warnings.catch_warnings(record=True) as seen:
        silence_third_party_warnings()
        warnings.warn("pkg_resources is deprecated", DeprecationWarning, stacklevel=1)
        warnings.warn("torch version not tested", UserWarning, stacklevel=1)
        warnings.warn("this option is deprecated; use the other", HwAwareWarning, stacklevel=1)
    assert [str(w.message) for w in seen] == ["this option is deprecated; use the other"]


def test_the_suite_turns_our_warnings_into_errors():
    """pyproject.toml's filterwarnings: a warning of ours nobody expected fails the test that raised it."""
    with pytest.raises(HwAwareWarning):
        warnings.warn("unexpected", HwAwareWarning, stacklevel=1)


def test_a_command_module_that_cannot_be_imported_is_an_error(monkeypatch, capsys):
    """Not a command silently missing from --help: one line naming the module, exit 2."""
    import nni_hwaware.cli as cli

    monkeypatch.setattr(cli, "_COMMAND_MODULES", (*cli._COMMAND_MODULES, "nni_hwaware.cli.not_built"))
    assert cli.main(["--help"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: the command module nni_hwaware.cli.not_built")
