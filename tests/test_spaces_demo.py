"""`nni-hwaware spaces demo`: every space sampled, built, run, exported to ONNX and frozen through NNI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_spaces_demo_builds_runs_and_exports_every_space(tmp_path):
    out = tmp_path / "demo"
    result = subprocess.run(
        [sys.executable, "-m", "nni_hwaware.cli", "spaces", "demo", "--out", str(out), "--per-space", "1"],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr
    rows = json.loads((out / "summary.json").read_text())
    assert {r["space"] for r in rows} >= {"resnet", "mobilenetv3", "densenet", "convnet"}
    for row in rows:
        assert Path(row["onnx"]).stat().st_size > 0
    assert (out / "resnet.nni-hpo.json").is_file()
