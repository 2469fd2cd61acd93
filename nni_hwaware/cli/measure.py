"""``nni-hwaware measure`` and ``nni-hwaware dataset ...``: measure on this device, export and import data.

``measure --space`` runs a resumable, quality-controlled campaign over the architectures that ``spaces
sample`` selects with the same arguments; ``measure --onnx`` measures ONNX files as they are. ``dataset
export`` writes the store as CSV or Parquet; ``dataset recover`` copies the readable rows of a damaged store
into a new file; ``dataset import-nni`` collects the results of an nnictl measuring experiment
(``experiments/measure.yml``). Every argument is checked before the database is opened, so a bad one leaves
no file behind.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
from pathlib import Path
from typing import Any

from nni_hwaware.cli.options import add_dataclass_options, dataclass_from_args, parameter_default
from nni_hwaware.errors import HwAwareError
from nni_hwaware.measure.backends import BACKENDS, PRECISIONS
from nni_hwaware.measure.campaign import Campaign
from nni_hwaware.measure.energy import METERS
from nni_hwaware.measure.protocol import Protocol
from nni_hwaware.measure.remote import JetsonDatasetProtocol, device_argument
from nni_hwaware.measure.runner import make_measurer
from nni_hwaware.spaces.sampling import DEFAULT_BINS, STRATEGIES, sample_architectures

EXPORT_FORMATS = ("csv", "parquet")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``measure`` and ``dataset`` commands."""
    p = subparsers.add_parser(
        "measure", help="measure latency (and energy) of sampled architectures or ONNX files into a database",
        description="Measure sampled architectures of a space (--space) or ONNX files (--onnx) on this device. "
                    "Results go to an SQLite database; running the same command again resumes.")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--space", help="search space name or YAML file")
    what.add_argument("--onnx", nargs="+", metavar="FILE", help="ONNX file(s) to measure as they are")
    p.add_argument("--db", required=True, help="SQLite database file (created if missing)")
    g = p.add_argument_group("architectures (as `nni-hwaware spaces sample`)")
    g.add_argument("--n", type=int, default=None, help="number of architectures (required with --space)")
    g.add_argument("--seed", type=int, default=parameter_default(sample_architectures, "seed"))
    g.add_argument("--strategy", choices=STRATEGIES, default=parameter_default(sample_architectures, "strategy"))
    g.add_argument("--bins", type=int, default=DEFAULT_BINS)
    g.add_argument("--input-size", type=int, default=None, help="input resolution (default: the space's)")
    g = p.add_argument_group("backend")
    g.add_argument("--backend", choices=BACKENDS, default=parameter_default(make_measurer, "backend"))
    add_device_arguments(g)
    g.add_argument("--precision", choices=PRECISIONS, default=parameter_default(make_measurer, "precision"))
    g.add_argument("--threads", type=int, default=parameter_default(make_measurer, "threads"),
                   help="CPU inference threads (fixed and recorded)")
    g = p.add_argument_group("protocol (defaults: ESM paper)")
    g.add_argument("--protocol", choices=("esm", "jetson_dataset"), default="esm",
                   help="esm: warm-up, timed runs, trimmed mean; jetson_dataset (device agent only): the public "
                        "Jetson Nano dataset's timed host-side calls for --protocol-seconds, plain mean")
    add_dataclass_options(g, JetsonDatasetProtocol, ["seconds"], flags={"seconds": "--protocol-seconds"},
                          help={"seconds": "jetson_dataset: length of the timed window"})
    add_dataclass_options(g, Protocol, ["runs", "warmup", "trim", "adaptive", "ci_rel_width", "min_runs"],
                          flags={"ci_rel_width": "--ci-width"},
                          help={"adaptive": "stop once the CI of the trimmed mean is within --ci-width"})
    g = p.add_argument_group("quality control")
    g.add_argument("--qc-every", type=int, default=parameter_default(Campaign, "qc_every"), metavar="K",
                   help="check the reference models every K models (0: off; default: %(default)s)")
    g.add_argument("--qc-references", dest="references", type=int, default=parameter_default(Campaign, "references"),
                   metavar="N", help="number of reference architectures (default: %(default)s)")
    g.add_argument("--drift", dest="drift_threshold", type=float, metavar="REL",
                   default=parameter_default(Campaign, "drift_threshold"),
                   help="relative drift that fails a check (default: %(default)s)")
    add_window_argument(g, parameter_default(Campaign, "window"))
    g = p.add_argument_group("energy")
    g.add_argument("--energy", choices=METERS, default=parameter_default(make_measurer, "energy"),
                   help="meter (auto: what this machine has)")
    g.add_argument("--energy-seconds", type=float, default=parameter_default(make_measurer, "energy_seconds"),
                   help="length of each model's energy window")
    p.add_argument("--remeasure", action="store_true", help="--onnx: measure again even if stored")
    p.add_argument("--quiet", action="store_true", help="no progress line")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=_measure)

    d = subparsers.add_parser("dataset", help="export the measurement database, import nnictl results")
    sub = d.add_subparsers(dest="dataset_command", metavar="SUBCOMMAND")
    sub.required = True
    e = sub.add_parser("export", help="write the measurements as CSV or Parquet")
    e.add_argument("--db", required=True)
    e.add_argument("--format", choices=EXPORT_FORMATS, default=None, help="default: from --out, else csv")
    e.add_argument("--out", default=None, help="file to write (default: stdout, csv only)")
    e.add_argument("--space", default=None,
                   help="only this space: a name, a space file (matched by content) or a fingerprint")
    e.add_argument("--device", default=None, help="only this device key")
    e.add_argument("--backend", default=None)
    e.add_argument("--input-size", type=int, default=None)
    e.add_argument("--no-outliers", action="store_true", help="leave out measurements flagged as outliers")
    e.set_defaults(func=_export)
    s = sub.add_parser("summary", help="what the database holds")
    s.add_argument("--db", required=True)
    s.set_defaults(func=_summary)
    r = sub.add_parser("recover", help="copy every readable row of a damaged database into a new file",
                       description="Copy every readable row of a damaged measurement database into a new "
                                   "database file (the damaged file is only read).")
    r.add_argument("--db", required=True, help="the damaged database")
    r.add_argument("--out", dest="target", required=True, help="the new database file (must not exist)")
    r.set_defaults(func=_recover)
    i = sub.add_parser("import-nni", help="collect the results of an nnictl measuring experiment")
    i.add_argument("experiment_id")
    i.add_argument("--db", required=True)
    i.add_argument("--experiment-dir", dest="working_dir", default=None,
                   help="the experiment's working directory (default: from NNI's registry, ~/nni-experiments)")
    i.add_argument("--port", type=int, default=None, help="read through the REST API of the running experiment")
    i.set_defaults(func=_import_nni)


