"""The ESM builder: sample, measure, encode, train, evaluate per bin, extend (Algorithm 1) until every bin passes.

The loop of the ESM paper (Fig. 5). The user gives the sampling strategy (random|balanced), ``N_I`` initial
samples, ``N_step``, the weights ``w1``/``w2`` of bins below/above the threshold, the encoding, the evaluation
strategy (overall|bin-wise), ``N_bins``, ``Acc_TH`` and a budget cap. A held-out test set (balanced over the
bins, so every bin is evaluated) is measured once. Each iteration trains the surrogate on everything measured
so far and evaluates it on the test set; while a bin (or the overall accuracy) is below ``Acc_TH`` the dataset
is extended:

* random: ``N_step`` more random architectures;
* balanced (Algorithm 1): ``N_norm = w1 * N_below + w2 * N_above``; each below-threshold bin gets
  ``ceil(N_step * w1 / N_norm)`` new architectures, each above-threshold bin ``ceil(N_step * w2 / N_norm)``.

Measurement is a callable (architectures -> latencies in ms), normally backed by the measurement store so a
rerun reuses every measurement already made.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from nni_hwaware import metrics
from nni_hwaware.artifacts import read_json_object, require_keys
from nni_hwaware.errors import ArtifactError, HwAwareError
from nni_hwaware.esm.encode import ENCODINGS, Encoder
from nni_hwaware.esm.surrogate import SURROGATES, load_surrogate, make_surrogate, save_surrogate
from nni_hwaware.hardware import HardwareEstimate, HardwarePredictor, PredictorTarget, register_predictor
from nni_hwaware.spaces.sampling import sample_architectures, sample_per_bin
from nni_hwaware.spaces.schema import Architecture, SearchSpace, load_space

MeasureFn = Callable[[Sequence[Architecture]], np.ndarray]
PREDICTOR_FILE = "predictor.json"
_REQUIRED_KEYS = ("space", "space_fingerprint", "encoding", "encoding_length", "input_size", "surrogate_file")
EVAL_STRATEGIES = ("bin-wise", "overall")


@dataclass
class ESMConfig:
    """User inputs of the ESM loop (the paper's Sec. II-B).

    Parameters
    ----------
    sampling
        ``"random"`` or ``"balanced"``.
    initial, step
        ``N_I`` and ``N_step``.
    w_below, w_above
        Algorithm 1's weights ``w1`` (bins below the threshold) and ``w2`` (bins above).
    encoding
        One of :data:`~nni_hwaware.esm.encode.ENCODINGS`.
    surrogate
        One of :data:`~nni_hwaware.esm.surrogate.SURROGATES` (paper: ``mlp``).
    eval_strategy
        ``"bin-wise"`` (every bin must pass) or ``"overall"``.
    bins
        ``N_bins``: equal ranges of total block count.
    acc_th
        ``Acc_TH``, e.g. 0.95.
    max_samples
        Budget cap on training measurements.
    test_size
        Held-out measured architectures (balanced over the bins).
    seed
        Seed of all sampling.
    """

    sampling: str = "balanced"
    initial: int = 300
    step: int = 100
    w_below: float = 0.8
    w_above: float = 0.2
    encoding: str = "fcc"
    surrogate: str = "mlp"
    eval_strategy: str = "bin-wise"
    bins: int = 5
    acc_th: float = 0.95
    max_samples: int = 500
    test_size: int = 100
    seed: int = 0
    surrogate_params: dict[str, Any] = field(default_factory=dict)

    def check(self) -> None:
        """Raise :class:`HwAwareError` on inconsistent inputs."""
        if self.sampling not in ("random", "balanced"):
            raise HwAwareError(f"--sampling must be random or balanced, got {self.sampling!r}")
        if self.encoding not in ENCODINGS:
            raise HwAwareError(f"--encoding must be one of {', '.join(ENCODINGS)}, got {self.encoding!r}")
        if self.surrogate not in SURROGATES or self.surrogate == "linear":
            raise HwAwareError(f"--surrogate must be one of mlp, gb, rf, got {self.surrogate!r}")
        if self.eval_strategy not in EVAL_STRATEGIES:
            raise HwAwareError(f"--eval must be one of {', '.join(EVAL_STRATEGIES)}")
        for name in ("initial", "step", "bins", "max_samples", "test_size"):
            if getattr(self, name) < 1:
                raise HwAwareError(f"--{name.replace('_', '-')} must be at least 1")
        if self.initial > self.max_samples:
            raise HwAwareError(f"--initial ({self.initial}) exceeds --max-samples ({self.max_samples})")
        if not 0 < self.acc_th < 1:
            raise HwAwareError(f"--acc-th must be between 0 and 1, got {self.acc_th}")
        if self.w_below < 0 or self.w_above < 0 or self.w_below + self.w_above == 0:
            raise HwAwareError("--w-below and --w-above must be non-negative and not both zero")


def space_fingerprint(space: SearchSpace) -> str:
    """Hash of everything in a space that changes its architectures or their networks (:attr:`SearchSpace.fingerprint`)."""
    return space.fingerprint


class ESMPredictor:
    """A trained latency predictor for one space, input size and device.

    Parameters
    ----------
    space
        The search space.
    encoder
        The architecture encoding.
    model
        A fitted surrogate.
    info
        Metadata kept in ``predictor.json`` (input size, device, metrics, history, ...).
    """

    def __init__(self, space: SearchSpace, encoder: Encoder, model: Any, info: dict[str, Any]) -> None:
        self.space = space
        self.encoder = encoder
        self.model = model
        self.info = info

    @property
    def input_size(self) -> int:
        return int(self.info["input_size"])

    def predict(self, archs: Sequence[Any], *, validate: bool = True) -> dict[str, np.ndarray]:
        """Latency (ms) and a 90 % interval for each architecture, in input order."""
        X = self.encoder.encode(archs, validate=validate)
        mean = self.model.predict(X)
        lo, hi = self.model.predict_interval(X)
        if not (np.all(np.isfinite(mean)) and np.all(np.isfinite(lo)) and np.all(np.isfinite(hi))):
            raise ArtifactError("the ESM predictor returned a non-finite latency (corrupt weights?); rebuild it")
        return {"latency_ms": mean, "latency_low_ms": lo, "latency_high_ms": hi}

    def check_compatible(self, space: SearchSpace, input_size: int | None = None) -> None:
        """Refuse to predict for another space or input size than the predictor was built for."""
        if space.name != self.space.name or space_fingerprint(space) != self.info["space_fingerprint"]:
            raise HwAwareError(
                f"predictor was built for space {self.info['space']!r} "
                f"(fingerprint {self.info['space_fingerprint']}), not for {space.name!r}; build one for this space"
            )
        if input_size is not None and input_size != self.input_size:
            raise HwAwareError(
                f"predictor was built for input size {self.input_size}, not {input_size}; build one for that size"
            )

    def save(self, folder: Path) -> None:
        """Write ``predictor.json`` and the surrogate's weights into ``folder``."""
        folder.mkdir(parents=True, exist_ok=True)
        info = dict(self.info, surrogate_file=save_surrogate(self.model, folder))
        tmp = folder / f".{PREDICTOR_FILE}.tmp"
        tmp.write_text(json.dumps(info, indent=1, default=_json_default))
        tmp.replace(folder / PREDICTOR_FILE)

    @classmethod
    def load(cls, folder: str | Path) -> ESMPredictor:
        """Load a predictor directory written by :meth:`save` (no code in it executes)."""
        folder = Path(folder)
        meta_path = folder / PREDICTOR_FILE
        if not meta_path.is_file():
            raise ArtifactError(f"{folder} is not a predictor directory (no {PREDICTOR_FILE}); build one first")
        info = read_json_object(meta_path, "rebuild the predictor")
        if info.get("kind") != "esm":
            raise ArtifactError(f"{folder} holds a {info.get('kind')!r} predictor, not an ESM predictor of a "
                                "search space")
        require_keys(info, _REQUIRED_KEYS, meta_path)
        if (not isinstance(info["surrogate_file"], dict) or not isinstance(info["input_size"], int)
                or not isinstance(info["space"], str) or info["encoding"] not in ENCODINGS):
            raise ArtifactError(f"{meta_path} has a malformed space, encoding, input_size or surrogate_file; "
                                "rebuild the predictor")
        space = load_space(info["space"])
        if space_fingerprint(space) != info.get("space_fingerprint"):
            raise ArtifactError(
                f"space {space.name!r} changed since the predictor in {folder} was built; rebuild the predictor"
            )
        encoder = Encoder(space, info["encoding"])
        if encoder.length != info.get("encoding_length"):
            raise ArtifactError(f"predictor in {folder} does not match its space's encoding; rebuild it")
        model = load_surrogate(folder, info["surrogate_file"], encoder.length)
        return cls(space, encoder, model, info)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.integer | np.floating):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(type(obj).__name__)


