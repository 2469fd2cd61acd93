"""The ESM predictor folder: one module writes and reads every file of it.

A folder holds:

- ``predictor.json``: ``"kind": "esm"``, space and fingerprint, input size, device, encoding, surrogate,
  the build's settings, held-out metrics (interval coverage included), how the intervals were calibrated,
  the loop's history and any refits;
- the surrogate's weights: ``mlp.safetensors`` (MLP) or ``surrogate.skops`` (scikit-learn; loaded with an
  allow-list), never a pickle;
- ``data.jsonl``: the measured training and held-out architectures (:func:`build_data_line`), which a refit
  needs (:func:`read_build_data`);
- ``MODEL_CARD.md`` and the plots ``scatter.png``, ``bin_accuracy.png``, ``convergence.png``;
- after a refit (:func:`write_refit_folder`), ``refit.json``.

:func:`write_predictor_folder` writes a whole folder from a build (``ESMResult.save`` and ``nni-hwaware
build`` both call it), all or nothing; :class:`ESMPredictor` saves and loads the predictor itself.

Examples
--------
>>> from nni_hwaware.spaces import load_space
>>> space = load_space("convnet")
>>> json.loads(build_data_line(space, "train", space.default_architecture(), 1.5))["split"]
'train'
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from nni_hwaware.artifacts import (
    check_output_dir,
    read_json_object,
    replace_output_dir,
    require_keys,
    staging_dir,
    write_json_atomically,
    write_text_atomically,
)
from nni_hwaware.errors import ArtifactError, HwAwareError
from nni_hwaware.esm.encode import ENCODINGS, Encoder
from nni_hwaware.esm.surrogate import load_surrogate, save_surrogate
from nni_hwaware.spaces.schema import Architecture, SearchSpace, load_space

if TYPE_CHECKING:  # annotations only: the loop imports this module
    from nni_hwaware.esm.loop import ESMResult

PREDICTOR_FILE = "predictor.json"
DATA_FILE = "data.jsonl"
CARD_FILE = "MODEL_CARD.md"
REFIT_FILE = "refit.json"
PLOTS = ("scatter.png", "bin_accuracy.png", "convergence.png")
_REQUIRED_KEYS = ("space", "space_fingerprint", "encoding", "encoding_length", "input_size", "surrogate_file")


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
        """Write ``predictor.json`` and the surrogate's weights into ``folder`` (the predictor alone; a whole
        folder, with its build data, card and plots, is :func:`write_predictor_folder`)."""
        folder.mkdir(parents=True, exist_ok=True)
        info = dict(self.info, surrogate_file=save_surrogate(self.model, folder))
        write_json_atomically(folder / PREDICTOR_FILE, info, indent=1, default=_json_default)

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


# ------------------------------------------------------------------------------------------ build data
def build_data_line(space: SearchSpace, split: str, arch: Architecture, latency_ms: float,
                    **extra: Any) -> str:
    """One line of a predictor folder's ``data.jsonl`` (what :func:`read_build_data` reads back)."""
    return json.dumps({"split": split, "arch": arch, "latency_ms": float(latency_ms),
                       "total_blocks": space.total_depth(arch), **extra}) + "\n"


def read_build_data(folder: str | Path, space: SearchSpace) -> dict[str, tuple[list[Architecture], np.ndarray]]:
    """The measured train and held-out sets a predictor was built from (its ``data.jsonl``)."""
    path = Path(folder) / DATA_FILE
    if not path.is_file():
        raise HwAwareError(f"{path} is missing: the predictor's build data is needed to refit it; rebuild it "
                           "with `nni-hwaware build` or save it with ESMResult.save")
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


def _write_build_data(path: Path, space: SearchSpace, splits: Sequence[tuple[str, Sequence[Any], Any]]) -> None:
    """``data.jsonl`` from ``(split, architectures, latencies)`` triples."""
    write_text_atomically(path, "".join(build_data_line(space, split, arch, y)
                                        for split, archs, ys in splits for arch, y in zip(archs, ys)))


