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
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from nni_hwaware import metrics
from nni_hwaware.artifacts import refuse_foreign_folder, write_json_atomically, write_text_atomically
from nni_hwaware.errors import HwAwareError, ParameterError
from nni_hwaware.esm.encode import ENCODINGS, Encoder
from nni_hwaware.esm.loop import ESMConfig, train_evaluate_extend
from nni_hwaware.esm.sources import MeasuredPool, split_test
from nni_hwaware.esm.surrogate import make_surrogate
from nni_hwaware.spaces import load_space
from nni_hwaware.spaces.schema import Architecture, SearchSpace

logger = logging.getLogger(__name__)

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
        raise ParameterError(f"db {db} is a folder; give a database file", parameter="db")
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


def replay_convergence(space: SearchSpace, archs: Sequence[Architecture], latency: np.ndarray, test_idx: np.ndarray,
                       train_idx: np.ndarray, *, strategy: str, initial: int, step: int, bins: int, acc_th: float,
                       seed: int) -> dict[str, Any]:
    """The ESM loop (:func:`~nni_hwaware.esm.loop.train_evaluate_extend`, FCC-MLP, bin-wise) replayed on the
    measured pool: each "measurement" is a draw from ``train_idx``, evaluated on ``test_idx``; returns the curve
    and how many measurements reached ``acc_th`` in every bin (``None``: the pool ran out first)."""
    pool = MeasuredPool(space, archs, latency, held_out=test_idx)
    config = ESMConfig(sampling=strategy, initial=min(initial, len(train_idx)), step=step, bins=bins,
                       acc_th=acc_th, max_samples=len(train_idx), test_size=len(test_idx), seed=seed,
                       encoding="fcc", surrogate="mlp", eval_strategy="bin-wise")
    loop = train_evaluate_extend(space, config, pool.measure, source=pool, log=logger.debug)
    curve = [{"train_size": h.train_size, "accuracy": h.accuracy, "bin_accuracy": h.bin_accuracy}
             for h in loop.history]
    return {"strategy": strategy, "converged_at": loop.history[-1].train_size if loop.converged else None,
            "pool": len(train_idx), "curve": curve}


@dataclass
class _Setting:
    """The measured data of one comparison: the space, every architecture, the held-out split."""

    space: SearchSpace
    archs: list[Architecture]
    y: np.ndarray
    setting: dict[str, Any]
    test_idx: np.ndarray
    train_idx: np.ndarray
    bins: int

    @property
    def test_archs(self) -> list[Architecture]:
        return [self.archs[i] for i in self.test_idx]

    @property
    def test_y(self) -> np.ndarray:
        return self.y[self.test_idx]

    @cached_property
    def test_bins(self) -> np.ndarray:
        return np.array([self.space.depth_bin(self.space.total_depth(a), self.bins) for a in self.test_archs])

    def row(self, method: str, encoding: str, size: int, fit_s: float, pred_s: float, pred: np.ndarray,
            measurements: int) -> dict[str, Any]:
        """One row of the comparison: a method's held-out figures."""
        s = metrics.summary(self.test_y, pred, self.test_bins, self.bins)
        return {
            "method": method, "encoding": encoding, "train_size": size, "measurements": measurements,
            "accuracy": s["accuracy"], "mape": s["mape"], "within_10": s["within_10"], "spearman": s["spearman"],
            "min_bin_accuracy": min((a for a in s["bin_accuracy"] if a is not None), default=float("nan")),
            "bin_accuracy": s["bin_accuracy"], "fit_s": fit_s,
            "predict_us_per_model": pred_s / len(self.test_idx) * 1e6,
        }


def _surrogate_rows(data: _Setting, encodings: list[str], surrogates: list[str], sizes: list[int], seed: int,
                    log: Callable[[str], None]) -> list[dict[str, Any]]:
    """Every encoding x surrogate x training size, fitted on the first ``size`` of the training pool."""
    rows = []
    train_y = data.y[data.train_idx]
    for encoding in encodings:
        encoder = Encoder(data.space, encoding)
        X_train_all = encoder.encode([data.archs[i] for i in data.train_idx], validate=False)
        for size in sizes:
            for surrogate in surrogates:
                t0 = time.perf_counter()
                model = make_surrogate(surrogate, random_state=seed).fit(X_train_all[:size], train_y[:size])
                fit_s, t0 = time.perf_counter() - t0, time.perf_counter()
                pred = model.predict(encoder.encode(data.test_archs, validate=False))
                rows.append(data.row(surrogate, encoding, size, fit_s, time.perf_counter() - t0, pred, size))
                log(f"{encoding:>11}-{surrogate:<3} n={size:<5} accuracy {rows[-1]['accuracy']:.4f}")
    return rows


