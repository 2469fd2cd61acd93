"""The measurement store: one SQLite file (WAL) that keeps every measurement and never loses one.

It holds the search spaces (name, the space file's text and hash, the space's content fingerprint, default
input size), the architectures (canonical JSON and hash), the devices (a description and its hash, the *device
key*), the measurements (one current row per architecture, device, backend, precision, input size and batch
size; earlier values are moved to ``measurement_history`` when a model is measured again), the campaigns and
their quality-control checks.

Spaces are keyed by their *content fingerprint* (:func:`space_fingerprint`: name, family, defaults, options,
units and choices; not the description, comments or layout of the file), so a custom space file that reuses a
shipped space's name never shares measurements with it, while a reformatted copy of a file does. A lookup by
name alone refuses to guess when the name matches two different spaces.

Every measurement is committed in its own transaction, so a campaign killed with ``kill -9`` loses at most
the model it was measuring and the file stays consistent; running the campaign again skips what is stored.
Opening a store checks the file (``PRAGMA quick_check``, about 1 ms per MB) without writing anything beside
it; a damaged file, and any SQLite error later, becomes a one-line :class:`~nni_hwaware.errors.HwAwareError`
that names :func:`recover_store` (``nni-hwaware dataset recover``), which copies every readable row into a new
file. This is the API the ESM builder uses::

    store = MeasurementStore("measurements.db")
    device = store.device_id(description)                  # or a device key
    store.measured_hashes(space, device, "onnxruntime", input_size=32)
    store.get_latency(space, arch_hash, device, "onnxruntime", 32)
    df = store.dataset(space="resnet", input_size=32)     # pandas DataFrame
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
import sqlite3
import time
import urllib.parse
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from nni_hwaware.artifacts import atomic_path
from nni_hwaware.errors import HwAwareError, ParameterError

if TYPE_CHECKING:
    import pandas as pd

    from nni_hwaware.spaces import SearchSpace

#: Version 2 added ``spaces.fingerprint``; version 3 the raw and the normalized latency
#: (``measurements.latency_raw_ms``, ``normalization``; ``qc_checks.factor``). Older stores are migrated when
#: opened for writing and read as they are.
SCHEMA_VERSION = 3
ONNX_SPACE = "onnx"  # pseudo-space of ONNX files measured as they are
_SQLITE_HEADER = b"SQLite format 3\x00"
_FINGERPRINT_RE = re.compile(r"[0-9a-f]{16}")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS spaces (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    space_hash TEXT NOT NULL UNIQUE,
    space_text TEXT NOT NULL,
    default_input_size INTEGER,
    created_at REAL NOT NULL,
    fingerprint TEXT
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
    latency_raw_ms REAL,
    normalization TEXT,
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
    qc_status TEXT, campaign TEXT, attempt INTEGER, extra TEXT, measured_at REAL, latency_raw_ms REAL,
    normalization TEXT
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
    checked_at REAL NOT NULL,
    factor REAL
);
CREATE INDEX IF NOT EXISTS qc_checks_campaign ON qc_checks(campaign, check_index);
"""

_MEASUREMENT_COLUMNS = (
    "latency_ms", "latency_std_ms", "latency_median_ms", "latency_min_ms", "ci_half_width_ms", "runs", "warmup",
    "trim", "adaptive", "threads", "energy_mj", "power_w", "idle_power_w", "energy_meter", "build_time_s",
    "outlier", "qc_status", "campaign", "attempt", "extra", "measured_at", "latency_raw_ms", "normalization",
)
#: Columns added after version 1, per table, with the schema version that added them: a store older than that
#: gets them by ``ALTER TABLE`` (appended, so ``measurement_history`` keeps the column order of ``measurements``)
#: and is read without them.
_ADDED_COLUMNS: dict[str, tuple[tuple[str, str, int], ...]] = {
    "spaces": (("fingerprint", "TEXT", 2),),
    "measurements": (("latency_raw_ms", "REAL", 3), ("normalization", "TEXT", 3)),
    "measurement_history": (("latency_raw_ms", "REAL", 3), ("normalization", "TEXT", 3)),
    "qc_checks": (("factor", "REAL", 3),),
}
_LATER_COLUMNS = {table: frozenset(name for name, _, _ in added) for table, added in _ADDED_COLUMNS.items()}


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
        Trimmed mean latency; normalized to the references' baseline where ``normalization`` says so.
    latency_std_ms
        Standard deviation of the kept runs.
    runs
        Timed runs done (fewer than asked in adaptive mode).
    energy_mj
        Energy per inference above idle in mJ, ``None`` where no meter exists.
    extra
        Anything else worth keeping (protocol, rails, ...), JSON-able.
    latency_raw_ms
        The trimmed mean as timed, before normalization (``None``: not normalized, ``latency_ms`` is raw).
    normalization
        How ``latency_ms`` was normalized (:mod:`nni_hwaware.measure.normalize`), ``None`` when it was not.
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
    latency_raw_ms: float | None = None
    normalization: dict[str, Any] | None = None

    @property
    def timed_ms(self) -> float:
        """The latency as timed (raw), whether or not ``latency_ms`` was normalized."""
        return self.latency_raw_ms if self.latency_raw_ms is not None else self.latency_ms

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


