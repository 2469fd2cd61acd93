"""One-shot hardware-aware search through NNI's Python API: SPOS + regularized evolution, or a differentiable
strategy with the hardware loss; the best architectures retrained from scratch.

**SPOS + evolution** (the Jetson Nano NAS paper's method): NNI's ``RandomOneShot`` trains the
:class:`~nni_hwaware.nas.oneshot.supernet.HwSupernet` with uniform single paths, by default only those within
the budget (:func:`single_paths`: drawn in advance and estimated in batches, one per training step); then NNI's
``RegularizedEvolution`` runs over the trained supernet (a ``NasExperiment`` on the supernet itself: NNI keeps
the weights, ``sequential`` engine), chained with a filter that scores each architecture once and
:class:`~nni_hwaware.nas.oneshot.cost.SupernetHardwareFilter` as the budget. Each candidate inherits the
supernet's weights, its batch-norm statistics are recalibrated on training batches, and it is scored on a
validation split (never the test split) by accuracy or the paper's fitness ``0.8 * accuracy - 0.2 * EDP /
EDP_budget`` (EDP = latency x energy; with one budgeted metric, that metric over its limit).

**Differentiable** (``proxyless``, ``darts``, ``gumbel_darts``): NNI's strategy with
:class:`~nni_hwaware.nas.oneshot.cost.HardwareCostPenalty`; the finalists are the distribution's mode and
draws from it.

**Finalists** are retrained from scratch with the quickstart trial's own training
(:func:`~nni_hwaware.nas.accuracy.estimate_accuracy`, test split) and reported with the predictor's latency
and energy at the hardware input size and the budget's verdict.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nni_hwaware.artifacts import refuse_foreign_folder
from nni_hwaware.errors import HwAwareError
from nni_hwaware.hardware import HardwarePredictor, load_predictor
from nni_hwaware.nas.accuracy import AccuracySettings, estimate_accuracy, load_digits_split, load_image_folder
from nni_hwaware.nas.constraints import Budget
from nni_hwaware.nas.oneshot.config import OneShotConfig, load_config
from nni_hwaware.nas.oneshot.cost import HardwareCostPenalty, SupernetHardwareFilter
from nni_hwaware.nas.oneshot.supernet import HwSupernet
from nni_hwaware.spaces.builders import convnet_spatial_sizes

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------- data
def load_data(config: OneShotConfig) -> dict[str, torch.Tensor]:
    """Training, validation (for the search) and test tensors at the training input size.

    The test split is the quickstart trial's; the validation split is the rest of its training split
    beyond ``max_train`` (a fifth of it when every image is used for training).
    """
    size, channels = config.train.input_size, 3
    if config.data == "digits":
        X_tr, X_te, y_tr, y_te = load_digits_split(config.seed)
    else:
        X_tr, X_te, y_tr, y_te = load_image_folder(config.data.split(":", 1)[1], size, config.seed)
    order = np.random.default_rng(config.seed).permutation(len(y_tr))
    n_train = config.train.max_train or len(order) * 4 // 5
    n_train = min(n_train, len(order) - max(1, len(order) // 5))
    train, val = order[:n_train], order[n_train:]

    def tensor(X: np.ndarray) -> torch.Tensor:
        t = torch.from_numpy(np.ascontiguousarray(X, dtype=np.float32))
        if t.shape[-1] != size:
            t = torch.nn.functional.interpolate(t, size=(size, size), mode="bilinear", align_corners=False)
        return t.mean(dim=1, keepdim=True).expand(-1, channels, -1, -1).contiguous() if t.shape[1] != channels else t

    return {"x_train": tensor(X_tr[train]), "y_train": torch.from_numpy(y_tr[train]),
            "x_val": tensor(X_tr[val]), "y_val": torch.from_numpy(y_tr[val]),
            "x_test": tensor(X_te), "y_test": torch.from_numpy(y_te)}


def trainable(supernet: HwSupernet, arch: dict[str, Any]) -> bool:
    """Whether the architecture keeps a feature map at the supernet's input size (convnet layers shrink it)."""
    if supernet.space.family != "convnet":
        return True
    return min(convnet_spatial_sizes(arch, supernet.input_size)) >= 1


