"""Loading never executes code, and output folders are replaced only when they hold a predictor of ours.

The exploits are built here for real: a skops file whose pipeline runs ``exec`` on ``predict`` (it passes
skops's own default trust and a trust-by-prefix check), and an nn-Meter kernel pickle that writes a file when
unpickled. Each test first shows the exploit works when loaded the naive way, then that our loaders refuse it
with one line and that nothing was written.
"""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import skops.io as sio
from badinput import run_in_process

from nni_hwaware.artifacts import (
    SKOPS_ALLOWED_LOADERS,
    SKOPS_ALLOWED_TYPES,
    check_output_dir,
    load_skops,
    replace_output_dir,
    skops_contents,
    staging_dir,
)
from nni_hwaware.errors import ArtifactError, HwAwareError
from nni_hwaware.jetson.predictor import default_predictor_dir


def exploit_pipeline(marker: Path):
    """A scikit-learn pipeline whose ``predict`` writes ``marker`` through ``builtins.exec``."""
    from sklearn.dummy import DummyRegressor
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import FunctionTransformer

    code = f"open({str(marker)!r}, 'w').write('pwned')"
    return Pipeline([
        ("fill", FunctionTransformer(np.full_like, kw_args={"fill_value": code, "dtype": object})),
        ("run", FunctionTransformer(np.vectorize(exec, otypes=[object]))),
        ("regressor", DummyRegressor().fit(np.zeros((2, 1)), np.ones(2))),
    ])


