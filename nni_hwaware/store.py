"""The measurement store: one SQLite file (WAL) that keeps every measurement and never loses one.

It holds the search spaces (name, the space file's text and hash, default input size), the architectures
(canonical JSON and hash), the devices (a description and its hash, the *device key*), the measurements (one
current row per architecture, device, backend, precision, input size and batch size; earlier values are moved
to ``measurement_history`` when a model is measured again), the campaigns and their quality-control checks.

Every measurement is committed in its own transaction, so a campaign killed with ``kill -9`` loses at most
the model it was measuring and the file stays consistent; running the campaign again skips what is stored.
This is the API the ESM builder uses::

    store = MeasurementStore("measurements.db")
    device = store.device_id(description)                  # or a device key
    store.measured_hashes(space, device, "onnxruntime", input_size=32)
    store.get_latency(space, arch_hash, device, "onnxruntime", 32)
    df = store.dataset(space="resnet", input_size=32)     # pandas DataFrame
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nni_hwaware.errors import HwAwareError

if TYPE_CHECKING:
    import pandas as pd

    from nni_hwaware.spaces import SearchSpace

SCHEMA_VERSION = 1
ONNX_SPACE = "onnx"  # pseudo-space of ONNX files measured as they are

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS spaces (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    space_hash TEXT NOT NULL UNIQUE,
    space_text TEXT NOT NULL,
    default_input_size INTEGER,
    created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS spaces_name ON spaces(name);
CREATE TABLE IF NOT EXISTS architectures (
    id INTEGER PRIMARY KEY,
    space_id INTEGER NOT NULL REFERENCES spaces(id),
    arch_hash TEXT NOT NULL,
    arch_json TEXT NOT NULL,
    UNIQUE (space_id, arch_hash)
);
CREATE TABLE IF NOT EXISTS devices (
    id INTEGER PRIMARY KEY,
    device_key TEXT NOT NULL UNIQUE,
    description TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS measurements (
    id INTEGER PRIMARY KEY,
    arch_id INTEGER NOT NULL REFERENCES architectures(id),
    device_id INTEGER NOT NULL REFERENCES devices(id),
    backend TEXT NOT NULL,
    precision TEXT NOT NULL,
    input_size INTEGER NOT NULL,
    batch_size INTEGER NOT NULL,
    latency_ms REAL NOT NULL,
    latency_std_ms REAL,
    latency_median_ms REAL,
    latency_min_ms REAL,
    ci_half_width_ms REAL,
    runs INTEGER NOT NULL,
    warmup INTEGER,
    trim REAL,
    adaptive INTEGER NOT NULL DEFAULT 0,
    threads INTEGER,
    energy_mj REAL,
    power_w REAL,
    idle_power_w REAL,
    energy_meter TEXT,
    build_time_s REAL,
    outlier INTEGER NOT NULL DEFAULT 0,
    qc_status TEXT NOT NULL DEFAULT 'unchecked',
    campaign TEXT,
    attempt INTEGER NOT NULL DEFAULT 1,
    extra TEXT,
    measured_at REAL NOT NULL,
    UNIQUE (arch_id, device_id, backend, precision, input_size, batch_size)
);
CREATE INDEX IF NOT EXISTS measurements_campaign ON measurements(campaign, qc_status);
CREATE TABLE IF NOT EXISTS measurement_history (
    history_id INTEGER PRIMARY KEY,
    replaced_at REAL NOT NULL,
    reason TEXT,
    id INTEGER, arch_id INTEGER, device_id INTEGER, backend TEXT, precision TEXT, input_size INTEGER,
    batch_size INTEGER, latency_ms REAL, latency_std_ms REAL, latency_median_ms REAL, latency_min_ms REAL,
    ci_half_width_ms REAL, runs INTEGER, warmup INTEGER, trim REAL, adaptive INTEGER, threads INTEGER,
    energy_mj REAL, power_w REAL, idle_power_w REAL, energy_meter TEXT, build_time_s REAL, outlier INTEGER,
    qc_status TEXT, campaign TEXT, attempt INTEGER, extra TEXT, measured_at REAL
);
CREATE TABLE IF NOT EXISTS campaigns (
    id TEXT PRIMARY KEY,
    config TEXT NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    status TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS qc_checks (
    id INTEGER PRIMARY KEY,
    campaign TEXT NOT NULL,
    check_index INTEGER NOT NULL,
    models_done INTEGER NOT NULL,
    arch_id INTEGER NOT NULL REFERENCES architectures(id),
    device_id INTEGER NOT NULL REFERENCES devices(id),
    backend TEXT NOT NULL,
    precision TEXT NOT NULL,
    input_size INTEGER NOT NULL,
    latency_ms REAL NOT NULL,
    latency_std_ms REAL,
    baseline_ms REAL,
    drift REAL,
    ok INTEGER NOT NULL,
    checked_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS qc_checks_campaign ON qc_checks(campaign, check_index);
"""

