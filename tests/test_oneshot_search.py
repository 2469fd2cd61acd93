"""``nni-hwaware nas oneshot``: SPOS + evolution and Proxyless with the hardware loss, end to end at small scale
on scikit-learn's digits, checked against an independent estimate of every reported architecture."""

from __future__ import annotations

import json

import pytest
import yaml
from test_oneshot_supernet import TINY_SPACE

from nni_hwaware.errors import ParameterError
from nni_hwaware.hardware import load_predictor
from nni_hwaware.nas.constraints import Budget
from nni_hwaware.nas.oneshot.config import load_config, parse_config

SPOS = {"space": "convnet", "predictor": "predictors/jetson_nano", "hardware_input_size": 50,
        "budget": {"latency_ms": 30, "energy_mj": 80, "margin": 0.1},
        "train": {"input_size": 12, "width_mult": 0.0625, "epochs": 1, "max_train": 160},
        "strategy": {"name": "spos", "population": 4, "sample_size": 2, "cycles": 6, "fitness": "paper"},
        "final": {"top_k": 2, "epochs": 1}}


def _check_results(out, config):
    results = json.loads((out / "results.json").read_text())
    assert (out / "pareto.png").stat().st_size > 1000
    space = config["space"]
    predictor = load_predictor("jetson_nano", space, config["hardware_input_size"])
    budget = Budget(**config["budget"])
    assert results["final"]
    for row in results["final"]:
        assert set(row) >= {"arch", "accuracy", "latency_ms", "energy_mj", "within_budget"}
        assert 0.0 <= row["accuracy"] <= 1.0
        estimate = predictor.estimate(row["arch"])  # this process, not the search's
        assert row["latency_ms"] == pytest.approx(estimate.latency_ms, rel=1e-6)
        assert row["energy_mj"] == pytest.approx(estimate.energy_mj, rel=1e-6)
        assert row["within_budget"] == budget.check(estimate).ok
    return results


@pytest.mark.slow
def test_the_spos_supernet_learns_and_ranks_like_training_from_scratch(tmp_path):
    """A supernet at chance (as this one was: NNI's mixed convolutions lost the He init, the classifier's slices
    were corner-aligned, and most uniform paths were deep ones no trial keeps) makes the evolution a random
    search: every candidate scored about 0.1 on the ten digits."""
    from nni_hwaware.nas.accuracy import AccuracySettings, estimate_accuracy
    from nni_hwaware.nas.oneshot.search import run_oneshot
    from nni_hwaware.spaces import load_space

    config = {**SPOS, "train": {"input_size": 12, "width_mult": 0.0625, "epochs": 30, "max_train": 600},
              "strategy": {"name": "spos", "population": 6, "sample_size": 2, "cycles": 12},
              "final": {"top_k": 1, "epochs": 1}}
    report = run_oneshot(parse_config(config, "test"), tmp_path / "out")
    scored = sorted(report["search"], key=lambda r: r["supernet_accuracy"])
    assert len({json.dumps(r["arch"], sort_keys=True) for r in scored}) == len(scored)  # each scored once
    assert scored[-1]["supernet_accuracy"] >= 0.5, [r["supernet_accuracy"] for r in scored]
    # the supernet's best and worst candidates, trained from scratch, keep their order
    space = load_space("convnet")
    settings = AccuracySettings(method="digits", epochs=1, max_train=600, width_mult=0.0625, min_input=12, seed=1)
    best, worst = (estimate_accuracy(space, r["arch"], settings)["accuracy"] for r in (scored[-1], scored[0]))
    assert best > worst, (best, worst, scored[-1]["arch"], scored[0]["arch"])


@pytest.mark.slow
def test_spos_evolution_cli(cli, tmp_path):
    config = tmp_path / "spos.yml"
    config.write_text(yaml.safe_dump(SPOS))
    out = tmp_path / "out"
    run = cli("nas", "oneshot", "--config", str(config), "--out", str(out), timeout=900)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "retrained from scratch" in run.stdout and "Metric" not in run.stdout  # NNI's per-model lines quiet
    results = _check_results(out, SPOS)
    assert all(row["within_budget"] for row in results["final"])  # evolution ran behind the HardwareFilter
    assert results["evaluated"] == SPOS["strategy"]["cycles"]
    assert all(r["latency_ms"] <= 27.0 and r["energy_mj"] <= 72.0 for r in results["search"])


@pytest.mark.slow
def test_proxyless_with_the_hardware_loss(cli, tmp_path):
    space = tmp_path / "tiny_mbv3.yaml"
    space.write_text(TINY_SPACE)
    config = {"space": str(space), "predictor": "predictors/jetson_nano", "hardware_input_size": 32,
              "budget": {"latency_ms": 6.0, "margin": 0.0},
              "train": {"input_size": 32, "width_mult": 0.5, "epochs": 1, "max_train": 96},
              "strategy": {"name": "proxyless", "loss": "proxyless", "arc_learning_rate": 0.01},
              "final": {"top_k": 2, "epochs": 1}}
    path = tmp_path / "proxyless.yml"
    path.write_text(yaml.safe_dump(config))
    run = cli("nas", "oneshot", "--config", str(path), "--out", str(tmp_path / "out"), timeout=900)
    assert run.returncode == 0, run.stderr[-2000:]
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    predictor = load_predictor("jetson_nano", str(space), 32)
    for row in results["final"]:
        assert row["latency_ms"] == pytest.approx(predictor.estimate(row["arch"]).latency_ms, rel=1e-6)


