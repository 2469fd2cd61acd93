"""Read the public Jetson Nano dataset as published and rebuild every model as a convnet-space architecture.

The dataset (``../shared/data/jetson_nano``, README.md there) has one model-information CSV per stage folder.
Each row names a synthetic conv stack; this module parses the name into an architecture of the ``convnet``
space (plain, depthwise-separable or mixed-kernel, with the README's padding rules), joins the measured
``average_latency(ms)`` and GPU energy per inference (mJ), skips rows never measured, and checks the rebuilt
MACs and parameters against the CSV's torchinfo columns.

Duplicates: some models were measured in two stages (same name, same architecture). They are kept as one
model whose latency and energy are the mean of the measurements (``n_measurements`` says how many); the
spread between repeated measurements is reported as the dataset's own noise floor.
"""

from __future__ import annotations

import csv
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nni_hwaware.errors import HwAwareError, ParameterError
from nni_hwaware.spaces.counting import convnet_macs_params

# Stage folders of the published dataset, with a short family label used for held-out splits.
STAGES: dict[str, str] = {
    "conv_layers_1_5": "plain",
    "conv_layers_6_10": "plain",
    "misc_conv_models": "plain",
    "expanded_high_mac": "plain_high_mac",
    "expanded_high_mac_2": "plain_high_mac",
    "dws": "dws",
    "dws_2": "dws",
    "mixed_kernel_models_L2": "mixed",
    "mixed_kernel_models_L5": "mixed",
}
LATENCY_COLUMN = "average_latency(ms)"
ENERGY_COLUMN = "GPU_energy_per_inference"
NUM_CLASSES = 10
IN_CHANNELS = 3

_UNIFORM = re.compile(r"^convnet_L(\d+)_F(\d+)_K(\d+)x\3_W(\d+)(_DWS)?$")
_DEPTH_OR_WIDTH = re.compile(r"_[LW]\d+")
_MIXED = re.compile(r"^convnet_L(\d+)_F(\d+)_K(\d+)x\3_(\d+)_K(\d+)x\5_(\d+)_W(\d+)$")


@dataclass
class DatasetModel:
    """One measured model of the dataset.

    Parameters
    ----------
    name
        ``Model Name`` as published.
    stage
        Stage folder the first measurement came from (``stages`` lists all of them).
    family
        ``plain``, ``plain_high_mac``, ``dws`` or ``mixed``.
    arch
        Canonical convnet-space architecture.
    input_size
        W of the 3xWxW input.
    latency_ms, energy_mj
        Measured mean latency (TensorRT, batch 1) and GPU energy per inference, averaged over repeats.
    csv_macs, csv_params
        The CSV's torchinfo ``Total MACs`` and ``Total Parameters``.
    """

    name: str
    stage: str
    family: str
    arch: dict[str, Any]
    input_size: int
    latency_ms: float
    energy_mj: float
    csv_macs: int
    csv_params: int
    stages: list[str] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    energies: list[float] = field(default_factory=list)

    @property
    def layers(self) -> int:
        return int(self.arch["units"][0]["depth"])

    @property
    def n_measurements(self) -> int:
        return len(self.latencies)

    @property
    def architecture_family(self) -> str:
        """The name without depth and input size: layer type, filters and kernel configuration.

        All depths and input sizes of one family share their layer shapes, so held-out splits keep a family
        whole to leave no near-copy of a test model in training.
        """
        return _DEPTH_OR_WIDTH.sub("", self.name)


def plain_padding(kernel_size: int) -> int:
    """Padding of a uniform plain stack: 1 when k is 1 or 3, else 2."""
    return 1 if kernel_size in (1, 3) else 2


def dws_padding(kernel_size: int) -> int:
    """Padding of the depthwise conv of a depthwise-separable stack: 1 when k is 3, else 2."""
    return 1 if kernel_size == 3 else 2


