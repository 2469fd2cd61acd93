"""Few-shot calibration (predictor kind ``calibrated``, ``nni-hwaware calibrate``) on real measurements.

This machine's CPU stands in for a new device: a few ``convnet`` (and ``mobilenetv3``) architectures are
measured with onnxruntime at 8 px, the shipped Jetson Nano predictor and a small ESM predictor are calibrated
to them, and the calibrated folders are loaded, refitted, extended, damaged and driven from the command line.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from badinput import Case, check_case, run_in_process
from conftest import REPO_ROOT

from nni_hwaware import metrics
from nni_hwaware.calibration import CalibratedHardwarePredictor, calibrate_predictor, fit_calibration
from nni_hwaware.errors import ArtifactError, DeviceError, HwAwareError, ParameterError
from nni_hwaware.hardware import load_predictor
from nni_hwaware.spaces import load_space, sample_architectures

SIZE = 8


def _digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def measured(tmp_path_factory) -> dict:
    """Real onnxruntime measurements (1 thread) of 8 cheap convnet and 6 mobilenetv3 architectures at 8 px."""
    from nni_hwaware.measure import measure_architectures
    from nni_hwaware.measure.store import MeasurementStore
    from nni_hwaware.spaces.counting import convnet_macs_params

    db = tmp_path_factory.mktemp("calibrate") / "m.db"
    convnet, mobilenet = load_space("convnet"), load_space("mobilenetv3")
    archs = [a for a in sample_architectures(convnet, 400, seed=3) if convnet_macs_params(a, SIZE)[0] < 2e7][:8]
    mobile = sample_architectures(mobilenet, 6, seed=1)
    with MeasurementStore(db) as store:
        ms = measure_architectures(convnet, archs, "onnxruntime", store, input_size=SIZE, runs=10, energy="none")
        mm = measure_architectures(mobilenet, mobile, "onnxruntime", store, input_size=SIZE, runs=10,
                                   energy="none")
        description = store.device_description(ms[0].device_key)
    return {"db": db, "archs": archs, "latency": np.array([m.latency_ms for m in ms]), "mobile": mobile,
            "mobile_latency": np.array([m.latency_ms for m in mm]), "device": description}


@pytest.fixture(scope="module")
def jetson_base():
    return load_predictor("jetson_nano", "convnet", SIZE)


@pytest.fixture(scope="module")
def calibrated_dir(measured, jetson_base, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("cal") / "jetson_cpu"
    calibrate_predictor(jetson_base, measured["archs"], measured["latency"], out=out, fingerprint=measured["device"],
                        notes={"test": "calibrate"})
    return out


def _mape(predictor, archs, y) -> float:
    return metrics.mape(y, [e.latency_ms for e in predictor.estimate_many(archs)])


def test_calibrated_jetson_predictor_moves_toward_the_measurements(measured, jetson_base, calibrated_dir):
    before = _digest(jetson_base.folder)
    predictor = load_predictor(calibrated_dir)
    assert isinstance(predictor, CalibratedHardwarePredictor) and predictor.kind == "calibrated"
    assert predictor.base.kind == "jetson_nano" and predictor.input_size == SIZE
    # no energy was measured: the base's (the Nano's) energy is not passed off as this device's
    assert predictor.space.name == "convnet" and not predictor.has_energy
    archs, y = measured["archs"], measured["latency"]
    base_mape, cal_mape = _mape(jetson_base, archs, y), _mape(predictor, archs, y)
    assert cal_mape < base_mape / 3, (base_mape, cal_mape)
    estimate = predictor.estimate(archs[0])
    assert estimate.predictor == "calibrated" and estimate.details["base_kind"] == "jetson_nano"
    assert estimate.latency_interval[0] <= estimate.latency_ms <= estimate.latency_interval[1]
    assert predictor.target.fingerprint["backend"] == "onnxruntime"
    assert predictor.target.fingerprint["cpu"] == measured["device"]["cpu"]
    card = (calibrated_dir / "MODEL_CARD.md").read_text()
    assert "**Measurements**: 8" in card and "leave-one-out" in card and measured["device"]["cpu"] in card
    assert len((calibrated_dir / "data.jsonl").read_text().splitlines()) == 8
    meta = json.loads((calibrated_dir / "predictor.json").read_text())
    assert meta["kind"] == "calibrated" and meta["base_kind"] == "jetson_nano" and meta["measurements"] == 8
    assert (calibrated_dir / "base" / "predictor.json").is_file()
    assert _digest(jetson_base.folder) == before  # the shipped predictor is only read


def test_calibrated_esm_predictor_and_energy(measured, esm_gb_predictor, tmp_path):
    base = load_predictor(esm_gb_predictor)
    archs, y = measured["mobile"], measured["mobile_latency"]
    energy = list(y * 2.5)  # known energies: the calibrated estimates must land on them
    energy[0] = None
    with pytest.raises(ParameterError, match="positive finite"):
        calibrate_predictor(base, archs, y, [*energy[:-1], -1.0], out=tmp_path / "bad")
    assert not (tmp_path / "bad").exists()
    predictor = calibrate_predictor(base, archs, y, out=tmp_path / "esm")
    assert predictor.base.kind == "esm" and not predictor.has_energy
    # six real measurements of tiny models on a possibly busy machine: the map moves toward them (the base's
    # latencies are synthetic), by how much depends on their noise
    assert _mape(predictor, archs, y) < _mape(base, archs, y)
    # a device exactly 2.5x slower than the base: the calibration lands on it
    slower = np.array([e.latency_ms for e in base.estimate_many(archs)]) * 2.5
    scaled = calibrate_predictor(base, archs, slower, out=tmp_path / "esm_scaled")
    assert _mape(base, archs, slower) > 50 and _mape(scaled, archs, slower) < 1
    # energy with a base that has none needs MIN_ENERGY_ONLY_K (20) measurements: 5 here, so latency only
    assert calibrate_predictor(base, archs, y, energy, out=tmp_path / "esm2").has_energy is False
    assert "energy_mj**: not calibrated: it needs 20" in (tmp_path / "esm2" / "MODEL_CARD.md").read_text()


def test_energy_is_calibrated_when_given(measured, jetson_base, tmp_path):
    archs, y = measured["archs"], measured["latency"]
    energy = y * 3.0
    predictor = calibrate_predictor(jetson_base, archs, y, energy, out=tmp_path / "e")
    assert predictor.params["energy_mj"] is not None
    estimates = predictor.estimate_many(archs)
    base_energy = [e.energy_mj for e in jetson_base.estimate_many(archs)]
    assert metrics.mape(energy, [e.energy_mj for e in estimates]) < metrics.mape(energy, base_energy) / 3
    assert all(e.energy_interval[0] <= e.energy_mj <= e.energy_interval[1] for e in estimates)
    assert load_predictor(tmp_path / "e").has_energy


def test_refit_learns_from_new_measurements_and_writes_nothing(measured, jetson_base, tmp_path):
    archs, y = measured["archs"], measured["latency"]
    predictor = calibrate_predictor(jetson_base, archs[:5], y[:5], out=tmp_path / "five")
    before, base_before = _digest(tmp_path / "five"), _digest(jetson_base.folder)
    old = [e.latency_ms for e in predictor.estimate_many(archs)]
    record = predictor.refit(archs[5:], y[5:])
    assert predictor.refittable and record["added"] == 3 and record["train_size"] == 8
    assert [e.latency_ms for e in predictor.estimate_many(archs)] != old
    assert _digest(tmp_path / "five") == before and _digest(jetson_base.folder) == base_before
    with pytest.raises(ParameterError):
        predictor.refit(archs[:1], [float("nan")])
    with pytest.raises(HwAwareError, match="own folder"):
        predictor.save(tmp_path / "five")
    saved = load_predictor(predictor.save(tmp_path / "eight"))
    assert len(saved.data()) == 8 and saved.meta["history"][-1]["event"] == "refit"
    assert _digest(tmp_path / "five") == before


def test_extending_a_calibration_checks_the_device(measured, calibrated_dir, tmp_path):
    predictor = load_predictor(calibrated_dir)
    archs, y = measured["archs"], measured["latency"]
    other = dict(measured["device"], cpu="Some Other CPU")
    with pytest.raises(DeviceError, match="cpu is 'Some Other CPU'") as err:
        calibrate_predictor(predictor, archs[:2], y[:2] * 2, out=tmp_path / "x", fingerprint=other)
    assert "\n" not in str(err.value) and not (tmp_path / "x").exists()
    with pytest.raises(HwAwareError, match="being extended"):
        calibrate_predictor(predictor, archs[:2], y[:2], out=calibrated_dir, fingerprint=measured["device"])
    mixed = calibrate_predictor(predictor, archs[:2], y[:2] * 2, out=tmp_path / "mixed", fingerprint=other,
                                allow_device_mismatch=True)
    assert mixed.base.kind == "jetson_nano" and len(mixed.data()) == 8  # the two replaced, not added
    assert "**Device mismatch allowed**: True" in (tmp_path / "mixed" / "MODEL_CARD.md").read_text()
    same = calibrate_predictor(predictor, archs[:1], y[:1], out=tmp_path / "same", fingerprint=measured["device"])
    assert same.meta["history"][-2]["event"] == "extended"


def test_check_measurer_compares_fingerprints(calibrated_dir):
    from nni_hwaware.measure.runner import make_measurer

    predictor = load_predictor(calibrated_dir)
    measurer = make_measurer("onnxruntime", threads=1, energy="none")
    assert predictor.check_measurer(measurer) is None
    measurer2 = make_measurer("onnxruntime", threads=2, energy="none")
    with pytest.raises(DeviceError, match="threads is 2, expected 1"):
        predictor.check_measurer(measurer2)


def test_fit_calibration_choices_and_intervals():
    rng = np.random.default_rng(0)
    base = rng.uniform(0, 3, 40)
    features = rng.normal(size=(40, 3))
    y = np.exp(0.5 + 0.8 * base + 0.6 * features[:, 0] + rng.normal(0, 0.02, 40))
    fit = fit_calibration(np.column_stack([base, features]), y)
    assert fit["model"] == "ridge" and fit["cv"] == "leave-one-out" and fit["cv_figures"]["mape"] < 5
    small = fit_calibration(np.column_stack([base, features])[:10], y[:10], features=False)
    assert small["model"] in ("shift", "loglog") and small["interval_log_halfwidth"] > 0
    only = fit_calibration(np.column_stack([base, features])[:4], y[:4], features=True)
    assert only["model"] in ("shift", "loglog")  # below MIN_FEATURE_K the ridge is no candidate
    assert fit_calibration(np.log([[2.0]]), np.array([4.0]))["cv_figures"] is None


# ------------------------------------------------------------------------------------- damaged folders
def _forge(folder: Path, how: str) -> None:
    meta_path = folder / "predictor.json"
    meta = json.loads(meta_path.read_text())
    if how == "not_json":
        meta_path.write_text("{not json")
    elif how == "base_outside":
        meta["base"] = "../../etc"
    elif how == "base_missing":
        shutil.rmtree(folder / "base")
    elif how == "version":
        meta["version"] = 99
    elif how == "base_calibrated":
        meta["base_kind"] = "calibrated"
    elif how == "nan_coef":
        cal = json.loads((folder / "calibration.json").read_text())
        cal["latency_ms"]["intercept"] = float("nan")
        (folder / "calibration.json").write_text(json.dumps(cal))
    elif how == "unknown_model":
        cal = json.loads((folder / "calibration.json").read_text())
        cal["latency_ms"]["model"] = "__import__('os')"
        (folder / "calibration.json").write_text(json.dumps(cal))
    elif how == "input_size":
        meta["input_size"] = "8"
    if how in ("base_outside", "version", "base_calibrated", "input_size"):
        meta_path.write_text(json.dumps(meta))


@pytest.mark.parametrize("how", ["not_json", "base_outside", "base_missing", "version", "base_calibrated",
                                 "nan_coef", "unknown_model", "input_size"])
def test_forged_or_damaged_folder_is_refused_in_one_line(calibrated_dir, tmp_path, how):
    folder = tmp_path / "forged"
    shutil.copytree(calibrated_dir, folder)
    _forge(folder, how)
    with pytest.raises(ArtifactError) as err:
        load_predictor(folder)
    assert "\n" not in str(err.value) and str(folder) in str(err.value)


def test_corrupt_data_is_refused_at_refit(calibrated_dir, measured, tmp_path):
    folder = tmp_path / "corrupt"
    shutil.copytree(calibrated_dir, folder)
    (folder / "data.jsonl").write_text('{"arch": {"bad": 1}, "latency_ms": 1.0}\n')
    predictor = load_predictor(folder)
    with pytest.raises(ArtifactError, match="data.jsonl is corrupt"):
        predictor.refit(measured["archs"][:1], measured["latency"][:1])


# ------------------------------------------------------------------------------------------ the CLI
def test_cli_calibrates_the_jetson_predictor_from_a_store(measured, tmp_path):
    out = tmp_path / "cli_out"
    code, stdout, stderr = run_in_process(
        ["calibrate", "--predictor", "predictors/jetson_nano", "--space", "convnet", "--db", str(measured["db"]),
         "--out", str(out), "--limit", "6", "--seed", "1"], REPO_ROOT)
    assert code == 0, stderr
    assert "on 6 measurements" in stdout and "held-out (leave-one-out): MAPE" in stdout
    predictor = load_predictor(out)
    assert predictor.input_size == SIZE and len(predictor.data()) == 6
    assert predictor.meta["fingerprint"]["protocol"] == "esm"
    assert predictor.meta["notes"]["limit"] == 6
    # again over its own output: replaced, since it holds a calibrated predictor
    code, stdout, stderr = run_in_process(["calibrate", "--predictor", "jetson_nano", "--space", "convnet", "--db",
                                           str(measured["db"]), "--out", str(out)], tmp_path)
    assert code == 0, stderr
    assert len(load_predictor(out).data()) == 8
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no staging folder left
    (tmp_path / "archs.jsonl").write_text("".join(json.dumps(a) + "\n" for a in measured["archs"]))
    code, stdout, _ = run_in_process(["predict", "--predictor", str(out), "--archs", "archs.jsonl"], tmp_path)
    assert code == 0 and stdout.count("latency") == 8


def _copy_db(measured):
    def setup(work: Path) -> None:
        shutil.copy(measured["db"], work / "m.db")
    return setup


def _bad_cases(measured) -> list[Case]:
    db = _copy_db(measured)
    jet = ["calibrate", "--predictor", "jetson_nano", "--space", "convnet"]

    def foreign(work: Path) -> None:
        db(work)
        (work / "out").mkdir()
        (work / "out" / "thesis.tex").write_text("mine")

    def text_db(work: Path) -> None:
        (work / "m.db").write_text("not a database\n" * 10)

    def forged(work: Path) -> None:
        db(work)
        (work / "p").mkdir()
        (work / "p" / "predictor.json").write_text('{"kind": "calibrated", "version": 1}')

    return [
        Case("db_missing", [*jet, "--db", "nope.db", "--out", "o"], expect="does not exist"),
        Case("db_folder", [*jet, "--db", ".", "--out", "o"], expect="is a folder"),
        Case("db_not_sqlite", [*jet, "--db", "m.db", "--out", "o"], text_db),
        Case("predictor_missing", ["calibrate", "--predictor", "nope", "--db", "m.db", "--out", "o"], db,
             expect="not found"),
        Case("any_cnn_without_space", ["calibrate", "--predictor", "jetson_nano", "--db", "m.db", "--out", "o"], db,
             expect="--space"),
        Case("unknown_space", ["calibrate", "--predictor", "jetson_nano", "--space", "nospace", "--db", "m.db",
                               "--out", "o"], db),
        Case("out_is_file", [*jet, "--db", "m.db", "--out", "m.db"], db, expect="is a file"),
        Case("out_foreign", [*jet, "--db", "m.db", "--out", "out"], foreign, expect="holds other files"),
        Case("out_cwd", [*jet, "--db", "m.db", "--out", "."], db, expect="current folder"),
        Case("unknown_device", [*jet, "--db", "m.db", "--out", "o", "--device", "feedbeef"], db,
             expect="on device 'feedbeef'"),
        Case("no_such_size", [*jet, "--db", "m.db", "--out", "o", "--input-size", "64"], db,
             expect="no measurements"),
        Case("no_such_backend", [*jet, "--db", "m.db", "--out", "o", "--backend", "tensorrt"], db,
             expect="no measurements"),
        Case("size_zero", [*jet, "--db", "m.db", "--out", "o", "--input-size", "0"], db, expect="--input-size"),
        Case("limit_zero", [*jet, "--db", "m.db", "--out", "o", "--limit", "0"], db, expect="--limit"),
        Case("limit_text", [*jet, "--db", "m.db", "--out", "o", "--limit", "ten"], db),
        Case("forged_predictor", ["calibrate", "--predictor", "p", "--db", "m.db", "--out", "o"], forged,
             expect="lacks"),
    ]


_CASE_IDS = ["db_missing", "db_folder", "db_not_sqlite", "predictor_missing", "any_cnn_without_space",
             "unknown_space", "out_is_file", "out_foreign", "out_cwd", "unknown_device", "no_such_size",
             "no_such_backend", "size_zero", "limit_zero", "limit_text", "forged_predictor"]


@pytest.mark.parametrize("case_id", _CASE_IDS)
def test_bad_input_fails_cleanly(measured, tmp_path, case_id):
    case = {c.id: c for c in _bad_cases(measured)}[case_id]
    check_case(case, tmp_path)


def test_estimates_are_finite_and_positive(calibrated_dir):
    predictor = load_predictor(calibrated_dir)
    archs = sample_architectures(predictor.space, 5, seed=11)
    for e in predictor.estimate_many(archs):
        assert math.isfinite(e.latency_ms) and e.latency_ms > 0