# ----------------------------------------------------------------------------------------- fitness
def fitness(accuracy: float, estimate: Any, budget: Budget, kind: str) -> float:
    """``accuracy``, or the paper's ``0.8 * accuracy - 0.2 * normalized EDP`` (see the module docstring).

    Examples
    --------
    >>> from nni_hwaware.hardware import HardwareEstimate
    >>> e = HardwareEstimate("x", 10.0, (9.0, 11.0), 20.0, (18.0, 22.0))
    >>> round(fitness(0.9, e, Budget(latency_ms=20.0, energy_mj=40.0), "paper"), 4)
    0.67
    """
    if kind == "accuracy":
        return accuracy
    normalized = 1.0
    for metric in budget.metrics:
        normalized *= float(estimate.value(metric)) / float(getattr(budget, metric))
    return 0.8 * accuracy - 0.2 * normalized


# ------------------------------------------------------------------------------------- NNI pieces
def _trainer_kwargs() -> dict[str, Any]:
    return {"enable_progress_bar": False, "logger": False, "enable_checkpointing": False,
            "enable_model_summary": False, "accelerator": "cpu", "devices": 1}


def _evaluator(config: OneShotConfig, data: dict[str, torch.Tensor], num_classes: int) -> Any:
    from nni.nas.evaluator.pytorch import Classification, DataLoader
    from torch.utils.data import TensorDataset

    generator = torch.Generator().manual_seed(config.seed)
    train = DataLoader(TensorDataset(data["x_train"], data["y_train"]), batch_size=config.train.batch_size,
                       shuffle=True, generator=generator)
    val = DataLoader(TensorDataset(data["x_val"], data["y_val"]), batch_size=256)
    return Classification(train_dataloaders=train, val_dataloaders=val, max_epochs=config.train.epochs,
                          learning_rate=config.train.lr, num_classes=num_classes, **_trainer_kwargs())


def _experiment(model_space: Any, evaluator: Any, strategy: Any, workdir: Path, trials: int | None = None) -> Any:
    from nni.nas.experiment import NasExperiment

    experiment = NasExperiment(model_space, evaluator, strategy)
    experiment.config.experiment_working_directory = str(workdir)
    if trials is not None:
        experiment.config.max_trial_number = trials
    return experiment


def _run(experiment: Any) -> None:
    try:
        experiment.run()
    finally:
        experiment.stop()


def single_paths(config: OneShotConfig, supernet: HwSupernet, predictor: HardwarePredictor, budget: Budget,
                 count: int) -> list[dict[str, Any]]:
    """``count`` uniform single paths (supernet samples) that the supernet's input size can hold and, with
    ``train_within_budget``, that the budget admits, drawn in advance and estimated in batches.

    NNI's ``RandomOneShot(filter=...)`` rejects samples one by one, and each of its samples visits every
    mutable module of the supernet (about 60 ms for ``convnet``); with a budget that admits one path in five,
    most of a training step went to drawing paths. Paths drawn here are uniform over the space's choices, as
    NNI's, then kept or rejected in one pass.
    """
    from nni_hwaware.spaces.sampling import sample_architectures

    rng = np.random.default_rng(config.seed)
    paths: list[dict[str, Any]] = []
    drawn = 0
    while len(paths) < count:
        batch = [a for a in sample_architectures(supernet.space, 256, seed=int(rng.integers(2**31)))
                 if trainable(supernet, a)]
        drawn += 256
        if config.strategy.train_within_budget and batch:
            batch = [a for a, e in zip(batch, predictor.estimate_many(batch)) if budget.check(e).ok]
        paths += [supernet.arch_to_sample(a) for a in batch]
        if drawn >= _MAX_DRAWS:  # a tight budget: train the paths found (reused in a new order each round)
            break
    if not paths:
        within = f" within the budget {budget.to_dict()}" if config.strategy.train_within_budget else ""
        raise HwAwareError(f"none of {drawn} random {supernet.space.name} architectures fits the supernet's "
                           f"input size {supernet.input_size}{within}; raise train.input_size or the budget")
    return paths[:count]


#: Random architectures drawn at most for the training paths.
_MAX_DRAWS = 100 * 256


