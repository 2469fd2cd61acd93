"""The SQLite store: its Python API, re-measurement history, reuse by measure_architectures, bad files."""

from __future__ import annotations

import sqlite3

import pytest

from nni_hwaware.errors import HwAwareError
from nni_hwaware.measure import measure_architectures
from nni_hwaware.measure.backends import host_description
from nni_hwaware.spaces import load_space, sample_architectures
from nni_hwaware.store import Measurement, MeasurementStore, device_key

DEVICE = {**host_description(), "backend": "onnxruntime", "backend_version": "test", "threads": 1}


def _measurement(space, arch, latency: float, **kw) -> Measurement:
    return Measurement(space=space.name, arch_hash=space.arch_hash(arch), arch_json=space.canonical_json(arch),
                       device_key=device_key(DEVICE), backend="onnxruntime", latency_ms=latency, runs=150,
                       input_size=32, latency_std_ms=0.1, **kw)


def test_add_get_and_dataset(tmp_path):
    space = load_space("convnet")
    archs = sample_architectures(space, 3, seed=0)
    store = MeasurementStore(tmp_path / "m.db")
    assert store._conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    for i, arch in enumerate(archs):
        assert store.add_measurement(_measurement(space, arch, 1.0 + i), space=space, device_description=DEVICE)
    did = store.device_id(DEVICE)
    assert store.device_id(device_key(DEVICE)) == did
    assert store.device_description(did) == DEVICE
    assert store.measured_hashes(space, did, "onnxruntime", 32) == {space.arch_hash(a) for a in archs}
    assert store.measured_hashes(space, did, "onnxruntime", 64) == set()
    assert store.get_latency(space, space.arch_hash(archs[1]), did, "onnxruntime", 32) == 2.0
    assert store.get_latency("convnet", space.arch_hash(archs[1]), device_key(DEVICE), "onnxruntime", 32) == 2.0
    assert store.get_latency(space, space.arch_hash(archs[1]), did, "torch", 32) is None
    df = store.dataset(space="convnet", device=device_key(DEVICE), input_size=32)
    assert {"space", "arch", "device", "input_size", "latency_ms", "latency_std_ms", "runs", "energy_mj"} <= set(df)
    assert list(df["latency_ms"]) == [1.0, 2.0, 3.0]
    assert df["energy_mj"].isna().all()  # no meter: null, never invented
    assert list(df["arch"]) == [space.canonical_json(a) for a in archs]
    # the space's file text is stored with its hash
    text = store._conn.execute("SELECT space_text FROM spaces WHERE name='convnet'").fetchone()[0]
    assert "layer_type" in text
    assert store.integrity_check() == "ok"


def test_same_model_is_never_duplicated_and_remeasurement_keeps_history(tmp_path):
    space = load_space("convnet")
    arch = sample_architectures(space, 1, seed=3)[0]
    store = MeasurementStore(tmp_path / "m.db")
    assert store.add_measurement(_measurement(space, arch, 1.0), space=space, device_description=DEVICE)
    assert not store.add_measurement(_measurement(space, arch, 9.0), space=space, device_description=DEVICE)
    assert store.count() == 1 and store.get_latency(space, space.arch_hash(arch), DEVICE, "onnxruntime", 32) == 1.0
    assert store.add_measurement(_measurement(space, arch, 1.5), space=space, device_description=DEVICE,
                                 replace=True)
    assert store.count() == 1 and store.count("measurement_history") == 1
    m = store.get_measurement(space, space.arch_hash(arch), DEVICE, "onnxruntime", 32)
    assert m.latency_ms == 1.5 and m.attempt == 2
    old = store._conn.execute("SELECT latency_ms, reason FROM measurement_history").fetchone()
    assert tuple(old) == (1.0, "remeasured")


def test_failed_transaction_leaves_no_partial_row(tmp_path):
    space = load_space("convnet")
    arch = sample_architectures(space, 1, seed=4)[0]
    store = MeasurementStore(tmp_path / "m.db")
    bad = _measurement(space, arch, 1.0)
    with pytest.raises(HwAwareError, match="unknown device"):
        store.add_measurement(bad, space=space)  # device not described: rolled back after inserting the space
    assert store.count() == 0 and store.count("architectures") == 0 and store.count("spaces") == 0


def test_measure_architectures_reuses_the_store(tmp_path):
    space = load_space("mobilenetv3")
    archs = sample_architectures(space, 3, seed=1)
    store = MeasurementStore(tmp_path / "m.db")
    calls = []
    first = measure_architectures(space, archs[:2], "onnxruntime", store, input_size=16, runs=15, energy="none",
                                  progress=lambda done, total, m: calls.append((done, total)))
    assert calls == [(1, 2), (2, 2)]
    stamps = {m.arch_hash: m.measured_at for m in first}
    second = measure_architectures(space, archs, "onnxruntime", store, input_size=16, runs=15, energy="none")
    assert [m.arch_hash for m in second] == [space.arch_hash(a) for a in archs]
    assert all(second[i].measured_at == stamps[second[i].arch_hash] for i in range(2))  # reused, not re-measured
    assert store.count() == 3
    m = second[2]
    assert m.runs == 15 and m.threads == 1 and m.energy_mj is None and m.latency_ms > 0
    assert m.extra["protocol"]["trim"] == 0.2
    description = store.device_description(m.device_key)
    assert description["backend"] == "onnxruntime" and description["threads"] == 1
    assert description["backend_version"] and description["cpu"] and description["host"]


def test_corrupt_and_foreign_files_are_refused(tmp_path):
    corrupt = tmp_path / "corrupt.db"
    corrupt.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(HwAwareError, match="corrupt or not an SQLite file"):
        MeasurementStore(corrupt)
    other = tmp_path / "other.db"
    sqlite3.connect(other).execute("CREATE TABLE t (x)").connection.commit()
    with pytest.raises(HwAwareError, match="something else"):
        MeasurementStore(other)
    with pytest.raises(HwAwareError, match="does not exist"):
        MeasurementStore(tmp_path / "missing.db", readonly=True)
    assert not (tmp_path / "missing.db").exists()