def mixed_blocks(depth: int, k_first: int, n_first: int, k_second: int, n_second: int) -> list[dict[str, int]]:
    """Blocks of a mixed-kernel stack: alternate ``k_first`` and ``k_second`` (``n`` of each), padding 2 until
    the first odd kernel, then 1 from then on."""
    if n_first + n_second != depth:
        raise HwAwareError(f"mixed-kernel name says L{depth} but {n_first}+{n_second} layers; check the name")
    kernels: list[int] = []
    left = {k_first: n_first, k_second: n_second} if k_first != k_second else {k_first: depth}
    order = [k_first, k_second]
    i = 0
    while len(kernels) < depth:
        k = order[i % 2]
        i += 1
        if left.get(k, 0) > 0:
            kernels.append(k)
            left[k] -= 1
    blocks, padding = [], 2
    for k in kernels:
        if k % 2 == 1:
            padding = 1
        blocks.append({"kernel_size": k, "padding": padding})
    return blocks


def parse_model_name(name: str) -> tuple[dict[str, Any], int]:
    """Rebuild the convnet-space architecture and the input size W from a dataset model name.

    Examples
    --------
    >>> arch, w = parse_model_name("convnet_L2_F128_K1x1_1_K3x3_1_W80")
    >>> [b["kernel_size"] for b in arch["units"][0]["blocks"]], w
    ([1, 3], 80)
    """
    m = _UNIFORM.match(name)
    if m:
        depth, filters, k, width, dws = int(m[1]), int(m[2]), int(m[3]), int(m[4]), bool(m[5])
        pad = dws_padding(k) if dws else plain_padding(k)
        blocks = [{"kernel_size": k, "padding": pad} for _ in range(depth)]
        layer_type = "dws" if dws else "plain"
    else:
        m = _MIXED.match(name)
        if not m:
            raise HwAwareError(f"cannot parse dataset model name {name!r}; expected convnet_L.._F.._K..x.._W..")
        depth, filters = int(m[1]), int(m[2])
        blocks = mixed_blocks(depth, int(m[3]), int(m[4]), int(m[5]), int(m[6]))
        width, layer_type = int(m[7]), "plain"
    arch = {"global": {"layer_type": layer_type, "filters": filters},
            "units": [{"depth": depth, "blocks": blocks}]}
    return arch, width


def _number(row: dict[str, str], column: str) -> float | None:
    value = (row.get(column) or "").strip()
    if not value:
        return None
    try:
        x = float(value)
    except ValueError:
        return None
    return x if math.isfinite(x) else None


@dataclass
class DatasetReport:
    """What loading found: rows read, skipped, duplicates, and the MACs/params match rate."""

    rows: int = 0
    skipped_unmeasured: int = 0
    skipped_bad: int = 0
    duplicates: int = 0
    macs_match: int = 0
    params_match: int = 0
    models: int = 0
    duplicate_latency_spread_pct: float | None = None
    per_stage: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__,
                    macs_match_rate=self.macs_match / max(1, self.models),
                    params_match_rate=self.params_match / max(1, self.models))


def find_stage_csv(stage_dir: Path) -> Path:
    """The model-information CSV of a stage folder (the only CSV directly inside it)."""
    csvs = sorted(p for p in stage_dir.glob("*.csv") if p.is_file())
    if len(csvs) != 1:
        raise HwAwareError(f"expected one model CSV in {stage_dir}, found {len(csvs)}; is this the published dataset?")
    return csvs[0]


