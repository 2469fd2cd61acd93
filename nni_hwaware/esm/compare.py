"""The ESM paper's comparisons on our own measurements (``nni-hwaware compare``).

From the architectures of one space measured in the store (one device, backend and input size):

1. a fixed held-out test set (balanced over depth bins as far as the data allow);
2. every encoding x surrogate x training size, plus the MACs proxy and (optionally) the lookup table with
   its linear bias correction: accuracy, MAPE, share within +-10 %, Spearman, per-bin accuracy, fit and
   prediction time;
3. random vs balanced convergence: the ESM loop replayed on the measured pool (each "measurement" is a draw
   from the pool), reporting the measurements each strategy needs to reach ``Acc_TH`` in every bin.

Results go to ``compare.md``, ``compare.csv``, ``compare.json`` and PNG plots.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from nni_hwaware import metrics
from nni_hwaware.artifacts import refuse_foreign_folder
from nni_hwaware.errors import HwAwareError
from nni_hwaware.esm.builder import allocate_extension
from nni_hwaware.esm.encode import ENCODINGS, Encoder
from nni_hwaware.esm.surrogate import make_surrogate
from nni_hwaware.spaces import load_space
from nni_hwaware.spaces.export import write_atomically
from nni_hwaware.spaces.schema import Architecture, SearchSpace

#: Surrogates ``compare`` can fit (the same as ``build --surrogate``).
SURROGATES = ("mlp", "gb", "rf")


def load_measured(
    db: str, space: SearchSpace, input_size: int | None, device: str | None, qc_strict: bool = False
) -> tuple[list[Architecture], np.ndarray, dict[str, Any]]:
    """Architectures of ``space`` and their latencies from the store, for one device/backend/input size.

    With ``qc_strict``, models whose quality-control check failed (``qc_status = 'drift'``) are left out.
    """
    from nni_hwaware.measure.store import MeasurementStore

    if Path(db).is_dir():
        raise HwAwareError(f"--db {db} is a folder; give a database file")
    if not Path(db).is_file():
        raise HwAwareError(f"database {db} does not exist; measure or build first")
    with MeasurementStore(db, readonly=True) as store:
        df = store.dataset(space=space)  # by content: a custom file of the same name is another space
    if df.empty:
        raise HwAwareError(f"no measurements of space {space.name!r} in {db}; run `nni-hwaware measure` first")
    if device is not None:
        df = df[df["device"] == device]
        if df.empty:
            raise HwAwareError(f"no measurements of {space.name!r} on device {device!r} in {db}")
    if input_size is not None:
        df = df[df["input_size"] == input_size]
        if df.empty:
            raise HwAwareError(f"no measurements of {space.name!r} at input size {input_size} in {db}")
    # the largest consistent group: same device, backend, precision, input size
    keys = ["device", "backend", "precision", "input_size"]
    group = df.groupby(keys).size().sort_values(ascending=False).index[0]
    df = df[(df[keys] == list(group)).all(axis=1)]
    drifted = int((df["qc_status"] == "drift").sum())
    if qc_strict:
        df = df[df["qc_status"] != "drift"]
    archs = [space.validate(a) for a in df["arch"]]
    setting = dict(zip(keys, [v.item() if hasattr(v, "item") else v for v in group]))
    setting["qc_drift_models"] = drifted if not qc_strict else f"{drifted} left out"
    return archs, df["latency_ms"].to_numpy(dtype=float), setting


def split_test(space: SearchSpace, archs: Sequence[Architecture], test_size: int, bins: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices of a held-out set spread evenly over depth bins, and of the rest."""
    rng = np.random.default_rng(seed)
    bin_of = np.array([space.depth_bin(space.total_depth(a), bins) for a in archs])
    per_bin = {b: list(rng.permutation(np.flatnonzero(bin_of == b))) for b in range(bins)}
    test: list[int] = []
    while len(test) < test_size and any(per_bin.values()):
        for b in range(bins):
            if per_bin[b] and len(test) < test_size:
                test.append(int(per_bin[b].pop()))
    test_idx = np.array(sorted(test), dtype=int)
    train_idx = np.setdiff1d(np.arange(len(archs)), test_idx)
    return test_idx, rng.permutation(train_idx)


