"""``nni-hwaware measure`` / ``dataset`` end to end on this machine, quality control, and bad input."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
from pathlib import Path

import pandas as pd
import pytest
from conftest import read_only_folder

from nni_hwaware.cli import main
from nni_hwaware.measure.store import MeasurementStore
from nni_hwaware.spaces import load_space, sample_architectures

SAMPLE = ["--space", "mobilenetv3", "--n", "5", "--seed", "3", "--strategy", "balanced", "--bins", "2",
          "--input-size", "16"]
FAST = ["--runs", "20", "--warmup", "2", "--energy", "none"]
# this machine is shared: a loose drift threshold keeps QC from re-measuring here (QC has its own test)
QC = ["--qc-every", "3", "--qc-references", "2", "--drift", "0.5", "--window", "2"]


def _summary(stdout: str) -> dict:
    return json.loads(stdout)


@pytest.mark.slow
def test_measure_export_resume_end_to_end(cli, tmp_path):
    db = tmp_path / "m.db"
    run = cli("measure", *SAMPLE, *FAST, *QC, "--db", str(db), "--json")
    assert run.returncode == 0, run.stderr
    summary = _summary(run.stdout)
    assert summary["measured"] == 5 and summary["skipped"] == 0 and summary["db_rows"] == 5
    assert summary["qc_checks"] >= 1 + 3  # the device baseline, then one per window of 2 models (or more: re-measured)
    assert "measure mobilenetv3 5/5 (100%)" in run.stderr and "ETA" in run.stderr and "QC drift" in run.stderr

    # the same arguments select the same architectures as `spaces sample`
    sampled = cli("spaces", "sample", "mobilenetv3", "--n", "5", "--seed", "3", "--strategy", "balanced",
                  "--bins", "2")
    space = load_space("mobilenetv3")
    expected = [space.canonical_json(json.loads(line)) for line in sampled.stdout.splitlines()]
    csv = cli("dataset", "export", "--db", str(db))
    assert csv.returncode == 0, csv.stderr
    df = pd.read_csv(__import__("io").StringIO(csv.stdout))
    assert sorted(df["arch"]) == sorted(expected)
    for column in ("space", "arch", "device", "input_size", "latency_ms", "latency_std_ms", "runs", "energy_mj"):
        assert column in df.columns
    assert (df["space"] == "mobilenetv3").all() and (df["input_size"] == 16).all() and (df["runs"] == 20).all()
    assert (df["latency_ms"] > 0).all() and df["energy_mj"].isna().all()
    assert df["device"].nunique() == 1
    # every window normalized by its references; the figure as timed is exported beside it
    assert (df["normalization"] == "reference-window").all() and (df["latency_raw_ms"] > 0).all()

    # running the same command again measures nothing new
    again = cli("measure", *SAMPLE, *FAST, *QC, "--db", str(db), "--json")
    assert again.returncode == 0, again.stderr
    assert _summary(again.stdout)["skipped"] == 5 and _summary(again.stdout)["measured"] == 0
    assert _summary(again.stdout)["db_rows"] == 5

    out = tmp_path / "m.parquet"
    assert main(["dataset", "export", "--db", str(db), "--out", str(out)]) == 0
    assert sorted(pd.read_parquet(out)["arch"]) == sorted(expected)


def test_measure_onnx_file(cli, tmp_path):
    space = load_space("convnet")
    arch = space.canonical_json(sample_architectures(space, 1, seed=1)[0])
    model = tmp_path / "net.onnx"
    assert cli("spaces", "build", "convnet", "--arch", arch, "--onnx", str(model), "--input-size", "12").returncode == 0
    db = tmp_path / "m.db"
    run = cli("measure", "--onnx", str(model), *FAST, "--db", str(db))
    assert run.returncode == 0, run.stderr
    assert "net.onnx:" in run.stdout and "ms" in run.stdout
    assert main(["measure", "--onnx", str(model), *FAST, "--db", str(db), "--quiet"]) == 0
    with MeasurementStore(db, readonly=True) as store:
        df = store.dataset(space="onnx")
    assert len(df) == 1 and df["input_size"].iloc[0] == 12
    assert json.loads(df["arch"].iloc[0])["file"] == "net.onnx"


def test_adaptive_mode_reports_the_runs_it_saves(tmp_path, capsys):
    args = ["measure", "--space", "convnet", "--n", "3", "--input-size", "8", "--runs", "150", "--warmup", "5",
            "--adaptive", "--ci-width", "0.05", "--min-runs", "20", "--qc-every", "0", "--energy", "none",
            "--db", str(tmp_path / "m.db"), "--json", "--quiet"]
    assert main(args) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["runs_max"] == 450
    assert summary["runs_done"] + summary["runs_saved"] == 450
    assert summary["runs_done"] >= 3 * 20  # never below --min-runs
    assert summary["runs_saved"] > 0 and summary["runs_saved_pct"] == round(100 * summary["runs_saved"] / 450, 1)


@pytest.mark.slow
def test_quality_control_remeasures_on_drift_and_marks_what_stays_off(tmp_path, capsys):
    db = tmp_path / "m.db"
    common = ["measure", "--space", "convnet", "--n", "3", "--input-size", "8", "--runs", "10", "--warmup", "1",
              "--energy", "none", "--qc-every", "2", "--qc-references", "2", "--json", "--quiet", "--window", "0"]
    # a threshold of 1e-12 fails every check that is not bit-identical: the models are measured again, then kept
    assert main([*common, "--drift", "1e-12", "--db", str(db)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["remeasured"] >= 2 and summary["drift_flagged"] == 3
    with MeasurementStore(db, readonly=True) as store:
        df = store.dataset()
        history = store.count("measurement_history")
        checks = store.qc_checks(summary["campaign"])
    assert len(df) == 3 and set(df["qc_status"]) == {"drift"} and history == summary["remeasured"]
    assert (df["attempt"] > 1).all()
    assert {c["check_index"] for c in checks} == set(range(summary["qc_checks"]))
    # a generous threshold: every model is covered by a good check
    db2 = tmp_path / "ok.db"
    assert main([*common, "--drift", "10", "--db", str(db2)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["remeasured"] == 0
    with MeasurementStore(db2, readonly=True) as store:
        assert set(store.dataset()["qc_status"]) == {"ok"}


def test_a_window_whose_references_disagree_is_measured_again_and_its_figures_kept_in_the_history(tmp_path,
                                                                                                   capsys):
    db = tmp_path / "m.db"
    common = ["measure", "--space", "convnet", "--n", "3", "--input-size", "8", "--runs", "10", "--warmup", "1",
              "--energy", "none", "--qc-references", "2", "--window", "2", "--json", "--quiet"]
    # two references never agree to 1e-12 after normalization: every window is measured 3 times, then kept
    assert main([*common, "--drift", "1e-12", "--db", str(db)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["remeasured"] == 2 * 3 and summary["drift_flagged"] == 3
    assert summary["qc_checks"] == 1 + 2 * 3  # the device's baseline, then three checks of each window
    with MeasurementStore(db, readonly=True) as store:
        df = store.dataset()
        history = store.count("measurement_history")
        checks = store.qc_checks(summary["campaign"])
    assert len(df) == 3 and set(df["qc_status"]) == {"drift"} and history == 6 and (df["attempt"] == 3).all()
    assert [c["models_done"] for c in checks[:2]] == [0, 0] and {c["factor"] for c in checks[:2]} == {1.0}
    # each latency is the raw one divided by its window's reference factor
    factors = {c["check_index"]: c["factor"] for c in checks}
    with MeasurementStore(db, readonly=True) as store:
        for _, m in store.measurements():
            assert m.latency_ms == pytest.approx(m.latency_raw_ms / factors[m.normalization["check"]])
    # a generous threshold: every window passes at once, against the baseline this device already has
    assert main([*common, "--drift", "10", "--seed", "8", "--db", str(db)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["remeasured"] == 0 and summary["qc_checks"] == 2 and summary["measured"] == 3


# ---------------------------------------------------------------------------------------------- bad input
def _one_line_error(run: subprocess.CompletedProcess, *fragments: str) -> None:
    assert run.returncode == 2, (run.stdout, run.stderr)
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), run.stderr
    assert "Traceback" not in run.stderr
    for fragment in fragments:
        assert fragment in lines[0]


def _rows(db: Path) -> int:
    if not db.exists():
        return 0
    return sqlite3.connect(db).execute("SELECT count(*) FROM measurements").fetchone()[0]


def test_onnx_file_onnxruntime_cannot_load(cli, tmp_path):
    bad = tmp_path / "broken.onnx"
    bad.write_bytes(b"\x08\x07garbage that is no protobuf model")
    db = tmp_path / "m.db"
    _one_line_error(cli("measure", "--onnx", str(bad), "--db", str(db)), "onnxruntime cannot load broken.onnx")
    assert _rows(db) == 0


def test_backend_not_installed(cli, tmp_path):
    if __import__("importlib").util.find_spec("tensorrt") is not None:
        pytest.skip("tensorrt is installed on this machine")
    db = tmp_path / "m.db"
    _one_line_error(cli("measure", "--space", "convnet", "--n", "2", "--backend", "tensorrt", "--db", str(db)),
                    "tensorrt is not installed")
    assert not db.exists()


def test_database_in_a_read_only_folder(cli, tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    with read_only_folder(folder):
        db = folder / "m.db"
        _one_line_error(cli("measure", "--space", "convnet", "--n", "1", "--input-size", "8", *FAST,
                            "--db", str(db)), "cannot write database", "writable")
        assert not db.exists()


def test_corrupt_database_file(cli, tmp_path):
    db = tmp_path / "m.db"
    db.write_bytes(os.urandom(8192))
    before = db.read_bytes()
    _one_line_error(cli("measure", "--space", "convnet", "--n", "1", "--input-size", "32", *FAST, "--db", str(db)),
                    "is not an SQLite database")
    _one_line_error(cli("dataset", "export", "--db", str(db)), "is not an SQLite database")
    assert db.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["m.db"]


# ------------------------------------------------------------------------------ spaces keyed by content
def test_custom_space_with_a_shipped_name_stays_apart_and_a_damaged_store_is_recovered(tmp_path, capsys):
    """Two spaces named convnet in one store (the shipped file and one with another head), then damage."""
    shipped = load_space("convnet")
    text = Path(shipped.source).read_text()
    custom = tmp_path / "convnet_head20.yaml"
    custom.write_text(text.replace("num_classes: 10", "num_classes: 20"))
    commented = tmp_path / "convnet_copy.yaml"
    commented.write_text("# the shipped file with a comment: the same space\n" + text)
    db = tmp_path / "m.db"
    common = ["measure", "--n", "2", "--seed", "0", "--input-size", "32", "--runs", "3", "--warmup", "1",
              "--qc-every", "0", "--energy", "none", "--db", str(db), "--json", "--quiet"]
    for space, measured in (("convnet", 2), (str(custom), 2), (str(commented), 0)):
        assert main([*common, "--space", space]) == 0
        summary = json.loads(capsys.readouterr().out)
        assert summary["measured"] == measured and summary["skipped"] == 2 - measured, space

    assert main(["dataset", "export", "--db", str(db)]) == 0
    df = pd.read_csv(__import__("io").StringIO(capsys.readouterr().out))
    assert len(df) == 4 and set(df["space"]) == {"convnet"}
    assert set(df["space_fingerprint"]) == {shipped.fingerprint, load_space(str(custom)).fingerprint}
    assert main(["dataset", "export", "--db", str(db), "--space", str(custom)]) == 0
    df = pd.read_csv(__import__("io").StringIO(capsys.readouterr().out))
    assert len(df) == 2 and set(df["space_fingerprint"]) == {load_space(str(custom)).fingerprint}
    assert main(["dataset", "export", "--db", str(db), "--space", shipped.fingerprint]) == 0
    assert len(pd.read_csv(__import__("io").StringIO(capsys.readouterr().out))) == 2
    assert main(["dataset", "export", "--db", str(db), "--space", "convnet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "'convnet' matches 2 different spaces" in err and shipped.fingerprint in err

    # garbage over one index page: every command refuses the file, unchanged; recovery keeps every row
    conn = sqlite3.connect(f"file:{db}?immutable=1", uri=True)
    page = conn.execute("SELECT pageno FROM dbstat WHERE name='measurements_campaign'").fetchone()[0]
    conn.close()
    data = bytearray(db.read_bytes())
    data[(page - 1) * 4096:page * 4096] = bytes(range(256)) * 16
    db.write_bytes(bytes(data))
    files = sorted(p.name for p in tmp_path.iterdir())
    for argv in ([*common, "--space", "convnet"], ["dataset", "export", "--db", str(db)],
                 ["dataset", "summary", "--db", str(db)]):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and "is damaged" in err and f"dataset recover --db {db}" in err
    assert db.read_bytes() == bytes(data) and sorted(p.name for p in tmp_path.iterdir()) == files
    new = tmp_path / "recovered.db"
    assert main(["dataset", "recover", "--db", str(db), "--out", str(new)]) == 0
    assert "4 measurements" in capsys.readouterr().out
    assert main(["dataset", "summary", "--db", str(new)]) == 0
    out = capsys.readouterr().out
    assert "4 measurement(s)" in out and "integrity ok" in out and shipped.fingerprint in out
