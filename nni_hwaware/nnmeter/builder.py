"""nn-Meter's own predictor-building method, run on this device (``nni-hwaware nn-meter build``).

nn-Meter (Zhang et al., MobiSys 2021) predicts a network's latency as the sum of its *kernels* (fused operator
groups), each with its own regressor. Building a predictor for a device has three steps, all from
``nn_meter.builder``, run here with our backends (:mod:`nni_hwaware.nnmeter.backend`):

1. **fusion-rule detection**: nn-Meter's test cases (pairs of operators, alone and together) are profiled
   and ``detect_fusion_rule`` decides which pairs the runtime fuses;
2. **kernel sampling**: nn-Meter's prior sampler draws kernel configurations from its model-zoo
   distribution; each kernel is built with nn-Meter's torch kernel classes and profiled;
3. **per-kernel regressors**: nn-Meter's ``build_predictor_by_data`` (random forests with nn-Meter's
   hyperparameters) is fitted, and its adaptive *finegrained* sampler adds configurations around the
   large-error ones for further iterations.

Two parts of nn-Meter 2.0 do not run on the current stack; what we do instead:

* nn-Meter saves its torch models with ``torch.onnx.export`` without ``dynamo=False``; since torch 2.9 that
  default is the dynamo exporter, which needs ``onnxscript`` (``ModuleNotFoundError: No module named
  'onnxscript'``) and cannot target nn-Meter's opset 12. We build the very same nn-Meter modules and export
  them with the TorchScript exporter (``dynamo=False``, opset 12), in nn-Meter's file layout.
* nn-Meter's fallback regressor uses ``max_features="auto"``, removed in scikit-learn 1.3; we pass nn-Meter's
  CPU hyperparameters (its ``tflite_cpu`` zoo entry), which are explicit. nn-Meter's torch
  ``MultipleOutNodes`` test case is ``NotImplementedError`` in nn-Meter 2.0, so only the basic pairwise test
  cases run.

The build is resumable: every generated model list and profiled result is written into nn-Meter's
workspace as it goes, and running the same command again skips what is already profiled.
The result (``DIR/predictor``) is an nn-Meter predictor folder: one ``<kernel>.pkl`` per kernel plus
``fusion_rules.json``, ``DIR/predictor.yaml`` for ``nn-meter register --predictor``, and ``DIR/predictor.json``
declaring the kind ``nn_meter`` (so the folder loads by its kind wherever a predictor folder does). The ``.pkl``
files are nn-Meter's format (pickled scikit-learn models): they load only with an explicit opt-in
(``trust_pickles``), and only from folders you built or trust.
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from nni_hwaware.errors import HwAwareError, ParameterError
from nni_hwaware.measure.progress import progress_bar
from nni_hwaware.nnmeter.predictor import NN_METER_OPSET

logger = logging.getLogger(__name__)

#: Kernels nn-Meter builds when no search space narrows the list (its ``predictorbuild_config.yaml``).
ALL_KERNELS = ("conv-bn-relu", "dwconv-bn-relu", "maxpool", "avgpool", "fc", "concat", "split", "channelshuffle",
               "se", "global-avgpool", "bnrelu", "bn", "hswish", "relu", "addrelu", "add")
#: nn-Meter's CPU regressor hyperparameters (see the module docstring for why not its default).
REGRESSOR_PROFILE = "tflite_cpu"


@dataclass
class BuildSettings:
    """What ``nn-meter build`` does.

    Parameters
    ----------
    backend
        ``onnxruntime`` (CPU) or ``tensorrt``.
    kernels
        Kernels to build; empty = those the search space ``space`` needs (or :data:`ALL_KERNELS`).
    space, input_size
        Search space whose architectures the predictor is for: its kernels are detected with the fusion rules
        on ``detect_samples`` sampled architectures.
    init_samples
        Prior samples of each kernel; ``conv_init_samples`` for conv and dwconv kernels (nn-Meter's defaults
        are 10,000 and 5,000 on phones; far fewer fit a 2-core CPU).
    iterations, finegrained_samples, error_threshold
        nn-Meter's adaptive sampling: iterations after the first add ``finegrained_samples`` configurations
        around every test configuration whose error exceeds ``error_threshold``.
    max_mmacs
        Kernels over this many million multiply-accumulates are left out (nn-Meter's prior includes 224x224
        convolutions with 1,000+ channels that take seconds per run on one CPU thread).
    threads, runs
        Measurement settings of every kernel.
    seed
        Seed of nn-Meter's samplers.
    fusion_testcases
        nn-Meter's pairwise test cases to run (``conv_relu``, ...); empty = every one in its config.
    """

    # metadata["help"]: one line per field, for the command line's options (nni_hwaware.cli.options)
    backend: str = field(default="onnxruntime", metadata={"help": "onnxruntime (CPU) or tensorrt"})
    kernels: list[str] = field(default_factory=list, metadata={
        "help": f"kernels to build (default: all or the space's): {','.join(ALL_KERNELS)}"})
    space: str | None = field(default=None, metadata={"help": "build only the kernels this search space needs"})
    input_size: int | None = field(default=None, metadata={
        "help": "input size of that space's architectures (default: the space's)"})
    detect_samples: int = 5
    fusion_testcases: list[str] = field(default_factory=list, metadata={
        "help": "nn-Meter test cases, e.g. conv_relu,add_relu (default: all of nn-Meter's)"})
    init_samples: int = field(default=60, metadata={"help": "prior samples of each kernel"})
    conv_init_samples: int = field(default=200, metadata={"help": "prior samples of the conv and dwconv kernels"})
    iterations: int = field(default=2, metadata={"help": "sampling iterations (the first is the prior's)"})
    finegrained_samples: int = field(default=5, metadata={
        "help": "configurations added around each large-error one per further iteration"})
    error_threshold: float = 0.1
    max_mmacs: float = field(default=400.0, metadata={"help": "leave out kernels over this many million MACs"})
    threads: int = field(default=1, metadata={"help": "inference threads of every kernel measurement"})
    runs: int = field(default=30, metadata={"help": "timed runs per kernel"})
    seed: int = field(default=0, metadata={"help": "seed of nn-Meter's samplers"})

    def check(self) -> None:
        """Check every setting (a one-line error names the parameter); nothing is read or written."""
        if self.backend not in ("onnxruntime", "tensorrt"):
            raise ParameterError(f"backend must be onnxruntime or tensorrt, got {self.backend!r}", parameter="backend")
        unknown = [k for k in self.kernels if k not in ALL_KERNELS]
        if unknown:
            raise ParameterError(f"kernels: unknown nn-Meter kernels {unknown}; choose from {', '.join(ALL_KERNELS)}",
                                 parameter="kernels")
        # nn-Meter holds out 20 % of a kernel's samples to test: fewer than 5 leaves no test sample
        for name, low in (("init_samples", 5), ("conv_init_samples", 5), ("iterations", 1),
                          ("finegrained_samples", 1), ("runs", 1), ("threads", 1), ("seed", 0), ("detect_samples", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ParameterError(f"{name} must be an integer >= {low}, got {value!r}", parameter=name)
        for name in ("max_mmacs", "error_threshold"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
                raise ParameterError(f"{name} must be a positive finite number, got {value!r}", parameter=name)
        if self.input_size is not None and not self.space:
            raise ParameterError("input_size needs space; give both or neither", parameter="input_size",
                                 mentions=("space",))
        from nn_meter.builder.backend_meta.fusion_rule_tester.utils import __BUILTIN_OPERATORS__

        bad = [c for c in self.fusion_testcases
               if len(c.split("_")) != 2 or not set(c.split("_")) <= set(__BUILTIN_OPERATORS__)]
        if bad:
            raise ParameterError(f"fusion_testcases: fusion test cases must be OP_OP with nn-Meter operators "
                                 f"({', '.join(__BUILTIN_OPERATORS__)}); got {bad}", parameter="fusion_testcases")


#: What marks a folder as an nn-Meter build of ours (resumed rather than refused).
BUILD_MARKERS = ("build.json", "backend_config.yaml", "workspace", "predictor.json")


def check_build_folder(out: str | Path) -> Path:
    """Refuse an output folder a build must not write into; returns it as a path.

    A build writes into ``out`` (and resumes there): it may be new, empty, or an earlier build of ours; never a
    file, the current folder or a parent of it, a folder of other files, or a predictor of another kind.
    """
    from nni_hwaware.artifacts import declared_kind, refuse_foreign_folder

    def earlier_build(folder: Path) -> bool:
        if (folder / "predictor.json").exists():
            return declared_kind(folder) == "nn_meter"
        return any((folder / m).exists() for m in BUILD_MARKERS)

    return refuse_foreign_folder(out, "out", earlier_build, "an nn-Meter build")


def _kernel_mmacs(config: dict[str, Any]) -> float:
    """Rough cost of a kernel configuration, to leave out the huge ones."""
    hw = float(config.get("HW", 1))
    stride = float(config.get("STRIDES", 1) or 1)
    k = float(config.get("KERNEL_SIZE", 1))
    cin = float(config.get("CIN", 1))
    cout = float(config.get("COUT", 1))
    return (hw / stride) ** 2 * cin * cout * k * k / 1e6


def export_nn_meter_module(model: Any, shapes: list[Any], path: Path, batch_size: int = 1) -> Path:
    """Export an nn-Meter torch kernel or test case the way nn-Meter does, with the TorchScript exporter."""
    from nn_meter.builder.nn_modules.torch_networks.utils import get_inputs_by_shapes

    from nni_hwaware.artifacts import write_atomically
    from nni_hwaware.spaces.export import module_to_onnx_bytes

    onnx = module_to_onnx_bytes(model, get_inputs_by_shapes(shapes, batch_size), opset=NN_METER_OPSET)
    return write_atomically(path, onnx)


class NnMeterBuild:
    """One resumable nn-Meter predictor build in ``out`` (nn-Meter workspace in ``out/workspace``).

    Parameters
    ----------
    out
        Output folder.
    settings
        :class:`BuildSettings`.
    log
        Receives the build's messages (default: this module's logger, at INFO); the profiling progress is a
        progress bar on stderr.
    measurer
        Times kernels and test models instead of a measurer of this machine built from ``settings`` (a remote
        device's: :func:`~nni_hwaware.measure.runner.make_measurer` with ``device="ssh://..."``); its device
        description is recorded in ``build.json``.

    Examples
    --------
    >>> build = NnMeterBuild("runs/nn-meter-cpu", BuildSettings(space="resnet", input_size=32))  # doctest: +SKIP
    >>> summary = build.run()  # doctest: +SKIP
    """

    def __init__(self, out: str | Path, settings: BuildSettings, log: Callable[[str], None] | None = None,
                 measurer: Any = None) -> None:
        settings.check()
        self.measurer = measurer
        self.out = check_build_folder(out)
        self.settings = settings
        self.log = log or logger.info
        self.workspace = self.out / "workspace"
        self.predictor_dir = self.out / "predictor"
        self.profiled = 0
        self._backend: Any = None

    # ------------------------------------------------------------------ workspace
    def prepare_workspace(self) -> None:
        """Create (or reopen) nn-Meter's workspace with the torch implementation and our backend config."""
        import yaml
        from nn_meter.builder import builder_config
        from nn_meter.builder.config_manager import copy_to_workspace

        configs = self.workspace / "configs"
        if not (configs / "predictorbuild_config.yaml").is_file():
            self.workspace.mkdir(parents=True, exist_ok=True)
            backend_file = self.out / "backend_config.yaml"
            _write(backend_file, yaml.safe_dump({
                "THREADS": self.settings.threads, "RUNS": self.settings.runs, "WARMUP": 5, "PRECISION": "fp32",
                "DEVICE": None,
            }))
            copy_to_workspace("customized", str(self.workspace), str(backend_file))
            for name in ("ruletest_config.yaml", "predictorbuild_config.yaml"):
                data = yaml.safe_load((configs / name).read_text())
                data["IMPLEMENT"] = "torch"
                if name == "ruletest_config.yaml":
                    data["OTHER_TESTCASES"] = None  # MultipleOutNodes is not implemented for torch in 2.0
                    if self.settings.fusion_testcases:
                        data["BASIC_TESTCASES"] = list(self.settings.fusion_testcases)
                _write(configs / name, yaml.safe_dump(data))
        builder_config.init(str(self.workspace))

    def backend(self) -> Any:
        """The nn-Meter backend instance (what ``connect_backend`` would return), counting what it profiles."""
        if self._backend is None:
            from nn_meter.builder import builder_config

            from nni_hwaware.nnmeter.backend import backend_for

            config = builder_config.get_module("backend")
            if self.measurer is not None:
                config = {**(config or {}), "MEASURER": self.measurer}
            self._backend = backend_for(self.settings.backend, config)
        return self._backend

    def _profile(self, models: dict[str, Any], mode: str, save_name: str, label: str) -> dict[str, Any]:
        """nn-Meter's ``profile_models`` in broken-point mode, with a progress line per model."""
        from nn_meter.builder import profile_models

        total = sum(len(m) for m in models.values())
        backend = self.backend()
        inner_profile = backend.profile
        bar = progress_bar(total, f"nn-meter {label} profiled")

        def profile_with_progress(*args: Any, **kwargs: Any) -> Any:
            result = inner_profile(*args, **kwargs)
            self.profiled += 1
            bar.update(1)
            return result

        backend.profile = profile_with_progress
        try:
            return profile_models(backend, models, mode=mode, save_name=save_name, have_converted=False,
                                  broken_point_mode=True, log_frequency=10)
        finally:
            backend.profile = inner_profile
            bar.close()

    # ------------------------------------------------------------------ fusion rules
    def detect_fusion_rules(self) -> dict[str, Any]:
        """Profile nn-Meter's pairwise test cases and run its fusion-rule detection."""
        from nn_meter.builder import builder_config
        from nn_meter.builder.backend_meta.fusion_rule_tester import detect_fusion_rule
        from nn_meter.builder.backend_meta.fusion_rule_tester.generate_testcase import generate_testcases

        target = self.predictor_dir / "fusion_rules.json"
        if target.is_file():
            return json.loads(target.read_text())
        ws = Path(builder_config.get("WORKSPACE", "ruletest"))
        cases_file = ws / "results" / "origin_testcases.json"
        if cases_file.is_file():
            testcases = json.loads(cases_file.read_text())
        else:
            config = builder_config.get_module("ruletest")
            testcases = {}
            failed = []
            (ws / "testcases").mkdir(parents=True, exist_ok=True)
            for name, case_cls in generate_testcases().items():
                try:
                    case = case_cls(config).generate_testcase()
                    for op, item in case.items():
                        path = export_nn_meter_module(item["model"], item["shapes"], ws / "testcases" /
                                                      f"{case_cls.name}_{op}.onnx")
                        item["model"] = str(path)
                    testcases[name] = case
                except Exception as exc:  # an operator pair nn-Meter's torch implementation cannot build
                    failed.append(f"{name}: {type(exc).__name__}: {exc}")
            (ws / "results").mkdir(parents=True, exist_ok=True)
            _write(ws / "results" / "testcase_errors.log", "\n".join(failed))
            from nni_hwaware.artifacts import write_atomically

            write_atomically(cases_file, json.dumps(testcases, indent=1).encode())
            self.log(f"nn-meter fusion rules: {len(testcases)} test cases built, {len(failed)} not buildable "
                     f"with nn-Meter's torch operators (see {ws / 'results' / 'testcase_errors.log'})")
        profiled = self._profile(testcases, "ruletest", "profiled_results.json", "fusion test cases")
        complete = {name: case for name, case in profiled.items() if all("latency" in m for m in case.values())}
        if not complete:
            raise HwAwareError(f"no fusion test case could be profiled; see {ws / 'results' / 'profile_error.log'}")
        rules = detect_fusion_rule(complete)
        fused = sorted(k for k, v in rules.items() if v.get("obey"))
        self.log(f"nn-meter fusion rules: {len(fused)} of {len(rules)} operator pairs fuse: {', '.join(fused)}")
        self.predictor_dir.mkdir(parents=True, exist_ok=True)
        _write(target, json.dumps(rules, indent=1))
        return rules

    # ------------------------------------------------------------------ kernels
    def kernels_for_space(self) -> list[str]:
        """Kernels the build covers: given, or detected in sampled architectures of the space, or all."""
        if self.settings.kernels:
            return list(self.settings.kernels)
        if not self.settings.space:
            return list(ALL_KERNELS)
        from nni_hwaware.nnmeter.predictor import detect_kernels
        from nni_hwaware.spaces import load_space
        from nni_hwaware.spaces.sampling import sample_architectures

        space = load_space(self.settings.space)
        archs = sample_architectures(space, self.settings.detect_samples, seed=self.settings.seed)
        found = detect_kernels(self.predictor_dir / "fusion_rules.json", space, archs, self.settings.input_size)
        kernels = [k for k in ALL_KERNELS if k in found]
        missing = sorted(set(found) - set(ALL_KERNELS))
        if missing:
            self.log(f"nn-meter: nn-Meter has no kernel type for {missing} (these operators are predicted as 0)")
        return kernels

    def _generate(self, kernel: str, mark: str, count: int, mode: str, configs: list[Any] | None) -> dict[str, Any]:
        """nn-Meter's samplers and torch kernel classes, exported with the TorchScript exporter."""
        from nn_meter.builder import builder_config
        from nn_meter.builder.kernel_predictor_builder.data_sampler.utils import (
            __BUILTIN_KERNELS__,
            get_sampler_for_kernel,
        )
        from nn_meter.builder.nn_modules.torch_networks import blocks

        ws = Path(builder_config.get("WORKSPACE", "predbuild"))
        models_file = ws / "results" / f"{kernel}_{mark}.json"
        if models_file.is_file():
            return json.loads(models_file.read_text())
        seed = self.settings.seed + zlib.crc32(f"{kernel}/{mark}".encode())
        random.seed(seed)
        np.random.seed(seed % 2**32)
        kernel_class = getattr(blocks, __BUILTIN_KERNELS__[kernel][0])
        (ws / "kernels").mkdir(parents=True, exist_ok=True)
        (ws / "results").mkdir(parents=True, exist_ok=True)
        items: dict[str, Any] = {}
        skipped = 0
        for i, config in enumerate(get_sampler_for_kernel(kernel, count, mode, configs)):
            if _kernel_mmacs(config) > self.settings.max_mmacs:
                skipped += 1
                continue
            instance = kernel_class(config, 1)
            path = export_nn_meter_module(instance.get_model(), instance.input_tensor_shape,
                                          ws / "kernels" / f"{kernel}_{mark}_{i:05d}.onnx")
            items[f"{mark}_{i:05d}"] = {"model": str(path), "shapes": instance.input_tensor_shape, "config": config}
        from nni_hwaware.artifacts import write_atomically

        models = {kernel: items}
        write_atomically(models_file, json.dumps(models, indent=1).encode())
        if skipped:
            self.log(f"nn-meter {kernel} {mark}: {skipped} sampled configurations over {self.settings.max_mmacs:g} "
                     "MMACs left out")
        return models

    def build_kernel(self, kernel: str) -> dict[str, Any]:
        """nn-Meter's train-and-refine loop for one kernel; writes ``predictor/<kernel>.pkl``."""
        import pickle

        from nn_meter.builder import builder_config
        from nn_meter.builder.kernel_predictor_builder import build_predictor_by_data
        from nn_meter.builder.utils import merge_info

        ws = Path(builder_config.get("WORKSPACE", "predbuild"))
        conv = kernel in ("conv-bn-relu", "dwconv-bn-relu")
        init = self.settings.conv_init_samples if conv else self.settings.init_samples
        data: dict[str, Any] = {}
        error_configs: list[Any] | None = None
        history = []
        for iteration in range(self.settings.iterations):
            if iteration == 0:
                models = self._generate(kernel, "prior", init, "prior", None)
                mark = "prior"
            else:
                if not error_configs:
                    break
                mark = f"finegrained{iteration}"
                models = self._generate(kernel, mark, self.settings.finegrained_samples, "finegrained",
                                        error_configs)
            profiled = self._profile(models, "predbuild", f"profiled_{kernel}_{mark}.json", f"{kernel} {mark}")
            profiled = {kernel: {k: v for k, v in profiled[kernel].items() if "latency" in v}}
            data = merge_info(new_info=profiled, prev_info=data) if data else profiled
            if len(data[kernel]) < 3:
                raise HwAwareError(f"only {len(data[kernel])} {kernel} kernels could be profiled; see "
                                   f"{ws / 'results' / 'profile_error.log'}")
            _, acc10, error_configs = build_predictor_by_data(
                kernel, data, REGRESSOR_PROFILE, error_threshold=self.settings.error_threshold, mark=mark,
                save_path=str(ws / "results"))
            history.append({"iteration": iteration, "samples": len(data[kernel]), "acc10": float(acc10),
                            "large_error_configs": len(error_configs)})
            self.log(f"nn-meter {kernel} iteration {iteration}: {len(data[kernel])} samples, "
                     f"10 %-accuracy on nn-Meter's held-out 20 %: {acc10:.3f}")
        # the shipped regressor is fitted on every sample, as nn-Meter's final_predictor option does
        predictor, _, _ = build_predictor_by_data(kernel, data, REGRESSOR_PROFILE, mark="final", save_path=None,
                                                  final_predictor=True)
        self.predictor_dir.mkdir(parents=True, exist_ok=True)
        _write(self.predictor_dir / f"{kernel}.pkl", pickle.dumps(predictor))
        return {"kernel": kernel, "samples": len(data[kernel]), "iterations": history}

    # ------------------------------------------------------------------ all
    def run(self) -> dict[str, Any]:
        """Fusion rules, then every kernel; writes ``build.json`` and ``predictor.yaml``; returns the summary."""
        import yaml

        t0 = time.monotonic()
        # nn-Meter logs a line per 10 models; our progress bar says the same with an ETA
        logging.getLogger("nn-Meter").setLevel(logging.WARNING)
        self.out.mkdir(parents=True, exist_ok=True)
        self.prepare_workspace()
        self.backend()  # a missing runtime fails here, before anything is built
        rules = self.detect_fusion_rules()
        kernels = self.kernels_for_space()
        self.log(f"nn-meter: building {len(kernels)} kernel predictors: {', '.join(kernels)}")
        cases = self.workspace / "fusion_rule_test" / "results" / "origin_testcases.json"
        fusion_models = sum(len(case) for case in json.loads(cases.read_text()).values())
        summary_file = self.out / "build.json"
        previous = json.loads(summary_file.read_text()) if summary_file.is_file() else {}
        results = {r["kernel"]: r for r in previous.get("kernels", [])}
        for n, kernel in enumerate(kernels, 1):
            if kernel in results and (self.predictor_dir / f"{kernel}.pkl").is_file():
                continue
            self.log(f"nn-meter: kernel {n}/{len(kernels)} {kernel}")
            results[kernel] = self.build_kernel(kernel)
            self._write_summary(summary_file, rules, results, previous, t0, fusion_models)
        summary = self._write_summary(summary_file, rules, results, previous, t0, fusion_models)
        _write(self.out / "predictor.yaml", yaml.safe_dump({
            "name": f"hwaware_{self.settings.backend}_{self.out.name}", "version": 1.0,
            "category": "cpu" if self.settings.backend == "onnxruntime" else "gpu",
            "package_location": str(self.predictor_dir.resolve()), "kernel_predictors": sorted(results),
        }))
        _write(self.out / "predictor.json", json.dumps({
            "kind": "nn_meter", "version": 1, "backend": self.settings.backend, "kernels": sorted(results),
            "files": "predictor/<kernel>.pkl (pickles: load with trust_pickles) and predictor/fusion_rules.json",
        }, indent=1).encode())
        return summary

    def _write_summary(self, path: Path, rules: dict[str, Any], results: dict[str, Any], previous: dict[str, Any],
                       t0: float, testcase_models: int) -> dict[str, Any]:
        from nni_hwaware.artifacts import write_atomically
        from nni_hwaware.measure.backends import host_description

        kernel_samples = sum(r["samples"] for r in results.values())
        summary = {
            "settings": asdict(self.settings),
            "host": host_description(),
            "device": self.measurer.device_description if self.measurer is not None else None,
            "fusion_rules": {k: bool(v.get("obey")) for k, v in rules.items()},
            "kernels": list(results.values()),
            "measurements": {"fusion_test_models": testcase_models, "kernel_models": kernel_samples,
                             "total": testcase_models + kernel_samples},
            "build_seconds": previous.get("build_seconds", 0.0) + (time.monotonic() - t0),
        }
        write_atomically(path, json.dumps(summary, indent=1, default=str).encode())
        return summary


def build_nn_meter_predictor(out: str | Path, settings: BuildSettings, log: Callable[[str], None] | None = None,
                             measurer: Any = None) -> dict[str, Any]:
    """Run (or resume) an nn-Meter predictor build; see :class:`NnMeterBuild`."""
    return NnMeterBuild(out, settings, log, measurer).run()


def _write(path: Path, data: str | bytes) -> None:
    """Write a build file atomically: an interrupted build never leaves half a file to resume from."""
    from nni_hwaware.artifacts import write_atomically

    write_atomically(path, data.encode() if isinstance(data, str) else data)


def comma_list(names: Sequence[str] | str | None) -> list[str]:
    """Parse a comma-separated list (kernels, test cases)."""
    if not names:
        return []
    if isinstance(names, str):
        names = [n.strip() for n in names.split(",") if n.strip()]
    return list(names)