def _evaluate(y_true: np.ndarray, y_pred: np.ndarray, test_bins: np.ndarray, bins: int) -> dict[str, Any]:
    return metrics.summary(y_true, y_pred, test_bins, bins)


def replay_convergence(
    space: SearchSpace,
    pool_archs: Sequence[Architecture],
    pool_y: np.ndarray,
    test_X: np.ndarray,
    test_y: np.ndarray,
    test_bins: np.ndarray,
    encoder: Encoder,
    *,
    strategy: str,
    initial: int,
    step: int,
    bins: int,
    acc_th: float,
    seed: int,
    w_below: float = 0.8,
    w_above: float = 0.2,
) -> dict[str, Any]:
    """Replay the ESM loop drawing 'measurements' from a measured pool; returns the curve and convergence."""
    rng = np.random.default_rng(seed)
    X_pool = encoder.encode(pool_archs, validate=False)
    pool_bins = np.array([space.depth_bin(space.total_depth(a), bins) for a in pool_archs])
    available = {b: list(rng.permutation(np.flatnonzero(pool_bins == b))) for b in range(bins)}
    everything = list(rng.permutation(len(pool_archs)))
    chosen: list[int] = []
    taken: set[int] = set()

    def take_random(n: int) -> None:
        for i in everything:
            if n <= 0:
                break
            if i not in taken:
                taken.add(i)
                chosen.append(i)
                n -= 1

    def take_from_bins(counts: list[int]) -> None:
        for b, n in enumerate(counts):
            while n > 0 and available[b]:
                i = int(available[b].pop())
                if i not in taken:
                    taken.add(i)
                    chosen.append(i)
                    n -= 1

    if strategy == "random":
        take_random(initial)
    else:
        take_from_bins([initial // bins] * bins)
        take_random(initial - len(chosen))
    curve = []
    converged_at = None
    while True:
        idx = np.array(chosen)
        model = make_surrogate("mlp", random_state=seed).fit(X_pool[idx], pool_y[idx])
        s = _evaluate(test_y, model.predict(test_X), test_bins, bins)
        curve.append({"train_size": len(idx), "accuracy": s["accuracy"], "bin_accuracy": s["bin_accuracy"]})
        if all(a is not None and a >= acc_th for a in s["bin_accuracy"]):
            converged_at = len(idx)
            break
        if len(taken) >= len(pool_archs):
            break
        before = len(chosen)
        if strategy == "random":
            take_random(step)
        else:
            take_from_bins(allocate_extension(s["bin_accuracy"], acc_th, step, w_below, w_above))
            if len(chosen) == before:
                take_random(step)
        if len(chosen) == before:
            break
    return {"strategy": strategy, "converged_at": converged_at, "pool": len(pool_archs), "curve": curve}


def run_compare(
    *,
    db: str,
    space_name: str,
    input_size: int | None,
    device: str | None,
    sizes: list[int],
    encodings: list[str],
    surrogates: list[str],
    test_size: int,
    bins: int,
    acc_th: float,
    initial: int,
    step: int,
    lut: bool,
    nn_meter_dir: str | None,
    seed: int,
    qc_strict: bool = False,
    trust_pickles: bool = False,
    out: Path,
    log: Callable[[str], None] = lambda _m: None,
) -> str:
    """Run every comparison and write the report files; returns the markdown table.

    Every setting and the output folder are checked before anything is read or written (see
    :func:`check_compare_settings` and :func:`check_output_folder`). ``trust_pickles`` lets ``nn_meter_dir``
    load (nn-Meter's regressors are pickles, which run code when loaded).
    """
    from nni_hwaware import plots
    from nni_hwaware.spaces.counting import architecture_weight_macs

    check_compare_settings(sizes=sizes, encodings=encodings, surrogates=surrogates, test_size=test_size,
                           bins=bins, acc_th=acc_th, initial=initial, step=step, seed=seed, input_size=input_size)
    space = load_space(space_name)
    check_output_folder(out, marker="compare.json")
    if nn_meter_dir:  # an nn-Meter folder that will be refused fails now, not after every fit
        from nni_hwaware.nnmeter.predictor import check_nn_meter_folder

        check_nn_meter_folder(nn_meter_dir, trust_pickles=trust_pickles)
    archs, y, setting = load_measured(db, space, input_size, device, qc_strict)
    if len(archs) < test_size + min(sizes):
        raise HwAwareError(
            f"only {len(archs)} measured architectures of {space_name!r}; need at least "
            f"--test-size ({test_size}) + the smallest --sizes ({min(sizes)})"
        )
    out.mkdir(parents=True, exist_ok=True)
    test_idx, train_idx = split_test(space, archs, test_size, bins, seed)
    test_archs = [archs[i] for i in test_idx]
    test_y = y[test_idx]
    test_bins = np.array([space.depth_bin(space.total_depth(a), bins) for a in test_archs])
    usable = [s for s in sizes if s <= len(train_idx)]
    dropped = [s for s in sizes if s > len(train_idx)]
    if dropped:
        log(f"skipping training sizes {dropped}: only {len(train_idx)} training architectures measured")
    log(f"{len(archs)} measured architectures ({setting}); test {len(test_idx)}, training pool {len(train_idx)}")
    rows: list[dict[str, Any]] = []

    def add_row(method: str, encoding: str, size: int, fit_s: float, pred_s: float, s: dict[str, Any],
                measurements: int) -> None:
        rows.append({
            "method": method, "encoding": encoding, "train_size": size, "measurements": measurements,
            "accuracy": s["accuracy"], "mape": s["mape"], "within_10": s["within_10"], "spearman": s["spearman"],
            "min_bin_accuracy": min((a for a in s["bin_accuracy"] if a is not None), default=float("nan")),
            "bin_accuracy": s["bin_accuracy"], "fit_s": fit_s, "predict_us_per_model": pred_s / len(test_y) * 1e6,
        })

    for encoding in encodings:
        encoder = Encoder(space, encoding)
        X_train_all = encoder.encode([archs[i] for i in train_idx], validate=False)
        for size in usable:
            for surrogate in surrogates:
                t0 = time.perf_counter()
                model = make_surrogate(surrogate, random_state=seed).fit(X_train_all[:size], y[train_idx[:size]])
                fit_s = time.perf_counter() - t0
                t0 = time.perf_counter()
                pred = model.predict(encoder.encode(test_archs, validate=False))
                pred_s = time.perf_counter() - t0
                add_row(surrogate, encoding, size, fit_s, pred_s, _evaluate(test_y, pred, test_bins, bins), size)
                log(f"{encoding:>11}-{surrogate:<3} n={size:<5} accuracy {rows[-1]['accuracy']:.4f}")

    size_px = int(setting["input_size"])
    macs_all = architecture_weight_macs(space, archs, size_px)
    for size in usable:
        t0 = time.perf_counter()
        model = make_surrogate("linear").fit(macs_all[train_idx[:size], None], y[train_idx[:size]])
        fit_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        pred = model.predict(architecture_weight_macs(space, test_archs, size_px)[:, None])
        add_row("macs-linear", "macs", size, fit_s, time.perf_counter() - t0,
                _evaluate(test_y, pred, test_bins, bins), size)

    if lut:
        rows += _lookup_table_rows(space, archs, y, train_idx, test_idx, test_bins, usable, bins, setting, log)
    if nn_meter_dir:
        from nni_hwaware.nnmeter import nn_meter_rows

        log(f"nn-Meter: predicting {len(test_idx)} held-out and {max(usable)} training architectures")
        rows += nn_meter_rows(nn_meter_dir, space, test_archs, test_y, test_bins, bins, size_px,
                              [archs[i] for i in train_idx[: max(usable)]], y[train_idx[: max(usable)]], usable,
                              trust_pickles=trust_pickles)

    convergence = {}
    pool = [archs[i] for i in train_idx]
    fcc = Encoder(space, "fcc")
    for strategy in ("random", "balanced"):
        convergence[strategy] = replay_convergence(
            space, pool, y[train_idx], fcc.encode(test_archs, validate=False), test_y, test_bins, fcc,
            strategy=strategy, initial=min(initial, len(pool)), step=step, bins=bins, acc_th=acc_th, seed=seed,
        )
        c = convergence[strategy]
        log(f"{strategy} sampling: " + (f"reached Acc_TH {acc_th} with {c['converged_at']} measurements"
                                        if c["converged_at"] else f"did not reach {acc_th} within the pool of {c['pool']}"))

    table = _markdown(rows, convergence, setting, len(archs), len(test_idx), acc_th, space_name)
    write_atomically(out / "compare.md", table.encode())
    _write_csv(rows, out / "compare.csv")
    write_atomically(out / "compare.json", json.dumps(
        {"setting": setting, "rows": rows, "convergence": convergence, "test_size": len(test_idx)}, indent=1,
        default=float).encode())
    curves: dict[str, list[tuple[int, float]]] = {}
    for r in rows:
        if r["method"] == "mlp":
            curves.setdefault(f"{r['encoding']}-mlp", []).append((r["train_size"], r["accuracy"]))
    plots.convergence(curves, acc_th, out / "accuracy_vs_size.png", "held-out accuracy")
    plots.convergence(
        {f"{k} sampling (min bin)": [(p["train_size"], min(a for a in p["bin_accuracy"] if a is not None))
                                     for p in v["curve"]] for k, v in convergence.items()},
        acc_th, out / "random_vs_balanced.png", "lowest per-bin accuracy",
    )
    log(f"wrote {out}/compare.md, compare.csv, compare.json, accuracy_vs_size.png, random_vs_balanced.png")
    return table


def _lookup_table_rows(
    space: SearchSpace, archs: list[Architecture], y: np.ndarray, train_idx: np.ndarray, test_idx: np.ndarray,
    test_bins: np.ndarray, sizes: list[int], bins: int, setting: dict[str, Any], log: Callable[[str], None],
) -> list[dict[str, Any]]:
    """Lookup table rows: blocks measured in isolation here, summed, then the linear bias correction."""
    from nni_hwaware.esm.proxies import LookupTable
    from nni_hwaware.measure.backends import ModelToMeasure, get_backend
    from nni_hwaware.measure.protocol import Protocol
    from nni_hwaware.measure.runner import Measurer

    if setting["backend"] != "onnxruntime":  # blocks are measured here, so the data must be from here too
        raise HwAwareError("--lut measures blocks with onnxruntime on this machine; the stored data is from "
                           f"{setting['backend']}")
    measurer = Measurer(get_backend("onnxruntime"), Protocol(runs=50))
    table = LookupTable(space, int(setting["input_size"]))
    needed = [archs[i] for i in np.concatenate([train_idx[: max(sizes)], test_idx])]

    def measure_onnx(onnx: bytes) -> float:
        return measurer.measure(ModelToMeasure("block", None, onnx=onnx)).timing.mean_ms

    t0 = time.perf_counter()
    count = table.measure_blocks(needed, measure_onnx, progress=lambda d, n: log(f"lookup table: block {d}/{n}")
                                 if d % 25 == 0 or d == n else None)
    log(f"lookup table: {count} blocks measured in isolation in {time.perf_counter() - t0:.0f} s")
    feats = table.features([archs[i] for i in train_idx[: max(sizes)]])
    rows = []
    for size in sizes:
        t0 = time.perf_counter()
        model = make_surrogate("linear").fit(feats[:size], y[train_idx[:size]])
        fit_s = time.perf_counter() - t0
        t0 = time.perf_counter()  # prediction time includes summing the blocks of each test architecture
        pred = model.predict(table.features([archs[i] for i in test_idx]))
        s = metrics.summary(y[test_idx], pred, test_bins, bins)
        rows.append({
            "method": "lut-linear", "encoding": "lookup-table", "train_size": size, "measurements": size + count,
            "accuracy": s["accuracy"], "mape": s["mape"], "within_10": s["within_10"], "spearman": s["spearman"],
            "min_bin_accuracy": min((a for a in s["bin_accuracy"] if a is not None), default=float("nan")),
            "bin_accuracy": s["bin_accuracy"], "fit_s": fit_s,
            "predict_us_per_model": (time.perf_counter() - t0) / len(test_idx) * 1e6,
        })
    return rows


def _markdown(rows: list[dict[str, Any]], convergence: dict[str, Any], setting: dict[str, Any], total: int,
              test: int, acc_th: float, space: str) -> str:
    lines = [
        f"# {space}: predictors compared on {total} measured architectures",
        "",
        f"Setting: {json.dumps(setting)}. Held-out test set: {test} architectures (balanced over depth bins).",
        "",
        "| method | encoding | train | measurements | accuracy | MAPE % | within 10 % | Spearman | min bin acc | fit s | predict us/model |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in sorted(rows, key=lambda r: (r["train_size"], -r["accuracy"])):
        lines.append(
            f"| {r['method']} | {r['encoding']} | {r['train_size']} | {r['measurements']} | {r['accuracy']:.4f} | "
            f"{r['mape']:.2f} | {r['within_10']:.3f} | {r['spearman']:.3f} | {r['min_bin_accuracy']:.4f} | "
            f"{r['fit_s']:.2f} | {r['predict_us_per_model']:.1f} |"
        )
    lines += ["", f"## Random vs balanced sampling (FCC-MLP, ESM loop replayed on the measured pool, Acc_TH {acc_th})", "",
              "| strategy | measurements to reach Acc_TH in every bin | pool |", "| --- | --- | --- |"]
    for name, c in convergence.items():
        reached = c["converged_at"] if c["converged_at"] else f"not reached (best min-bin accuracy " \
            f"{max(min(a for a in p['bin_accuracy'] if a is not None) for p in c['curve']):.4f})"
        lines.append(f"| {name} | {reached} | {c['pool']} |")
    return "\n".join(lines) + "\n"


def _write_csv(rows: list[dict[str, Any]], path: Path) -> None:
    import csv
    import io

    fields = [k for k in rows[0] if k != "bin_accuracy"] + ["bin_accuracy"] if rows else []
    buffer = io.StringIO(newline="")
    writer = csv.DictWriter(buffer, fieldnames=fields)
    writer.writeheader()
    for r in rows:
        writer.writerow({**r, "bin_accuracy": json.dumps(r["bin_accuracy"])})
    write_atomically(path, buffer.getvalue().encode())


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_compare_settings(*, sizes: Sequence[int], encodings: Sequence[str], surrogates: Sequence[str],
                           test_size: int, bins: int, acc_th: float, initial: int, step: int, seed: int,
                           input_size: int | None) -> None:
    """Check the settings of :func:`run_compare`; a one-line error names the parameter."""
    if not sizes or not all(_is_int(s) and s >= 1 for s in sizes):
        raise HwAwareError(f"--sizes must list positive integers, got {list(sizes)!r}")
    for flag, value in (("--test-size", test_size), ("--bins", bins), ("--initial", initial), ("--step", step)):
        if not _is_int(value) or value < 1:
            raise HwAwareError(f"{flag} must be a positive integer, got {value!r}")
    if not _is_int(seed) or seed < 0:
        raise HwAwareError(f"--seed must be an integer >= 0, got {seed!r}")
    if input_size is not None and (not _is_int(input_size) or input_size < 1):
        raise HwAwareError(f"--input-size must be a positive integer, got {input_size!r}")
    if not isinstance(acc_th, int | float) or isinstance(acc_th, bool) or not 0 < acc_th <= 1:
        raise HwAwareError(f"--acc-th must be a number in (0, 1], got {acc_th!r}")
    if not encodings or any(e not in ENCODINGS for e in encodings):
        raise HwAwareError(f"--encodings must list some of {', '.join(ENCODINGS)}, got {list(encodings)!r}")
    if not surrogates or any(s not in SURROGATES for s in surrogates):
        raise HwAwareError(f"--surrogates must list some of {', '.join(SURROGATES)}, got {list(surrogates)!r}")


def check_output_folder(out: Path, *, marker: str) -> None:
    """Refuse an output folder that is a file, the current folder or a parent of it, or a folder of other files.

    A folder may be written into when it is new, empty, or holds ``marker`` (an earlier output of ours).
    """
    refuse_foreign_folder(out, "--out", lambda folder: (folder / marker).is_file(), "comparison results")