def train_supernet(config: OneShotConfig, supernet: HwSupernet, predictor: HardwarePredictor, budget: Budget,
                   data: dict[str, torch.Tensor], workdir: Path) -> Any:
    """SPOS: NNI's ``RandomOneShot`` on the supernet, one uniform single path per step from
    :func:`single_paths` (those the supernet's input size holds; with ``train_within_budget``, within the budget).
    """
    steps_per_epoch = -(-len(data["y_train"]) // config.train.batch_size)
    val_steps = -(-len(data["y_val"]) // 256)
    paths = single_paths(config, supernet, predictor, budget,
                         min(config.train.epochs * (steps_per_epoch + val_steps), _MAX_PATHS))
    torch.manual_seed(config.seed)
    strategy = _paths_one_shot(paths, config.seed)
    _run(_experiment(supernet, _evaluator(config, data, supernet.num_classes), strategy, workdir))
    return strategy


#: Distinct paths drawn in advance for supernet training (reused in a new random order beyond that).
_MAX_PATHS = 2048


def _paths_one_shot(paths: list[dict[str, Any]], seed: int) -> Any:
    """NNI's ``RandomOneShot`` whose every step trains the next of ``paths`` (in a random order, repeated)."""
    from nni.nas.oneshot.pytorch.sampling import RandomSamplingLightningModule
    from nni.nas.strategy import RandomOneShot

    class PathsLightningModule(RandomSamplingLightningModule):
        """NNI's SPOS module; a step's path comes from the drawn list instead of rejection sampling."""

        def __init__(self, training_module: Any) -> None:
            super().__init__(training_module)
            self._rng, self._order = np.random.default_rng(seed), iter(())

        def resample(self) -> dict[str, Any]:
            index = next(self._order, None)
            if index is None:
                self._order = iter(self._rng.permutation(len(paths)).tolist())
                index = next(self._order)
            result = dict(paths[index])
            for module in self.supernet_modules():
                result.update(module.resample(memo=result))
            return result

    class PathsOneShot(RandomOneShot):
        """``RandomOneShot`` training the drawn single paths."""

        def configure_oneshot_module(self, training_module: Any) -> Any:
            return PathsLightningModule(training_module)

    return PathsOneShot()


# --------------------------------------------------------------------------------------- evolution
@torch.no_grad()
def evaluate_on_supernet(model: torch.nn.Module, data: dict[str, torch.Tensor], batch_size: int,
                         calibration_batches: int) -> float:
    """Validation accuracy of a sub-network with the supernet's weights, after recalibrating batch norm."""
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if norms:
        for m in norms:
            m.reset_running_stats()
            m.momentum = None  # cumulative average over the calibration batches
        model.train()
        generator = torch.Generator().manual_seed(0)
        order = torch.randperm(len(data["y_train"]), generator=generator)
        for i in range(calibration_batches):
            model(data["x_train"][order[i * batch_size:(i + 1) * batch_size]])
    model.eval()
    pred = torch.cat([model(data["x_val"][i:i + 256]).argmax(1) for i in range(0, len(data["y_val"]), 256)])
    return float((pred == data["y_val"]).float().mean())


class _Scorer:
    """What the evolution's evaluator calls for each candidate (in this process: NNI's sequential engine)."""

    def __init__(self, config: OneShotConfig, supernet: HwSupernet, predictor: HardwarePredictor, budget: Budget,
                 data: dict[str, torch.Tensor], progress: Any) -> None:
        self.config, self.supernet, self.predictor, self.budget, self.data = config, supernet, predictor, budget, data
        self.progress, self.records = progress, []

    def __call__(self, model: torch.nn.Module) -> None:
        import nni

        arch = model.architecture
        accuracy = evaluate_on_supernet(model, self.data, self.config.train.batch_size,
                                        self.config.strategy.calibration_batches)
        estimate = self.predictor.estimate(arch)
        score = fitness(accuracy, estimate, self.budget, self.config.strategy.fitness)
        self.records.append({"arch": arch, "supernet_accuracy": accuracy, "fitness": score,
                             "latency_ms": estimate.latency_ms, "energy_mj": estimate.energy_mj})
        self.progress.update(1)
        self.progress.set_postfix_str(f"best fitness {max(r['fitness'] for r in self.records):.3f}")
        nni.report_final_result({"default": score, "accuracy": accuracy})


def evolve(config: OneShotConfig, supernet: HwSupernet, predictor: HardwarePredictor, budget: Budget,
           data: dict[str, torch.Tensor], workdir: Path) -> list[dict[str, Any]]:
    """NNI's ``RegularizedEvolution`` over the trained supernet, within the budget; every scored candidate."""
    from nni.nas.evaluator import FunctionalEvaluator
    from nni.nas.strategy import RegularizedEvolution
    from nni.nas.strategy.middleware import Chain, Filter

    from nni_hwaware.measure.progress import progress_bar

    settings = config.strategy
    hw_filter = SupernetHardwareFilter(supernet, predictor, budget, patience=1000)
    scored: set[str] = set()

    def new_and_trainable(model: Any) -> bool:
        """Samples differing only in blocks beyond a unit's depth are one architecture: score it once."""
        arch = supernet.sample_to_arch(model.sample)
        key = supernet.space.arch_hash(arch)
        if key in scored or not trainable(supernet, arch):
            return False
        scored.add(key)
        return True

    fits = Filter(new_and_trainable, patience=1000)
    strategy = Chain(RegularizedEvolution(population_size=settings.population, sample_size=settings.sample_size,
                                          seed=config.seed, dedup=True), fits, hw_filter)
    with progress_bar(settings.cycles, "evolution over the supernet", unit="model") as bar:
        scorer = _Scorer(config, supernet, predictor, budget, data, bar)
        _run(_experiment(supernet, FunctionalEvaluator(scorer), strategy, workdir, trials=settings.cycles))
    if hw_filter.exhausted_message:
        raise HwAwareError(hw_filter.exhausted_message)
    return scorer.records


# ---------------------------------------------------------------------------------- differentiable
def differentiable_search(config: OneShotConfig, supernet: HwSupernet, predictor: HardwarePredictor,
                          budget: Budget, data: dict[str, torch.Tensor], workdir: Path) -> list[dict[str, Any]]:
    """NNI's Proxyless / DARTS / GumbelDARTS with the hardware loss; the mode and draws from the distribution."""
    from nni.nas import strategy as nni_strategy

    from nni_hwaware.nas.oneshot.cost import distribution_mode, supernet_distribution

    settings = config.strategy
    penalty = HardwareCostPenalty(supernet, predictor, budget, scale=settings.scale, form=settings.loss)
    cls = {"proxyless": nni_strategy.Proxyless, "darts": nni_strategy.DARTS,
           "gumbel_darts": nni_strategy.GumbelDARTS}[settings.name]
    torch.manual_seed(config.seed)
    strategy = cls(penalty=penalty, arc_learning_rate=settings.arc_learning_rate)
    _run(_experiment(supernet, _evaluator(config, data, supernet.num_classes), strategy, workdir))
    supernet = strategy.supernet  # NNI trained its own copy of the space
    with torch.no_grad():
        distribution = supernet_distribution(supernet)
        expected = {m: float(c) for m, c in penalty.expected_costs().items()}
    logger.info("expected cost under the final distribution: %s", expected)
    table = penalty.profilers[0].table
    candidates = [{**table.reference, **distribution_mode(distribution)}]
    rng = np.random.default_rng(config.seed)
    for _ in range(50 * config.final.top_k):
        draw = dict(candidates[0])
        for label, probs in distribution.items():
            values = list(probs)
            weights = np.array([float(probs[v]) for v in values])
            draw[label] = values[int(rng.choice(len(values), p=weights / weights.sum()))]
        candidates.append(draw)
    from nni_hwaware.spaces.nni_space import sample_to_arch

    records, seen = [], set()
    for sample in candidates:
        arch = sample_to_arch(supernet.space, sample)
        key = supernet.space.arch_hash(arch)
        if key in seen or not trainable(supernet, arch):
            continue
        seen.add(key)
        verdict = budget.check(predictor.estimate(arch))
        if records and not verdict.ok:  # the mode is reported whatever it costs; draws only within budget
            continue
        records.append({"arch": arch, "fitness": float(len(candidates) - len(records))})
        if len(records) >= config.final.top_k:
            break
    return records


# ------------------------------------------------------------------------------------------ finals
def retrain(config: OneShotConfig, records: list[dict[str, Any]], predictor: HardwarePredictor,
            budget: Budget) -> list[dict[str, Any]]:
    """The ``top_k`` best distinct candidates retrained from scratch, with their hardware estimates."""
    from nni_hwaware.measure.progress import progress_bar

    space = predictor.space
    best: dict[str, dict[str, Any]] = {}
    for record in sorted(records, key=lambda r: -r["fitness"]):
        best.setdefault(space.arch_hash(record["arch"]), record)
    chosen = list(best.values())[:config.final.top_k]
    settings = AccuracySettings(method=config.data, epochs=config.final.epochs, batch_size=config.train.batch_size,
                                lr=config.train.lr, max_train=config.train.max_train,
                                width_mult=config.train.width_mult, min_input=config.train.input_size,
                                seed=config.seed)
    final = []
    with progress_bar(len(chosen), "retraining the finalists from scratch") as bar:
        for record in chosen:
            trained = estimate_accuracy(space, record["arch"], settings)
            estimate = predictor.estimate(record["arch"])
            final.append({"arch": record["arch"], "accuracy": trained["accuracy"],
                          "latency_ms": estimate.latency_ms, "energy_mj": estimate.energy_mj,
                          "within_budget": budget.check(estimate).ok, "in_distribution": estimate.in_distribution,
                          "source": estimate.source, "search_fitness": record["fitness"],
                          "supernet_accuracy": record.get("supernet_accuracy"),
                          "arch_hash": space.arch_hash(record["arch"])})
            bar.update(1)
    return final


def measure_finalists(config: OneShotConfig, final: list[dict[str, Any]], predictor: HardwarePredictor,
                      budget: Budget) -> None:
    """Measure each finalist at the hardware input size on ``final.device`` and add the figures to its row:
    ``measured_latency_ms``, ``measured_energy_mj`` (where the device has a meter), ``measured_within_budget``
    and ``measured_on`` (the device's description; the predictor's figures stay beside them)."""
    from nni_hwaware.measure.progress import progress_bar
    from nni_hwaware.measure.protocol import Protocol
    from nni_hwaware.measure.runner import make_measurer, measurer_model

    device = None if config.final.device == "local" else config.final.device
    measurer = make_measurer(config.final.backend, device=device, protocol=Protocol(runs=config.final.runs),
                             token_file=config.final.token_file or None)
    try:
        with progress_bar(len(final), f"measuring the finalists on {config.final.device}") as bar:
            for row in final:
                model = measurer_model(measurer, predictor.space, row["arch"], predictor.input_size)
                result = measurer.measure(model)
                latency, energy = float(result.timing.mean_ms), result.energy_mj
                # the measured figures in the predictor's estimate (energy stays predicted without a meter)
                changes: dict[str, Any] = {"latency_ms": latency, "latency_interval": (latency, latency),
                                           "source": "measured"}
                if energy is not None:
                    changes.update(energy_mj=float(energy), energy_interval=(float(energy),) * 2,
                                   energy_source="measured")
                measured = dataclasses.replace(predictor.estimate(row["arch"]), **changes)
                row.update(measured_latency_ms=result.timing.mean_ms, measured_energy_mj=result.energy_mj,
                           measured_within_budget=budget.check(measured).ok,
                           measured_on=measurer.device_description)
                bar.update(1)
    finally:
        measurer.close()


#: Third-party loggers that print a line per model or epoch; quietened while a search runs.
_CHATTY = ("nni", "pytorch_lightning", "lightning", "lightning.pytorch", "lightning_fabric")


@contextlib.contextmanager
def quiet_third_party(level: int = logging.ERROR) -> Iterator[None]:
    """NNI logs every evaluated model at INFO and every filtered one at WARNING, on stdout; keep errors."""
    loggers = [logging.getLogger(name) for name in _CHATTY]
    before = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(level)
    try:
        yield
    finally:
        for lg, old in zip(loggers, before):
            lg.setLevel(old)


def run_oneshot(config: OneShotConfig | str | Path, out: str | Path) -> dict[str, Any]:
    """Run a one-shot search and write ``OUT/results.json`` and ``OUT/pareto.png``; returns the report."""
    if not isinstance(config, OneShotConfig):
        config = load_config(config)
    # before any work: never write into a folder that holds something other than our earlier results
    refuse_foreign_folder(out, "out", _earlier_results, "one-shot results")
    with quiet_third_party():
        return _run_oneshot(config, Path(out))


def _earlier_results(folder: Path) -> bool:
    """Whether ``folder`` holds an earlier run's ``results.json`` (which a new run may replace)."""
    try:
        report = json.loads((folder / "results.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(report, dict) and {"strategy", "final", "search"} <= set(report)


def _run_oneshot(config: OneShotConfig, out: Path) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    budget = Budget(**config.budget)
    predictor = load_predictor(config.predictor, config.space, config.hardware_input_size)
    budget.check_predictor(predictor)
    supernet = HwSupernet(config.space, input_size=config.train.input_size, width_mult=config.train.width_mult,
                          num_classes=10 if config.data == "digits" else None)
    data = load_data(config)
    if config.data != "digits":
        supernet = HwSupernet(config.space, input_size=config.train.input_size,
                              width_mult=config.train.width_mult, num_classes=int(data["y_train"].max()) + 1)
    workdir = out / "nni-experiments"
    timings: dict[str, float] = {}
    if config.strategy.name == "spos":
        logger.info("training the %s supernet with uniform single paths (NNI RandomOneShot)", config.space)
        supernet = train_supernet(config, supernet, predictor, budget, data, workdir).supernet
        timings["supernet_s"] = time.perf_counter() - started
        logger.info("regularized evolution over the trained supernet within %s", budget.to_dict())
        records = evolve(config, supernet, predictor, budget, data, workdir)
    else:
        logger.info("NNI %s with the hardware loss (%s) on the %s supernet", config.strategy.name,
                    config.strategy.loss, config.space)
        records = differentiable_search(config, supernet, predictor, budget, data, workdir)
    timings["search_s"] = time.perf_counter() - started
    final = retrain(config, records, predictor, budget)
    timings["wall_s"] = time.perf_counter() - started
    if config.final.device:
        measure_finalists(config, final, predictor, budget)
        timings["measure_s"] = time.perf_counter() - started - timings["wall_s"]
    report = {"config": config.to_dict(), "budget": budget.to_dict(), "predictor": predictor.describe(),
              "strategy": config.strategy.name, "evaluated": len(records), "timings": timings, "final": final,
              "search": records}
    write_outputs(out, report)
    return report


def write_outputs(out: Path, report: dict[str, Any]) -> None:
    """``results.json`` and the Pareto plot of the finalists (the main job's plot)."""
    from nni_hwaware.artifacts import write_text_atomically
    from nni_hwaware.nas.experiment import pareto_front
    from nni_hwaware.plots import pareto_accuracy_latency

    for row, optimal in zip(report["final"], pareto_front(report["final"])):
        row["pareto"] = optimal
    write_text_atomically(out / "results.json", json.dumps(report, indent=1, default=str))
    if report["final"]:
        tmp = out / ".pareto.tmp.png"
        budget = report["budget"]
        pareto_accuracy_latency(report["final"], tmp, latency_budget=budget.get("latency_ms"),
                                energy_budget=budget.get("energy_mj"),
                                title=f"one-shot {report['strategy']}: {report['config']['space']} "
                                      f"({report['predictor']['kind']} predictor), retrained from scratch")
        tmp.replace(out / "pareto.png")


def format_report(report: dict[str, Any]) -> str:
    """The human-readable summary of :func:`run_oneshot`."""
    lines = [f"one-shot {report['strategy']} on {report['config']['space']}: {report['evaluated']} candidates "
             f"scored, {len(report['final'])} retrained from scratch in {report['timings']['wall_s']:.0f} s",
             f"budget: {report['budget']}",
             f"{'accuracy':>8} {'latency ms':>11} {'energy mJ':>10} {'within':>6}  architecture"]
    for r in sorted(report["final"], key=lambda r: -r["accuracy"]):
        energy = "-" if r["energy_mj"] is None else f"{r['energy_mj']:.2f}"
        arch = json.dumps(r["arch"], separators=(",", ":"))
        lines.append(f"{r['accuracy']:>8.4f} {r['latency_ms']:>11.3f} {energy:>10} "
                     f"{'yes' if r['within_budget'] else 'no':>6}  {arch[:80] + ('...' if len(arch) > 80 else '')}")
        if "measured_latency_ms" in r:
            lines.append(f"{'':>8} {r['measured_latency_ms']:>11.3f} measured on "
                         f"{r['measured_on'].get('host', '?')} ({r['measured_on'].get('backend', '?')}), within "
                         f"budget: {'yes' if r['measured_within_budget'] else 'no'}")
    return "\n".join(lines)
