"""The harness of the bad-input tests: a case runs one CLI command on bad input and must fail cleanly.

A clean failure is what the README promises for any input a user can get wrong: exit status 2, exactly one
line on stderr that starts with ``error:``, no traceback, and no file created, changed or removed in the
working folder (which holds every file the case set up). Cases run the real command line in-process
(:func:`nni_hwaware.cli.main`), so a hundred of them take seconds, not minutes; an exception that escapes
``main`` is exactly the traceback a user would see, and fails the case.

Each test module builds a list of :class:`Case` and parametrizes over it with :func:`check_case`.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from nni_hwaware.cli import main as cli_main


@dataclass
class Case:
    """One bad input.

    Parameters
    ----------
    id
        Short unique name (the pytest id).
    argv
        The command line after ``nni-hwaware``; ``{tmp}`` in an argument is replaced by the case's folder.
    setup
        Makes the files the case needs inside the folder it is given (the working folder of the command).
    expect
        A lower-case piece of text the error line must contain (what is wrong), or ``None``.
    """

    id: str
    argv: list[str]
    setup: Callable[[Path], None] | None = None
    expect: str | None = None
    watch: list[str] = field(default_factory=list)


def snapshot(folder: Path) -> dict[str, str]:
    """Every file and folder below ``folder`` with a digest of its content (folders: ``dir``)."""
    out: dict[str, str] = {}
    for root, dirs, files in os.walk(folder):
        for name in dirs:
            out[os.path.relpath(os.path.join(root, name), folder)] = "dir"
        for name in files:
            path = os.path.join(root, name)
            with open(path, "rb") as fh:
                out[os.path.relpath(path, folder)] = hashlib.sha256(fh.read()).hexdigest()
    return out


def run_in_process(argv: list[str], cwd: Path, entry: Callable[[list[str]], int] = cli_main) -> tuple[int, str, str]:
    """``nni-hwaware ARGV`` (or another ``entry`` point) in this process, in ``cwd``: exit status, stdout, stderr."""
    out, err = io.StringIO(), io.StringIO()
    old = Path.cwd()
    os.chdir(cwd)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = entry(argv)
            except SystemExit as exc:  # argparse usage errors and --help
                code = exc.code if isinstance(exc.code, int) else 1
            except Exception:  # what a user would see as a traceback
                err.write(traceback.format_exc())
                code = -1
    finally:
        os.chdir(old)
    return int(code), out.getvalue(), err.getvalue()


def check_case(case: Case, tmp_path: Path) -> str:
    """Run a case and assert it fails cleanly; returns the error line."""
    work = tmp_path / "work"
    work.mkdir()
    if case.setup is not None:
        case.setup(work)
    argv = [a.replace("{tmp}", str(work)) for a in case.argv]
    before = snapshot(work)
    code, stdout, stderr = run_in_process(argv, work)
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert code == 2, f"exit {code}, stderr: {stderr[-2000:]}"
    assert "Traceback" not in stderr + stdout, stderr[-2000:]
    assert len(lines) == 1, f"expected one error line, got: {lines[:10]}"
    assert lines[0].startswith("error: "), lines[0]
    if case.expect is not None:
        assert case.expect.lower() in lines[0].lower(), lines[0]
    after = snapshot(work)
    changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
    assert not changed, f"files created, changed or removed: {changed[:10]}"
    return lines[0]


def field_path(path: tuple) -> str:
    """A path into a nested document as the spaces layer writes it in messages: ``units[2].choices.kernel_size``."""
    out = ""
    for key in path:
        out += f"[{key}]" if isinstance(key, int) else (f".{key}" if out else key)
    return out