def _macs_rows(data: _Setting, sizes: list[int]) -> list[dict[str, Any]]:
    """The MACs proxy with a linear fit, per training size."""
    from nni_hwaware.spaces.counting import architecture_weight_macs

    size_px = int(data.setting["input_size"])
    macs_all = architecture_weight_macs(data.space, data.archs, size_px)
    rows = []
    for size in sizes:
        idx = data.train_idx[:size]
        t0 = time.perf_counter()
        model = make_surrogate("linear").fit(macs_all[idx, None], data.y[idx])
        fit_s, t0 = time.perf_counter() - t0, time.perf_counter()
        pred = model.predict(architecture_weight_macs(data.space, data.test_archs, size_px)[:, None])
        rows.append(data.row("macs-linear", "macs", size, fit_s, time.perf_counter() - t0, pred, size))
    return rows


def _load_setting(db: str, space: SearchSpace, input_size: int | None, device: str | None, qc_strict: bool,
                  test_size: int, sizes: list[int], bins: int, seed: int, log: Callable[[str], None]) -> tuple[_Setting, list[int]]:
    """The measured data split into held-out and training pool, and the training sizes the pool allows."""
    archs, y, setting = load_measured(db, space, input_size, device, qc_strict)
    if len(archs) < test_size + min(sizes):
        raise ParameterError(
            f"only {len(archs)} measured architectures of {space.name!r}; need at least test_size ({test_size}) "
            f"+ the smallest of sizes ({min(sizes)})", parameter="test_size", mentions=("sizes",))
    test_idx, train_idx = split_test(space, archs, test_size, bins, seed)
    usable = [s for s in sizes if s <= len(train_idx)]
    dropped = [s for s in sizes if s > len(train_idx)]
    if dropped:
        log(f"skipping training sizes {dropped}: only {len(train_idx)} training architectures measured")
    log(f"{len(archs)} measured architectures ({setting}); test {len(test_idx)}, training pool {len(train_idx)}")
    return _Setting(space, archs, y, setting, test_idx, train_idx, bins), usable


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
    log: Callable[[str], None] | None = None,
) -> str:
    """Run every comparison and write the report files; returns the markdown table.

    Every setting and the output folder are checked before anything is read or written (see
    :func:`check_compare_settings` and :func:`check_output_folder`). ``trust_pickles`` lets ``nn_meter_dir``
    load (nn-Meter's regressors are pickles, which run code when loaded). ``log`` receives the progress lines
    (default: this module's logger, at INFO).
    """
    log = log or logger.info
    check_compare_settings(sizes=sizes, encodings=encodings, surrogates=surrogates, test_size=test_size,
                           bins=bins, acc_th=acc_th, initial=initial, step=step, seed=seed, input_size=input_size)
    space = load_space(space_name)
    check_output_folder(out, marker="compare.json")
    if nn_meter_dir:  # an nn-Meter folder that will be refused fails now, not after every fit
        from nni_hwaware.nnmeter.predictor import check_nn_meter_folder

        check_nn_meter_folder(nn_meter_dir, trust_pickles=trust_pickles)
    data, usable = _load_setting(db, space, input_size, device, qc_strict, test_size, sizes, bins, seed, log)
    out.mkdir(parents=True, exist_ok=True)
    rows = _surrogate_rows(data, encodings, surrogates, usable, seed, log) + _macs_rows(data, usable)
    if lut:
        rows += _lookup_table_rows(data, usable, log)
    if nn_meter_dir:
        from nni_hwaware.nnmeter import nn_meter_rows

        log(f"nn-Meter: predicting {len(data.test_idx)} held-out and {max(usable)} training architectures")
        first = data.train_idx[: max(usable)]
        rows += nn_meter_rows(nn_meter_dir, space, data.test_archs, data.test_y, data.test_bins, bins,
                              int(data.setting["input_size"]), [data.archs[i] for i in first], data.y[first],
                              usable, trust_pickles=trust_pickles)
    convergence = {}
    for strategy in ("random", "balanced"):
        c = convergence[strategy] = replay_convergence(
            space, data.archs, data.y, data.test_idx, data.train_idx, strategy=strategy, initial=initial,
            step=step, bins=bins, acc_th=acc_th, seed=seed)
        log(f"{strategy} sampling: " + (f"reached Acc_TH {acc_th} with {c['converged_at']} measurements"
                                        if c["converged_at"] else f"did not reach {acc_th} within the pool of {c['pool']}"))
    table = _markdown(rows, convergence, data.setting, len(data.archs), len(data.test_idx), acc_th, space_name)
    _write_reports(out, table, rows, convergence, data, acc_th)
    log(f"wrote {out}/compare.md, compare.csv, compare.json, accuracy_vs_size.png, random_vs_balanced.png")
    return table


