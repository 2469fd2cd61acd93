"""The SQLite store: its API, history, reuse, damaged and foreign files, recovery, spaces keyed by content."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from conftest import read_only_folder

from nni_hwaware.errors import HwAwareError
from nni_hwaware.measure import measure_architectures
from nni_hwaware.measure.backends import host_description
from nni_hwaware.measure.store import (
    Measurement,
    MeasurementStore,
    device_key,
    recover_store,
    space_fingerprint,
)
from nni_hwaware.spaces import load_space, sample_architectures

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
    with pytest.raises(HwAwareError, match="is not an SQLite database"):
        MeasurementStore(corrupt)
    other = tmp_path / "other.db"
    sqlite3.connect(other).execute("CREATE TABLE t (x)").connection.commit()
    with pytest.raises(HwAwareError, match="database of another program"):
        MeasurementStore(other)
    with pytest.raises(HwAwareError, match="does not exist"):
        MeasurementStore(tmp_path / "missing.db", readonly=True)
    assert not (tmp_path / "missing.db").exists()


# ------------------------------------------------------------------------------ damaged files and recovery
def _filled_store(path, rows: int = 80):
    """A real store written by the store's API: ``rows`` measurements of convnet architectures."""
    space = load_space("convnet")
    with MeasurementStore(path) as store:
        for i, arch in enumerate(sample_architectures(space, rows, seed=11)):
            store.add_measurement(_measurement(space, arch, 1.0 + i, extra={"note": "x" * 40}), space=space,
                                  device_description=DEVICE)
    return space


def _pages_of(path, table: str) -> list[int]:
    """Leaf pages of a table (SQLite's dbstat view)."""
    conn = sqlite3.connect(f"file:{path}?immutable=1", uri=True)
    try:
        return [r[0] for r in conn.execute("SELECT pageno FROM dbstat WHERE name=? AND pagetype='leaf'", (table,))]
    finally:
        conn.close()


def _garble(path, pages: list[int], page_size: int = 4096) -> None:
    data = bytearray(path.read_bytes())
    for page in pages:
        start = (page - 1) * page_size
        data[start:start + page_size] = bytes((i * 131 + page * 7) % 256 for i in range(page_size))
    path.write_bytes(bytes(data))


def test_damaged_store_is_refused_without_writing_and_its_readable_rows_recovered(tmp_path):
    db = tmp_path / "m.db"
    _filled_store(db)
    leaves = _pages_of(db, "measurements")
    assert len(leaves) >= 3
    _garble(db, [leaves[1]])
    before = db.read_bytes()
    for readonly in (True, False):
        with pytest.raises(HwAwareError, match=r"is damaged .*dataset recover --db") as info:
            MeasurementStore(db, readonly=readonly)
        assert "\n" not in str(info.value)
    assert db.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["m.db"]  # no -wal/-shm

    report = recover_store(db, tmp_path / "new.db")
    assert db.read_bytes() == before
    assert report.damaged_spots >= 1 and report.copied["architectures"] == 80
    assert 40 <= report.copied["measurements"] < 80  # one leaf page of rows is lost, the rest is kept
    with MeasurementStore(tmp_path / "new.db", readonly=True) as store:
        assert store.integrity_check() == "ok"
        df = store.dataset(space="convnet")
        assert len(df) == report.copied["measurements"] and df["latency_ms"].is_unique
    with pytest.raises(HwAwareError, match="exists"):
        recover_store(db, tmp_path / "new.db")  # never overwrites


def test_recovery_leaves_out_rows_that_reference_lost_rows(tmp_path):
    db = tmp_path / "m.db"
    _filled_store(db)
    _garble(db, [_pages_of(db, "architectures")[0]])
    report = recover_store(db, tmp_path / "new.db")
    assert report.copied["architectures"] < 80 and report.dropped > 0
    assert report.copied["measurements"] + report.dropped == 80  # the measurements table itself was intact
    with MeasurementStore(tmp_path / "new.db") as store:
        assert store.count() == report.copied["measurements"] and store.integrity_check() == "ok"
        assert store._conn.execute("PRAGMA foreign_key_check").fetchall() == []


