"""NNI's web UI as users see it: a real quickstart experiment (2 trials) opened in headless Chromium.

The trials table of NNI 3.0's "Trials detail" page (``/detail``) shows the default metric (accuracy) by
default; the other keys of the final-metric dict are columns a user adds with "Add/Remove columns", which the
web UI keeps in the browser's localStorage under ``<experiment id>_columns`` (``{"value": JSON list of column
keys, "time", "expire", "isSelectall"}``; a final-metric key ``k`` is the column ``metric/k``, titled
``k (metric)``). The test stores that choice as the dialog would, opens the page, waits until the table is
rendered and checks every trial's row against NNI's REST API: accuracy, ``latency_ms``, ``energy_mj`` and where
the latency came from (``latency_source``).

Chromium is driven through its DevTools protocol (``websockets``, which NNI depends on), so the test waits for
the rendered table rather than a fixed time. Without Chromium (Debian: ``apt-get install chromium``) it skips.
``NNI_HWAWARE_UPDATE_SCREENSHOT=1`` also writes the screenshot to docs/webui.png (shown by the README).
"""

from __future__ import annotations

import base64
import contextlib
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from nni_hwaware.nas.experiment import experiment_processes, free_port, read_trials, stop_experiment

REPO = Path(__file__).resolve().parents[1]
SCREENSHOT = REPO / "docs" / "webui.png"
UPDATE_ENV = "NNI_HWAWARE_UPDATE_SCREENSHOT"
METRICS = ("accuracy", "latency_ms", "energy_mj", "latency_source")
#: The table's columns, by the web UI's own keys (TableList.tsx): trial number, id and status of the default ones,
#: and the final metric's keys (its "Default metric" column is ``accuracy`` again: left out, for the width).
COLUMNS = ["sequenceId", "id", "status", *(f"metric/{m}" for m in METRICS)]
WIDTH, HEIGHT = 1760, 900

# The table as text: column titles, those in the window (not scrolled out of sight), and each row's cells by title.
READ_TABLE = """(() => {
  const headers = [...document.querySelectorAll('[role=columnheader]')];
  const titles = headers.map(e => e.innerText.trim());
  const inView = e => { const r = e.getBoundingClientRect();
                        return r.left >= 0 && r.right <= innerWidth && r.top >= 0 && r.bottom <= innerHeight; };
  const visible = headers.filter(inView).map(e => e.innerText.trim());
  const rows = [...document.querySelectorAll('[role=row]')]
    .map(r => [...r.querySelectorAll('[role=gridcell]')].map(c => c.innerText.trim()))
    .filter(cells => cells.length === titles.length)
    .map(cells => Object.fromEntries(titles.map((t, i) => [t, cells[i]])));
  return JSON.stringify({titles, visible, rows});
})()"""


def _chromium() -> str:
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    pytest.skip("Chromium is not installed (Debian: apt-get install chromium)")


class _Browser:
    """Headless Chromium with one page, driven over the DevTools protocol."""

    def __init__(self, exe: str, profile: Path, timeout: float = 60) -> None:
        self.timeout, self.profile, self.ws = timeout, profile, None
        self.proc = subprocess.Popen(
            [exe, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
             "--no-default-browser-check", "--disable-extensions", f"--window-size={WIDTH},{HEIGHT}",
             # nothing but this machine: the web UI's icon font from a CDN fails at once, not after a timeout
             "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost",
             "--remote-debugging-port=0", f"--user-data-dir={profile}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)

    def connect(self) -> None:
        from websockets.sync.client import connect

        active = self.profile / "DevToolsActivePort"
        self._wait(lambda: active.is_file() and len(active.read_text().split()) == 2, "to start")
        port = active.read_text().split()[0]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=self.timeout) as response:
            page = next(t for t in json.loads(response.read()) if t["type"] == "page")
        self.ws = connect(page["webSocketDebuggerUrl"], max_size=None, open_timeout=self.timeout)
        self.sent = 0
        self.call("Emulation.setDeviceMetricsOverride", width=WIDTH, height=HEIGHT, deviceScaleFactor=1,
                  mobile=False)

    def _wait(self, ready, what: str) -> None:
        deadline = time.monotonic() + self.timeout
        while not ready():
            if self.proc.poll() is not None:
                pytest.fail(f"Chromium exited ({self.proc.returncode}): {self.proc.stderr.read()[-2000:]}")
            if time.monotonic() > deadline:
                pytest.fail(f"Chromium did not {what} in {self.timeout:.0f} s")
            time.sleep(0.2)

    def call(self, method: str, **params):
        self.sent += 1
        self.ws.send(json.dumps({"id": self.sent, "method": method, "params": params}))
        while True:  # events come in between; Chromium dying closes the socket (an exception, not a hang)
            message = json.loads(self.ws.recv(timeout=self.timeout))
            if message.get("id") == self.sent:
                assert "error" not in message, (method, message["error"])
                return message["result"]

    def evaluate(self, expression: str):
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        return result["result"].get("value")

    def open(self, url: str) -> None:
        self.call("Page.enable")
        self.call("Page.navigate", url=url)
        self._wait(lambda: self.evaluate("document.readyState") == "complete", f"load {url}")

    def close(self) -> None:
        if self.ws is not None:
            with contextlib.suppress(Exception):
                self.ws.close()
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)