def add_window_argument(parser: Any, default: int) -> None:
    """``--window``: models timed interleaved with the reference models and normalized by them (as ``measure``
    and ``build`` take)."""
    parser.add_argument("--window", type=int, default=default, metavar="W",
                        help="time W models at a time interleaved with the reference models and normalize their "
                             "latencies by them, one check per window (0: one model at a time, checked every "
                             "--qc-every; remote devices always do that; default: %(default)s)")


def add_device_arguments(parser: Any) -> None:
    """``--device`` (repeatable: a pool of remote devices) and ``--token-file``, as every measuring command takes."""
    parser.add_argument("--device", action="append", default=None, metavar="DEVICE",
                        help="where to measure: cpu or cuda[:N] here (torch, tensorrt), or a device running the "
                             "agent: ssh://[user@]host[:port][?python=python3] or http://host:port; repeat "
                             "with URLs for a pool of identical devices")
    parser.add_argument("--token-file", default=None,
                        help="http:// devices: file holding the agent's token (default: $NNI_HWAWARE_TOKEN)")


# -------------------------------------------------------------------------------------------- measure
def _measure(args: argparse.Namespace) -> int:
    from nni_hwaware.measure.campaign import check_quality_control
    from nni_hwaware.measure.progress import Progress
    from nni_hwaware.measure.store import MeasurementStore

    # every argument is checked before the database is touched: a bad one leaves no file behind
    protocol = dataclass_from_args(Protocol, args)
    if args.protocol == "jetson_dataset":
        protocol = dataclass_from_args(JetsonDatasetProtocol, args, warmup=args.warmup)
    check_quality_control(args.qc_every, args.references, args.drift_threshold, args.window)
    device = device_argument(args.device)
    _check_db_argument(args.db, write=True)
    if args.space is not None:
        if args.n is None:
            raise HwAwareError("--space needs --n (how many architectures to measure)")
        from nni_hwaware.spaces import load_space, sample_architectures

        space = load_space(args.space)
        size = space.resolve_input_size(args.input_size)
        archs = sample_architectures(space, args.n, seed=args.seed, strategy=args.strategy, bins=args.bins)
    else:
        _check_onnx_files(args.onnx)
    # backend next: a missing library fails before the database is touched
    measurer = make_measurer(args.backend, threads=args.threads, device=device, precision=args.precision,
                             protocol=protocol, energy=args.energy, energy_seconds=args.energy_seconds,
                             token_file=args.token_file)
    created = not Path(args.db).exists()
    try:
        with MeasurementStore(args.db) as store:
            if args.space is not None:
                summary = _measure_space(args, space, archs, size, measurer, store, Progress)
            else:
                summary = _measure_onnx(args, measurer, store)
            summary["db_rows"] = store.count()
    except HwAwareError:
        if created:
            _remove_if_empty(Path(args.db))
        raise
    finally:
        measurer.close()
    if args.json:
        print(json.dumps(summary, indent=1))
    else:
        print(" ".join(f"{k}={round(v, 4) if isinstance(v, float) else v}" for k, v in summary.items()
                       if k not in ("device_description", "models", "devices")))
    return 0


