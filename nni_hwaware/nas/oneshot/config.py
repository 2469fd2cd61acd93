"""The settings of a one-shot search (``nni-hwaware nas oneshot --config FILE``), read and checked in one place.

A config is a YAML mapping (see ``experiments/oneshot_spos.yml``)::

    space: convnet                 # a space name or file with a supernet (convnet, mobilenetv3, resnet)
    predictor: jetson_nano         # any predictor folder; estimates at hardware_input_size
    hardware_input_size: 50        # default: the space's input size
    budget: {latency_ms: 30, energy_mj: 80, margin: 0.1}
    data: digits                   # or images:FOLDER
    seed: 0
    train: {input_size: 12, width_mult: 0.0625, epochs: 2, batch_size: 32, lr: 0.003, max_train: 600}
    strategy: {name: spos, population: 16, sample_size: 4, cycles: 40, fitness: accuracy,
               train_within_budget: true, calibration_batches: 4}
    # or {name: proxyless | darts | gumbel_darts, loss: hinge | proxyless, scale: 1.0, arc_learning_rate: 0.003}
    final: {top_k: 3, epochs: 2}

Unknown keys and values of the wrong type or range are refused with one line naming the key.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from nni_hwaware.errors import HwAwareError, ParameterError
from nni_hwaware.measure.remote import is_device_url

STRATEGIES = ("spos", "proxyless", "darts", "gumbel_darts")
FITNESS = ("accuracy", "paper")
LOSSES = ("hinge", "proxyless")


@dataclass
class TrainSettings:
    """How the supernet (and the retrained finalists) are trained: scaled down, on the data set."""

    input_size: int = 12
    width_mult: float = 0.0625
    epochs: int = 2
    batch_size: int = 32
    lr: float = 0.003
    max_train: int = 600


@dataclass
class StrategySettings:
    """The one-shot strategy: SPOS + evolution, or a differentiable one with the hardware loss."""

    name: str = "spos"
    population: int = 16
    sample_size: int = 4
    cycles: int = 40
    fitness: str = "accuracy"
    #: SPOS trains only single paths the budget admits (those the evolution will score); over the whole convnet
    #: space, deep paths no trial would keep dominate and the supernet stays at chance.
    train_within_budget: bool = True
    calibration_batches: int = 4
    loss: str = "hinge"
    scale: float = 1.0
    arc_learning_rate: float = 0.003


@dataclass
class FinalSettings:
    """How many of the best architectures are retrained from scratch, and for how long; and where they are
    measured beside the predictor's figures (``device``: ``local`` for this machine, or a device URL,
    ``ssh://user@board`` or ``http://board:8765``; empty: not measured)."""

    top_k: int = 3
    epochs: int = 2
    device: str = ""
    backend: str = "onnxruntime"
    runs: int = 50
    token_file: str = ""


@dataclass
class OneShotConfig:
    """A checked one-shot search config (see the module docstring)."""

    space: str
    predictor: str = "jetson_nano"
    budget: dict[str, float] = field(default_factory=dict)
    hardware_input_size: int | None = None
    data: str = "digits"
    seed: int = 0
    train: TrainSettings = field(default_factory=TrainSettings)
    strategy: StrategySettings = field(default_factory=StrategySettings)
    final: FinalSettings = field(default_factory=FinalSettings)
    source: str = ""

    def to_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        return asdict(self)


def _section(cls: type, values: Any, where: str) -> Any:
    """A settings dataclass from a mapping, every value checked against the field's default's type."""
    if values is None:
        return cls()
    if not isinstance(values, Mapping):
        raise ParameterError(f"{where} must be a mapping, got {values!r:.60}", parameter=where)
    known = {f.name: f for f in fields(cls)}
    unknown = [k for k in values if k not in known]
    if unknown:
        raise ParameterError(f"{where}: unknown key(s) {', '.join(map(str, unknown))}; allowed: {', '.join(known)}",
                             parameter=where)
    out = cls()
    for key, value in values.items():
        default = getattr(out, key)
        name = f"{where}.{key}"
        if isinstance(default, bool):
            if not isinstance(value, bool):
                raise ParameterError(f"{name} must be true or false, got {value!r}", parameter=name)
        elif isinstance(default, int):
            if isinstance(value, bool) or not isinstance(value, int) or value < (0 if key == "max_train" else 1):
                raise ParameterError(f"{name} must be a positive whole number, got {value!r}", parameter=name)
        elif isinstance(default, float):
            if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < 1e6:
                raise ParameterError(f"{name} must be a positive number, got {value!r}", parameter=name)
            value = float(value)
        elif not isinstance(value, str):
            raise ParameterError(f"{name} must be a string, got {value!r}", parameter=name)
        setattr(out, key, value)
    return out