def _extend_build_data(source: Path, target: Path, space: Any, archs: Sequence[Any], latency: Any) -> None:
    """The base's ``data.jsonl`` plus the new measurements as training rows (architectures it already holds are
    not added again), so the refitted folder has everything its own refit needs."""
    lines = [line for line in source.read_text().splitlines() if line.strip()]
    known = {space.arch_hash(json.loads(line)["arch"]) for line in lines}
    added = []
    for arch, y in zip(archs, latency):
        arch = space.validate(arch)
        if space.arch_hash(arch) not in known:
            known.add(space.arch_hash(arch))
            added.append(build_data_line(space, "train", arch, y, source="fallback"))
    write_text_atomically(target, "".join(line + "\n" for line in lines) + "".join(added))


# ------------------------------------------------------------------------------------------ whole folders
def write_predictor_folder(result: ESMResult, out: str | Path, extra: dict[str, Any] | None = None) -> Path:
    """Write a built predictor as the folder ``out``: ``predictor.json``, weights, ``data.jsonl`` (training and
    held-out sets), ``MODEL_CARD.md`` and the plots; all or nothing.

    Parameters
    ----------
    result
        What :func:`~nni_hwaware.esm.loop.run_esm` returned.
    out
        A new folder, an empty one, or an ESM predictor folder to replace (anything else is refused).
    extra
        More entries for ``predictor.json`` (the backend, the store, ...).
    """
    out = check_output_dir(out, "esm")
    predictor = result.predictor
    predictor.info.update(extra or {})
    tmp = staging_dir(out)
    try:
        predictor.save(tmp)
        _write_build_data(tmp / DATA_FILE, predictor.space, [("train", result.train_archs, result.train_latency),
                                                             ("test", result.test_archs, result.test_latency)])
        _write_plots(tmp, predictor.info, result.test_latency, result.test_prediction)
        write_text_atomically(tmp / CARD_FILE, model_card(predictor.info))
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    replace_output_dir(tmp, out, "esm")
    return out


def _write_plots(folder: Path, info: dict[str, Any], test_latency: Any, test_prediction: Any) -> None:
    from nni_hwaware import plots

    title = (f"{info['space']} @ {info['input_size']}px, {info['encoding']}-{info['surrogate']}, "
             f"{info['train_size']} samples")
    plots.scatter_predicted_vs_measured(test_latency, test_prediction, folder / "scatter.png", title)
    acc_th = info["config"]["acc_th"]
    plots.bin_accuracy_per_iteration(info["history"], acc_th, folder / "bin_accuracy.png")
    plots.convergence({"overall": [(h["train_size"], h["accuracy"]) for h in info["history"]]}, acc_th,
                      folder / "convergence.png", "held-out accuracy")


def write_refit_folder(predictor: ESMPredictor, base_folder: Path, out: Path, archs: Sequence[Any],
                       latency_ms: Sequence[float], notes: dict[str, Any]) -> None:
    """Write a refitted ``predictor`` as the new folder ``out``: the surrogate, the base's build data plus these
    measurements, ``refit.json`` and a model card with ``notes`` and the last refit record; all or nothing."""
    record = {**notes, **predictor.info["refits"][-1]}
    tmp = staging_dir(out)
    try:
        predictor.save(tmp)
        _extend_build_data(base_folder / DATA_FILE, tmp / DATA_FILE, predictor.space, archs, latency_ms)
        write_json_atomically(tmp / REFIT_FILE, record, indent=1, default=str)
        write_text_atomically(tmp / CARD_FILE, refit_card(base_folder, record))
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    replace_output_dir(tmp, out, "esm")


# ------------------------------------------------------------------------------------------ model cards
def _interval_line(info: dict[str, Any]) -> str:
    m, cal = info["metrics"], info.get("intervals") or {}
    coverage = m.get("interval_coverage")
    shown = "-" if coverage is None else f"{coverage:.3f}"
    return (f"- **90 % intervals**: calibrated by {cal.get('method', 'an older method (held-out residuals)')} "
            f"({cal.get('calibration_size', '?')} points); held-out coverage {shown} over {m.get('n', '?')} "
            "architectures the calibration never saw")