def space_fingerprint(space: SearchSpace) -> str:
    """The content fingerprint that keys a space in the store (16 hex digits).

    ``space.fingerprint`` where the space has one; otherwise a hash of everything in the space that changes
    its architectures or their networks (what ``describe()`` shows, less the description and the source), the
    same hash ESM predictors record as ``space_fingerprint``. Comments, layout and description of the file do
    not change it; the name does, so two spaces that share a name stay apart only by content.
    """
    fingerprint = getattr(space, "fingerprint", None)
    if isinstance(fingerprint, str) and fingerprint:
        return fingerprint
    payload = json.dumps(
        {k: v for k, v in space.describe().items() if k not in ("description", "source", "num_architectures_sci")},
        sort_keys=True, default=str,
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def _fingerprint_of_text(name: str, text: str) -> str | None:
    """The fingerprint of a stored space from its file text, ``None`` if this version cannot parse it."""
    if name == ONNX_SPACE:
        return text_hash(text)
    import yaml

    from nni_hwaware.spaces.schema import parse_space

    try:
        space = parse_space(yaml.safe_load(text), source=f"<stored space {name}>")
    except (HwAwareError, yaml.YAMLError, ValueError, TypeError, KeyError, AttributeError):
        return None  # a space this version cannot read: it matches no space file that loads here either
    return space_fingerprint(space)


@functools.lru_cache(maxsize=1)
def _schema_columns() -> dict[str, frozenset[str]]:
    """Columns of every table of the current schema (read from the schema itself, not listed twice)."""
    conn = sqlite3.connect(":memory:")
    try:
        conn.executescript(_SCHEMA)
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        return {t: frozenset(r[1] for r in conn.execute(f"PRAGMA table_info({t})")) for t in tables}
    finally:
        conn.close()


# ------------------------------------------------------------------------------------------ SQLite errors
def _damaged(path: Path, detail: str) -> HwAwareError:
    return HwAwareError(
        f"database {path} is damaged ({detail}); copy its readable rows into a new file with "
        f"`nni-hwaware dataset recover --db {path} --out NEW.db` and use that file"
    )


def _db_error(path: Path, exc: sqlite3.DatabaseError) -> HwAwareError:
    """A one-line, actionable error for any SQLite error on the store ``path``."""
    message = " ".join(str(exc).split()) or type(exc).__name__
    code = getattr(exc, "sqlite_errorcode", None)
    primary = code & 0xFF if isinstance(code, int) else None
    if primary in (11, 26) or "malformed" in message or "not a database" in message or "decode" in message:
        return _damaged(path, message)  # SQLITE_CORRUPT, SQLITE_NOTADB, or text that is no longer UTF-8
    if primary in (8, 14) or "readonly" in message or "unable to open" in message or "read-only" in message:
        return HwAwareError(f"cannot write database {path} ({message}); the folder must be writable "
                            "(SQLite keeps -wal/-shm files beside it); choose a writable location")
    if primary in (5, 6) or "locked" in message:
        return HwAwareError(f"database {path} is locked by another process ({message}); wait for it to finish "
                            "or use another database file")
    if primary == 13:
        return HwAwareError(f"cannot write database {path}: the disk is full; free some space and run again")
    if primary == 10:
        return HwAwareError(f"cannot read or write database {path} (disk I/O error: {message}); check the disk, "
                            "or recover the readable rows with `nni-hwaware dataset recover`")
    return HwAwareError(f"cannot use database {path}: {message}")


_F = TypeVar("_F", bound=Callable[..., Any])


def _sqlite_errors_as_hwaware(method: _F) -> _F:
    """Turn any ``sqlite3.DatabaseError`` a store method meets into the one-line error of :func:`_db_error`."""

    @functools.wraps(method)
    def wrapper(self: MeasurementStore, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except sqlite3.DatabaseError as exc:
            raise _db_error(self.path, exc) from None

    return wrapper  # type: ignore[return-value]


def open_snapshot(path: Path) -> sqlite3.Connection:
    """A read-only connection that creates and changes no file beside the database.

    A WAL database without a ``-wal`` file has no writer and every commit in the file itself, which is then
    read as an immutable file (SQLite would otherwise create ``-wal``/``-shm`` files even to read). Otherwise
    (a writer may be active, or a rollback-journal database, which readers open without side files) SQLite's
    read-only mode takes the usual locks; if that fails (a read-only folder), the file is read as it is.
    """
    resolved = path.resolve()
    uri = "file:" + urllib.parse.quote(str(resolved))
    try:
        with resolved.open("rb") as fh:
            header = fh.read(20)
    except OSError:
        header = b""
    wal_file = header[18:20] == b"\x02\x02"  # file format versions 2: WAL
    if not wal_file or Path(f"{resolved}-wal").exists():
        conn = sqlite3.connect(f"{uri}?mode=ro", uri=True, timeout=60, isolation_level=None)
        try:
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
            return conn
        except sqlite3.OperationalError:
            conn.close()
        except sqlite3.DatabaseError:
            return conn  # damaged: the caller reports it
    return sqlite3.connect(f"{uri}?immutable=1", uri=True, isolation_level=None)


def _read_header(path: Path) -> bytes:
    """The first 100 bytes of an existing database file (empty for an empty file), or a one-line error."""
    if path.is_dir():
        raise HwAwareError(f"database {path} is a folder; give a database file name")
    try:
        with path.open("rb") as fh:
            head = fh.read(100)
    except PermissionError:
        raise HwAwareError(f"cannot read database {path}: permission denied") from None
    except OSError as exc:
        raise HwAwareError(f"cannot read database {path}: {exc.strerror or exc}") from None
    if head and not head.startswith(_SQLITE_HEADER):
        raise HwAwareError(f"{path} is not an SQLite database (it does not start with the SQLite header); give "
                           "the database file that `nni-hwaware measure` wrote, or a new file name")
    return head


def inspect_database(conn: sqlite3.Connection, path: Path) -> int | None:
    """Check an open database: integrity (``PRAGMA quick_check``) and that it is a store of ours.

    Returns
    -------
    int or None
        The schema version, or ``None`` for a database without any table (a new store).

    Raises
    ------
    HwAwareError
        If the file is damaged, belongs to another program, or was written by a newer nni-hwaware.
    """
    try:
        problems = [r[0] for r in conn.execute("PRAGMA quick_check(5)")]
        if problems != ["ok"]:
            detail = " ".join("; ".join(map(str, problems)).split())
            raise _damaged(path, f"SQLite's quick_check: {detail[:160]}")
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if not tables:
            return None
        expected = _schema_columns()
        missing = [t for t in expected if t not in tables]
        if missing:
            raise HwAwareError(f"{path} is an SQLite database of another program (tables "
                               f"{', '.join(sorted(tables)[:6])}); give another database file")
        for table, columns in expected.items():
            have = {r[1] for r in conn.execute(f"PRAGMA table_info({table})")}
            lacking = columns - have - _LATER_COLUMNS.get(table, frozenset())
            if lacking:
                raise HwAwareError(f"{path} is an SQLite database of another program (table {table} lacks "
                                   f"{', '.join(sorted(lacking)[:4])}); give another database file")
        row = conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
    except sqlite3.DatabaseError as exc:
        raise _db_error(path, exc) from None
    try:
        version = int(row[0]) if row is not None else None
    except (TypeError, ValueError):
        version = None
    if version is None:
        raise HwAwareError(f"{path} is not a measurement database of nni-hwaware (no schema version); "
                           "give another database file")
    if version > SCHEMA_VERSION:
        raise HwAwareError(f"{path} has schema version {version}, this nni-hwaware reads up to "
                           f"{SCHEMA_VERSION}; upgrade nni-hwaware")
    return version


class MeasurementStore:
    """A SQLite measurement database (created on first use).

    Parameters
    ----------
    path
        The database file.
    readonly
        Open for reading only (exports); the file must exist, and nothing is written beside it.

    Raises
    ------
    HwAwareError
        If the path is a folder or in a missing folder, the file is damaged (``PRAGMA quick_check``; the
        message says how to recover its readable rows), not SQLite, another program's database, or from a
        newer nni-hwaware; nothing is written in any of these cases. Any SQLite error of a later call is
        turned into a one-line :class:`HwAwareError` as well.

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
        # space row id -> (name, fingerprint), committed rows only (rows are never deleted, ids only grow)
        self._spaces_seen: dict[int, tuple[str, str]] = {}
        self._has_fingerprint_column = True
        self._has_raw_columns = True  # version 3: latency_raw_ms, normalization
        self._conn = self._connect()

    # ------------------------------------------------------------------------------------------ opening
    def _connect(self) -> sqlite3.Connection:
        """Check the file without writing anything, then open it (creating and migrating when writing)."""
        path = self.path
        existed = path.exists() or path.is_symlink()
        if not existed:
            if self.readonly:
                raise HwAwareError(f"database {path} does not exist; measure something into it first")
            if not path.parent.is_dir():
                raise HwAwareError(f"cannot create database {path}: folder {path.parent} does not exist")
            return self._open_for_writing(None, created=True)
        if not path.is_file():
            if path.is_dir():
                raise HwAwareError(f"database {path} is a folder; give a database file name")
            raise HwAwareError(f"database {path} is not a regular file; give a database file name")
        head = _read_header(path)
        if not head:
            if self.readonly:
                raise HwAwareError(f"database {path} is an empty file; measure something into it first")
            return self._open_for_writing(None, created=False)
        try:
            snapshot = open_snapshot(path)
        except sqlite3.DatabaseError as exc:
            raise _db_error(path, exc) from None
        try:
            version = inspect_database(snapshot, path)
            if self.readonly:
                if version is None:
                    raise HwAwareError(f"database {path} holds no measurements (no tables); measure something "
                                       "into it first")
                snapshot.row_factory = sqlite3.Row
                self._has_fingerprint_column = version >= 2
                self._has_raw_columns = version >= 3
                return snapshot
        except BaseException:
            snapshot.close()
            raise
        snapshot.close()
        return self._open_for_writing(version, created=False)

    def _open_for_writing(self, version: int | None, *, created: bool) -> sqlite3.Connection:
        """Open read-write in WAL mode; create the schema (``version`` None) or migrate an older one."""
        conn = None
        try:
            conn = sqlite3.connect(str(self.path), timeout=60, isolation_level=None)
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA busy_timeout = 60000")
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise sqlite3.OperationalError(f"cannot switch to WAL journal (got {mode})")
            conn.execute("PRAGMA synchronous = FULL")
            conn.execute("PRAGMA foreign_keys = ON")
            if version is None:
                self._init_schema(conn)
            elif version < SCHEMA_VERSION:
                self._migrate(conn)
            return conn
        except BaseException as exc:
            if conn is not None:
                conn.close()
            if created and self.path.is_file() and self.path.stat().st_size == 0:
                self.path.unlink()  # leave no empty file behind when a new store could not be set up
            if isinstance(exc, sqlite3.DatabaseError):
                raise _db_error(self.path, exc) from None
            raise

    @staticmethod
    def _init_schema(conn: sqlite3.Connection) -> None:
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

    @staticmethod
    def _migrate(conn: sqlite3.Connection) -> None:
        """Bring an older store to this version in one transaction: add the later columns; version 1 -> 2 also
        computes ``spaces.fingerprint`` from the stored space texts."""
        conn.execute("BEGIN IMMEDIATE")
        try:
            version = int(conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0])
            # another process may have migrated it while this one waited for the lock
            for table, added in _ADDED_COLUMNS.items():
                have = {r[1] for r in conn.execute(f"PRAGMA table_info({table})")}
                for name, kind, since in added:
                    if version < since and name not in have:
                        conn.execute(f"ALTER TABLE {table} ADD COLUMN {name} {kind}")
            if version < 2:
                rows = conn.execute("SELECT id, name, space_hash, space_text FROM spaces").fetchall()
                for row in rows:
                    fingerprint = _fingerprint_of_text(row["name"], row["space_text"]) or row["space_hash"]
                    conn.execute("UPDATE spaces SET fingerprint=? WHERE id=?", (fingerprint, row["id"]))
            if version < SCHEMA_VERSION:
                conn.execute("UPDATE meta SET value=? WHERE key='schema_version'", (str(SCHEMA_VERSION),))
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    @_sqlite_errors_as_hwaware
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
            raise _db_error(self.path, exc) from None
        try:
            yield conn
            conn.execute("COMMIT")
        except sqlite3.DatabaseError as exc:
            self._rollback(conn)
            raise _db_error(self.path, exc) from None
        except BaseException:
            self._rollback(conn)
            raise

    def _rollback(self, conn: sqlite3.Connection) -> None:
        try:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
        except sqlite3.DatabaseError:
            pass  # the original error is the one to report; SQLite rolls back a failed transaction itself

    # ------------------------------------------------------------------------------------- identities
    def _spaces(self, conn: sqlite3.Connection | None = None) -> dict[int, tuple[str, str]]:
        """Every stored space: row id -> (name, content fingerprint); rows added since the last call are read."""
        conn = conn or self._conn
        last = max(self._spaces_seen, default=0)
        column = "fingerprint" if self._has_fingerprint_column else "NULL AS fingerprint"
        rows = conn.execute(f"SELECT id, name, space_hash, space_text, {column} FROM spaces WHERE id > ? "
                            "ORDER BY id", (last,)).fetchall()
        found = dict(self._spaces_seen)
        for row in rows:
            fingerprint = row[4] or _fingerprint_of_text(row[1], row[3]) or row[2]
            found[int(row[0])] = (str(row[1]), str(fingerprint))
            if not conn.in_transaction:  # a row written inside a transaction may still be rolled back
                self._spaces_seen[int(row[0])] = found[int(row[0])]
        return found

    @_sqlite_errors_as_hwaware
    def space_id(self, space: SearchSpace | str, *, conn: sqlite3.Connection | None = None,
                 create: bool = True) -> int | None:
        """Row id of a space: a :class:`SearchSpace` (matched by name and content fingerprint) or a name.

        A name must match one space of the store (see :meth:`space_ids`); a name the store does not hold is
        loaded as a shipped space when ``create`` is true. ``"onnx"`` is the pseudo-space of ONNX files.
        """
        conn = conn or self._conn
        if isinstance(space, str):
            if space != ONNX_SPACE:
                ids = self.space_ids(space, conn=conn)
                if ids or not create:
                    return min(ids) if ids else None
                from nni_hwaware.spaces import load_space

                return self.space_id(load_space(space), conn=conn, create=create)
            text, name, size, fingerprint = "ONNX files, measured as they are", ONNX_SPACE, None, None
        else:
            text, name, size, fingerprint = space_text(space), space.name, space.input_size, space_fingerprint(space)
        fingerprint = fingerprint or text_hash(text)
        ids = [i for i, (n, f) in self._spaces(conn).items() if n == name and f == fingerprint]
        if ids:
            return min(ids)
        if not create:
            return None
        key = text_hash(text)
        same_text = conn.execute("SELECT id FROM spaces WHERE space_hash=?", (key,)).fetchone()
        if same_text is not None:
            # the same file under an older definition of the fingerprint: record the current one
            conn.execute("UPDATE spaces SET fingerprint=? WHERE id=?", (fingerprint, same_text[0]))
            self._spaces_seen.clear()
            return int(same_text[0])
        cur = conn.execute(
            "INSERT INTO spaces (name, space_hash, space_text, default_input_size, created_at, fingerprint) "
            "VALUES (?,?,?,?,?,?)", (name, key, text, size, time.time(), fingerprint))
        return int(cur.lastrowid)

    @_sqlite_errors_as_hwaware
    def space_ids(self, space: SearchSpace | str, *, conn: sqlite3.Connection | None = None) -> list[int]:
        """Row ids of a space: a :class:`SearchSpace`, a content fingerprint, or a name.

        Rows of one space differ only when a store written before fingerprints held several texts of it.

        Raises
        ------
        HwAwareError
            If a name matches spaces with different content (a custom file that reuses a shipped space's
            name, or an older version of a space): the message lists their fingerprints to choose from.
        """
        spaces = self._spaces(conn)
        if not isinstance(space, str):
            name, fingerprint = space.name, space_fingerprint(space)
            return sorted(i for i, (n, f) in spaces.items() if n == name and f == fingerprint)
        if _FINGERPRINT_RE.fullmatch(space):
            ids = sorted(i for i, (_, f) in spaces.items() if f == space)
            if ids:
                return ids
        ids = sorted(i for i, (n, _) in spaces.items() if n == space)
        fingerprints = sorted({spaces[i][1] for i in ids})
        if len(fingerprints) > 1:
            raise HwAwareError(
                f"space name {space!r} matches {len(fingerprints)} different spaces in {self.path} (fingerprints "
                f"{', '.join(fingerprints)}: a custom space file with the same name, or another version); choose "
                "one by its space file (--space FILE.yaml) or its fingerprint (--space FINGERPRINT)")
        return ids

    def _space_ids_for(self, space: SearchSpace | str | None) -> list[int] | None:
        """Every row of a space (``None``: no filter)."""
        return None if space is None else self.space_ids(space)

    @_sqlite_errors_as_hwaware
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

    @_sqlite_errors_as_hwaware
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
    @_sqlite_errors_as_hwaware
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
               "extra": json.dumps(m.extra, sort_keys=True, default=str) if m.extra else None,
               "normalization": json.dumps(m.normalization, sort_keys=True) if m.normalization else None}
        return [row[c] for c in _MEASUREMENT_COLUMNS]

    @_sqlite_errors_as_hwaware
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

    @_sqlite_errors_as_hwaware
    def measured_hashes(self, space: SearchSpace | str, device: Any, backend: str, input_size: int, *,
                        precision: str = "fp32", batch_size: int = 1) -> set[str]:
        """Hashes of the architectures of a space already measured with this configuration."""
        where, params = self._where(space, device, backend, input_size, precision, batch_size)
        rows = self._conn.execute(
            f"SELECT a.arch_hash FROM measurements m JOIN architectures a ON a.id = m.arch_id WHERE {where}", params)
        return {r[0] for r in rows}

    @_sqlite_errors_as_hwaware
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

    @_sqlite_errors_as_hwaware
    def get_latency(self, space: SearchSpace | str, arch_hash: str, device: Any, backend: str, input_size: int,
                    *, precision: str = "fp32", batch_size: int = 1) -> float | None:
        """The stored trimmed-mean latency in ms of one architecture, or ``None`` if not measured."""
        m = self.get_measurement(space, arch_hash, device, backend, input_size, precision=precision,
                                 batch_size=batch_size)
        return None if m is None else m.latency_ms

    @_sqlite_errors_as_hwaware
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

    @_sqlite_errors_as_hwaware
    def count(self, table: str = "measurements") -> int:
        """Number of rows of a table."""
        if table not in {"measurements", "measurement_history", "architectures", "devices", "spaces", "qc_checks",
                         "campaigns"}:
            raise HwAwareError(f"unknown table {table!r}")
        return int(self._conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])

    @_sqlite_errors_as_hwaware
    def integrity_check(self) -> str:
        """SQLite's ``PRAGMA integrity_check`` (``"ok"`` when the file is sound, else its first problems)."""
        problems = [str(r[0]) for r in self._conn.execute("PRAGMA integrity_check(5)")]
        return "; ".join(problems)

    @_sqlite_errors_as_hwaware
    def dataset(self, *, space: SearchSpace | str | None = None, device: Any = None, backend: str | None = None,
                input_size: int | None = None, precision: str | None = None, batch_size: int | None = None,
                include_outliers: bool = True) -> pd.DataFrame:
        """All current measurements as a table, one row per measured model.

        Columns: ``space, space_fingerprint, arch, arch_hash, device, device_description, backend,
        backend_version, precision, threads, input_size, batch_size, latency_ms, latency_std_ms,
        latency_median_ms, runs, energy_mj, power_w, build_time_s, outlier, qc_status, attempt, campaign,
        measured_at, latency_raw_ms, normalization``. ``latency_ms`` is normalized where ``normalization`` names
        how (then ``latency_raw_ms`` is the figure as timed); elsewhere both are the figure as timed. ``space`` may be a :class:`SearchSpace`, a name or a fingerprint (see :meth:`space_ids`).

        Examples
        --------
        >>> import tempfile, os
        >>> MeasurementStore(os.path.join(tempfile.mkdtemp(), "m.db")).dataset().shape[0]
        0
        """
        import pandas as pd

        for name, value in (("input_size", input_size), ("batch_size", batch_size)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ParameterError(f"{name} must be a positive integer, got {value!r}", parameter=name)
        where, params = self._where(space, device, backend, input_size, precision, batch_size)
        if not include_outliers:
            where += " AND m.outlier = 0"
        rows = self._conn.execute(
            "SELECT s.name AS space, a.space_id, a.arch_json AS arch, a.arch_hash, d.device_key AS device, "
            "d.description AS device_description, m.backend, m.precision, m.threads, m.input_size, m.batch_size, "
            "m.latency_ms, m.latency_std_ms, m.latency_median_ms, m.runs, m.energy_mj, m.power_w, m.build_time_s, "
            "m.outlier, m.qc_status, m.attempt, m.campaign, m.measured_at, "
            + ("m.latency_raw_ms, m.normalization " if self._has_raw_columns else "NULL, NULL ")
            + "FROM measurements m JOIN architectures a ON a.id = m.arch_id JOIN spaces s ON s.id = a.space_id "
            f"JOIN devices d ON d.id = m.device_id WHERE {where} ORDER BY m.id", params).fetchall()
        columns = ["space", "space_fingerprint", "arch", "arch_hash", "device", "device_description", "backend",
                   "precision", "threads", "input_size", "batch_size", "latency_ms", "latency_std_ms",
                   "latency_median_ms", "runs", "energy_mj", "power_w", "build_time_s", "outlier", "qc_status",
                   "attempt", "campaign", "measured_at", "latency_raw_ms", "normalization"]
        spaces = self._spaces() if rows else {}
        df = pd.DataFrame([(r[0], spaces.get(r[1], ("", None))[1], *tuple(r)[2:]) for r in rows], columns=columns)
        df.insert(columns.index("precision"), "backend_version",
                  [_json_object(d).get("backend_version") for d in df["device_description"]])
        df["outlier"] = df["outlier"].astype(bool)
        df["energy_mj"] = df["energy_mj"].astype(float)
        df["latency_raw_ms"] = df["latency_raw_ms"].astype(float).fillna(df["latency_ms"])
        df["normalization"] = [_json_object(n).get("method") for n in df["normalization"]]
        return df

    # ------------------------------------------------------------------------------ campaigns and QC
    @_sqlite_errors_as_hwaware
    def start_campaign(self, campaign_id: str, config: dict[str, Any]) -> bool:
        """Record a campaign; returns ``False`` if it already exists (a resumed campaign)."""
        now = time.time()
        with self.transaction() as conn:
            cur = conn.execute("INSERT OR IGNORE INTO campaigns VALUES (?,?,?,?,?)",
                               (campaign_id, json.dumps(config, sort_keys=True), now, now, "running"))
            if cur.rowcount == 0:
                conn.execute("UPDATE campaigns SET updated_at=?, status='running' WHERE id=?", (now, campaign_id))
            return cur.rowcount == 1

    @_sqlite_errors_as_hwaware
    def finish_campaign(self, campaign_id: str, status: str = "done") -> None:
        """Mark a campaign as finished."""
        with self.transaction() as conn:
            conn.execute("UPDATE campaigns SET updated_at=?, status=? WHERE id=?", (time.time(), status, campaign_id))

    @_sqlite_errors_as_hwaware
    def add_qc_check(self, campaign: str, check_index: int, models_done: int, results: list[dict[str, Any]],
                     *, space: SearchSpace, device: Any, backend: str, precision: str, input_size: int) -> None:
        """Store one QC check: ``results`` holds per reference ``arch_hash, arch_json, latency_ms,
        latency_std_ms, baseline_ms, drift, ok`` and, for a normalized window, ``factor``; one transaction."""
        with self.transaction() as conn:
            sid = self.space_id(space, conn=conn)
            did = self.device_id(device, conn=conn)
            for r in results:
                arch_id = self._arch_id(conn, sid, r["arch_hash"], r["arch_json"])
                conn.execute(
                    "INSERT INTO qc_checks (campaign, check_index, models_done, arch_id, device_id, backend, precision,"
                    " input_size, latency_ms, latency_std_ms, baseline_ms, drift, ok, checked_at, factor) "
                    "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                    (campaign, check_index, models_done, arch_id, did, backend, precision, input_size,
                     r["latency_ms"], r.get("latency_std_ms"), r.get("baseline_ms"), r.get("drift"),
                     int(bool(r["ok"])), time.time(), r.get("factor")))

    @_sqlite_errors_as_hwaware
    def qc_checks(self, campaign: str) -> list[dict[str, Any]]:
        """Every QC check row of a campaign, in order."""
        rows = self._conn.execute(
            "SELECT q.*, a.arch_hash FROM qc_checks q JOIN architectures a ON a.id = q.arch_id "
            "WHERE campaign=? ORDER BY q.id", (campaign,))
        return [dict(r) for r in rows]

    @_sqlite_errors_as_hwaware
    def qc_baseline(self, campaign: str) -> dict[str, float]:
        """Latency of every reference model at the campaign's first check (the drift baseline)."""
        rows = self._conn.execute(
            "SELECT a.arch_hash, q.latency_ms FROM qc_checks q JOIN architectures a ON a.id = q.arch_id "
            "WHERE q.campaign=? AND q.check_index = (SELECT min(check_index) FROM qc_checks WHERE campaign=?)",
            (campaign, campaign))
        return {r[0]: float(r[1]) for r in rows}

    @_sqlite_errors_as_hwaware
    def reference_baseline(self, space: SearchSpace | str, device: Any, backend: str, input_size: int, *,
                           precision: str = "fp32", latest: bool = False) -> dict[str, float]:
        """The device's baseline of each reference model: its latency at its first check on this device, backend,
        precision and input size, whatever the campaign (``latest``: at its most recent check instead).

        Normalized latencies of every campaign on a device are expressed at this one speed, so two campaigns
        measured at different times give comparable figures.
        """
        space_ids = self._space_ids_for(space) or []
        did = self.device_id(device, create=False)
        if did is None or not space_ids:
            return {}
        rows = self._conn.execute(
            "SELECT a.arch_hash, q.latency_ms FROM qc_checks q JOIN architectures a ON a.id = q.arch_id "
            f"WHERE a.space_id IN ({','.join('?' * len(space_ids))}) AND q.device_id=? AND q.backend=? "
            f"AND q.precision=? AND q.input_size=? ORDER BY q.id {'ASC' if latest else 'DESC'}",
            (*space_ids, did, backend, precision, input_size))
        return {r[0]: float(r[1]) for r in rows}  # the last row of each reference wins

    @_sqlite_errors_as_hwaware
    def next_check_index(self, campaign: str) -> int:
        """Index for the campaign's next QC check."""
        row = self._conn.execute("SELECT max(check_index) FROM qc_checks WHERE campaign=?", (campaign,)).fetchone()
        return 0 if row[0] is None else int(row[0]) + 1


# ------------------------------------------------------------------------------------------ recovery
#: Tables copied by :func:`recover_store`, referenced rows first (``meta`` is written by the new store).
_RECOVERY_ORDER = ("spaces", "devices", "architectures", "campaigns", "measurements", "measurement_history",
                   "qc_checks")
#: Linear probing past a damaged spot gives up on single steps after this many failures, then doubles them.
_LINEAR_PROBES = 1024


@dataclass
class RecoveryReport:
    """What :func:`recover_store` copied.

    Parameters
    ----------
    copied
        Rows copied, per table.
    damaged_spots
        Places where a table could not be read (a damaged page or row); the rows there are lost.
    dropped
        Rows read but left out: they referenced lost rows or broke the schema's constraints.
    missing_tables
        Tables of the store that could not be found in the damaged file.
    """

    copied: dict[str, int] = field(default_factory=dict)
    damaged_spots: int = 0
    dropped: int = 0
    missing_tables: list[str] = field(default_factory=list)


def recover_store(source: str | Path, target: str | Path) -> RecoveryReport:
    """Copy every readable row of a damaged store into a new store file (``nni-hwaware dataset recover``).

    The damaged file is only read (no file is written beside it). Each table is read in rowid order; where a
    damaged page stops the scan, the next readable rowid is found by seeking (single steps, then doubling
    steps and a bisection) and the scan resumes there. Rows that reference lost rows are left out, so the new
    store is consistent. It is written to a temporary file and renamed to ``target`` when complete.

    Raises
    ------
    HwAwareError
        If ``source`` is no SQLite file or its table list is unreadable, or ``target`` exists or cannot be
        written.
    """
    source, target = Path(source), Path(target)
    _check_recovery_paths(source, target)
    padded = target.with_name(f".{target.name}.padded")
    # SQLite refuses a file shorter than its header says; a copy padded with empty pages reads up to the cut
    readable = padded if _pad_if_truncated(source, padded) else source
    report = RecoveryReport()
    src = None
    try:
        src = open_snapshot(readable)
        tables = _source_tables(src, source)
        with atomic_path(target) as tmp:  # the new store appears under its name only when complete
            try:
                with MeasurementStore(tmp) as store, store.transaction() as conn:
                    for table in _RECOVERY_ORDER:
                        if table in tables:
                            _copy_table(src, conn, table, tables[table], report)
                        else:
                            report.missing_tables.append(table)
            except BaseException:
                _remove_database_files(tmp)  # SQLite's side files; atomic_path removes only the file
                raise
    except sqlite3.DatabaseError as exc:
        raise _db_error(source, exc) from None
    finally:
        if src is not None:
            src.close()
        padded.unlink(missing_ok=True)
    return report


def _pad_if_truncated(source: Path, padded: Path) -> bool:
    """Write ``padded``, a copy of ``source`` as long as its header says, if ``source`` is shorter."""
    header = _read_header(source)
    page_size = int.from_bytes(header[16:18], "big") if len(header) >= 32 else 0
    page_size = 65536 if page_size == 1 else page_size
    pages = int.from_bytes(header[28:32], "big") if len(header) >= 32 else 0
    size = source.stat().st_size
    if not page_size or size >= page_size * pages or page_size * pages > 2 * size + 2**26:
        return False  # complete, or a header too damaged to trust
    try:
        with source.open("rb") as fh:
            data = fh.read()
        padded.write_bytes(data + bytes(page_size * pages - len(data)))
    except OSError as exc:
        raise HwAwareError(f"cannot write {padded}: {exc.strerror}; choose a writable location") from None
    return True


def _check_recovery_paths(source: Path, target: Path) -> None:
    if not source.is_file():
        raise HwAwareError(f"database {source} does not exist or is not a file; nothing to recover")
    if not _read_header(source):
        raise HwAwareError(f"database {source} is an empty file; nothing to recover")
    if target.exists() or target.is_symlink():
        raise ParameterError(f"target {target} exists; give a new file name (recovery never overwrites a file)",
                             parameter="target")
    if not target.parent.is_dir():
        raise HwAwareError(f"cannot write {target}: folder {target.parent} does not exist")


def _remove_database_files(path: Path) -> None:
    for name in (path, Path(f"{path}-wal"), Path(f"{path}-shm"), Path(f"{path}-journal")):
        name.unlink(missing_ok=True)


def _source_tables(src: sqlite3.Connection, source: Path) -> dict[str, list[str]]:
    """The store tables of the damaged file and their columns, from its (readable) table list."""
    try:
        names = [r[0] for r in src.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        expected = _schema_columns()
        tables = {t: [r[1] for r in src.execute(f"PRAGMA table_info({t})")] for t in names if t in expected}
    except sqlite3.DatabaseError as exc:
        raise HwAwareError(f"the table list of {source} is damaged ({exc}), so no row can be located; "
                           "nothing to recover") from None
    if "measurements" not in tables:
        raise HwAwareError(f"{source} is not a measurement database of nni-hwaware (no measurements table); "
                           "nothing to recover")
    return tables


def _copy_table(src: sqlite3.Connection, dst: sqlite3.Connection, table: str, src_columns: list[str],
                report: RecoveryReport) -> None:
    """Insert every readable row of ``table`` into the new store, keeping row ids (references stay valid)."""
    columns = [c for c in src_columns if c in _schema_columns()[table]]
    add_fingerprint = table == "spaces" and "fingerprint" not in columns  # a version-1 store
    names = columns + (["fingerprint"] if add_fingerprint else [])
    insert = f"INSERT INTO {table} ({', '.join(names)}) VALUES ({', '.join('?' * len(names))})"
    copied = 0
    for row in _readable_rows(src, table, columns, report):
        values = list(row)
        if table == "spaces":
            record = dict(zip(columns, values))
            fingerprint = record.get("fingerprint") or _fingerprint_of_text(
                str(record.get("name")), str(record.get("space_text"))) or record.get("space_hash")
            if add_fingerprint:
                values.append(fingerprint)
            else:
                values[columns.index("fingerprint")] = fingerprint
        try:
            dst.execute(insert, values)
            copied += 1
        except (sqlite3.IntegrityError, sqlite3.InterfaceError):
            report.dropped += 1  # references a lost row, or a damaged value breaks a constraint
    report.copied[table] = copied


def _readable_rows(src: sqlite3.Connection, table: str, columns: list[str],
                   report: RecoveryReport) -> Iterator[tuple[Any, ...]]:
    """Rows of ``table`` in rowid order, skipping the damaged parts (counted in ``report.damaged_spots``)."""
    select = ", ".join(["rowid", *columns])
    scan = f"SELECT {select} FROM {table} WHERE rowid > ? ORDER BY rowid"
    one = f"SELECT {select} FROM {table} WHERE rowid = ?"
    position = 0  # the store's rowids start at 1
    while True:
        try:
            for row in src.execute(scan, (position,)):
                position = row[0]
                yield tuple(row[1:])
            return
        except sqlite3.DatabaseError:
            report.damaged_spots += 1
        following = _next_seekable_rowid(src, table, position)
        if following is None:
            return
        try:  # the row there may itself be unreadable (damaged text): then it is skipped too
            row = src.execute(one, (following,)).fetchone()
        except sqlite3.DatabaseError:
            row = None
        position = following
        if row is not None:
            yield tuple(row[1:])


def _next_seekable_rowid(src: sqlite3.Connection, table: str, after: int) -> int | None:
    """The first rowid after ``after`` that SQLite can reach, or ``None`` if none is left."""
    probe = f"SELECT rowid FROM {table} WHERE rowid >= ? ORDER BY rowid LIMIT 1"

    def seek(rowid: int) -> tuple[bool, int | None]:
        try:
            row = src.execute(probe, (rowid,)).fetchone()
        except sqlite3.DatabaseError:
            return False, None
        return True, (None if row is None else int(row[0]))

    last_failed, candidate, step, failures = after, after + 1, 1, 0
    while candidate < 2**63:
        ok, found = seek(candidate)
        if ok:
            # with long steps, readable rows may lie between the last failure and here: bisect back to them
            low, high = last_failed, candidate
            while high - low > 1 and step > 1:
                middle = (low + high) // 2
                if seek(middle)[0]:
                    high = middle
                else:
                    low = middle
            return seek(high)[1] if high != candidate else found
        last_failed, failures = candidate, failures + 1
        if failures >= _LINEAR_PROBES:
            step *= 2
        candidate += step
    return None


def _json_object(text: Any) -> dict[str, Any]:
    """A stored JSON object, or ``{}`` when the text is missing or not an object (rows copied by recovery)."""
    try:
        value = json.loads(text) if text else {}
    except (TypeError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def _row_to_measurement(row: sqlite3.Row) -> Measurement:
    data = dict(row)
    data["adaptive"] = bool(data["adaptive"])
    data["outlier"] = bool(data["outlier"])
    data["extra"] = _json_object(data.get("extra"))
    data["normalization"] = _json_object(data.get("normalization")) or None
    return Measurement.from_dict(data)