_MEASUREMENT_COLUMNS = (
    "latency_ms", "latency_std_ms", "latency_median_ms", "latency_min_ms", "ci_half_width_ms", "runs", "warmup",
    "trim", "adaptive", "threads", "energy_mj", "power_w", "idle_power_w", "energy_meter", "build_time_s",
    "outlier", "qc_status", "campaign", "attempt", "extra", "measured_at",
)


@dataclass
class Measurement:
    """One measured model on one device and backend.

    Parameters
    ----------
    space
        Space name (``"onnx"`` for ONNX files).
    arch_hash
        Hash of the architecture (or of the ONNX file).
    arch_json
        Canonical JSON of the architecture (or a JSON description of the ONNX file).
    device_key
        Hash of the device description.
    backend, precision, input_size, batch_size
        What was measured how.
    latency_ms
        Trimmed mean latency.
    latency_std_ms
        Standard deviation of the kept runs.
    runs
        Timed runs done (fewer than asked in adaptive mode).
    energy_mj
        Energy per inference above idle in mJ, ``None`` where no meter exists.
    extra
        Anything else worth keeping (protocol, rails, ...), JSON-able.
    """

    space: str
    arch_hash: str
    arch_json: str
    device_key: str
    backend: str
    latency_ms: float
    runs: int
    input_size: int
    precision: str = "fp32"
    batch_size: int = 1
    latency_std_ms: float | None = None
    latency_median_ms: float | None = None
    latency_min_ms: float | None = None
    ci_half_width_ms: float | None = None
    warmup: int | None = None
    trim: float | None = None
    adaptive: bool = False
    threads: int | None = None
    energy_mj: float | None = None
    power_w: float | None = None
    idle_power_w: float | None = None
    energy_meter: str | None = None
    build_time_s: float | None = None
    outlier: bool = False
    qc_status: str = "unchecked"
    campaign: str | None = None
    attempt: int = 1
    extra: dict[str, Any] = field(default_factory=dict)
    measured_at: float = field(default_factory=time.time)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (used to report trial results to NNI)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Measurement:
        """Inverse of :meth:`to_dict`; unknown keys are ignored."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


def text_hash(text: str | bytes) -> str:
    """16-hex-digit SHA-256 prefix, the hash used for spaces, devices and ONNX files."""
    data = text.encode() if isinstance(text, str) else text
    return hashlib.sha256(data).hexdigest()[:16]


def device_key(description: dict[str, Any]) -> str:
    """The device key: hash of the canonical JSON of a device description."""
    return text_hash(json.dumps(description, sort_keys=True, separators=(",", ":")))


def space_text(space: SearchSpace) -> str:
    """The text of a space's file (or its canonical description if the file is gone)."""
    try:
        return Path(space.source).read_text()
    except (OSError, TypeError):
        return json.dumps(space.describe(), sort_keys=True, default=str)