def _write_reports(out: Path, table: str, rows: list[dict[str, Any]], convergence: dict[str, Any], data: _Setting,
                   acc_th: float) -> None:
    """``compare.md``, ``compare.csv``, ``compare.json`` and the two plots."""
    from nni_hwaware import plots

    write_text_atomically(out / "compare.md", table)
    _write_csv(rows, out / "compare.csv")
    write_json_atomically(out / "compare.json", {"setting": data.setting, "rows": rows, "convergence": convergence,
                                                 "test_size": len(data.test_idx)}, indent=1, default=float)
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


def _lookup_table_rows(data: _Setting, sizes: list[int], log: Callable[[str], None]) -> list[dict[str, Any]]:
    """Lookup table rows: blocks measured in isolation here, summed, then the linear bias correction."""
    from nni_hwaware.esm.proxies import LookupTable
    from nni_hwaware.measure.backends import ModelToMeasure, get_backend
    from nni_hwaware.measure.protocol import Protocol
    from nni_hwaware.measure.runner import Measurer

    if data.setting["backend"] != "onnxruntime":  # blocks are measured here, so the data must be from here too
        raise HwAwareError("lut measures blocks with onnxruntime on this machine; the stored data is from "
                           f"{data.setting['backend']}", parameter="lut")
    measurer = Measurer(get_backend("onnxruntime"), Protocol(runs=50))
    table = LookupTable(data.space, int(data.setting["input_size"]))
    first = data.train_idx[: max(sizes)]
    needed = [data.archs[i] for i in np.concatenate([first, data.test_idx])]

    def measure_onnx(onnx: bytes) -> float:
        return measurer.measure(ModelToMeasure("block", None, onnx=onnx)).timing.mean_ms

    t0 = time.perf_counter()
    count = table.measure_blocks(needed, measure_onnx, progress=lambda d, n: log(f"lookup table: block {d}/{n}")
                                 if d % 25 == 0 or d == n else None)
    log(f"lookup table: {count} blocks measured in isolation in {time.perf_counter() - t0:.0f} s")
    feats = table.features([data.archs[i] for i in first])
    rows = []
    for size in sizes:
        t0 = time.perf_counter()
        model = make_surrogate("linear").fit(feats[:size], data.y[first[:size]])
        fit_s, t0 = time.perf_counter() - t0, time.perf_counter()
        # prediction time includes summing the blocks of each test architecture
        pred = model.predict(table.features(data.test_archs))
        rows.append(data.row("lut-linear", "lookup-table", size, fit_s, time.perf_counter() - t0, pred,
                             size + count))
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
    write_text_atomically(path, buffer.getvalue())


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_compare_settings(*, sizes: Sequence[int], encodings: Sequence[str], surrogates: Sequence[str],
                           test_size: int, bins: int, acc_th: float, initial: int, step: int, seed: int,
                           input_size: int | None) -> None:
    """Check the settings of :func:`run_compare`; a one-line error names the parameter."""
    if not sizes or not all(_is_int(s) and s >= 1 for s in sizes):
        raise ParameterError(f"sizes must list positive integers, got {list(sizes)!r}", parameter="sizes")
    for name, value in (("test_size", test_size), ("bins", bins), ("initial", initial), ("step", step)):
        if not _is_int(value) or value < 1:
            raise ParameterError(f"{name} must be a positive integer, got {value!r}", parameter=name)
    if not _is_int(seed) or seed < 0:
        raise ParameterError(f"seed must be an integer >= 0, got {seed!r}", parameter="seed")
    if input_size is not None and (not _is_int(input_size) or input_size < 1):
        raise ParameterError(f"input_size must be a positive integer, got {input_size!r}", parameter="input_size")
    if not isinstance(acc_th, int | float) or isinstance(acc_th, bool) or not 0 < acc_th <= 1:
        raise ParameterError(f"acc_th must be a number in (0, 1], got {acc_th!r}", parameter="acc_th")
    if not encodings or any(e not in ENCODINGS for e in encodings):
        raise ParameterError(f"encodings must list some of {', '.join(ENCODINGS)}, got {list(encodings)!r}",
                             parameter="encodings")
    if not surrogates or any(s not in SURROGATES for s in surrogates):
        raise ParameterError(f"surrogates must list some of {', '.join(SURROGATES)}, got {list(surrogates)!r}",
                             parameter="surrogates")


def check_output_folder(out: Path, *, marker: str) -> None:
    """Refuse an output folder that is a file, the current folder or a parent of it, or a folder of other files.

    A folder may be written into when it is new, empty, or holds ``marker`` (an earlier output of ours).
    """
    refuse_foreign_folder(out, "out", lambda folder: (folder / marker).is_file(), "comparison results")
