"""Bad input to the store, measuring, datasets, compare and nn-Meter fails cleanly: exit 2, one line, no file.

The cases run the real command line in-process (:mod:`tests.badinput`) over ``measure``, ``dataset
export/summary/recover/import-nni``, ``compare`` and ``nn-meter build/register/predict``, in groups generated
from tables:

* damaged databases: a real store written by the store's own API with garbage written over one page (a
  leaf of the measurements or architectures table, the measurements table's root, the table list) or cut in
  half, run through every command that reads or writes a store; the file must stay byte-identical, with no
  ``-wal``/``-shm`` file left beside it;
* files that are no store: not SQLite, empty, a folder, another program's database, our table names with
  other columns, a newer schema, a missing file or folder;
* outputs that must not be written: a folder where a file is expected and the reverse, the current folder,
  a folder of other files, a folder that does not exist, nn-Meter's registry;
* numbers out of range for the timing protocol, quality control, energy window, compare and nn-Meter's
  builder, each message naming the parameter;
* NNI experiments to import that are missing, unreadable or malformed.

nn-Meter's registry folder points into the case's folder, so a case that wrote the registry would show up as a
changed file; ``HOME`` points beside it, never at the user's own.
"""

from __future__ import annotations

import functools
import json
import sqlite3
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest
from badinput import Case, check_case

from nni_hwaware.measure.nni_trial import RESULT_FORMAT
from nni_hwaware.measure.store import Measurement, MeasurementStore, device_key
from nni_hwaware.spaces import load_space, sample_architectures

DEVICE = {"host": "test", "cpu": "test", "backend": "onnxruntime", "backend_version": "test", "threads": 1}
FAST = ["--runs", "3", "--warmup", "1", "--qc-every", "0", "--energy", "none"]
MEASURE = ["measure", "--space", "convnet", "--n", "1", "--input-size", "32", *FAST]
PAGE = 4096


# ------------------------------------------------------------------------------------------- set-ups
@functools.cache
def _real_store() -> bytes:
    """The bytes of a store written by the store's API: 80 measurements of convnet architectures."""
    space = load_space("convnet")
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "m.db"
        with MeasurementStore(path) as store:
            for i, arch in enumerate(sample_architectures(space, 80, seed=11)):
                store.add_measurement(Measurement(
                    space=space.name, arch_hash=space.arch_hash(arch), arch_json=space.canonical_json(arch),
                    device_key=device_key(DEVICE), backend="onnxruntime", latency_ms=1.0 + i, runs=3,
                    input_size=32, extra={"note": "x" * 40}), space=space, device_description=DEVICE)
        return path.read_bytes()