class MeasurementStore:
    """A SQLite measurement database (created on first use).

    Parameters
    ----------
    path
        The database file.
    readonly
        Open for reading only (exports); the file must exist.

    Examples
    --------
    >>> import tempfile, os
    >>> store = MeasurementStore(os.path.join(tempfile.mkdtemp(), "m.db"))
    >>> store.count()
    0
    """

    def __init__(self, path: str | Path, *, readonly: bool = False) -> None:
        self.path = Path(path)
        self.readonly = readonly
        self._space_ids: dict[str, int] = {}
        self._conn = self._connect()

    # ------------------------------------------------------------------------------------------ opening
    def _connect(self) -> sqlite3.Connection:
        path = self.path
        if path.is_dir():
            raise HwAwareError(f"--db {path} is a folder; give a database file name")
        if self.readonly or path.exists():
            if not path.exists():
                raise HwAwareError(f"database {path} does not exist; measure something into it first")
        elif not path.parent.is_dir():
            raise HwAwareError(f"cannot create database {path}: folder {path.parent} does not exist")
        try:
            if self.readonly:
                conn = _open_readonly(path)
            else:
                conn = sqlite3.connect(str(path), timeout=60, isolation_level=None)
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA busy_timeout = 60000")
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()  # detects a file that is no database
            if not self.readonly:
                mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
                if str(mode).lower() != "wal":
                    raise sqlite3.OperationalError(f"cannot switch to WAL journal (got {mode})")
                conn.execute("PRAGMA synchronous = FULL")
                conn.execute("PRAGMA foreign_keys = ON")
                self._init_schema(conn)
            else:
                self._check_schema(conn)
        except sqlite3.DatabaseError as exc:
            raise self._open_error(exc) from None
        return conn

    def _open_error(self, exc: sqlite3.DatabaseError) -> HwAwareError:
        message = str(exc)
        if "not a database" in message or "malformed" in message or "corrupt" in message:
            return HwAwareError(f"database {self.path} is corrupt or not an SQLite file ({message}); "
                                "move it away and give another --db")
        if "readonly" in message or "unable to open" in message or "read-only" in message:
            return HwAwareError(f"cannot write database {self.path} ({message}); the folder must be writable "
                                "(SQLite keeps -wal/-shm files beside it); choose a writable location")
        return HwAwareError(f"cannot use database {self.path}: {message}")

    def _init_schema(self, conn: sqlite3.Connection) -> None:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if tables and "measurements" not in tables:
            raise HwAwareError(f"{self.path} is an SQLite database of something else (tables "
                               f"{sorted(tables)[:5]}); give another --db")
        if "meta" in tables:
            self._check_schema(conn)
            return
        # one script, one transaction: a crash while creating leaves either no tables or all of them
        try:
            conn.executescript(
                "BEGIN IMMEDIATE;" + _SCHEMA
                + f"INSERT OR IGNORE INTO meta VALUES ('schema_version', '{SCHEMA_VERSION}'); COMMIT;"
            )
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def _check_schema(self, conn: sqlite3.Connection) -> None:
        try:
            row = conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        except sqlite3.OperationalError:
            raise HwAwareError(f"{self.path} is not a measurement database of nni-hwaware") from None
        if row is None or int(row[0]) > SCHEMA_VERSION:
            raise HwAwareError(f"{self.path} has schema version {row and row[0]}, this nni-hwaware reads "
                               f"{SCHEMA_VERSION}; upgrade nni-hwaware")

    def close(self) -> None:
        """Close the connection (the file stays consistent whether or not this is called)."""
        self._conn.close()

    def __enter__(self) -> MeasurementStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction: everything inside is committed together or not at all."""
        if self.readonly:
            raise HwAwareError(f"database {self.path} is open read-only")
        conn = self._conn
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.DatabaseError as exc:
            raise self._open_error(exc) from None
        try:
            yield conn
            conn.execute("COMMIT")
        except sqlite3.DatabaseError as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise self._open_error(exc) from None
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    # ------------------------------------------------------------------------------------- identities
    def space_id(self, space: SearchSpace | str, *, conn: sqlite3.Connection | None = None,
                 create: bool = True) -> int | None:
        """Row id of a space: a :class:`SearchSpace` (matched by its file's hash) or a name (latest version).

        ``"onnx"`` is the pseudo-space of ONNX files.
        """
        conn = conn or self._conn
        if isinstance(space, str):
            if space == ONNX_SPACE:
                text, name, size = "ONNX files, measured as they are", ONNX_SPACE, None
            else:
                row = conn.execute("SELECT id FROM spaces WHERE name=? ORDER BY id DESC LIMIT 1", (space,)).fetchone()
                if row is not None or not create:
                    return row[0] if row else None
                from nni_hwaware.spaces import load_space

                return self.space_id(load_space(space), conn=conn, create=create)
        else:
            text, name, size = space_text(space), space.name, space.input_size
        key = text_hash(text)
        if key in self._space_ids:
            return self._space_ids[key]
        row = conn.execute("SELECT id FROM spaces WHERE space_hash=?", (key,)).fetchone()
        if row is None:
            if not create:
                return None
            cur = conn.execute(
                "INSERT INTO spaces (name, space_hash, space_text, default_input_size, created_at) VALUES (?,?,?,?,?)",
                (name, key, text, size, time.time()),
            )
            return int(cur.lastrowid)  # not cached: the transaction may still roll back
        self._space_ids[key] = int(row[0])
        return int(row[0])

    def _space_ids_for(self, space: SearchSpace | str | None) -> list[int] | None:
        """Every stored version of a space given by name, or the one version of a SearchSpace."""
        if space is None:
            return None
        if isinstance(space, str):
            return [r[0] for r in self._conn.execute("SELECT id FROM spaces WHERE name=?", (space,))]
        sid = self.space_id(space, create=False)
        return [] if sid is None else [sid]

    def device_id(self, device: dict[str, Any] | str | int, *, conn: sqlite3.Connection | None = None,
                  create: bool = True) -> int | None:
        """Row id of a device given by its description (added if new), its key or its row id."""
        conn = conn or self._conn
        if isinstance(device, int):
            return device
        if isinstance(device, dict):
            key = device_key(device)
            row = conn.execute("SELECT id FROM devices WHERE device_key=?", (key,)).fetchone()
            if row is None and create and not self.readonly:
                if conn.in_transaction:
                    cur = conn.execute("INSERT INTO devices (device_key, description, created_at) VALUES (?,?,?)",
                                       (key, json.dumps(device, sort_keys=True), time.time()))
                    return int(cur.lastrowid)
                with self.transaction() as tx:
                    return self.device_id(device, conn=tx)
            return int(row[0]) if row else None
        row = conn.execute("SELECT id FROM devices WHERE device_key=?", (device,)).fetchone()
        return int(row[0]) if row else None

    def device_description(self, device: str | int) -> dict[str, Any] | None:
        """The stored description of a device (by key or row id)."""
        did = self.device_id(device, create=False)
        row = self._conn.execute("SELECT description FROM devices WHERE id=?", (did,)).fetchone()
        return json.loads(row[0]) if row else None

    def _arch_id(self, conn: sqlite3.Connection, space_id: int, arch_hash: str, arch_json: str) -> int:
        row = conn.execute("SELECT id FROM architectures WHERE space_id=? AND arch_hash=?",
                           (space_id, arch_hash)).fetchone()
        if row is not None:
            return int(row[0])
        cur = conn.execute("INSERT INTO architectures (space_id, arch_hash, arch_json) VALUES (?,?,?)",
                           (space_id, arch_hash, arch_json))
        return int(cur.lastrowid)

    # ------------------------------------------------------------------------------------------ writing
    def add_measurement(self, m: Measurement, *, space: SearchSpace | None = None,
                        device_description: dict[str, Any] | None = None, replace: bool = False,
                        reason: str = "remeasured") -> bool:
        """Store one measurement in its own transaction.

        Parameters
        ----------
        m
            The measurement.
        space
            The space object (stores the space file's text); by default the space is looked up by ``m.space``.
        device_description
            The device's description, stored if the device is new.
        replace
            If the model is already measured (same device, backend, precision, input and batch size): move the
            old row to ``measurement_history`` and store this one. Otherwise keep the old row.

        Returns
        -------
        bool
            Whether the measurement was stored.
        """
        with self.transaction() as conn:
            sid = self.space_id(space if space is not None else m.space, conn=conn)
            arch_id = self._arch_id(conn, sid, m.arch_hash, m.arch_json)
            if device_description is not None:
                if device_key(device_description) != m.device_key:
                    raise HwAwareError("device description does not match the measurement's device key")
                did = self.device_id(device_description, conn=conn)
            else:
                did = self.device_id(m.device_key, conn=conn, create=False)
                if did is None:
                    raise HwAwareError(f"unknown device {m.device_key}; pass its description")
            key = (arch_id, did, m.backend, m.precision, m.input_size, m.batch_size)
            old = conn.execute(
                "SELECT id, attempt FROM measurements WHERE arch_id=? AND device_id=? AND backend=? AND precision=? "
                "AND input_size=? AND batch_size=?", key).fetchone()
            values = self._row_values(m)
            if old is None:
                conn.execute(
                    f"INSERT INTO measurements (arch_id, device_id, backend, precision, input_size, batch_size, "
                    f"{', '.join(_MEASUREMENT_COLUMNS)}) VALUES ({', '.join('?' * (6 + len(_MEASUREMENT_COLUMNS)))})",
                    (*key, *values))
                return True
            if not replace:
                return False
            conn.execute("INSERT INTO measurement_history SELECT NULL, ?, ?, * FROM measurements WHERE id=?",
                         (time.time(), reason, old["id"]))
            values[_MEASUREMENT_COLUMNS.index("attempt")] = int(old["attempt"]) + 1
            m.attempt = int(old["attempt"]) + 1
            conn.execute(f"UPDATE measurements SET {', '.join(f'{c}=?' for c in _MEASUREMENT_COLUMNS)} WHERE id=?",
                         (*values, old["id"]))
            return True

    @staticmethod
    def _row_values(m: Measurement) -> list[Any]:
        row = {**asdict(m), "adaptive": int(m.adaptive), "outlier": int(m.outlier),
               "extra": json.dumps(m.extra, sort_keys=True, default=str) if m.extra else None}
        return [row[c] for c in _MEASUREMENT_COLUMNS]

    def set_qc_status(self, measurement_ids: Iterable[int], status: str) -> None:
        """Mark measurements as QC ``ok``, ``drift`` or ``unchecked`` (one transaction)."""
        ids = list(measurement_ids)
        if not ids:
            return
        with self.transaction() as conn:
            conn.executemany("UPDATE measurements SET qc_status=? WHERE id=?", [(status, i) for i in ids])

    # ------------------------------------------------------------------------------------------ reading
    def _where(self, space: SearchSpace | str | None, device: Any, backend: str | None, input_size: int | None,
               precision: str | None, batch_size: int | None) -> tuple[str, list[Any]]:
        clauses, params = ["1=1"], []
        space_ids = self._space_ids_for(space)
        if space_ids is not None:
            clauses.append(f"a.space_id IN ({','.join('?' * len(space_ids)) or 'NULL'})")
            params += space_ids
        if device is not None:
            clauses.append("m.device_id = ?")
            params.append(self.device_id(device, create=False) or -1)
        for column, value in (("m.backend", backend), ("m.input_size", input_size), ("m.precision", precision),
                              ("m.batch_size", batch_size)):
            if value is not None:
                clauses.append(f"{column} = ?")
                params.append(value)
        return " AND ".join(clauses), params

    def measured_hashes(self, space: SearchSpace | str, device: Any, backend: str, input_size: int, *,
                        precision: str = "fp32", batch_size: int = 1) -> set[str]:
        """Hashes of the architectures of a space already measured with this configuration."""
        where, params = self._where(space, device, backend, input_size, precision, batch_size)
        rows = self._conn.execute(
            f"SELECT a.arch_hash FROM measurements m JOIN architectures a ON a.id = m.arch_id WHERE {where}", params)
        return {r[0] for r in rows}

    def get_measurement(self, space: SearchSpace | str, arch_hash: str, device: Any, backend: str,
                        input_size: int, *, precision: str = "fp32", batch_size: int = 1) -> Measurement | None:
        """The current measurement of one architecture, or ``None``."""
        where, params = self._where(space, device, backend, input_size, precision, batch_size)
        row = self._conn.execute(
            f"SELECT m.*, a.arch_hash, a.arch_json, s.name AS space, d.device_key FROM measurements m "
            f"JOIN architectures a ON a.id = m.arch_id JOIN spaces s ON s.id = a.space_id "
            f"JOIN devices d ON d.id = m.device_id WHERE {where} AND a.arch_hash = ? ORDER BY m.id DESC LIMIT 1",
            (*params, arch_hash)).fetchone()
        return None if row is None else _row_to_measurement(row)

    def get_latency(self, space: SearchSpace | str, arch_hash: str, device: Any, backend: str, input_size: int,
                    *, precision: str = "fp32", batch_size: int = 1) -> float | None:
        """The stored trimmed-mean latency in ms of one architecture, or ``None`` if not measured."""
        m = self.get_measurement(space, arch_hash, device, backend, input_size, precision=precision,
                                 batch_size=batch_size)
        return None if m is None else m.latency_ms

    def measurements(self, *, campaign: str | None = None, qc_status: str | None = None) -> list[tuple[int, Measurement]]:
        """``(row id, measurement)`` pairs, optionally of one campaign and QC status, in measuring order."""
        clauses, params = ["1=1"], []
        if campaign is not None:
            clauses.append("m.campaign = ?")
            params.append(campaign)
        if qc_status is not None:
            clauses.append("m.qc_status = ?")
            params.append(qc_status)
        rows = self._conn.execute(
            f"SELECT m.*, a.arch_hash, a.arch_json, s.name AS space, d.device_key FROM measurements m "
            f"JOIN architectures a ON a.id = m.arch_id JOIN spaces s ON s.id = a.space_id "
            f"JOIN devices d ON d.id = m.device_id WHERE {' AND '.join(clauses)} ORDER BY m.measured_at, m.id",
            params)
        return [(int(r["id"]), _row_to_measurement(r)) for r in rows]

    def count(self, table: str = "measurements") -> int:
        """Number of rows of a table."""
        if table not in {"measurements", "measurement_history", "architectures", "devices", "spaces", "qc_checks",
                         "campaigns"}:
            raise HwAwareError(f"unknown table {table!r}")
        return int(self._conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])

    def integrity_check(self) -> str:
        """SQLite's ``PRAGMA integrity_check`` (``"ok"`` when the file is sound)."""
        return str(self._conn.execute("PRAGMA integrity_check").fetchone()[0])

    def dataset(self, *, space: SearchSpace | str | None = None, device: Any = None, backend: str | None = None,
                input_size: int | None = None, precision: str | None = None, batch_size: int | None = None,
                include_outliers: bool = True) -> pd.DataFrame:
        """All current measurements as a table, one row per measured model.

        Columns: ``space, arch, arch_hash, device, device_description, backend, backend_version, precision,
        threads, input_size, batch_size, latency_ms, latency_std_ms, latency_median_ms, runs, energy_mj,
        power_w, build_time_s, outlier, qc_status, attempt, campaign, measured_at``.

        Examples
        --------
        >>> import tempfile, os
        >>> MeasurementStore(os.path.join(tempfile.mkdtemp(), "m.db")).dataset().shape[0]
        0
        """
        import pandas as pd

        where, params = self._where(space, device, backend, input_size, precision, batch_size)
        if not include_outliers:
            where += " AND m.outlier = 0"
        rows = self._conn.execute(
            "SELECT s.name AS space, a.arch_json AS arch, a.arch_hash, d.device_key AS device, "
            "d.description AS device_description, m.backend, m.precision, m.threads, m.input_size, m.batch_size, "
            "m.latency_ms, m.latency_std_ms, m.latency_median_ms, m.runs, m.energy_mj, m.power_w, m.build_time_s, "
            "m.outlier, m.qc_status, m.attempt, m.campaign, m.measured_at "
            "FROM measurements m JOIN architectures a ON a.id = m.arch_id JOIN spaces s ON s.id = a.space_id "
            f"JOIN devices d ON d.id = m.device_id WHERE {where} ORDER BY m.id", params).fetchall()
        columns = ["space", "arch", "arch_hash", "device", "device_description", "backend", "precision", "threads",
                   "input_size", "batch_size", "latency_ms", "latency_std_ms", "latency_median_ms", "runs",
                   "energy_mj", "power_w", "build_time_s", "outlier", "qc_status", "attempt", "campaign",
                   "measured_at"]
        df = pd.DataFrame([tuple(r) for r in rows], columns=columns)
        df.insert(columns.index("precision"), "backend_version",
                  [json.loads(d).get("backend_version") for d in df["device_description"]])
        df["outlier"] = df["outlier"].astype(bool)
        df["energy_mj"] = df["energy_mj"].astype(float)
        return df

    # ------------------------------------------------------------------------------ campaigns and QC
    def start_campaign(self, campaign_id: str, config: dict[str, Any]) -> bool:
        """Record a campaign; returns ``False`` if it already exists (a resumed campaign)."""
        now = time.time()
        with self.transaction() as conn:
            cur = conn.execute("INSERT OR IGNORE INTO campaigns VALUES (?,?,?,?,?)",
                               (campaign_id, json.dumps(config, sort_keys=True), now, now, "running"))
            if cur.rowcount == 0:
                conn.execute("UPDATE campaigns SET updated_at=?, status='running' WHERE id=?", (now, campaign_id))
            return cur.rowcount == 1

    def finish_campaign(self, campaign_id: str, status: str = "done") -> None:
        """Mark a campaign as finished."""
        with self.transaction() as conn:
            conn.execute("UPDATE campaigns SET updated_at=?, status=? WHERE id=?", (time.time(), status, campaign_id))

    def add_qc_check(self, campaign: str, check_index: int, models_done: int, results: list[dict[str, Any]],
                     *, space: SearchSpace, device: Any, backend: str, precision: str, input_size: int) -> None:
        """Store one QC check: ``results`` holds per reference ``arch_hash, arch_json, latency_ms,
        latency_std_ms, baseline_ms, drift, ok``; all in one transaction."""
        with self.transaction() as conn:
            sid = self.space_id(space, conn=conn)
            did = self.device_id(device, conn=conn)
            for r in results:
                arch_id = self._arch_id(conn, sid, r["arch_hash"], r["arch_json"])
                conn.execute(
                    "INSERT INTO qc_checks (campaign, check_index, models_done, arch_id, device_id, backend, precision,"
                    " input_size, latency_ms, latency_std_ms, baseline_ms, drift, ok, checked_at) "
                    "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                    (campaign, check_index, models_done, arch_id, did, backend, precision, input_size,
                     r["latency_ms"], r.get("latency_std_ms"), r.get("baseline_ms"), r.get("drift"),
                     int(bool(r["ok"])), time.time()))

    def qc_checks(self, campaign: str) -> list[dict[str, Any]]:
        """Every QC check row of a campaign, in order."""
        rows = self._conn.execute(
            "SELECT q.*, a.arch_hash FROM qc_checks q JOIN architectures a ON a.id = q.arch_id "
            "WHERE campaign=? ORDER BY q.id", (campaign,))
        return [dict(r) for r in rows]

    def qc_baseline(self, campaign: str) -> dict[str, float]:
        """Latency of every reference model at the campaign's first check (the drift baseline)."""
        rows = self._conn.execute(
            "SELECT a.arch_hash, q.latency_ms FROM qc_checks q JOIN architectures a ON a.id = q.arch_id "
            "WHERE q.campaign=? AND q.check_index = (SELECT min(check_index) FROM qc_checks WHERE campaign=?)",
            (campaign, campaign))
        return {r[0]: float(r[1]) for r in rows}

    def next_check_index(self, campaign: str) -> int:
        """Index for the campaign's next QC check."""
        row = self._conn.execute("SELECT max(check_index) FROM qc_checks WHERE campaign=?", (campaign,)).fetchone()
        return 0 if row[0] is None else int(row[0]) + 1


def _open_readonly(path: Path) -> sqlite3.Connection:
    uri = f"file:{path.resolve()}?mode=ro"
    try:
        conn = sqlite3.connect(uri, uri=True, timeout=60, isolation_level=None)
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        return conn
    except sqlite3.OperationalError:
        # a WAL database in a read-only folder cannot create its -shm file: read it as an immutable file
        conn = sqlite3.connect(f"file:{path.resolve()}?immutable=1", uri=True, isolation_level=None)
        return conn


def _row_to_measurement(row: sqlite3.Row) -> Measurement:
    data = dict(row)
    data["adaptive"] = bool(data["adaptive"])
    data["outlier"] = bool(data["outlier"])
    data["extra"] = json.loads(data["extra"]) if data.get("extra") else {}
    return Measurement.from_dict(data)