def _check_db_argument(db: str, *, write: bool) -> None:
    """Fail early on a --db that can never be a database file (the store checks the file's content)."""
    path = Path(db)
    if path.is_dir():
        raise HwAwareError(f"--db {db} is a folder; give a database file name")
    if path.exists() and not path.is_file():
        raise HwAwareError(f"--db {db} is not a regular file; give a database file name")
    if write and not path.exists() and not path.parent.is_dir():
        raise HwAwareError(f"cannot create database {db}: folder {path.parent} does not exist")
    if not write and not path.exists():
        raise HwAwareError(f"database {db} does not exist; measure something into it first")


def _check_onnx_files(files: list[str]) -> None:
    for name in files:
        path = Path(name)
        if not path.is_file():
            what = "is a folder" if path.is_dir() else "does not exist"
            raise HwAwareError(f"--onnx {name} {what}; give ONNX model files")


def _remove_if_empty(db: Path) -> None:
    """Remove a database this command created when it failed before storing any measurement."""
    from nni_hwaware.measure.store import MeasurementStore

    try:
        with MeasurementStore(db, readonly=True) as store:
            empty = store.count() == 0
    except HwAwareError:
        return
    if empty:
        for path in (db, Path(f"{db}-wal"), Path(f"{db}-shm")):
            path.unlink(missing_ok=True)


def _measure_space(args, space, archs, size, measurer, store, progress_cls) -> dict:
    from nni_hwaware.measure.campaign import Campaign

    progress = progress_cls(len(archs), label=f"measure {space.name}", enabled=not args.quiet)
    definition = {"n": args.n, "seed": args.seed, "strategy": args.strategy,
                  "bins": args.bins if args.strategy == "balanced" else None}
    campaign = Campaign(space, archs, measurer, store, input_size=size, definition=definition,
                        qc_every=args.qc_every, references=args.references, drift_threshold=args.drift_threshold,
                        progress=progress, window=args.window)
    try:
        report = campaign.run()
    finally:
        progress.close()
    from nni_hwaware.measure.store import space_fingerprint

    summary = {**report.to_dict(), "space": space.name, "space_fingerprint": space_fingerprint(space),
               "input_size": size, "backend": measurer.backend.name,
               "device": measurer.device_key, "energy_meter": measurer.meter.name if measurer.meter else None}
    if hasattr(measurer, "connections"):  # a remote device or pool: which device measured how many models
        summary["devices"] = {c.url: n for c, n in zip(measurer.connections, measurer.models_measured)}
    if args.adaptive and report.runs_max:
        summary["runs_saved_pct"] = round(100 * report.runs_saved / report.runs_max, 1)
    return summary


def _measure_onnx(args, measurer, store) -> dict:
    from nni_hwaware.measure.runner import measure_onnx_file

    models, measured = [], 0
    for path in args.onnx:
        m, new = measure_onnx_file(path, measurer, store, remeasure=args.remeasure)
        measured += int(new)
        models.append({"file": path, "latency_ms": round(m.latency_ms, 4), "std_ms": round(m.latency_std_ms or 0, 4),
                       "runs": m.runs, "energy_mj": m.energy_mj, "stored": "new" if new else "already"})
        if not args.quiet and not args.json:
            print(f"{path}: {m.latency_ms:.4f} ms (std {m.latency_std_ms or 0:.4f}, {m.runs} runs, "
                  f"energy {'n/a' if m.energy_mj is None else f'{m.energy_mj:.3f} mJ'})"
                  f"{'' if new else ' [already stored]'}")
    return {"measured": measured, "skipped": len(args.onnx) - measured, "backend": measurer.backend.name,
            "device": measurer.device_key, "models": models}