def test_any_sqlite_error_later_is_one_line(tmp_path):
    db = tmp_path / "m.db"
    space = _filled_store(db, rows=3)
    store = MeasurementStore(db)

    class Broken:
        """A connection whose file went bad after opening."""

        in_transaction = False

        def execute(self, *args, **kwargs):
            raise sqlite3.DatabaseError("database disk image is malformed")

    real, store._conn = store._conn, Broken()
    try:
        for call in (lambda: store.dataset(), lambda: store.count(), lambda: store.measured_hashes(
                space, DEVICE, "onnxruntime", 32), lambda: store.start_campaign("c", {})):
            with pytest.raises(HwAwareError, match="is damaged"):
                call()
    finally:
        store._conn = real
        store.close()


@pytest.mark.parametrize("content, message", [
    (b"", "empty file"),
    (b"SQLite format 3\x00" + b"\x00" * 84, "damaged"),
    (b"<html>not a database</html>" * 50, "is not an SQLite database"),
])
def test_bad_files_for_reading(tmp_path, content, message):
    db = tmp_path / "m.db"
    db.write_bytes(content)
    with pytest.raises(HwAwareError, match=message):
        MeasurementStore(db, readonly=True)
    assert db.read_bytes() == content and [p.name for p in tmp_path.iterdir()] == ["m.db"]


def test_folder_and_missing_folder_as_database(tmp_path):
    with pytest.raises(HwAwareError, match="is a folder"):
        MeasurementStore(tmp_path)
    with pytest.raises(HwAwareError, match="does not exist"):
        MeasurementStore(tmp_path / "no" / "m.db")
    assert list(tmp_path.iterdir()) == []


def test_existing_store_in_a_read_only_folder_is_read_but_not_written(tmp_path):

    folder = tmp_path / "ro"
    folder.mkdir()
    _filled_store(folder / "m.db", rows=2)
    with read_only_folder(folder):
        with MeasurementStore(folder / "m.db", readonly=True) as store:
            assert store.count() == 2
        with pytest.raises(HwAwareError, match="cannot write database"):
            MeasurementStore(folder / "m.db").count()
        assert sorted(p.name for p in folder.iterdir()) == ["m.db"]


def test_open_checks_integrity_quickly(tmp_path):
    """quick_check on every open: 10,000 rows (about 10 MB) are checked in well under a second."""
    import time

    db = tmp_path / "m.db"
    space = load_space("convnet")
    archs = sample_architectures(space, 2000, seed=5)
    with MeasurementStore(db) as store, store.transaction() as conn:
        sid, did = store.space_id(space, conn=conn), store.device_id(DEVICE, conn=conn)
        for i in range(10_000):
            arch = archs[i % len(archs)]
            arch_id = store._arch_id(conn, sid, f"{space.arch_hash(arch)}{i}", space.canonical_json(arch))
            conn.execute("INSERT INTO measurements (arch_id, device_id, backend, precision, input_size, batch_size, "
                         "latency_ms, runs, measured_at, extra) VALUES (?,?,?,?,?,?,?,?,?,?)",
                         (arch_id, did, "onnxruntime", "fp32", 32, 1, 1.0 + i, 150, 0.0, "{}"))
    start = time.perf_counter()
    with MeasurementStore(db, readonly=True) as store:
        assert store.count() == 10_000
    assert time.perf_counter() - start < 2.0  # measured: about 10 ms on an idle 2-core machine


# ------------------------------------------------------------------------------------- space identity
def _custom_convnet(tmp_path, widths_change: bool = True, comment: str = ""):
    """A space file named ``convnet`` like the shipped one: another head (20 classes), or only a comment added."""
    text = Path(load_space("convnet").source).read_text()
    if widths_change:
        assert "num_classes: 10" in text
        text = text.replace("num_classes: 10", "num_classes: 20")
    path = tmp_path / f"custom{'-head' if widths_change else ''}.yaml"
    path.write_text(f"# {comment}\n{text}" if comment else text)
    return load_space(str(path))


