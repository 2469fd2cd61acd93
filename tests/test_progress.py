"""Progress bars (tqdm, one helper) and the stderr handler of the package's log messages."""

from __future__ import annotations

import logging

import pytest

from nni_hwaware.cli import configure_logging
from nni_hwaware.measure.progress import DEBUG_ENV, Progress, StderrHandler, log_to_stderr, progress_bar


def test_in_a_log_each_redraw_is_a_line_of_its_own(capsys):
    # pytest's captured stderr is no terminal, as in a log file or NNI's trial log
    with progress_bar(3, "measure convnet") as bar:
        bar.update(1)
        bar.refresh()
        bar.update(2)
    err = capsys.readouterr().err
    assert "\r" not in err and "\x1b" not in err
    lines = err.splitlines()
    assert lines[0].startswith("measure convnet 0/3 (0%)") and "ETA" in lines[0]
    assert lines[1].startswith("measure convnet 1/3 (33%)")
    assert lines[-1].startswith("measure convnet 3/3 (100%)") and "model/s" in lines[-1]
    assert len(lines) == len(set(lines)) == 3  # the final redraw of close() is not repeated


def test_a_disabled_bar_draws_nothing(capsys):
    with progress_bar(3, "measure convnet", enabled=False) as bar:
        bar.update(3)
    assert capsys.readouterr().err == ""


def test_campaign_progress_shows_last_latency_drift_and_resumed_models(capsys):
    progress = Progress(10, "measure mobilenetv3")
    progress.total = 12
    progress.resume(4, note="4 already stored")
    progress.update(5, last_ms=1.23456)
    progress.update(drift=0.012)
    progress.close()
    last = capsys.readouterr().err.splitlines()[-1]
    assert last.startswith("measure mobilenetv3 5/12 (42%)")
    assert last.endswith("last 1.235 ms  QC drift 1.2%  4 already stored")
    assert progress.bar.initial == 4  # models stored before this run are left out of the rate


@pytest.fixture
def package_logger():
    """The ``nni_hwaware`` logger, restored after the test (other tests may have configured it)."""
    logger = logging.getLogger("nni_hwaware")
    handlers, level = list(logger.handlers), logger.level
    logger.handlers = [h for h in handlers if not isinstance(h, StderrHandler)]
    yield logger
    logger.handlers, logger.level = handlers, level


def test_configure_logging_prints_library_messages_bare_on_stderr_once(package_logger, capsys, monkeypatch):
    monkeypatch.delenv(DEBUG_ENV, raising=False)
    configure_logging()
    configure_logging()  # a second call adds no second handler
    assert sum(isinstance(h, StderrHandler) for h in package_logger.handlers) == 1
    library = logging.getLogger("nni_hwaware.measure.campaign")
    library.info("QC: references drift 4.0%% > %d%%", 3)
    library.debug("not shown")
    captured = capsys.readouterr()
    assert captured.err == "QC: references drift 4.0% > 3%\n" and captured.out == ""


def test_debug_messages_with_the_environment_variable(package_logger, capsys, monkeypatch):
    monkeypatch.setenv(DEBUG_ENV, "1")
    log_to_stderr()
    logging.getLogger("nni_hwaware.nas.fallback").debug("refit details")
    assert capsys.readouterr().err == "refit details\n"