# -------------------------------------------------------------------------------------------- dataset
def _export(args: argparse.Namespace) -> int:
    from nni_hwaware.measure.store import MeasurementStore
    from nni_hwaware.spaces.export import write_atomically

    fmt = args.format or ("parquet" if args.out and args.out.endswith(".parquet") else "csv")
    if fmt == "parquet" and not args.out:
        raise HwAwareError("--format parquet needs --out FILE")
    if args.out:
        _check_output_file(args.out)
    _check_db_argument(args.db, write=False)
    space = _space_filter(args.space)
    with MeasurementStore(args.db, readonly=True) as store:
        df = store.dataset(space=space, device=args.device, backend=args.backend, input_size=args.input_size,
                           include_outliers=not args.no_outliers)
    if fmt == "csv":
        data = df.to_csv(index=False).encode()
    else:
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            raise HwAwareError("Parquet export needs pyarrow (pip install pyarrow); or use --format csv") from None
        buffer = io.BytesIO()
        df.to_parquet(buffer, index=False)
        data = buffer.getvalue()
    if args.out:
        write_atomically(args.out, data)
        sys.stderr.write(f"wrote {len(df)} measurement(s) to {args.out}\n")
    else:
        sys.stdout.write(data.decode())
    return 0


def _check_output_file(out: str) -> None:
    """An output file may be replaced; a folder, or a file in a folder that does not exist, may not."""
    path = Path(out)
    if path.is_dir():
        raise HwAwareError(f"--out {out} is a folder; give a file name")
    if path.exists() and not path.is_file():
        raise HwAwareError(f"--out {out} is not a regular file; give a file name")
    if not path.parent.is_dir():
        raise HwAwareError(f"cannot write {out}: folder {path.parent} does not exist")


def _space_filter(space: str | None) -> Any:
    """``--space``: a space file (matched by content), or a name or fingerprint the store resolves."""
    if space is not None and (space.endswith((".yaml", ".yml")) or "/" in space):
        from nni_hwaware.spaces import load_space

        return load_space(space)
    return space


def _summary(args: argparse.Namespace) -> int:
    from nni_hwaware.measure.store import MeasurementStore

    _check_db_argument(args.db, write=False)
    with MeasurementStore(args.db, readonly=True) as store:
        df = store.dataset()
        print(f"{args.db}: {len(df)} measurement(s), {store.count('measurement_history')} earlier value(s), "
              f"{store.count('qc_checks')} QC row(s), integrity {store.integrity_check()}")
    if len(df):
        groups = df.groupby(["space", "space_fingerprint", "device", "backend", "input_size"], dropna=False)
        table = groups.agg(models=("arch", "size"), latency_ms_median=("latency_ms", "median"),
                           energy_mj_median=("energy_mj", "median"), outliers=("outlier", "sum"))
        print(table.to_string())
    return 0


def _recover(args: argparse.Namespace) -> int:
    from nni_hwaware.measure.store import recover_store

    report = recover_store(args.db, args.target)
    copied = ", ".join(f"{n} {table}" for table, n in report.copied.items())
    print(f"recovered into {args.target}: {copied}")
    if report.damaged_spots or report.dropped or report.missing_tables:
        print(f"lost: {report.damaged_spots} damaged spot(s) skipped, {report.dropped} row(s) left out because "
              f"they referenced lost rows" + (f", tables not found: {', '.join(report.missing_tables)}"
                                              if report.missing_tables else ""))
    else:
        print("nothing was lost: every row was readable")
    return 0


def _import_nni(args: argparse.Namespace) -> int:
    from nni_hwaware.measure.nni_import import (
        find_experiment_dir,
        parse_results,
        read_results_from_dir,
        read_results_from_rest,
        store_measurements,
    )
    from nni_hwaware.measure.store import MeasurementStore

    _check_db_argument(args.db, write=True)
    if args.port is not None:
        results = read_results_from_rest(args.port)
        source = f"http://localhost:{args.port}"
    else:
        folder = find_experiment_dir(args.experiment_id, args.working_dir)
        results = read_results_from_dir(folder)
        source = str(folder)
    # every result is checked before the database is opened: a bad one stores nothing
    trials, measurements = parse_results(results, args.experiment_id)
    if trials == 0:
        raise HwAwareError(f"experiment {args.experiment_id} ({source}) has no finished measuring trials yet")
    with MeasurementStore(args.db) as store:
        report = store_measurements(trials, measurements, store)
        rows = store.count()
    print(f"imported {report.imported} measurement(s) from {report.trials} trial(s) of {args.experiment_id} "
          f"({report.already_stored} already stored); {rows} row(s) in {Path(args.db)}")
    return 0
