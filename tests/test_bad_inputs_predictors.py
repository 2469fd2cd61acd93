"""Bad predictor folders and bad ``predict`` input: each fails with one ``error:`` line, exit 2, nothing written.

The cases are generated from tables: every way a predictor folder can be damaged or forged (``predictor.json``
that is not an object, lacks a key, names files outside the folder; arrays and models of the wrong shape;
truncated or forged model files) applied to the shipped Jetson Nano predictor and to a small ESM predictor,
each loaded through ``nni-hwaware predict`` as a user would.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from badinput import Case, check_case

from nni_hwaware.jetson.predictor import default_predictor_dir

JETSON = default_predictor_dir()
N_COEF = len(json.loads((JETSON / "predictor.json").read_text())["latency_roofline"]["average"]["coef"])


def _onnx_files(folder: Path) -> None:
    """``small.onnx`` (out of distribution) and ``indist.onnx`` (like the dataset: needs the residual models)."""
    from nni_hwaware.jetson.dataset import parse_model_name
    from nni_hwaware.jetson.graph import module_to_onnx
    from nni_hwaware.spaces import build_module, load_space

    arch, width = parse_model_name("convnet_L5_F128_K2x2_W30_DWS")
    (folder / "indist.onnx").write_bytes(module_to_onnx(build_module(load_space("convnet"), arch, input_size=width),
                                                        (1, 3, 30, 30)))
    small = _small_onnx()
    (folder / "small.onnx").write_bytes(small)


_SMALL: list[bytes] = []


def _small_onnx() -> bytes:
    """One conv and a ReLU: far from the dataset, so only the base models are used."""
    if not _SMALL:
        from torch import nn

        from nni_hwaware.jetson.graph import module_to_onnx

        _SMALL.append(module_to_onnx(nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU()), (1, 3, 32, 32)))
    return _SMALL[0]


def _edit_meta(edit: Callable[[dict[str, Any]], Any]) -> Callable[[Path], None]:
    def apply(folder: Path) -> None:
        path = folder / "predictor.json"
        meta = json.loads(path.read_text())
        result = edit(meta)
        path.write_text(json.dumps(meta if result is None else result))
    return apply


def _write(name: str, data: bytes) -> Callable[[Path], None]:
    return lambda folder: (folder / name).write_bytes(data)


def _remove(name: str) -> Callable[[Path], None]:
    return lambda folder: (folder / name).unlink()


def _npz(**overrides: np.ndarray) -> Callable[[Path], None]:
    def apply(folder: Path) -> None:
        with np.load(folder / "arrays.npz") as arrays:
            data = {k: arrays[k] for k in arrays.files}
        data.update(overrides)
        np.savez(folder / "arrays.npz", **data)
    return apply


def _truncate(name: str) -> Callable[[Path], None]:
    return lambda folder: (folder / name).write_bytes((folder / name).read_bytes()[:200])


def _skops_of(make: Callable[[], Any], name: str) -> Callable[[Path], None]:
    def apply(folder: Path) -> None:
        import skops.io as sio

        sio.dump(make(), folder / name)
    return apply


def _wrong_width_gbm() -> Any:
    from nni_hwaware.jetson.models import gradient_boosting

    rng = np.random.default_rng(0)
    return gradient_boosting(max_iter=5).fit(rng.random((40, 3)), rng.random(40))


def _exploit() -> Any:
    from test_artifacts import exploit_pipeline

    return exploit_pipeline(Path("/nonexistent/marker"))


def _set(path: tuple[str, ...], value: Any) -> Callable[[dict[str, Any]], None]:
    def edit(meta: dict[str, Any]) -> None:
        target = meta
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
    return edit


def _drop(key: str) -> Callable[[dict[str, Any]], None]:
    def edit(meta: dict[str, Any]) -> None:
        del meta[key]
    return edit


# (id, damage, onnx file, expected text): every row becomes one case of `predict --predictor p --onnx FILE`
JETSON_DAMAGE: list[tuple[str, Callable[[Path], None], str, str]] = [
    ("json-list", _write("predictor.json", b"[1, 2]"), "small", "not an object"),
    ("json-string", _write("predictor.json", b'"jetson_nano"'), "small", "not an object"),
    ("json-null", _write("predictor.json", b"null"), "small", "not an object"),
    ("json-garbage", _write("predictor.json", b"{kind: jetson"), "small", "corrupt"),
    ("json-binary", _write("predictor.json", bytes(range(256))), "small", "corrupt"),
    ("json-empty", _write("predictor.json", b""), "small", "corrupt"),
    ("json-deep", _write("predictor.json", b"[" * 100000 + b"]" * 100000), "small", "corrupt"),
    ("no-predictor-json", _remove("predictor.json"), "small", "predictor"),
    ("kind-missing", _edit_meta(_drop("kind")), "small", "predictor"),
    ("kind-number", _edit_meta(_set(("kind",), 3)), "small", "predictor"),
    ("kind-unknown", _edit_meta(_set(("kind",), "tflite")), "small", "tflite"),
    ("kind-nn-meter", _edit_meta(_set(("kind",), "nn_meter")), "small", "nn-meter"),
    ("version-old", _edit_meta(_set(("version",), 1)), "small", "older version"),
    ("no-roofline", _edit_meta(_drop("latency_roofline")), "small", "older version"),
    ("roofline-list", _edit_meta(_set(("latency_roofline",), [1, 2])), "small", "older version"),
    ("roofline-coef-short", _edit_meta(_set(("latency_roofline", "average", "coef"), [1.0])), "small",
     "older version"),
    ("roofline-coef-nan", _edit_meta(_set(("latency_roofline", "average", "coef"), [float("nan")] * N_COEF)),
     "small", "nan"),
    ("features-changed", _edit_meta(_set(("network_features",), ["macs"])), "small", "other features"),
    ("no-energy-model", _edit_meta(_drop("energy_model")), "small", "energy_model"),
    ("energy-model-list", _edit_meta(_set(("energy_model",), ["power_w.skops"])), "small", "plain file name"),
    ("power-file-parent", _edit_meta(_set(("energy_model", "power_file"), "../power_w.skops")), "small",
     "plain file name"),
    ("power-file-absolute", _edit_meta(_set(("energy_model", "power_file"), "/etc/passwd")), "small",
     "plain file name"),
    ("power-file-number", _edit_meta(_set(("energy_model", "power_file"), 7)), "small", "plain file name"),
    ("power-file-missing", _remove("power_w.skops"), "small", "missing"),
    ("power-truncated", _truncate("power_w.skops"), "small", "corrupt"),
    ("power-garbage", _write("power_w.skops", b"PK\x03\x04garbage"), "small", "corrupt"),
    ("power-exploit", _skops_of(_exploit, "power_w.skops"), "small", "refusing to load"),
    ("power-wrong-width", _skops_of(_wrong_width_gbm, "power_w.skops"), "small", "features"),
    ("no-ood", _edit_meta(_drop("ood")), "small", "ood"),
    ("ood-k-zero", _edit_meta(_set(("ood", "k"), 0)), "small", "wrong shape"),
    ("ood-k-word", _edit_meta(_set(("ood", "k"), "five")), "small", "arrays.npz"),
    ("ood-threshold-nan", _edit_meta(_set(("ood", "threshold"), float("nan"))), "small", "wrong shape"),
    ("intervals-missing", _edit_meta(_drop("intervals_log_ratio")), "small", "intervals_log_ratio"),
    ("intervals-flat", _edit_meta(_set(("intervals_log_ratio", "latency_ms"), [0.1, 0.2])), "small",
     "wrong shape"),
    ("intervals-inf", _edit_meta(_set(("intervals_log_ratio", "energy_mj", "in_distribution"), [-1, 1e400])),
     "small", "wrong shape"),
    ("arrays-missing", _remove("arrays.npz"), "small", "arrays.npz"),
    ("arrays-garbage", _write("arrays.npz", b"not a zip"), "small", "arrays.npz"),
    ("arrays-train-columns", _npz(knn_train=np.zeros((30, 3), np.float32)), "small", "wrong shape"),
    ("arrays-mean-length", _npz(knn_mean=np.zeros(2)), "small", "wrong shape"),
    ("arrays-object", _npz(knn_train=np.array([{"a": 1}], dtype=object)), "small", "arrays.npz"),
    ("no-gbm-files", _edit_meta(_drop("gbm_files")), "indist", "gbm_files"),
    ("gbm-file-outside", _edit_meta(_set(("gbm_files", "latency_ms"), "../../x.skops")), "indist",
     "plain file name"),
    ("gbm-files-list", _edit_meta(_set(("gbm_files",), ["a", "b"])), "indist", "plain file name"),
    ("gbm-missing", _remove("residual_latency_ms.skops"), "indist", "missing"),
    ("gbm-exploit", _skops_of(_exploit, "residual_latency_ms.skops"), "indist", "refusing to load"),
    ("gbm-wrong-width", _skops_of(_wrong_width_gbm, "residual_energy_mj.skops"), "indist", "features"),
]


def _jetson_case(case_id: str, damage: Callable[[Path], None], onnx: str, expect: str) -> Case:
    def setup(folder: Path) -> None:
        shutil.copytree(JETSON, folder / "p")
        damage(folder / "p")
        _onnx_files(folder)

    return Case(f"jetson-{case_id}", ["predict", "--predictor", "p", "--onnx", f"{onnx}.onnx"], setup, expect)


def _predict_input_cases() -> list[Case]:
    """Bad ``predict`` arguments with the shipped predictor."""
    def files(folder: Path) -> None:
        _onnx_files(folder)
        (folder / "garbage.onnx").write_bytes(b"\x08\x07garbage")
        (folder / "empty.onnx").write_bytes(b"")
        (folder / "text.onnx").write_text("hello")
        (folder / "plain.txt").write_text("x")
        (folder / "dir.onnx").mkdir()

    rows = [
        ("onnx-missing", ["--onnx", "nope.onnx"], "not found"),
        ("onnx-garbage", ["--onnx", "garbage.onnx"], "onnx"),
        ("onnx-empty", ["--onnx", "empty.onnx"], "onnx"),
        ("onnx-text", ["--onnx", "text.onnx"], "onnx"),
        ("onnx-dir", ["--onnx", "dir.onnx"], "onnx"),
        ("shape-words", ["--onnx", "small.onnx", "--input-shape", "a,b"], "input-shape"),
        ("shape-zero", ["--onnx", "small.onnx", "--input-shape", "0,3,32,32"], "input-shape"),
        ("shape-negative", ["--onnx", "small.onnx", "--input-shape", "1,3,-32,32"], "input-shape"),
        ("predictor-missing", ["--predictor", "nowhere", "--onnx", "small.onnx"], "nowhere"),
        ("predictor-file", ["--predictor", "plain.txt", "--onnx", "small.onnx"], "plain.txt"),
        ("predictor-empty-dir", ["--predictor", "dir.onnx", "--onnx", "small.onnx"], "predictor.json"),
    ]
    return [Case(f"predict-{i}", ["predict", *argv], files, expect) for i, argv, expect in rows]


# ------------------------------------------------------------------------------------------------- ESM
def _esm_damage() -> list[tuple[str, Callable[[Path], None], str]]:
    return [
        ("surrogate-file-string", _edit_meta(_set(("surrogate_file",), "surrogate.skops")), "malformed"),
        ("surrogate-outside", _edit_meta(_set(("surrogate_file", "file"), "../surrogate.skops")), "plain file name"),
        ("surrogate-type", _edit_meta(_set(("surrogate_file", "type"), "pickle")), "pickle"),
        ("surrogate-truncated", _truncate("surrogate.skops"), "corrupt"),
        ("surrogate-missing", _remove("surrogate.skops"), "missing"),
        ("surrogate-exploit", _skops_of(_exploit, "surrogate.skops"), "refusing to load"),
        ("surrogate-wrong-width", _skops_of(_wrong_width_gbm, "surrogate.skops"), "not a surrogate"),
        ("space-number", _edit_meta(_set(("space",), 5)), "malformed"),
        ("space-unknown", _edit_meta(_set(("space",), "vgg")), "vgg"),
        ("fingerprint", _edit_meta(_set(("space_fingerprint",), "0" * 16)), "changed"),
        ("encoding-unknown", _edit_meta(_set(("encoding",), "base64")), "malformed"),
        ("encoding-length", _edit_meta(_set(("encoding_length",), 3)), "encoding"),
        ("input-size-word", _edit_meta(_set(("input_size",), "eight")), "malformed"),
        ("no-space", _edit_meta(_drop("space")), "lacks 'space'"),
        ("no-surrogate", _edit_meta(_drop("surrogate_file")), "lacks 'surrogate_file'"),
        ("json-list", _write("predictor.json", b"[]"), "not an object"),
    ]


def _esm_input_rows() -> list[tuple[str, list[str], str]]:
    return [
        ("its-own-space-bad-arch", ["--arch", "{}"], "units"),
        ("both-arch-archs", ["--space", "mobilenetv3", "--arch", "{}", "--archs", "a.jsonl"], "exactly one"),
        ("onnx-and-space", ["--space", "mobilenetv3", "--onnx", "a.onnx"], "not with --onnx"),
        ("onnx-to-esm", ["--onnx", "a.onnx"], "not arbitrary onnx"),
        ("other-space", ["--space", "resnet", "--arch", "{}"], "built for space"),
        ("other-input-size", ["--space", "mobilenetv3", "--input-size", "32", "--arch", "{}"], "input size"),
        ("arch-not-json", ["--space", "mobilenetv3", "--arch", "{units"], "json"),
        ("archs-missing", ["--space", "mobilenetv3", "--archs", "none.jsonl"], "none.jsonl"),
        ("archs-empty", ["--space", "mobilenetv3", "--archs", "empty.jsonl"], "no architecture"),
        ("archs-bad-line", ["--space", "mobilenetv3", "--archs", "bad.jsonl"], "line 2"),
    ]


def _esm_cases(esm_folder: Path) -> list[Case]:
    from nni_hwaware.spaces import load_space

    good = json.dumps(load_space("mobilenetv3").default_architecture())
    cases = []
    for case_id, damage, expect in _esm_damage():
        def setup(folder: Path, damage: Callable[[Path], None] = damage) -> None:
            shutil.copytree(esm_folder, folder / "p")
            damage(folder / "p")

        cases.append(Case(f"esm-{case_id}", ["predict", "--predictor", "p", "--space", "mobilenetv3", "--arch", good],
                          setup, expect))

    def inputs(folder: Path) -> None:
        shutil.copytree(esm_folder, folder / "p")
        (folder / "empty.jsonl").write_text("\n")
        (folder / "bad.jsonl").write_text(good + "\n" + '{"units": 3}' + "\n")

    for case_id, argv, expect in _esm_input_rows():
        cases.append(Case(f"esm-input-{case_id}", ["predict", "--predictor", "p", *argv], inputs, expect))
    return cases


CASES = [_jetson_case(*row) for row in JETSON_DAMAGE] + _predict_input_cases()


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_jetson_predictor_or_input(case, tmp_path):
    check_case(case, tmp_path)


ESM_IDS = [f"esm-{row[0]}" for row in _esm_damage()] + [f"esm-input-{row[0]}" for row in _esm_input_rows()]


@pytest.mark.parametrize("case_id", ESM_IDS)
def test_bad_esm_predictor_or_input(case_id, esm_gb_predictor, tmp_path):
    (case,) = [c for c in _esm_cases(esm_gb_predictor) if c.id == case_id]
    check_case(case, tmp_path)
