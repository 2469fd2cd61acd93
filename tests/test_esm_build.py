"""`nni-hwaware build` measures for real into the store, trains, and `predict` / `compare` use the result."""

from __future__ import annotations

import json
import shutil

import pytest

from nni_hwaware.measure.store import MeasurementStore
from nni_hwaware.spaces import load_space, sample_architectures

# real ESM builds and measurements: the full suite runs them, the fast lane (-m "not slow") does not
pytestmark = pytest.mark.slow

BUILD = ["build", "--space", "mobilenetv3", "--input-size", "8", "--runs", "5", "--initial", "12", "--step", "6",
         "--max-samples", "18", "--test-size", "10", "--bins", "3", "--acc-th", "0.999", "--qc-every", "0"]


@pytest.fixture(scope="module")
def built(tmp_path_factory, cli):
    root = tmp_path_factory.mktemp("esm")
    db, out = root / "m.db", root / "pred"
    result = cli(*BUILD, "--db", str(db), "--out", str(out), timeout=600)
    assert result.returncode == 0, result.stderr
    return root, db, out, result


def test_build_writes_predictor_card_plots_and_stores_every_measurement(built):
    _root, db, out, result = built
    for name in ("predictor.json", "mlp.safetensors", "MODEL_CARD.md", "scatter.png", "bin_accuracy.png",
                 "convergence.png", "data.jsonl"):
        assert (out / name).is_file(), name
    info = json.loads((out / "predictor.json").read_text())
    assert info["space"] == "mobilenetv3" and info["input_size"] == 8 and info["encoding"] == "fcc"
    # acc-th 0.999 cannot be met: the loop extends once (12 -> 18) and stops at the budget
    assert [h["train_size"] for h in info["history"]] == [12, 18]
    assert info["converged"] is False
    with MeasurementStore(db, readonly=True) as store:
        assert store.dataset(space="mobilenetv3").shape[0] == 18 + 10
    assert "iteration 1: 18 samples" in result.stderr
    assert "Space" in (out / "MODEL_CARD.md").read_text()


def test_rebuild_reuses_the_store(built, cli, tmp_path):
    _root, db, _out, _ = built
    before = MeasurementStore(db, readonly=True).count()
    result = cli(*BUILD, "--db", str(db), "--out", str(tmp_path / "again"))
    assert result.returncode == 0, result.stderr
    assert MeasurementStore(db, readonly=True).count() == before  # nothing measured twice


def test_predict_one_and_many_in_input_order(built, cli, tmp_path):
    _root, _db, out, _ = built
    space = load_space("mobilenetv3")
    archs = sample_architectures(space, 5, seed=99)
    jsonl = tmp_path / "archs.jsonl"
    jsonl.write_text("".join(json.dumps(a) + "\n" for a in archs))
    many = cli("predict", "--predictor", str(out), "--space", "mobilenetv3", "--archs", str(jsonl), "--json")
    assert many.returncode == 0, many.stderr
    rows = [json.loads(line) for line in many.stdout.splitlines()]
    assert [r["arch_hash"] for r in rows] == [space.arch_hash(a) for a in archs]
    for r in rows:
        lo, hi = r["latency_interval"]
        assert 0 < lo <= r["latency_ms"] <= hi
    one = cli("predict", "--predictor", str(out), "--space", "mobilenetv3", "--arch", json.dumps(archs[2]), "--json")
    assert one.returncode == 0
    assert json.loads(one.stdout)["latency_ms"] == pytest.approx(rows[2]["latency_ms"])


def test_compare_produces_table(built, cli, tmp_path):
    _root, db, _out, _ = built
    result = cli("compare", "--db", str(db), "--space", "mobilenetv3", "--sizes", "8,16", "--test-size", "10",
                 "--bins", "3", "--initial", "8", "--step", "4", "--encodings", "fcc,statistical",
                 "--surrogates", "mlp,rf", "--out", str(tmp_path / "cmp"))
    assert result.returncode == 0, result.stderr
    table = (tmp_path / "cmp" / "compare.md").read_text()
    assert "| mlp | fcc | 16 |" in table and "| macs-linear | macs |" in table
    assert "Random vs balanced" in table
    assert (tmp_path / "cmp" / "compare.csv").is_file() and (tmp_path / "cmp" / "random_vs_balanced.png").is_file()


def test_predict_bad_inputs(built, cli, tmp_path):
    _root, _db, out, _ = built
    arch = json.dumps(load_space("mobilenetv3").default_architecture())
    cases = [
        (["--space", "resnet", "--arch", arch], "built for space 'mobilenetv3'"),
        (["--space", "mobilenetv3", "--arch", json.dumps({"units": [{"depth": 9}]})], "units"),
        (["--space", "mobilenetv3", "--arch", arch, "--input-size", "32"], "built for input size 8"),
    ]
    for extra, message in cases:
        result = cli("predict", "--predictor", str(out), *extra, "--json")
        assert result.returncode == 2, (extra, result.stdout)
        assert message in result.stderr and "Traceback" not in result.stderr
    broken = tmp_path / "broken"
    shutil.copytree(out, broken)
    weights = broken / "mlp.safetensors"
    weights.write_bytes(weights.read_bytes()[:64])
    result = cli("predict", "--predictor", str(broken), "--space", "mobilenetv3", "--arch", arch, "--json")
    assert result.returncode == 2 and "corrupt or truncated" in result.stderr
    (broken / "predictor.json").write_text('{"kind": "esm", "spa')
    result = cli("predict", "--predictor", str(broken), "--space", "mobilenetv3", "--arch", arch, "--json")
    assert result.returncode == 2 and "corrupt or truncated" in result.stderr


def test_build_bad_inputs(cli, tmp_path):
    result = cli("build", "--space", "resnet", "--initial", "600", "--max-samples", "500", "--db",
                 str(tmp_path / "m.db"), "--out", str(tmp_path / "p"))
    assert result.returncode == 2 and "exceeds --max-samples" in result.stderr
    result = cli("build", "--space", "resnet", "--db", str(tmp_path / "m.db"), "--out", "/nonexistent/dir/p")
    assert result.returncode == 2 and "does not exist" in result.stderr