def _check_choice(value: str, allowed: tuple[str, ...], name: str) -> None:
    if value not in allowed:
        raise ParameterError(f"{name} must be one of {', '.join(allowed)}, got {value!r}", parameter=name)


def parse_config(data: Any, source: str = "<memory>") -> OneShotConfig:
    """A :class:`OneShotConfig` from parsed YAML, every key checked."""
    if not isinstance(data, Mapping):
        raise HwAwareError(f"{source}: a one-shot config must be a YAML mapping (see experiments/oneshot_spos.yml)")
    allowed = {f.name for f in fields(OneShotConfig)} - {"source"}
    unknown = [k for k in data if k not in allowed]
    if unknown:
        raise ParameterError(f"{source}: unknown key(s) {', '.join(map(str, unknown))}; allowed: "
                             f"{', '.join(sorted(allowed))}", parameter=str(unknown[0]))
    for key in ("space", "predictor", "data"):
        if key in data and (not isinstance(data[key], str) or not data[key].strip()):
            raise ParameterError(f"{key} must be a non-empty string, got {data[key]!r}", parameter=key)
    if "space" not in data:
        raise ParameterError(f"{source} names no space (e.g. space: convnet)", parameter="space")
    budget = data.get("budget")
    if not isinstance(budget, Mapping) or not budget or set(budget) - {"latency_ms", "energy_mj", "margin"}:
        raise ParameterError("budget must be a mapping of latency_ms, energy_mj and/or margin, got "
                             f"{budget!r:.80}", parameter="budget")
    data_source = data.get("data", "digits")
    if data_source != "digits" and not data_source.startswith("images:"):
        raise ParameterError(f"data must be digits or images:FOLDER, got {data_source!r}", parameter="data")
    for key in ("hardware_input_size", "seed"):
        value = data.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
            raise ParameterError(f"{key} must be a whole number, got {value!r}", parameter=key)
    config = OneShotConfig(
        space=data["space"], predictor=data.get("predictor", "jetson_nano"), budget=dict(budget),
        hardware_input_size=data.get("hardware_input_size"), data=data_source, seed=int(data.get("seed", 0)),
        train=_section(TrainSettings, data.get("train"), "train"),
        strategy=_section(StrategySettings, data.get("strategy"), "strategy"),
        final=_section(FinalSettings, data.get("final"), "final"), source=source)
    _check_choice(config.strategy.name, STRATEGIES, "strategy.name")
    _check_choice(config.strategy.fitness, FITNESS, "strategy.fitness")
    _check_choice(config.strategy.loss, LOSSES, "strategy.loss")
    if config.train.width_mult > 1:
        raise ParameterError(f"train.width_mult must be in (0, 1], got {config.train.width_mult}",
                             parameter="train.width_mult")
    if config.final.device and config.final.device != "local" and not is_device_url(config.final.device):
        raise ParameterError(f"final.device must be local or a device URL (ssh://user@host, http://host:port), got "
                             f"{config.final.device!r}", parameter="final.device")
    _check_choice(config.final.backend, ("onnxruntime", "torch", "tensorrt"), "final.backend")
    if config.strategy.sample_size > config.strategy.population:
        raise ParameterError("strategy.sample_size must be at most strategy.population", parameter="strategy.sample_size")
    return config


def load_config(path: str | Path) -> OneShotConfig:
    """Read and check a one-shot config file."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise HwAwareError(f"cannot read the one-shot config {path}: {exc.strerror or exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError:
        raise HwAwareError(f"{path} is not valid YAML; fix the syntax") from None
    config = parse_config(data, str(path))
    folder = path.resolve().parent
    # a relative predictor or space path is relative to the config's folder when it exists there
    for key in ("predictor", "space"):
        value = getattr(config, key)
        if "/" in value and not Path(value).is_absolute() and (folder / value).exists():
            setattr(config, key, str(folder / value))
    return config