@dataclass
class Iteration:
    """What one train-evaluate round saw."""

    iteration: int
    train_size: int
    accuracy: float
    within_10: float
    bin_accuracy: list[float | None]
    passed: bool
    measure_seconds: float
    train_seconds: float


@dataclass
class ESMResult:
    """Outcome of :func:`run_esm`."""

    predictor: ESMPredictor
    history: list[Iteration]
    converged: bool
    train_archs: list[Architecture]
    train_latency: np.ndarray
    test_archs: list[Architecture]
    test_latency: np.ndarray
    test_prediction: np.ndarray


def allocate_extension(bin_acc: Sequence[float | None], acc_th: float, step: int, w_below: float, w_above: float) -> list[int]:
    """Algorithm 1: how many new architectures each bin gets.

    Bins without test models count as below the threshold (nothing shows they pass).
    """
    below = [a is None or a < acc_th for a in bin_acc]
    n_below, n_above = sum(below), len(below) - sum(below)
    norm = w_below * n_below + w_above * n_above
    if norm == 0:
        return [math.ceil(step / len(below))] * len(below)
    per_below = math.ceil(step * w_below / norm)
    per_above = math.ceil(step * w_above / norm)
    return [per_below if b else per_above for b in below]


def run_esm(
    space: SearchSpace,
    config: ESMConfig,
    measure: MeasureFn,
    *,
    input_size: int,
    device: dict[str, Any] | None = None,
    log: Callable[[str], None] = lambda _msg: None,
) -> ESMResult:
    """Run the train-evaluate-extend loop and return the final predictor with its history.

    Parameters
    ----------
    space
        The search space.
    config
        The user inputs.
    measure
        Architectures -> latencies in ms (through the measurement store, so reruns reuse measurements).
    input_size
        Input resolution the architectures are measured at (recorded in the predictor).
    device
        Description of the measured device, recorded in the predictor.
    log
        Receives one line per event (iteration results, timings).
    """
    config.check()
    encoder = Encoder(space, config.encoding)
    test_archs = sample_architectures(space, config.test_size, seed=config.seed + 7919, strategy="balanced", bins=config.bins)
    excluded = {space.arch_hash(a) for a in test_archs}
    t0 = time.perf_counter()
    test_y = np.asarray(measure(test_archs), dtype=float)
    measure_s = time.perf_counter() - t0
    log(f"held-out set: {len(test_archs)} architectures measured in {measure_s:.0f} s")
    test_bins = [space.depth_bin(space.total_depth(a), config.bins) for a in test_archs]
    X_test = encoder.encode(test_archs, validate=False)

    train_archs = sample_architectures(
        space, config.initial, seed=config.seed, strategy=config.sampling, bins=config.bins, exclude=excluded
    )
    train_y = np.zeros(0)
    history: list[Iteration] = []
    converged = False
    model: Any = None
    iteration = 0
    while True:
        t0 = time.perf_counter()
        new = train_archs[len(train_y):]
        train_y = np.concatenate([train_y, np.asarray(measure(new), dtype=float)])
        measure_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        X = encoder.encode(train_archs, validate=False)
        model = make_surrogate(config.surrogate, random_state=config.seed, **config.surrogate_params).fit(X, train_y)
        train_s = time.perf_counter() - t0
        pred = model.predict(X_test)
        summary = metrics.summary(test_y, pred, test_bins, config.bins)
        bin_acc = summary["bin_accuracy"]
        if config.eval_strategy == "bin-wise":
            passed = all(a is not None and a >= config.acc_th for a in bin_acc)
        else:
            passed = summary["accuracy"] >= config.acc_th
        history.append(Iteration(iteration, len(train_y), summary["accuracy"], summary["within_10"], bin_acc, passed,
                                 measure_s, train_s))
        log(
            f"iteration {iteration}: {len(train_y)} samples, accuracy {summary['accuracy']:.4f}, "
            f"within 10% {summary['within_10']:.3f}, bins "
            + " ".join("-" if a is None else f"{a:.3f}" for a in bin_acc)
            + f" | measure {measure_s:.0f} s, train {train_s:.1f} s" + (" | passed" if passed else "")
        )
        if passed:
            converged = True
            break
        room = config.max_samples - len(train_archs)
        if room <= 0:
            log(f"budget of {config.max_samples} samples spent before every bin reached {config.acc_th}")
            break
        exclude = excluded | {space.arch_hash(a) for a in train_archs}
        seed = config.seed + 1000 * (iteration + 1)
        if config.sampling == "random":
            extra = sample_architectures(space, min(config.step, room), seed=seed, strategy="random", exclude=exclude)
        else:
            counts = allocate_extension(bin_acc, config.acc_th, config.step, config.w_below, config.w_above)
            extra = sample_per_bin(space, counts, seed=seed, exclude=exclude)[:room]
        train_archs = train_archs + extra
        iteration += 1

    if hasattr(model, "calibrate"):
        model.calibrate(X_test, test_y)
    final = metrics.summary(test_y, model.predict(X_test), test_bins, config.bins)
    info = {
        "kind": "esm",
        "space": space.name,
        "space_fingerprint": space_fingerprint(space),
        "input_size": input_size,
        "width_mult": space.width_mult,
        "device": device or {},
        "encoding": config.encoding,
        "encoding_length": encoder.length,
        "surrogate": config.surrogate,
        "config": asdict(config),
        "train_size": len(train_y),
        "test_size": len(test_y),
        "converged": converged,
        "metrics": final,
        "bin_edges_total_blocks": [space.min_total_depth, space.max_total_depth, config.bins],
        "history": [asdict(h) for h in history],
    }
    predictor = ESMPredictor(space, encoder, model, info)
    return ESMResult(predictor, history, converged, train_archs, train_y, test_archs, test_y, model.predict(X_test))


