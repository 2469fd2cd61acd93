"""`nni-hwaware predict` and the Python API with the shipped Jetson Nano predictor, good and bad inputs."""

from __future__ import annotations

import json

import onnx
import pytest
from onnx import TensorProto, helper
from torch import nn

from nni_hwaware.jetson.graph import module_to_onnx
from nni_hwaware.jetson.predictor import JetsonNanoPredictor, default_predictor_dir
from nni_hwaware.spaces import load_space

KEYS = {"latency_ms", "energy_mj", "latency_interval", "energy_interval", "in_distribution", "macs", "params",
        "ood_score", "unknown_ops", "warnings"}


@pytest.fixture(scope="module")
def predictor() -> JetsonNanoPredictor:
    return JetsonNanoPredictor.load()


def _dataset_like() -> nn.Module:
    """A model of the dataset itself (convnet_L5_F128_K2x2_W30_DWS, measured 11.18 ms / 18.4 mJ)."""
    from nni_hwaware.jetson.dataset import parse_model_name
    from nni_hwaware.spaces import build_module, load_space

    arch, width = parse_model_name("convnet_L5_F128_K2x2_W30_DWS")
    return build_module(load_space("convnet"), arch, input_size=width)


def test_shipped_predictor_is_found_and_small():
    folder = default_predictor_dir()
    assert (folder / "predictor.json").is_file() and (folder / "model_card.json").is_file()
    assert sum(p.stat().st_size for p in folder.iterdir()) < 8e6  # three boosted models of ~2 MB each


def test_module_prediction_in_distribution(predictor):
    result = predictor.predict_module(_dataset_like(), (1, 3, 30, 30))
    assert set(result) >= KEYS
    assert result["in_distribution"] and result["certain"]
    lo, hi = result["latency_interval"]
    assert lo < result["latency_ms"] < hi
    assert abs(result["latency_ms"] / 11.18 - 1) < 0.15 and abs(result["energy_mj"] / 18.44 - 1) < 0.2


def test_cli_onnx_json_and_ood(tmp_path, cli):
    model = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Flatten(), nn.Linear(8 * 4 * 4, 5)).eval()
    path = tmp_path / "m.onnx"
    path.write_bytes(module_to_onnx(model, (1, 3, 16, 16)))
    proc = cli("predict", "--predictor", str(default_predictor_dir()), "--onnx", str(path), "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert set(result) >= KEYS
    assert result["in_distribution"] is False and any("pool" in r for r in result["ood_reasons"])


def test_cli_unknown_op_still_predicts(tmp_path, cli):
    proto = onnx.load_from_string(module_to_onnx(_dataset_like(), (1, 3, 30, 30)))
    graph = proto.graph
    relu = next(n for n in graph.node if n.op_type == "Relu")
    relu.op_type, relu.domain = "FancyAct", "com.example"
    proto.opset_import.append(helper.make_opsetid("com.example", 1))
    path = tmp_path / "unknown.onnx"
    onnx.save(proto, str(path))
    proc = cli("predict", "--onnx", str(path), "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["unknown_ops"] == ["com.example.FancyAct"] and result["certain"] is False
    assert result["latency_ms"] > 0


def test_cli_mlp_is_flagged_not_cnn(tmp_path, cli):
    path = tmp_path / "mlp.onnx"
    path.write_bytes(module_to_onnx(nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10)).eval(), (1, 64)))
    proc = cli("predict", "--onnx", str(path), "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["is_cnn"] is False and result["in_distribution"] is False
    assert any("not a CNN" in w for w in result["warnings"])


@pytest.mark.slow
def test_cli_corrupt_and_missing_files(tmp_path, cli):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x08\x07garbage" * 50)
    for args, needle in ((["--onnx", str(bad)], "cannot read"),
                         (["--onnx", str(tmp_path / "nope.onnx")], "not found"),
                         (["--predictor", str(tmp_path), "--onnx", str(bad)], "not a predictor folder")):
        proc = cli("predict", *args, "--json")
        assert proc.returncode == 2 and "Traceback" not in proc.stderr
        assert proc.stderr.startswith("error: ") and needle in proc.stderr and proc.stderr.count("\n") == 1


def test_cli_graph_without_sizable_layers(tmp_path, cli):
    node = helper.make_node("Relu", ["x"], ["y"])
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    path = tmp_path / "relu.onnx"
    onnx.save(helper.make_model(graph), str(path))
    proc = cli("predict", "--onnx", str(path))
    assert proc.returncode == 2 and "nothing to predict" in proc.stderr


def test_torch_module_api_matches_onnx_path(predictor, tmp_path):
    model = _dataset_like()
    path = tmp_path / "d.onnx"
    path.write_bytes(module_to_onnx(model, (1, 3, 30, 30)))
    a = predictor.predict_module(model, (1, 3, 30, 30))
    b = predictor.predict_onnx(path)
    assert a["latency_ms"] == pytest.approx(b["latency_ms"]) and a["macs"] == b["macs"]
    assert a["params"] == sum(p.numel() for p in model.parameters())


def test_cli_predictor_of_an_older_version(tmp_path, cli):
    import shutil

    old = tmp_path / "old"
    shutil.copytree(default_predictor_dir(), old)
    meta = json.loads((old / "predictor.json").read_text())
    meta["version"] = 2  # version 2 stored one roofline per target with constants chosen on real networks
    meta["roofline"] = {"latency_ms": meta.pop("latency_roofline")["average"]}
    (old / "predictor.json").write_text(json.dumps(meta))
    onnx_path = tmp_path / "d.onnx"
    onnx_path.write_bytes(module_to_onnx(_dataset_like(), (1, 3, 30, 30)))
    proc = cli("predict", "--predictor", str(old), "--onnx", str(onnx_path), "--json")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith("error: ") and "older version" in proc.stderr and "retrain" in proc.stderr


@pytest.mark.slow
def test_every_predictor_takes_an_architecture_of_a_space(cli):
    """The Jetson Nano predictor reads any CNN, so it predicts any space's architectures (issue: it said
    "this predictor needs --onnx FILE")."""
    arch = json.dumps({"global": {"layer_type": "dws", "filters": 224},
                       "units": [{"depth": 1, "blocks": [{"kernel_size": 7, "padding": 1}]}]})
    proc = cli("predict", "--predictor", "predictors/jetson_nano", "--space", "convnet", "--arch", arch,
               "--input-size", "50", "--json")
    assert proc.returncode == 0, proc.stderr
    (row,) = [json.loads(line) for line in proc.stdout.splitlines()]
    assert row["space"] == "convnet" and row["input_size"] == 50 and row["predictor"] == "jetson_nano"
    assert row["latency_ms"] > 0 and row["energy_mj"] > 0 and row["latency_interval"][0] <= row["latency_ms"]
    other = cli("predict", "--space", "resnet", "--input-size", "32", "--arch",
                json.dumps(load_space("resnet").default_architecture()))
    assert other.returncode == 0 and "latency" in other.stdout and "energy" in other.stdout, other.stderr