def _run_quickstart(out: Path, port: int, trials: int = 2, timeout: float = 900) -> dict:
    """``nni-hwaware nas run`` of the quickstart, left running for its web UI; its JSON report.

    On a timeout it gets SIGTERM, on which it stops its experiment (the caller's cleanup stops it too).
    """
    proc = subprocess.Popen([sys.executable, "-m", "nni_hwaware.cli", "nas", "run", "--config",
                             str(REPO / "experiments" / "quickstart.yml"), "--trials", str(trials), "--port",
                             str(port), "--out", str(out), "--timeout", "600", "--json"],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.terminate()
        try:
            proc.communicate(timeout=120)
        finally:
            proc.kill()
        pytest.fail(f"nni-hwaware nas run did not finish in {timeout:.0f} s")
    assert proc.returncode == 0 and stdout.strip(), stderr[-3000:]
    return json.loads(stdout)


def _stop_all(out: Path) -> None:
    """Stop every experiment started under ``out`` (NNI's working directory holds one folder per experiment)."""
    for folder in sorted((out / "nni-experiments").glob("*")):
        if folder.is_dir() and experiment_processes(folder.name):
            stop_experiment(folder.name)


def _rows(table: dict) -> dict[str, dict[str, str]]:
    """Rows by trial id (the ID cell's first line; then comes its copy button's icon)."""
    return {r["ID"].splitlines()[0]: r for r in table.get("rows", []) if r.get("ID")}


def _table(browser: _Browser, wanted: set[str], timeout: float = 90) -> dict:
    """The trials table once it shows every wanted trial with its metrics."""
    deadline, table = time.monotonic() + timeout, {}
    while time.monotonic() < deadline:
        assert browser.proc.poll() is None, "Chromium exited"
        table = json.loads(browser.evaluate(READ_TABLE) or "{}")
        rows = _rows(table)
        if wanted <= set(rows) and all(rows[t].get("latency_source (metric)") for t in wanted):
            return table
        time.sleep(1)
    pytest.fail(f"the web UI did not show trials {sorted(wanted)} in {timeout:.0f} s; it showed {table}")


def _close(shown: str, value: float) -> bool:
    return math.isclose(float(shown), value, rel_tol=1e-9, abs_tol=1e-12)


@pytest.mark.slow
def test_web_ui_trial_table_shows_accuracy_latency_energy_and_source(tmp_path, monkeypatch):
    chromium = _chromium()
    pytest.importorskip("websockets.sync.client", reason="needs websockets >= 11 (NNI 3.0 depends on websockets)")
    # NNI's experiment registry lives in ~/nni-experiments: a HOME of our own, also for the stop in cleanup
    (tmp_path / "home").mkdir()
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("PYTHONWARNINGS", "ignore")
    out, port, browser = tmp_path / "run", free_port(), None
    try:
        report = _run_quickstart(out, port)
        assert report["status"] == "DONE" and report["succeeded"] == 2 and not report.get("stopped"), report
        experiment_id, trials = report["experiment_id"], read_trials(port)
        assert {t["trial"] for t in trials} == {r["trial"] for r in report["rows"]}

        browser = _Browser(chromium, tmp_path / "chromium")
        browser.connect()
        # the column choice "Add/Remove columns" saves (ChangeColumnComponent.tsx), set on the web UI's origin
        choice = {"value": json.dumps(COLUMNS), "time": int(time.time() * 1000), "expire": 30 * 24 * 3600 * 1000,
                  "isSelectall": False}
        browser.open(f"http://localhost:{port}/favicon.ico")
        browser.evaluate(f"localStorage.setItem({json.dumps(experiment_id + '_columns')}, "
                         f"{json.dumps(json.dumps(choice))})")
        browser.open(f"http://localhost:{port}/detail")
        table = _table(browser, {t["trial"] for t in trials})
        titles = table["titles"]
        assert [f"{m} (metric)" for m in METRICS] == [t for t in titles if t.endswith(" (metric)")], titles
        assert {f"{m} (metric)" for m in METRICS} <= set(table["visible"]), table  # in the screenshot too
        rows = _rows(table)
        for trial in trials:
            row, result = rows[trial["trial"]], trial["result"]
            assert row["Status"] == "SUCCEEDED", row
            assert result["default"] == result["accuracy"], result  # NNI's default metric is the accuracy
            assert _close(row["accuracy (metric)"], result["accuracy"]), (row, result)
            assert _close(row["latency_ms (metric)"], result["latency_ms"]), (row, result)
            assert _close(row["energy_mj (metric)"], result["energy_mj"]), (row, result)
            assert row["latency_source (metric)"] == result["latency_source"] == "surrogate", (row, result)

        shot = base64.b64decode(browser.call("Page.captureScreenshot", format="png")["data"])
        (tmp_path / "webui.png").write_bytes(shot)
        if os.environ.get(UPDATE_ENV) == "1":
            assert len(shot) < 300_000, f"the screenshot is {len(shot)} bytes; docs/webui.png must stay small"
            SCREENSHOT.parent.mkdir(exist_ok=True)
            SCREENSHOT.write_bytes(shot)
    finally:
        if browser is not None:
            browser.close()
        _stop_all(out)
    assert all(not experiment_processes(f.name) for f in (out / "nni-experiments").glob("*"))