def test_spaces_are_keyed_by_content_not_name(tmp_path):
    shipped = load_space("convnet")
    custom = _custom_convnet(tmp_path)
    commented = _custom_convnet(tmp_path, widths_change=False, comment="a copy with a comment")
    assert custom.name == shipped.name and space_fingerprint(custom) != space_fingerprint(shipped)
    assert space_fingerprint(commented) == space_fingerprint(shipped)
    archs = sample_architectures(shipped, 2, seed=0)
    store = MeasurementStore(tmp_path / "m.db")
    for arch in archs:
        store.add_measurement(_measurement(shipped, arch, 1.0), space=shipped, device_description=DEVICE)
    # the same architectures of the custom space are new models: nothing is shared with the shipped space
    assert store.measured_hashes(custom, DEVICE, "onnxruntime", 32) == set()
    for arch in archs:
        assert store.add_measurement(_measurement(custom, arch, 5.0), space=custom, device_description=DEVICE)
    # a copy that differs only in comments is the same space (and stores no second space row)
    assert store.measured_hashes(commented, DEVICE, "onnxruntime", 32) == {shipped.arch_hash(a) for a in archs}
    assert not store.add_measurement(_measurement(commented, archs[0], 9.0), space=commented,
                                     device_description=DEVICE)
    assert store.count("spaces") == 2 and store.count() == 4
    assert list(store.dataset(space=shipped)["latency_ms"]) == [1.0, 1.0]
    assert list(store.dataset(space=custom)["latency_ms"]) == [5.0, 5.0]
    assert list(store.dataset(space=space_fingerprint(custom))["latency_ms"]) == [5.0, 5.0]
    assert store.dataset()["space_fingerprint"].nunique() == 2
    with pytest.raises(HwAwareError, match=r"'convnet' matches 2 different spaces .*--space FILE"):
        store.dataset(space="convnet")
    with pytest.raises(HwAwareError, match="matches 2 different spaces"):
        store.get_latency("convnet", shipped.arch_hash(archs[0]), DEVICE, "onnxruntime", 32)
    store.close()


def _as_older_version(db, version: int) -> None:
    """Make a store look like one written by an older nni-hwaware: drop the columns later versions added."""
    conn = sqlite3.connect(db)
    for table, column in (("measurements", "latency_raw_ms"), ("measurements", "normalization"),
                          ("measurement_history", "latency_raw_ms"), ("measurement_history", "normalization"),
                          ("qc_checks", "factor")) + ((("spaces", "fingerprint"),) if version < 2 else ()):
        conn.execute(f"ALTER TABLE {table} DROP COLUMN {column}")
    conn.execute(f"UPDATE meta SET value='{version}' WHERE key='schema_version'")
    conn.commit()
    conn.close()


@pytest.mark.parametrize("version", [1, 2])
def test_older_stores_are_read_as_they_are_and_migrated_when_written(tmp_path, version):
    db = tmp_path / "m.db"
    space = _filled_store(db, rows=3)
    _as_older_version(db, version)
    with MeasurementStore(db, readonly=True) as store:  # read as it is
        df = store.dataset(space=space)
        assert len(df) == 3 and len(store.dataset(space="convnet")) == 3
        assert list(df["latency_raw_ms"]) == list(df["latency_ms"]) and df["normalization"].isna().all()
    with MeasurementStore(db) as store:  # migrated when opened for writing
        row = store._conn.execute("SELECT fingerprint FROM spaces").fetchone()
        assert row[0] == space_fingerprint(space)
        assert store._conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0] == "3"
        assert len(store.measured_hashes(space, DEVICE, "onnxruntime", 32)) == 3
        # the history keeps the column order of the measurements after the migration's ALTER TABLEs
        _, first = store.measurements()[0]
        first.latency_raw_ms, first.latency_ms = first.latency_ms, first.latency_ms / 2
        first.normalization = {"method": "reference-window", "factor": 2.0}
        assert store.add_measurement(first, replace=True)
        old = store._conn.execute("SELECT latency_ms, latency_raw_ms, normalization FROM measurement_history")
        assert [tuple(r) for r in old] == [(first.latency_raw_ms, None, None)]
        again = store.get_measurement(space, first.arch_hash, DEVICE, "onnxruntime", 32)
        assert again.normalization == {"method": "reference-window", "factor": 2.0}
        assert again.timed_ms == first.latency_raw_ms == 2 * again.latency_ms


def test_newer_schema_is_refused(tmp_path):
    db = tmp_path / "m.db"
    _filled_store(db, rows=1)
    conn = sqlite3.connect(db)
    conn.execute("UPDATE meta SET value='99' WHERE key='schema_version'")
    conn.commit()
    conn.close()
    with pytest.raises(HwAwareError, match="upgrade nni-hwaware"):
        MeasurementStore(db, readonly=True)