def store_backed_measure(
    space: SearchSpace,
    measurer: Any,
    store: Any,
    *,
    input_size: int,
    qc_every: int = 50,
    label: str = "measure",
    show_progress: bool = True,
) -> MeasureFn:
    """A measure function for :func:`run_esm` that goes through a quality-controlled campaign and the store.

    Each call measures the architectures not yet stored (with the reference-model checks of
    :class:`~nni_hwaware.measure.campaign.Campaign`), then reads every latency back from the store, so a rerun
    of the same build measures nothing twice.
    """
    from nni_hwaware.measure.campaign import Campaign
    from nni_hwaware.measure.progress import Progress

    def measure(archs: Sequence[Architecture]) -> np.ndarray:
        if not archs:
            return np.zeros(0)
        definition = {"purpose": "esm", "archs": hashlib.sha256(
            "".join(space.arch_hash(a) for a in archs).encode()).hexdigest()[:16]}
        progress = Progress(len(archs), label=label, enabled=show_progress)
        try:
            Campaign(space, archs, measurer, store, input_size=input_size, definition=definition,
                     qc_every=qc_every, progress=progress).run()
        finally:
            progress.close()
        out = []
        for arch in archs:
            m = store.get_measurement(space, space.arch_hash(arch), measurer.device_key, measurer.backend.name,
                                      input_size, precision=measurer.backend.precision)
            if m is None:
                raise HwAwareError(f"measurement of {space.arch_hash(arch)} is missing from the store")
            out.append(m.latency_ms)
        return np.asarray(out, dtype=float)

    return measure


