"""nn-Meter's method on this machine: backend, a small real build, loading, predictions, compare and nnictl."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from nni_hwaware.errors import HwAwareError

REPO = Path(__file__).resolve().parents[1]
# addrelu too: whether add and relu fuse is measured, and on a busy 2-core machine it can go either way
SMALL_BUILD = ["--space", "resnet", "--input-size", "16", "--fusion-testcases", "conv_relu,add_relu",
               "--kernels", "conv-bn-relu,relu,add,addrelu,maxpool,global-avgpool,fc", "--init-samples", "8",
               "--conv-init-samples", "10", "--iterations", "2", "--finegrained-samples", "2", "--runs", "5"]


def test_backend_times_an_nn_meter_kernel_with_our_protocol(tmp_path):
    from nn_meter.builder.nn_modules.torch_networks.blocks import ConvBnRelu

    from nni_hwaware.nnmeter.backend import backend_for
    from nni_hwaware.nnmeter.builder import export_nn_meter_module

    block = ConvBnRelu({"HW": 8, "CIN": 8, "COUT": 16, "KERNEL_SIZE": 3, "STRIDES": 1}, 1)
    path = export_nn_meter_module(block.get_model(), block.input_tensor_shape, tmp_path / "conv.onnx")
    result = backend_for("onnxruntime", {"RUNS": 5}).profile_model_file(str(path), str(tmp_path))
    assert result["latency"].avg > 0 and result["latency"].std >= 0
    with pytest.raises(HwAwareError, match="use onnxruntime or tensorrt"):
        backend_for("tflite")


def test_official_predictor_folder_names_the_missing_kernel_file(tmp_path):
    from nni_hwaware.nnmeter.predictor import load_nn_meter_predictor

    (tmp_path / "fusion_rules.json").write_text("{}")
    with pytest.raises(HwAwareError, match=r"missing kernel file .*conv-bn-relu\.pkl"):
        load_nn_meter_predictor(tmp_path, name="cortexA76cpu_tflite21")
    with pytest.raises(HwAwareError, match="no predictor named 'nosuchdevice'"):
        load_nn_meter_predictor(tmp_path, name="nosuchdevice")
    (tmp_path / "fusion_rules.json").unlink()
    with pytest.raises(HwAwareError, match="fusion_rules.json"):
        load_nn_meter_predictor(tmp_path)


@pytest.mark.parametrize("args, message", [
    (["build", "--out", "x", "--kernels", "conv"], "unknown nn-Meter kernels"),
    (["build", "--out", "x", "--fusion-testcases", "conv_foo"], "fusion test cases must be OP_OP"),
    (["build", "--out", "x", "--space", "nosuch"], "nosuch"),
    (["predict", "--predictor", "nowhere", "--space", "resnet"], "does not exist"),
    (["predict", "--predictor", "nowhere", "--space", "resnet", "--arch", "{units"], "not valid JSON"),
])
def test_cli_errors_are_one_line(cli, tmp_path, args, message):
    result = cli("nn-meter", *args, cwd=tmp_path)
    assert result.returncode == 2 and message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "x" / "predictor").exists()


def test_register_goes_through_nn_meters_registry(tmp_path):
    env = dict(os.environ, HOME=str(tmp_path), PYTHONWARNINGS="ignore")
    run = subprocess.run([sys.executable, "-m", "nni_hwaware.cli", "nn-meter", "register"], capture_output=True,
                         text=True, env=env, timeout=120)
    assert run.returncode == 0, run.stderr
    registry = yaml.safe_load((tmp_path / ".nn_meter" / "config" / "registry.yaml").read_text())
    assert set(registry["backends"]) == {"hwaware_onnxruntime", "hwaware_tensorrt"}
    listed = subprocess.run([sys.executable, "-c", "from nn_meter.builder.backends import list_backends, "
                             "connect_backend; from nn_meter.builder import builder_config; "
                             "print(list_backends())"], capture_output=True, text=True, env=env, timeout=120)
    assert "* hwaware_onnxruntime" in listed.stdout, listed.stderr


def test_register_checks_everything_before_writing_and_keeps_other_entries(tmp_path, monkeypatch):
    from nn_meter.utils.nn_meter_cli import registry

    from nni_hwaware.nnmeter.backend import register_backends

    config = tmp_path / "config"
    monkeypatch.setattr(registry, "__user_config_folder__", str(config))
    with pytest.raises(HwAwareError, match="does not exist"):
        register_backends(tmp_path / "no" / "meta")
    (tmp_path / "file").write_text("x")
    with pytest.raises(HwAwareError, match="is a file"):
        register_backends(tmp_path / "file")
    assert not config.exists() and not (tmp_path / "no").exists()  # nn-Meter's registry untouched

    config.mkdir()
    (config / "registry.yaml").write_text("backends: {other: {class_name: X}}\nkernels: {k: {a: 1}}\n")
    assert register_backends(tmp_path / "meta") == ["hwaware_onnxruntime", "hwaware_tensorrt"]
    data = yaml.safe_load((config / "registry.yaml").read_text())
    assert set(data["backends"]) == {"other", "hwaware_onnxruntime", "hwaware_tensorrt"}
    assert data["kernels"] == {"k": {"a": 1}}
    assert data["backends"]["hwaware_onnxruntime"]["class_name"] == "OnnxRuntimeCPUBackend"
    assert sorted(p.name for p in (tmp_path / "meta").iterdir()) == ["hwaware_onnxruntime.yaml",
                                                                      "hwaware_tensorrt.yaml"]
    (config / "registry.yaml").write_text("backends: [unclosed")
    with pytest.raises(HwAwareError, match="not valid YAML"):
        register_backends(tmp_path / "meta")
    assert (config / "registry.yaml").read_text() == "backends: [unclosed"


@pytest.mark.parametrize("setup, message", [
    (lambda out: out.write_text("a file"), "is a file"),
    (lambda out: (out.mkdir(), (out / "thesis.tex").write_text("x")), "holds other files"),
])
def test_build_refuses_an_output_that_is_not_ours(tmp_path, setup, message):
    from nni_hwaware.nnmeter.builder import BuildSettings, NnMeterBuild, check_build_folder

    out = tmp_path / "out"
    setup(out)
    with pytest.raises(HwAwareError, match=message):
        NnMeterBuild(out, BuildSettings())
    for ours in ("build.json", "workspace"):  # an earlier build (or an empty folder) is resumed
        folder = tmp_path / ours
        folder.mkdir()
        (folder / ours).mkdir() if ours == "workspace" else (folder / ours).write_text("{}")
        assert check_build_folder(folder) == folder
    with pytest.raises(HwAwareError, match="current folder"):
        check_build_folder(Path.cwd().parent)


@pytest.fixture(scope="module")
def built(tmp_path_factory, cli):
    out = tmp_path_factory.mktemp("nn-meter") / "cpu"
    first = cli("nn-meter", "build", "--backend", "onnxruntime", "--out", str(out), *SMALL_BUILD, timeout=900)
    assert first.returncode == 0, first.stderr
    return out, first


@pytest.mark.slow
def test_build_writes_an_nn_meter_predictor_and_resumes(built, cli):
    out, first = built
    summary = json.loads((out / "build.json").read_text())
    assert set(summary["fusion_rules"]) == {"BF_conv_relu", "BF_add_relu"}
    kernels = {k["kernel"]: k for k in summary["kernels"]}
    assert set(kernels) == {"conv-bn-relu", "relu", "add", "addrelu", "maxpool", "global-avgpool", "fc"}
    for name, k in kernels.items():
        assert (out / "predictor" / f"{name}.pkl").is_file()
        assert k["samples"] >= 3 and 1 <= len(k["iterations"]) <= 2
    assert summary["measurements"]["fusion_test_models"] == 6  # two test cases: op1, op2 and the block
    assert summary["measurements"]["total"] == 6 + sum(k["samples"] for k in kernels.values())
    assert "profiled" in first.stderr and "ETA" in first.stderr
    assert yaml.safe_load((out / "predictor.yaml").read_text())["kernel_predictors"] == sorted(kernels)
    again = cli("nn-meter", "build", "--backend", "onnxruntime", "--out", str(out), *SMALL_BUILD, timeout=300)
    assert again.returncode == 0 and "profiled  ETA" not in again.stderr, again.stderr
    assert json.loads((out / "build.json").read_text())["measurements"] == summary["measurements"]


@pytest.mark.slow
def test_predictions_profiler_and_constraint_on_our_space(built):
    from nni_hwaware.nas.constraints import Budget, HardwareFilter
    from nni_hwaware.nas.profiler import SurrogateProfiler
    from nni_hwaware.nnmeter.predictor import NnMeterEstimator
    from nni_hwaware.spaces import sample_architectures
    from nni_hwaware.spaces.nni_space import HwModelSpace, arch_to_sample

    out, _ = built
    estimator = NnMeterEstimator(out, "resnet", input_size=16, trust_pickles=True)  # a folder built here
    archs = sample_architectures(estimator.space, 3, seed=3)
    explained = [estimator.explain(a) for a in archs]
    assert all(e["latency_ms"] > 0 and e["uncovered_kernels"] == [] for e in explained)
    model_space = HwModelSpace("resnet", input_size=16, num_classes=10)
    profiler = SurrogateProfiler(model_space, estimator)
    sample = arch_to_sample(model_space.space, archs[0])
    assert profiler.profile(sample) == pytest.approx(explained[0]["latency_ms"])
    middle = sorted(e["latency_ms"] for e in explained)[1]
    constraint = HardwareFilter(model_space, estimator, Budget(middle, None, 0.0))
    verdicts = [constraint.verdict(arch_to_sample(model_space.space, a)).ok for a in archs]
    assert verdicts == [e["latency_ms"] <= middle for e in explained]


@pytest.fixture(scope="module")
def esm_built(tmp_path_factory, cli):
    """A tiny ESM predictor of resnet@16 on this CPU; its store holds 20 measured architectures."""
    root = tmp_path_factory.mktemp("esm-resnet")
    db, pred = root / "m.db", root / "pred"
    esm = cli("build", "--space", "resnet", "--input-size", "16", "--runs", "5", "--initial", "12", "--step", "6",
              "--max-samples", "12", "--test-size", "8", "--bins", "3", "--acc-th", "0.5", "--qc-every", "0",
              "--db", str(db), "--out", str(pred), timeout=600)
    assert esm.returncode == 0, esm.stderr
    return db, pred


@pytest.mark.slow
def test_compare_adds_nn_meter_rows_on_the_same_held_out_archs(built, esm_built, cli, tmp_path):
    out, _ = built
    db, _ = esm_built
    report = cli("compare", "--db", str(db), "--space", "resnet", "--sizes", "6", "--test-size", "6", "--bins", "2",
                 "--encodings", "fcc", "--surrogates", "mlp", "--initial", "4", "--step", "2", "--nn-meter", str(out),
                 "--trust-pickles", "--out", str(tmp_path / "cmp"), timeout=600)
    assert report.returncode == 0, report.stderr
    rows = json.loads((tmp_path / "cmp" / "compare.json").read_text())["rows"]
    nn_meter = [r for r in rows if r["method"] == "nn-meter"]
    assert len(nn_meter) == 1
    assert nn_meter[0]["measurements"] == json.loads((out / "build.json").read_text())["measurements"]["total"]
    assert nn_meter[0]["accuracy"] <= 1 and nn_meter[0]["mape"] > 0 and nn_meter[0]["predict_us_per_model"] > 0
    calibrated = [r for r in rows if r["method"] == "nn-meter-linear"]
    assert [r["train_size"] for r in calibrated] == [6]
    assert calibrated[0]["measurements"] == nn_meter[0]["measurements"] + 6
    assert "nn-meter" in (tmp_path / "cmp" / "compare.md").read_text()


@pytest.mark.slow
def test_side_by_side_experiment_reports_nn_meter_next_to_ours(built, esm_built, cli, tmp_path):
    from nni_hwaware.nas.experiment import free_port

    out, _ = built
    _, pred = esm_built
    config = yaml.safe_load((REPO / "experiments" / "side_by_side_cpu.yml").read_text())
    args = config["tuner"]["classArgs"]
    command = config["trialCommand"]
    # the hardware settings are stated once, in classArgs (the trials get them from the tuner)
    for old, new in (("--nn-meter runs/nn-meter-cpu", f"--nn-meter {out}"), ("--accuracy digits", "--accuracy synflow")):
        assert old in command, old
        command = command.replace(old, new)
    args.update(predictor=str(pred), input_size=16, latency_budget_ms=1000)
    config.update(trialCommand=command, searchSpaceFile=str(REPO / "experiments" / config["searchSpaceFile"]),
                  trialCodeDirectory=str(REPO))
    config["tuner"]["codeDirectory"] = str(REPO)
    path = tmp_path / "side_by_side.yml"
    path.write_text(yaml.safe_dump(config))
    home = tmp_path / "home"
    home.mkdir()
    run = subprocess.run([sys.executable, "-m", "nni_hwaware.cli", "nas", "run", "--config", str(path), "--trials",
                          "2", "--out", str(tmp_path / "run"), "--port", str(free_port()), "--stop", "--json", "--trust-pickles"],
                         cwd=REPO, capture_output=True, text=True, timeout=600,
                         env=dict(os.environ, HOME=str(home), PYTHONWARNINGS="ignore"))
    report = json.loads(run.stdout)
    assert report["succeeded"] == 2, run.stderr
    for row in report["rows"]:
        assert row["nn_meter_latency_ms"] > 0 and row["latency_ms"] > 0
        assert row["nn_meter_within_budget"] is True  # 1 s budget


def test_tensorrt_backend_without_tensorrt_fails_before_building(cli, tmp_path):
    import importlib.util

    if importlib.util.find_spec("tensorrt") is not None:
        pytest.skip("tensorrt is installed here")
    result = cli("nn-meter", "build", "--backend", "tensorrt", "--out", str(tmp_path / "trt"), "--kernels", "relu",
                 "--fusion-testcases", "conv_relu")
    assert result.returncode == 2 and "tensorrt" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "trt" / "workspace" / "fusion_rule_test" / "testcases").exists()


def test_trial_with_a_wrong_nn_meter_folder_fails_before_training(tmp_path):
    run = subprocess.run([sys.executable, "-m", "nni_hwaware.nas.trial", "--space", "convnet", "--predictor",
                          "jetson_nano", "--nn-meter", str(tmp_path / "nowhere"), "--params", "{}"],
                         capture_output=True, text=True, timeout=120, env=dict(os.environ, PYTHONWARNINGS="ignore"))
    assert run.returncode == 2 and "nowhere" in run.stderr and "not found" in run.stderr
    assert "Traceback" not in run.stderr and run.stderr.count("\n") == 1