def load_dataset(data_dir: str | Path, *, stages: list[str] | None = None,
                 limit_per_stage: int | None = None) -> tuple[list[DatasetModel], DatasetReport]:
    """Load the measured models of the Jetson Nano dataset.

    Parameters
    ----------
    data_dir
        The dataset folder (``../shared/data/jetson_nano``).
    stages
        Stage folders to read (default: all of :data:`STAGES`).
    limit_per_stage
        Read at most this many measured rows per stage (for quick tests).

    Returns
    -------
    models, report
        One :class:`DatasetModel` per distinct model name (repeats averaged) and a :class:`DatasetReport`.

    Examples
    --------
    >>> models, report = load_dataset("../shared/data/jetson_nano")  # doctest: +SKIP
    >>> report.as_dict()["macs_match_rate"]  # doctest: +SKIP
    1.0
    """
    from nni_hwaware.spaces import load_space

    root = Path(data_dir)
    if not root.is_dir():
        what = "is not a folder" if root.exists() else "not found"
        raise ParameterError(f"data_dir {root} {what}; point it at the dataset, ../shared/data/jetson_nano",
                             parameter="data_dir")
    space = load_space("convnet")
    report = DatasetReport()
    by_name: dict[str, DatasetModel] = {}
    for stage in stages or list(STAGES):
        stage_dir = root / stage
        if not stage_dir.is_dir():
            raise HwAwareError(f"stage folder {stage_dir} missing; is {root} the published Jetson Nano dataset?")
        _read_stage(stage_dir, stage, space, by_name, report, limit_per_stage)
    models = list(by_name.values())
    if not models:
        raise HwAwareError(f"no measured models found under {root}")
    _average_repeats(models, report)
    return models, report


def _read_stage(stage_dir: Path, stage: str, space: Any, by_name: dict[str, DatasetModel], report: DatasetReport,
                limit: int | None) -> None:
    """Add the measured rows of one stage's CSV to ``by_name`` (repeats of a name collect their values)."""
    taken = 0
    with find_stage_csv(stage_dir).open(newline="") as fh:
        reader = csv.DictReader(fh)
        missing = {"Model Name", "Total MACs", "Total Parameters", LATENCY_COLUMN, ENERGY_COLUMN} - set(
            reader.fieldnames or [])
        if missing:
            raise HwAwareError(f"{stage_dir.name}: columns {sorted(missing)} missing from the model CSV")
        for row in reader:
            report.rows += 1
            latency, energy = _number(row, LATENCY_COLUMN), _number(row, ENERGY_COLUMN)
            if latency is None or latency <= 0:
                report.skipped_unmeasured += 1
                continue
            if energy is None or energy <= 0:
                report.skipped_bad += 1
                continue
            name = row["Model Name"].strip()
            try:
                arch, width = parse_model_name(name)
                arch = space.validate(arch)
            except HwAwareError:
                report.skipped_bad += 1
                continue
            taken += 1
            report.per_stage[stage] = report.per_stage.get(stage, 0) + 1
            if name in by_name:
                report.duplicates += 1
                model = by_name[name]
                model.stages.append(stage)
                model.latencies.append(latency)
                model.energies.append(energy)
            else:
                by_name[name] = DatasetModel(
                    name=name, stage=stage, family=STAGES[stage], arch=arch, input_size=width,
                    latency_ms=latency, energy_mj=energy,
                    csv_macs=int(float(row["Total MACs"])), csv_params=int(float(row["Total Parameters"])),
                    stages=[stage], latencies=[latency], energies=[energy])
            if limit is not None and taken >= limit:
                break


def _average_repeats(models: list[DatasetModel], report: DatasetReport) -> None:
    """Average the repeats of each model; check its MACs and parameters against the CSV's columns."""
    spreads = []
    for model in models:
        model.latency_ms = sum(model.latencies) / len(model.latencies)
        model.energy_mj = sum(model.energies) / len(model.energies)
        if len(model.latencies) > 1:
            spreads.append((max(model.latencies) - min(model.latencies)) / model.latency_ms * 100)
        macs, params = convnet_macs_params(model.arch, model.input_size, IN_CHANNELS, NUM_CLASSES)
        report.macs_match += macs == model.csv_macs
        report.params_match += params == model.csv_params
    report.models = len(models)
    if spreads:
        spreads.sort()
        report.duplicate_latency_spread_pct = spreads[len(spreads) // 2]