def build_data_line(space: SearchSpace, split: str, arch: Architecture, latency_ms: float,
                    **extra: Any) -> str:
    """One line of a predictor folder's ``data.jsonl`` (what :func:`read_build_data` reads back).

    Examples
    --------
    >>> from nni_hwaware.spaces import load_space
    >>> space = load_space("convnet")
    >>> json.loads(build_data_line(space, "train", space.default_architecture(), 1.5))["split"]
    'train'
    """
    return json.dumps({"split": split, "arch": arch, "latency_ms": float(latency_ms),
                       "total_blocks": space.total_depth(arch), **extra}) + "\n"


def read_build_data(folder: str | Path, space: SearchSpace) -> dict[str, tuple[list[Architecture], np.ndarray]]:
    """The measured train and held-out sets a predictor was built from (its ``data.jsonl``)."""
    path = Path(folder) / "data.jsonl"
    if not path.is_file():
        raise HwAwareError(f"{path} is missing: the predictor's build data is needed to refit it; rebuild it "
                           "with `nni-hwaware build`")
    splits: dict[str, tuple[list[Architecture], list[float]]] = {"train": ([], []), "test": ([], [])}
    try:
        for line in path.read_text().splitlines():
            row = json.loads(line)
            archs, ys = splits[row["split"]]
            archs.append(space.validate(row["arch"]))
            ys.append(float(row["latency_ms"]))
    except (ValueError, KeyError, TypeError):
        raise HwAwareError(f"{path} is corrupt; rebuild the predictor") from None
    return {k: (a, np.asarray(y, dtype=float)) for k, (a, y) in splits.items()}