@functools.cache
def _pages(table: str, kind: str) -> tuple[int, ...]:
    """Page numbers of a table's ``leaf`` or ``internal`` pages in :func:`_real_store`."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "m.db"
        path.write_bytes(_real_store())
        conn = sqlite3.connect(f"file:{path}?immutable=1", uri=True)
        rows = conn.execute("SELECT pageno FROM dbstat WHERE name=? AND pagetype=?", (table, kind)).fetchall()
        conn.close()
    return tuple(r[0] for r in rows)


def _damaged_store(damage: str) -> bytes:
    """The real store with one kind of damage."""
    data = bytearray(_real_store())
    if damage == "cut in half":
        return bytes(data[: len(data) // 2 // PAGE * PAGE])
    page = {"measurement rows": lambda: _pages("measurements", "leaf")[1],
            "architecture rows": lambda: _pages("architectures", "leaf")[0],
            "measurements root": lambda: _pages("measurements", "internal")[0],
            "table list": lambda: 1}[damage]()
    start = (page - 1) * PAGE + (100 if page == 1 else 0)  # keep the file header: it still looks like SQLite
    data[start:page * PAGE] = bytes((i * 131 + 17) % 256 for i in range(page * PAGE - start))
    return bytes(data)


def _write(name: str, content: bytes | str) -> Callable[[Path], None]:
    def setup(folder: Path) -> None:
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content.encode() if isinstance(content, str) else content)

    return setup


def _both(*setups: Callable[[Path], None]) -> Callable[[Path], None]:
    def setup(folder: Path) -> None:
        for s in setups:
            s(folder)

    return setup


def _mkdir(name: str, with_file: str | None = None) -> Callable[[Path], None]:
    def setup(folder: Path) -> None:
        (folder / name).mkdir(parents=True)
        if with_file:
            (folder / name / with_file).write_text("someone else's file\n")

    return setup


def _sqlite(name: str, script: str) -> Callable[[Path], None]:
    def setup(folder: Path) -> None:
        conn = sqlite3.connect(folder / name)
        conn.executescript(script)
        conn.close()

    return setup


def _real(name: str = "m.db") -> Callable[[Path], None]:
    return _write(name, _real_store())


def _schema_version(version: str) -> Callable[[Path], None]:
    def setup(folder: Path) -> None:
        _real()(folder)
        conn = sqlite3.connect(folder / "m.db")
        conn.execute("UPDATE meta SET value=? WHERE key='schema_version'", (version,))
        conn.commit()
        conn.close()

    return setup


def _experiment(*results: object, raw: bytes | None = None) -> Callable[[Path], None]:
    """An NNI experiment folder ``exp`` whose database holds these final results."""

    def setup(folder: Path) -> None:
        db = folder / "exp" / "db" / "nni.sqlite"
        db.parent.mkdir(parents=True)
        if raw is not None:
            db.write_bytes(raw)
            return
        conn = sqlite3.connect(db)
        conn.execute("CREATE TABLE MetricData (timestamp INTEGER, trialJobId TEXT, parameterId TEXT, type TEXT, "
                     "sequence INTEGER, data TEXT)")
        for i, result in enumerate(results):
            conn.execute("INSERT INTO MetricData VALUES (?,?,?,?,?,?)",
                         (i, f"trial{i}", "0", "FINAL", 0, json.dumps(json.dumps(result))))
        conn.commit()
        conn.close()

    return setup


def _trial_result(**changes: object) -> dict:
    result = {"default": 1.0, "format": RESULT_FORMAT, "space": "convnet",
              "space_fingerprint": load_space("convnet").fingerprint, "device_description": DEVICE,
              "measurements": []}
    result.update(changes)
    return result


IMPORT = ["dataset", "import-nni", "exp1", "--db", "m.db", "--experiment-dir", "exp"]
COMPARE_ARGS = ["compare", "--db", "m.db", "--space", "convnet", "--out", "res"]


# --------------------------------------------------------------------------------- damaged databases
DAMAGES = ("measurement rows", "architecture rows", "measurements root", "table list", "cut in half")
COMMANDS_ON_A_STORE = {
    "measure": [*MEASURE, "--db", "m.db"],
    "export": ["dataset", "export", "--db", "m.db"],
    "export-out": ["dataset", "export", "--db", "m.db", "--out", "out.csv"],
    "summary": ["dataset", "summary", "--db", "m.db"],
}


def _damage_cases() -> list[Case]:
    cases = []
    for damage in DAMAGES:
        for command, argv in COMMANDS_ON_A_STORE.items():
            cases.append(Case(f"damaged-{damage.replace(' ', '-')}-{command}", argv,
                              lambda folder, d=damage: _write("m.db", _damaged_store(d))(folder), "is damaged"))
    bad = lambda folder: _write("m.db", _damaged_store("measurement rows"))(folder)  # noqa: E731
    cases += [
        Case("damaged-measure-onnx", ["measure", "--onnx", "net.onnx", *FAST, "--db", "m.db"],
             _both(bad, _write("net.onnx", b"\x08\x07not a model")), "is damaged"),
        Case("damaged-import-nni", IMPORT, _both(bad, _experiment(_trial_result())), "is damaged"),
        Case("damaged-compare", ["compare", "--db", "m.db", "--space", "convnet", "--out", "res"], bad,
             "is damaged"),
        Case("damaged-recover-table-list", ["dataset", "recover", "--db", "m.db", "--out", "new.db"],
             lambda folder: _write("m.db", _damaged_store("table list"))(folder), "nothing to recover"),
    ]
    return cases


# ---------------------------------------------------------------------------------- not a store
NOT_SQLITE = b"PK\x03\x04 this is a zip file, not a database " * 40
FOREIGN = "CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT); INSERT INTO users VALUES (1, 'x');"
LOOKALIKE = ("CREATE TABLE meta (key TEXT); CREATE TABLE spaces (id INTEGER); CREATE TABLE architectures (id INTEGER);"
             "CREATE TABLE devices (id INTEGER); CREATE TABLE measurements (id INTEGER);"
             "CREATE TABLE measurement_history (id INTEGER); CREATE TABLE campaigns (id TEXT);"
             "CREATE TABLE qc_checks (id INTEGER);")

FILE_CASES = [
    Case("not-sqlite-measure", [*MEASURE, "--db", "m.db"], _write("m.db", NOT_SQLITE), "not an sqlite database"),
    Case("not-sqlite-export", ["dataset", "export", "--db", "m.db"], _write("m.db", NOT_SQLITE),
         "not an sqlite database"),
    Case("not-sqlite-summary", ["dataset", "summary", "--db", "m.db"], _write("m.db", NOT_SQLITE),
         "not an sqlite database"),
    Case("not-sqlite-recover", ["dataset", "recover", "--db", "m.db", "--out", "new.db"], _write("m.db", NOT_SQLITE),
         "not an sqlite database"),
    Case("empty-export", ["dataset", "export", "--db", "m.db"], _write("m.db", b""), "empty file"),
    Case("empty-summary", ["dataset", "summary", "--db", "m.db"], _write("m.db", b""), "empty file"),
    Case("empty-compare", ["compare", "--db", "m.db", "--space", "convnet", "--out", "res"], _write("m.db", b""),
         "empty file"),
    Case("folder-measure", [*MEASURE, "--db", "d"], _mkdir("d"), "is a folder"),
    Case("folder-export", ["dataset", "export", "--db", "d"], _mkdir("d"), "is a folder"),
    Case("folder-summary", ["dataset", "summary", "--db", "d"], _mkdir("d"), "is a folder"),
    Case("folder-compare", ["compare", "--db", "d", "--space", "convnet", "--out", "res"], _mkdir("d"), "is a folder"),
    Case("folder-import-nni", [*IMPORT[:3], "--db", "d", *IMPORT[5:]], _both(_mkdir("d"), _experiment(_trial_result())),
         "is a folder"),
    Case("foreign-measure", [*MEASURE, "--db", "m.db"], _sqlite("m.db", FOREIGN), "another program"),
    Case("foreign-export", ["dataset", "export", "--db", "m.db"], _sqlite("m.db", FOREIGN), "another program"),
    Case("foreign-import-nni", IMPORT, _both(_sqlite("m.db", FOREIGN), _experiment(_trial_result())),
         "another program"),
    Case("lookalike-columns-export", ["dataset", "export", "--db", "m.db"], _sqlite("m.db", LOOKALIKE),
         "another program"),
    Case("lookalike-columns-measure", [*MEASURE, "--db", "m.db"], _sqlite("m.db", LOOKALIKE), "another program"),
    Case("newer-schema-measure", [*MEASURE, "--db", "m.db"], _schema_version("99"), "upgrade nni-hwaware"),
    Case("newer-schema-summary", ["dataset", "summary", "--db", "m.db"], _schema_version("99"), "upgrade"),
    Case("no-schema-version-export", ["dataset", "export", "--db", "m.db"], _schema_version("x"),
         "no schema version"),
    Case("missing-export", ["dataset", "export", "--db", "nothing.db"], None, "does not exist"),
    Case("missing-summary", ["dataset", "summary", "--db", "nothing.db"], None, "does not exist"),
    Case("missing-recover", ["dataset", "recover", "--db", "nothing.db", "--out", "new.db"], None, "does not exist"),
    Case("missing-folder-measure", [*MEASURE, "--db", "no/such/m.db"], None, "does not exist"),
    Case("missing-folder-import-nni", [*IMPORT[:3], "--db", "no/m.db", *IMPORT[5:]], _experiment(_trial_result()),
         "does not exist"),
    Case("onnx-missing", ["measure", "--onnx", "none.onnx", *FAST, "--db", "m.db"], None, "does not exist"),
    Case("onnx-folder", ["measure", "--onnx", "d", *FAST, "--db", "m.db"], _mkdir("d"), "is a folder"),
    Case("onnx-garbage-new-db", ["measure", "--onnx", "net.onnx", *FAST, "--db", "m.db"],
         _write("net.onnx", b"\x08\x07garbage that is no protobuf model"), "cannot load"),
]

# ------------------------------------------------------------------------------------------ outputs
OUTPUT_CASES = [
    Case("export-out-folder", ["dataset", "export", "--db", "m.db", "--out", "d"], _both(_real(), _mkdir("d")),
         "is a folder"),
    Case("export-out-missing-folder", ["dataset", "export", "--db", "m.db", "--out", "no/x.csv"], _real(),
         "does not exist"),
    Case("export-parquet-stdout", ["dataset", "export", "--db", "m.db", "--format", "parquet"], _real(),
         "needs --out"),
    Case("recover-out-exists", ["dataset", "recover", "--db", "m.db", "--out", "new.db"],
         _both(_real(), _write("new.db", b"keep me")), "exists"),
    Case("recover-out-is-db", ["dataset", "recover", "--db", "m.db", "--out", "m.db"], _real(), "exists"),
    Case("recover-out-missing-folder", ["dataset", "recover", "--db", "m.db", "--out", "no/new.db"], _real(),
         "does not exist"),
    Case("recover-empty", ["dataset", "recover", "--db", "m.db", "--out", "new.db"], _write("m.db", b""),
         "empty file"),
    Case("compare-out-file", ["compare", "--db", "m.db", "--space", "convnet", "--out", "res"],
         _both(_real(), _write("res", "a file")), "is a file"),
    Case("compare-out-current-folder", ["compare", "--db", "m.db", "--space", "convnet", "--out", "."], _real(),
         "current folder"),
    Case("compare-out-parent-folder", ["compare", "--db", "m.db", "--space", "convnet", "--out", ".."], _real(),
         "current folder"),
    Case("compare-nn-meter-pickles-not-trusted", [*COMPARE_ARGS, "--nn-meter", "nnm"],
         _both(_real(), _write("nnm/fusion_rules.json", "{}"), _write("nnm/conv-bn-relu.pkl", b"\x80\x04N.")),
         "pickle"),
    Case("compare-out-foreign-folder", ["compare", "--db", "m.db", "--space", "convnet", "--out", "res"],
         _both(_real(), _mkdir("res", "thesis.tex")), "holds other files"),
    Case("nnmeter-build-out-file", ["nn-meter", "build", "--out", "res"], _write("res", "a file"), "is a file"),
    Case("nnmeter-build-out-current-folder", ["nn-meter", "build", "--out", "."], None, "current folder"),
    Case("nnmeter-build-out-foreign-folder", ["nn-meter", "build", "--out", "res"], _mkdir("res", "notes.txt"),
         "holds other files"),
    Case("nnmeter-register-meta-dir-file", ["nn-meter", "register", "--meta-dir", "meta"], _write("meta", "x"),
         "is a file"),
    Case("nnmeter-register-meta-dir-missing-parent", ["nn-meter", "register", "--meta-dir", "no/such/meta"], None,
         "does not exist"),
    Case("nnmeter-register-registry-corrupt", ["nn-meter", "register", "--meta-dir", "meta"],
         _write("nnm_config/registry.yaml", "backends: [unclosed\n  - {"), "not valid yaml"),
    Case("nnmeter-register-registry-not-mapping", ["nn-meter", "register", "--meta-dir", "meta"],
         _write("nnm_config/registry.yaml", "- a\n- list\n"), "not a mapping"),
    Case("nnmeter-register-config-folder-is-file", ["nn-meter", "register", "--meta-dir", "meta"],
         _write("nnm_config", "a file"), "is a file"),
]

# ------------------------------------------------------------------------------------------- numbers
# (flag and value(s), what the message says); each runs on a command line that is otherwise valid
MEASURE_NUMBERS = [
    (["--runs", "0"], "--runs must be an integer >= 1"),
    (["--runs", "-5"], "--runs must be an integer >= 1"),
    (["--warmup", "-1"], "--warmup must be an integer >= 0"),
    (["--trim", "0.6"], "--trim must be a number in [0, 0.5)"),
    (["--trim", "-0.1"], "--trim must be"),
    (["--trim", "nan"], "--trim must be"),
    (["--threads", "0"], "--threads must be a positive integer"),
    (["--threads", "-2"], "--threads must be a positive integer"),
    (["--qc-every", "-1"], "--qc-every must be an integer >= 0"),
    (["--qc-references", "0"], "--qc-references must be an integer from 1"),
    (["--qc-references", "1000"], "--qc-references must be an integer from 1"),
    (["--drift", "0"], "--drift must be a positive finite number"),
    (["--drift", "-0.1"], "--drift must be a positive finite number"),
    (["--drift", "nan"], "--drift must be a positive finite number"),
    (["--drift", "inf"], "--drift must be a positive finite number"),
    (["--window", "101"], "--window must be an integer from 0"),
    (["--window", "-1"], "--window must be an integer from 0"),
    (["--energy-seconds", "0"], "--energy-seconds must be a positive finite number"),
    (["--energy-seconds", "nan"], "--energy-seconds must be a positive finite number"),
    (["--energy-seconds", "-3"], "--energy-seconds must be a positive finite number"),
    (["--adaptive", "--ci-width", "0"], "--ci-width must be a number in (0, 1)"),
    (["--adaptive", "--ci-width", "1.5"], "--ci-width must be"),
    (["--adaptive", "--ci-width", "nan"], "--ci-width must be"),
    (["--adaptive", "--runs", "150", "--min-runs", "200"], "--min-runs (200) exceeds --runs (150)"),
    (["--adaptive", "--min-runs", "1"], "--min-runs must be an integer >= 3"),
]
COMPARE = ["compare", "--db", "m.db", "--space", "convnet", "--out", "res"]
COMPARE_NUMBERS = [
    (["--test-size", "0"], "--test-size must be a positive integer"),
    (["--test-size", "-3"], "--test-size must be a positive integer"),
    (["--sizes", "0"], "--sizes must list positive integers"),
    (["--sizes", "10,-5"], "--sizes must list positive integers"),
    (["--sizes", "a,b"], "--sizes must be comma-separated integers"),
    (["--sizes", ","], "--sizes must list positive integers"),
    (["--bins", "0"], "--bins must be a positive integer"),
    (["--initial", "0"], "--initial must be a positive integer"),
    (["--step", "-1"], "--step must be a positive integer"),
    (["--seed", "-1"], "--seed must be an integer >= 0"),
    (["--acc-th", "0"], "--acc-th must be a number in (0, 1]"),
    (["--acc-th", "1.5"], "--acc-th must be a number in (0, 1]"),
    (["--acc-th", "nan"], "--acc-th must be a number in (0, 1]"),
    (["--input-size", "0"], "--input-size must be a positive integer"),
    (["--encodings", "fcc,nosuch"], "--encodings must list some of"),
    (["--surrogates", "svm"], "--surrogates must list some of"),
]
BUILD_NUMBERS = [
    (["--init-samples", "2"], "--init-samples must be an integer >= 5"),
    (["--conv-init-samples", "0"], "--conv-init-samples must be an integer >= 5"),
    (["--iterations", "0"], "--iterations must be an integer >= 1"),
    (["--finegrained-samples", "0"], "--finegrained-samples must be an integer >= 1"),
    (["--runs", "0"], "--runs must be an integer >= 1"),
    (["--threads", "0"], "--threads must be an integer >= 1"),
    (["--seed", "-1"], "--seed must be an integer >= 0"),
    (["--max-mmacs", "0"], "--max-mmacs must be a positive finite number"),
    (["--max-mmacs", "nan"], "--max-mmacs must be a positive finite number"),
    (["--input-size", "32"], "--input-size needs --space"),
    (["--space", "resnet", "--input-size", "0"], "must be a positive integer"),
    (["--backend", "tflite"], "--backend must be onnxruntime or tensorrt"),
]


def _number_cases() -> list[Case]:
    cases = [Case(f"measure{'_'.join(extra)}", [*MEASURE, *extra, "--db", "m.db"], None, message)
             for extra, message in MEASURE_NUMBERS]
    cases += [Case(f"compare{'_'.join(extra)}", [*COMPARE, *extra], _real(), message)
              for extra, message in COMPARE_NUMBERS]
    cases += [Case(f"nnmeter-build{'_'.join(extra)}", ["nn-meter", "build", "--out", "res", *extra], None, message)
              for extra, message in BUILD_NUMBERS]
    cases += [
        Case("export-input-size-0", ["dataset", "export", "--db", "m.db", "--input-size", "0"], _real(),
             "--input-size must be a positive integer"),
        Case("export-input-size-negative", ["dataset", "export", "--db", "m.db", "--input-size", "-32"], _real(),
             "--input-size must be a positive integer"),
        Case("nnmeter-predict-input-size-0", ["nn-meter", "predict", "--predictor", "p", "--space", "resnet",
                                              "--input-size", "0"], None, "must be a positive integer"),
        Case("nnmeter-predict-arch-binary", ["nn-meter", "predict", "--predictor", "p", "--space", "resnet",
                                             "--arch", "@a.bin"], _write("a.bin", bytes(range(256))), "utf-8"),
        Case("import-nni-port-0", [*IMPORT[:5], "--port", "0"], None, "--port must be a tcp port"),
        Case("import-nni-port-too-large", [*IMPORT[:5], "--port", "70000"], None, "--port must be a tcp port"),
    ]
    return cases


# ------------------------------------------------------------------------------------- NNI imports
IMPORT_CASES = [
    Case("import-nni-experiment-dir-file", IMPORT, _write("exp", "a file"), "is not a folder"),
    Case("import-nni-no-experiment", IMPORT, _mkdir("exp"), "no nni experiment"),
    Case("import-nni-bad-id", ["dataset", "import-nni", "../x", "--db", "m.db", "--experiment-dir", "exp"],
         _mkdir("exp"), "not an nni experiment id"),
    Case("import-nni-experiment-db-garbage", IMPORT, _experiment(raw=NOT_SQLITE), "cannot read nni experiment"),
    Case("import-nni-experiment-db-no-table", IMPORT, _experiment(raw=_real_store()), "cannot read nni experiment"),
    Case("import-nni-no-measuring-trials", IMPORT, _experiment({"default": 0.9}), "no finished measuring trials"),
    Case("import-nni-result-without-space", IMPORT, _experiment(_trial_result(space=None)), "malformed"),
    Case("import-nni-result-measurements-not-list", IMPORT, _experiment(_trial_result(measurements={"a": 1})),
         "malformed"),
    Case("import-nni-result-bad-measurement", IMPORT, _experiment(_trial_result(measurements=[{"latency": 1}])),
         "malformed measurement"),
    Case("import-nni-result-other-space-version", IMPORT,
         _experiment(_trial_result(space_fingerprint="0123456789abcdef")), "different version"),
    Case("import-nni-result-unknown-space", IMPORT, _experiment(_trial_result(space="nosuchspace")),
         "unknown space"),
    Case("import-nni-result-device-mismatch", IMPORT, _experiment(_trial_result(measurements=[{
        "space": "convnet", "arch_hash": "0" * 16, "arch_json": "{}", "device_key": "ffffffffffffffff",
        "backend": "onnxruntime", "latency_ms": 1.0, "runs": 3, "input_size": 32}])), "device key does not match"),
]

CASES = _damage_cases() + FILE_CASES + OUTPUT_CASES + _number_cases() + IMPORT_CASES


@pytest.fixture(autouse=True)
def _private_nn_meter_registry(tmp_path, monkeypatch):
    """nn-Meter's registry inside the case's folder (writing it would be a changed file); HOME beside it.

    HOME is not watched: onnxruntime keeps a telemetry cache there.
    """
    from nn_meter.utils.nn_meter_cli import registry

    monkeypatch.setattr(registry, "__user_config_folder__", str(tmp_path / "work" / "nnm_config"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))


def test_the_table_is_large_and_ids_are_unique():
    assert len(CASES) >= 100 and len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_fails_cleanly(case: Case, tmp_path: Path) -> None:
    check_case(case, tmp_path)