def model_card(info: dict[str, Any]) -> str:
    """Markdown model card of an ESM predictor."""
    m, cfg, dev = info["metrics"], info["config"], info.get("device", {})
    lo, hi, nb = info["bin_edges_total_blocks"]
    rows = "\n".join(
        f"| {i + 1} | {lo + i * (hi - lo) / nb:.1f}-{lo + (i + 1) * (hi - lo) / nb:.1f} | "
        f"{'-' if a is None else f'{a:.4f}'} |"
        for i, a in enumerate(m.get("bin_accuracy", []))
    )
    hist = "\n".join(
        f"| {h['iteration']} | {h['train_size']} | {h['accuracy']:.4f} | {h['within_10']:.3f} | "
        f"{h['measure_seconds']:.0f} | {h['train_seconds']:.1f} |"
        for h in info["history"]
    )
    return f"""# ESM latency predictor: {info['space']} at {info['input_size']}x{info['input_size']}

- **Space**: `{info['space']}` (fingerprint `{info['space_fingerprint']}`), width multiplier {info['width_mult']}
- **Input size**: {info['input_size']}
- **Device**: {dev.get('cpu_model', dev.get('accelerator', '?'))} on host `{dev.get('host', '?')}`,
  backend `{info.get('backend', dev.get('backend', '?'))}` {dev.get('backend_version', '')}, threads {dev.get('threads', '?')}
- **Method**: ESM (train-evaluate-extend), encoding `{info['encoding']}` (length {info['encoding_length']}),
  surrogate `{info['surrogate']}`, sampling `{cfg['sampling']}`, N_I={cfg['initial']}, N_step={cfg['step']},
  w1={cfg['w_below']}, w2={cfg['w_above']}, N_bins={cfg['bins']}, Acc_TH={cfg['acc_th']}, evaluation `{cfg['eval_strategy']}`
- **Data**: {info['train_size']} training measurements, {info['test_size']} held-out measurements (balanced over bins);
  converged: {info['converged']}
- **Held-out metrics**: accuracy {m['accuracy']:.4f}, MAPE {m['mape']:.2f} %, within +-10 % {m['within_10']:.3f},
  Spearman {m['spearman']:.4f}
{_interval_line(info)}

## Accuracy per bin of total block count

| bin | total blocks | accuracy |
| --- | --- | --- |
{rows}

## Iterations

| iteration | samples | accuracy | within 10 % | measure s | train s |
| --- | --- | --- | --- | --- | --- |
{hist}

Intended use: latency of architectures of this space, at this input size, on this device and backend. The
predictor refuses other spaces and input sizes. Plots: `scatter.png`, `bin_accuracy.png`, `convergence.png`;
the measured data it was built from: `data.jsonl`.
"""


def refit_card(base_folder: Path, record: dict[str, Any]) -> str:
    """The model card of a refitted ESM predictor: what was added to which base, held-out figures."""
    coverage = record.get("interval_coverage")
    lines = [f"# Refit of {base_folder}", "",
             f"- **Measurements added**: {record.get('added')} (training set now {record.get('train_size')})",
             f"- **Held-out accuracy**: {record.get('accuracy_before')} before, {record.get('accuracy')} after",
             "- **Held-out coverage of the 90 % intervals** (calibrated on the training set only): "
             + ("-" if coverage is None else f"{coverage:.3f}"),
             f"- **Store**: {record.get('store')}", f"- **Protocol**: {record.get('protocol')}",
             f"- **Device mismatch allowed**: {record.get('allow_device_mismatch')}"
             + (f" ({record['device_mismatch']})" if record.get("device_mismatch") else ""),
             "- **Devices**: " + "; ".join(json.dumps(d, sort_keys=True) for d in record.get("devices", [])),
             "- **Architectures added**: " + ", ".join(record.get("arch_hashes") or []), ""]
    return "\n".join(lines)