def refit_predictor(predictor: ESMPredictor, folder: str | Path, extra_archs: Sequence[Any],
                    extra_latency: Sequence[float]) -> ESMPredictor:
    """A predictor refitted on its training set plus new measurements of the same target.

    The surrogate is a fresh copy with the same parameters, trained on the build's training architectures
    and ``extra_archs`` (those in the build's held-out set are left out so it stays held out), and
    calibrated and scored on the held-out set again; ``info["refits"]`` records each refit and its accuracy.
    """
    from sklearn.base import clone

    data = read_build_data(folder, predictor.space)
    train_archs, train_y = data["train"]
    test_archs, test_y = data["test"]
    held_out = {predictor.space.arch_hash(a) for a in test_archs}
    known = {predictor.space.arch_hash(a) for a in train_archs}
    new = [(predictor.space.validate(a), float(y)) for a, y in zip(extra_archs, extra_latency)]
    new = [(a, y) for a, y in new if predictor.space.arch_hash(a) not in held_out | known]
    archs = list(train_archs) + [a for a, _ in new]
    y = np.concatenate([train_y, np.asarray([v for _, v in new], dtype=float)])
    model = clone(predictor.model).fit(predictor.encoder.encode(archs, validate=False), y)
    X_test = predictor.encoder.encode(test_archs, validate=False)
    if hasattr(model, "calibrate"):
        model.calibrate(X_test, test_y)
    bins = predictor.info["bin_edges_total_blocks"][2]
    test_bins = [predictor.space.depth_bin(predictor.space.total_depth(a), bins) for a in test_archs]
    scored = metrics.summary(test_y, model.predict(X_test), test_bins, bins)
    refits = [*predictor.info.get("refits", []), {"added": len(new), "train_size": len(y),
                                                  "accuracy_before": predictor.info["metrics"]["accuracy"],
                                                  "accuracy": scored["accuracy"]}]
    info = dict(predictor.info, train_size=len(y), metrics=scored, refits=refits)
    return ESMPredictor(predictor.space, predictor.encoder, model, info)