class EvilKernel:
    """Unpickling this writes a file (what a malicious nn-Meter ``<kernel>.pkl`` does)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "pwned"))


@pytest.fixture()
def jetson_copy(tmp_path) -> Path:
    folder = tmp_path / "jetson_copy"
    shutil.copytree(default_predictor_dir(), folder)
    return folder


@pytest.fixture(scope="module")
def onnx_file(tmp_path_factory) -> Path:
    import torch

    path = tmp_path_factory.mktemp("onnx") / "small.onnx"
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU())
    torch.onnx.export(model, torch.zeros(1, 3, 32, 32), str(path), dynamo=False)
    return path


def test_the_skops_exploit_is_real(tmp_path):
    """Loaded as skops allows by default (trusting what it lists), the file runs code on predict."""
    marker = tmp_path / "marker"
    sio.dump(exploit_pipeline(marker), tmp_path / "evil.skops")
    untrusted = sio.get_untrusted_types(file=tmp_path / "evil.skops")
    assert all(t.startswith(("builtins.", "numpy.")) for t in untrusted)  # passed the old prefix check
    model = sio.load(tmp_path / "evil.skops", trusted=untrusted)
    model.predict(np.zeros((1, 1)))
    assert marker.read_text() == "pwned"


@pytest.mark.parametrize("name", ["power_w.skops", "residual_latency_ms.skops"])
def test_jetson_predictor_refuses_the_skops_exploit(jetson_copy, onnx_file, name, tmp_path):
    marker = tmp_path / "marker"
    sio.dump(exploit_pipeline(marker), jetson_copy / name)
    if name.startswith("residual"):  # loaded lazily, for in-distribution networks: force it
        from nni_hwaware.jetson.predictor import JetsonNanoPredictor

        with pytest.raises(ArtifactError, match="refusing to load"):
            JetsonNanoPredictor.load(jetson_copy)._residual_model("latency_ms")
    else:
        code, out, err = run_in_process(["predict", "--predictor", str(jetson_copy), "--onnx", str(onnx_file)],
                                        tmp_path)
        assert code == 2 and out == ""
        assert err.count("\n") == 1 and err.startswith("error: refusing to load") and "builtins.exec" in err
    assert not marker.exists()


def test_esm_predictor_refuses_the_skops_exploit(esm_gb_predictor, tmp_path):
    folder = tmp_path / "esm_copy"
    shutil.copytree(esm_gb_predictor, folder)
    marker = tmp_path / "marker"
    sio.dump(exploit_pipeline(marker), folder / "surrogate.skops")
    arch = json.dumps(_default_arch())
    code, out, err = run_in_process(["predict", "--predictor", str(folder), "--space", "mobilenetv3",
                                     "--arch", arch], tmp_path)
    assert code == 2 and err.startswith("error: refusing to load") and err.count("\n") == 1
    assert not marker.exists()


def test_what_our_savers_write_is_exactly_allowed(tmp_path):
    """Every type our savers write is in the allow-list (a new one must be added there on purpose)."""
    from nni_hwaware.esm.surrogate import make_surrogate
    from nni_hwaware.jetson.models import POWER_MONOTONE, gradient_boosting

    rng = np.random.default_rng(0)
    X, y = rng.random((80, 7)), 1 + rng.random(80)
    models = [make_surrogate(k).fit(X, y) for k in ("gb", "rf", "linear")]
    models += [gradient_boosting(max_iter=20, monotonic_cst=POWER_MONOTONE).fit(X, y), gradient_boosting(max_iter=20).fit(X, y)]
    for i, model in enumerate(models):
        sio.dump(model, tmp_path / f"{i}.skops")
        types, loaders = skops_contents(tmp_path / f"{i}.skops")
        assert types <= SKOPS_ALLOWED_TYPES, types - SKOPS_ALLOWED_TYPES
        assert loaders <= SKOPS_ALLOWED_LOADERS, loaders - SKOPS_ALLOWED_LOADERS
        again = load_skops(tmp_path / f"{i}.skops")
        np.testing.assert_allclose(again.predict(X), model.predict(X))


def test_allowed_sklearn_type_used_as_a_function_is_refused(tmp_path):
    """An allowed type name in a loader that calls it (a function node) is refused: loaders are checked too."""
    from sklearn.preprocessing import FunctionTransformer

    sio.dump(FunctionTransformer(str), tmp_path / "f.skops")
    with pytest.raises(ArtifactError, match="FunctionTransformer"):
        load_skops(tmp_path / "f.skops")


def _evil_nn_meter_folder(folder: Path, marker: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "fusion_rules.json").write_text("{}")
    with open(folder / "conv-bn-relu.pkl", "wb") as fh:
        pickle.dump(EvilKernel(marker), fh)
    return folder


def test_the_pickle_exploit_is_real(tmp_path):
    marker = tmp_path / "marker"
    folder = _evil_nn_meter_folder(tmp_path / "nnm", marker)
    with open(folder / "conv-bn-relu.pkl", "rb") as fh:
        pickle.load(fh)  # noqa: S301 - showing the exploit works
    assert marker.exists()


def test_nn_meter_pickles_need_an_explicit_opt_in(tmp_path):
    from nni_hwaware.nas.hardware import as_hardware_predictor
    from nni_hwaware.nnmeter.predictor import load_nn_meter_predictor

    marker = tmp_path / "marker"
    folder = _evil_nn_meter_folder(tmp_path / "nnm", marker)
    with pytest.raises(ArtifactError, match="trust-pickles"):
        load_nn_meter_predictor(folder)
    with pytest.raises(ArtifactError, match="trust-pickles"):
        as_hardware_predictor(str(folder), "resnet", 32, kind="nn_meter")
    with pytest.raises(ArtifactError, match="not a predictor folder"):  # nothing is guessed from the files
        as_hardware_predictor(str(folder), "resnet", 32, trust_pickles=True)
    code, out, err = run_in_process(["nn-meter", "predict", "--predictor", str(folder), "--space", "resnet",
                                     "--input-size", "32"], tmp_path)
    assert code == 2 and err.count("\n") == 1 and "pickle" in err
    assert not marker.exists()


def test_a_folder_declaring_our_kind_is_never_unpickled(jetson_copy, tmp_path):
    """A copy of the Jetson Nano predictor with nn-Meter files in it is loaded as what it declares."""
    from nni_hwaware.hardware import HardwarePredictor
    from nni_hwaware.nas.hardware import as_hardware_predictor
    from nni_hwaware.nnmeter.predictor import load_nn_meter_predictor

    marker = tmp_path / "marker"
    _evil_nn_meter_folder(jetson_copy, marker)
    predictor = as_hardware_predictor(str(jetson_copy), "convnet", 32, trust_pickles=True)
    assert isinstance(predictor, HardwarePredictor) and predictor.kind == "jetson_nano"
    with pytest.raises(ArtifactError, match="declares a 'jetson_nano' predictor"):
        load_nn_meter_predictor(jetson_copy, trust_pickles=True)
    with pytest.raises(ArtifactError, match="holds a 'jetson_nano' predictor, not 'nn_meter'"):
        as_hardware_predictor(str(jetson_copy), "convnet", 32, kind="nn_meter", trust_pickles=True)
    assert not marker.exists()


@pytest.mark.parametrize("key,value", [
    ("gbm_files", {"latency_ms": "../../outside.skops", "energy_mj": "residual_energy_mj.skops"}),
    ("gbm_files", {"latency_ms": "/etc/passwd", "energy_mj": "residual_energy_mj.skops"}),
    ("energy_model", {"power_file": "../power_w.skops"}),
])
def test_file_names_stay_inside_the_folder(jetson_copy, key, value):
    from nni_hwaware.jetson.predictor import JetsonNanoPredictor

    meta = json.loads((jetson_copy / "predictor.json").read_text())
    meta[key] = {**meta[key], **value}
    (jetson_copy / "predictor.json").write_text(json.dumps(meta))
    with pytest.raises(ArtifactError, match="not a plain file name inside the folder"):
        JetsonNanoPredictor.load(jetson_copy)._residual_model("latency_ms")


def test_non_finite_weights_are_an_error_not_a_number(jetson_copy, onnx_file, tmp_path):
    meta = json.loads((jetson_copy / "predictor.json").read_text())
    average = meta["latency_roofline"]["average"]
    average["coef"] = [float("nan")] * len(average["coef"])
    (jetson_copy / "predictor.json").write_text(json.dumps(meta))
    code, out, err = run_in_process(["predict", "--predictor", str(jetson_copy), "--onnx", str(onnx_file)], tmp_path)
    assert code == 2 and out == "" and "latency_ms of nan" in err and err.count("\n") == 1


# ----------------------------------------------------------------------------------------- output folders
def test_build_out_never_empties_the_working_folder(tmp_path):
    (tmp_path / "precious.txt").write_text("keep me")
    for out in (".", str(tmp_path), str(tmp_path.parent)):
        code, _, err = run_in_process(["build", "--space", "mobilenetv3", "--db", "m.db", "--out", out], tmp_path)
        assert code == 2 and "current folder or one above it" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["precious.txt"]


def test_build_out_refuses_a_folder_that_is_not_a_predictor(tmp_path):
    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    code, _, err = run_in_process(["build", "--space", "mobilenetv3", "--db", "m.db", "--out", "mine"], tmp_path)
    assert code == 2 and "holds other files, not an esm predictor" in err
    assert (other / "notes.txt").read_text() == "keep me" and not (tmp_path / "m.db").exists()


def test_replace_output_dir_swaps_a_predictor_of_ours_atomically(tmp_path):
    out = tmp_path / "pred"
    out.mkdir()
    (out / "predictor.json").write_text(json.dumps({"kind": "esm", "v": 1}))
    staged = staging_dir(out)
    (staged / "predictor.json").write_text(json.dumps({"kind": "esm", "v": 2}))
    replace_output_dir(staged, out, "esm")
    assert json.loads((out / "predictor.json").read_text())["v"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pred"]  # no staging or old folder left
    with pytest.raises(HwAwareError, match="not a jetson_nano predictor of ours"):
        check_output_dir(out, "jetson_nano")


def test_jetson_train_refuses_a_foreign_folder_before_any_work(tmp_path):
    (tmp_path / "x.txt").write_text("keep")
    code, _, err = run_in_process(["jetson-nano", "train", "--data", "nowhere", "--out", "."], tmp_path)
    assert code == 2 and "current folder" in err
    assert [p.name for p in tmp_path.iterdir()] == ["x.txt"]


def _default_arch() -> dict:
    from nni_hwaware.spaces import load_space

    return load_space("mobilenetv3").default_architecture()