def test_shipped_configs_load():
    for name in ("oneshot_spos.yml", "oneshot_proxyless.yml"):
        config = load_config(f"experiments/{name}")
        assert config.budget and config.strategy.name in ("spos", "proxyless")


@pytest.mark.parametrize("change, key", [
    ({"strategy": {"name": "enas"}}, "strategy.name"),
    ({"train": {"epochs": 0}}, "train.epochs"),
    ({"train": {"width_mult": "wide"}}, "train.width_mult"),
    ({"budget": {"latency": 3}}, "budget"),
    ({"strategy": {"fitness": "edp"}}, "strategy.fitness"),
    ({"data": "cifar"}, "data"),
    ({"colour": 1}, "colour"),
    ({"final": {"device": "jetson-nano.local"}}, "final.device"),
    ({"final": {"backend": "tflite"}}, "final.backend"),
])
def test_bad_configs_are_refused(change, key):
    with pytest.raises(ParameterError) as info:
        parse_config({**SPOS, **change})
    assert key in str(info.value) and "\n" not in str(info.value)


def test_bad_config_is_one_line_at_the_cli(cli, tmp_path):
    config = tmp_path / "bad.yml"
    config.write_text(yaml.safe_dump({**SPOS, "strategy": {"name": "spos", "cycles": -1}}))
    run = cli("nas", "oneshot", "--config", str(config), "--out", str(tmp_path / "out"))
    assert run.returncode == 2 and run.stderr.strip().count("\n") == 0 and "strategy.cycles" in run.stderr


@pytest.mark.slow
def test_finalists_are_measured_on_the_given_device(tmp_path):
    """``final.device: local``: each finalist is also measured here (onnxruntime), beside the predictor's figures."""
    from nni_hwaware.nas.oneshot.search import run_oneshot

    tiny = {**SPOS, "train": {**SPOS["train"], "max_train": 64},
            "strategy": {"name": "spos", "population": 2, "sample_size": 1, "cycles": 2},
            "final": {"top_k": 1, "epochs": 1, "device": "local", "runs": 10}}
    report = run_oneshot(parse_config(tiny), tmp_path / "out")
    (row,) = report["final"]
    assert row["measured_latency_ms"] > 0 and isinstance(row["measured_within_budget"], bool)
    assert row["measured_on"]["backend"] == "onnxruntime" and row["latency_ms"] != row["measured_latency_ms"]
    assert json.loads((tmp_path / "out" / "results.json").read_text())["final"][0]["measured_latency_ms"] > 0


def test_a_folder_of_the_user_is_never_written_into(cli, tmp_path):
    config = tmp_path / "spos.yml"
    config.write_text(yaml.safe_dump(SPOS))
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "results.json").write_text('{"my": "numbers"}')
    run = cli("nas", "oneshot", "--config", str(config), "--out", str(mine))
    assert run.returncode == 2 and run.stderr.strip().count("\n") == 0 and "holds other files" in run.stderr
    assert [p.name for p in mine.iterdir()] == ["results.json"]
    assert (mine / "results.json").read_text() == '{"my": "numbers"}'


@pytest.mark.parametrize("latency_ms, finds", [(0.001, False), (8.0, True)])
def test_training_paths_under_a_tight_budget(monkeypatch, latency_ms, finds):
    """A budget nothing meets is one line naming what to raise; one few paths meet trains those it found,
    after a bounded number of draws, instead of drawing forever."""
    from nni_hwaware.errors import HwAwareError
    from nni_hwaware.nas.oneshot import search
    from nni_hwaware.nas.oneshot.supernet import HwSupernet

    monkeypatch.setattr(search, "_MAX_DRAWS", 512)  # two batches: the bound, not its size, is under test
    config = parse_config({**SPOS, "budget": {"latency_ms": latency_ms}}, "test")
    supernet = HwSupernet("convnet", input_size=12, width_mult=0.0625, num_classes=10)
    predictor = load_predictor("jetson_nano", "convnet", 50)
    budget = Budget(latency_ms=latency_ms)
    if not finds:
        with pytest.raises(HwAwareError, match="raise train.input_size or the budget") as info:
            search.single_paths(config, supernet, predictor, budget, 10_000)
        assert "\n" not in str(info.value)
        return
    paths = search.single_paths(config, supernet, predictor, budget, 10_000)
    assert 0 < len(paths) < 10_000
    assert all(budget.check(predictor.estimate(supernet.sample_to_arch(p))).ok for p in paths)