@register_predictor("esm")
class EsmHardwarePredictor(HardwarePredictor):
    """An ESM predictor folder behind the one hardware-predictor interface (kind ``esm``; latency only).

    It estimates architectures of the one space and input size it was built for, on the device and backend
    it was measured on, and learns from new measurements of that target (:meth:`refit`).

    Parameters
    ----------
    folder
        A folder written by ``nni-hwaware build`` (or :func:`run_esm` then ``write_predictor_dir``).
    space, input_size
        Default: those the predictor was built for; others are refused.
    """

    refittable = True
    saves_refits = True

    def __init__(self, folder: Path, space: str | SearchSpace | None = None, input_size: int | None = None) -> None:
        self.model = ESMPredictor.load(folder)
        space_obj = space if isinstance(space, SearchSpace) else self.model.space if space is None else load_space(space)
        self.model.check_compatible(space_obj, input_size)
        super().__init__(folder, space_obj, self.model.input_size)

    @property
    def target(self) -> PredictorTarget:
        """The device the predictor was built on: its fingerprint is the comparable part of the device
        description recorded at build time, with the ESM protocol (``"esm"``)."""
        from nni_hwaware.measure.fingerprint import comparable

        device = self.model.info.get("device") or {}
        where = device.get("cpu_model", device.get("accelerator", device.get("host", "unknown device")))
        protocol = (f"{self.model.info.get('backend', device.get('backend', '?'))}, "
                    f"{device.get('threads', '?')} thread(s): trimmed mean of timed runs (ESM protocol)")
        fingerprint = {**comparable(device), "protocol": "esm"} if device else {}
        return PredictorTarget(device=str(where), protocol=protocol, space=self.space.name,
                               input_size=self.input_size, fingerprint=fingerprint)

    def _mismatch_text(self) -> str:
        device = self.model.info.get("device") or {}
        return (f"was built on another device/backend ({device.get('backend', '?')}, "
                f"{device.get('cpu', device.get('host', '?'))}) than the one measuring")

    def _mismatch_advice(self) -> str:
        return ("measuring here would mix targets: build a predictor on this device, or pass the backend and "
                "threads it was built with")

    def _estimate_new(self, archs: Sequence[Architecture], hashes: Sequence[str]) -> list[HardwareEstimate]:
        out = self.model.predict(archs, validate=False)
        return [HardwareEstimate(h, float(out["latency_ms"][i]),
                                 (float(out["latency_low_ms"][i]), float(out["latency_high_ms"][i])), predictor="esm")
                for i, h in enumerate(hashes)]

    def refit(self, archs: Sequence[Any], latency_ms: Sequence[float]) -> dict[str, Any]:
        """Refit the surrogate on its build data plus these measurements; later estimates use the refit."""
        self.model = refit_predictor(self.model, self.folder, archs, latency_ms)
        self._forget()
        return dict(self.model.info["refits"][-1])

    def save_refit(self, out: Path, archs: Sequence[Any], latency_ms: Sequence[float],
                   notes: dict[str, Any]) -> dict[str, Any]:
        """Refit (later estimates use the refit) and write the refitted predictor as the new folder ``out``:
        the surrogate, the build data plus these measurements, ``refit.json`` and a model card with ``notes``.

        The folder it was loaded from is left as it was; on failure the predictor keeps its old surrogate.
        """
        from nni_hwaware.artifacts import replace_output_dir, staging_dir

        old_model, old_folder = self.model, self.folder
        self.refit(archs, latency_ms)
        self.model.info["refits"][-1].update(folder=str(out), arch_hashes=notes.get("arch_hashes"),
                                             store=notes.get("store"),
                                             allow_device_mismatch=notes.get("allow_device_mismatch"))
        record = dict(self.model.info["refits"][-1])
        tmp = staging_dir(out)
        try:
            self.model.save(tmp)
            _extend_build_data(old_folder / "data.jsonl", tmp / "data.jsonl", self.space, archs, latency_ms)
            (tmp / "refit.json").write_text(json.dumps({**notes, **record}, indent=1, default=str))
            (tmp / "MODEL_CARD.md").write_text(refit_card(old_folder, {**notes, **record}))
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            self.model = old_model
            self._forget()
            raise
        replace_output_dir(tmp, out, "esm", "out")
        return record


def _extend_build_data(source: Path, target: Path, space: Any, archs: Sequence[Any], latency: Any) -> None:
    """The base's ``data.jsonl`` plus the new measurements as training rows (architectures it already holds are
    not added again), so the refitted folder has everything its own refit needs."""
    lines = source.read_text().splitlines()
    known = {space.arch_hash(json.loads(line)["arch"]) for line in lines if line.strip()}
    with target.open("w") as fh:
        fh.writelines(line + "\n" for line in lines if line.strip())
        for arch, y in zip(archs, latency):
            arch = space.validate(arch)
            if space.arch_hash(arch) not in known:
                known.add(space.arch_hash(arch))
                fh.write(build_data_line(space, "train", arch, y, source="fallback"))


def refit_card(base_folder: Path, record: dict[str, Any]) -> str:
    """The model card of a refitted ESM predictor: what was added to which base, held-out figures."""
    lines = [f"# Refit of {base_folder}", "",
             f"- **Measurements added**: {record.get('added')} (training set now {record.get('train_size')})",
             f"- **Held-out accuracy**: {record.get('accuracy_before')} before, {record.get('accuracy')} after",
             f"- **Store**: {record.get('store')}", f"- **Protocol**: {record.get('protocol')}",
             f"- **Device mismatch allowed**: {record.get('allow_device_mismatch')}"
             + (f" ({record['device_mismatch']})" if record.get("device_mismatch") else ""),
             "- **Devices**: " + "; ".join(json.dumps(d, sort_keys=True) for d in record.get("devices", [])),
             "- **Architectures added**: " + ", ".join(record.get("arch_hashes", [])), ""]
    return "\n".join(lines)
