"""A campaign killed with SIGKILL loses at most the model in flight; running it again completes it exactly."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from nni_hwaware.spaces import load_space, sample_architectures

N = 8
ARGS = ["measure", "--space", "mobilenetv3", "--n", str(N), "--seed", "7", "--input-size", "16", "--runs", "40",
        "--warmup", "2", "--energy", "none", "--qc-every", "4", "--qc-references", "1", "--drift", "0.5",
        "--window", "2"]


def _rows(db) -> int:
    try:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
        try:
            return conn.execute("SELECT count(*) FROM measurements").fetchone()[0]
        finally:
            conn.close()
    except sqlite3.OperationalError:  # not created yet
        return 0


@pytest.mark.slow
def test_kill_9_mid_campaign_then_resume(tmp_path, cli):
    db = tmp_path / "m.db"
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    proc = subprocess.Popen([sys.executable, "-m", "nni_hwaware.cli", *ARGS, "--db", str(db), "--quiet"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    deadline = time.monotonic() + 120
    while _rows(db) < 2 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert proc.poll() is None, "the campaign finished before it could be killed; make it longer"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL

    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    survived = conn.execute("SELECT count(*) FROM measurements").fetchone()[0]
    assert 2 <= survived < N
    assert conn.execute("SELECT count(*) FROM measurements WHERE latency_ms IS NULL OR runs != 40").fetchone()[0] == 0
    conn.close()

    again = cli(*ARGS, "--db", str(db), "--json", "--quiet")
    assert again.returncode == 0, again.stderr
    summary = json.loads(again.stdout)
    assert summary["skipped"] == survived and summary["measured"] == N - survived

    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert conn.execute("SELECT count(*) FROM measurements").fetchone()[0] == N
    duplicates = conn.execute(
        "SELECT count(*) FROM (SELECT arch_id FROM measurements GROUP BY arch_id, device_id, backend, precision, "
        "input_size, batch_size HAVING count(*) > 1)").fetchone()[0]
    assert duplicates == 0
    space = load_space("mobilenetv3")
    stored = {r[0] for r in conn.execute(
        "SELECT a.arch_hash FROM measurements m JOIN architectures a ON a.id = m.arch_id")}
    assert stored == {space.arch_hash(a) for a in sample_architectures(space, N, seed=7)}
    # every model is covered by a QC check after the resumed run
    assert {r[0] for r in conn.execute("SELECT DISTINCT qc_status FROM measurements")} == {"ok"}
