"""NNI integration pieces on the shipped Jetson Nano predictor: profiler, budget filter, tuner, preflight."""

from __future__ import annotations

import json
from pathlib import Path

import nni
import pytest
import yaml

from nni_hwaware.errors import HwAwareError
from nni_hwaware.nas import (
    Budget,
    HardwareFilter,
    HardwarePredictor,
    HardwareSettings,
    SurrogateProfiler,
    load_predictor,
)
from nni_hwaware.nas.constraints import HARDWARE_KEY
from nni_hwaware.nas.experiment import load_config, pareto_front, preflight
from nni_hwaware.nas.hardware import HardwareEstimate, sibling_path
from nni_hwaware.nas.tuner import HardwareAwareTuner
from nni_hwaware.spaces import load_space, sample_architectures
from nni_hwaware.spaces.nni_space import HwModelSpace, arch_to_hpo_params, arch_to_sample, hpo_search_space

REPO = Path(__file__).resolve().parents[1]
QUICKSTART = REPO / "experiments" / "quickstart.yml"


@pytest.fixture(scope="module")
def jetson() -> HardwarePredictor:
    return load_predictor("jetson_nano", "convnet")


@pytest.fixture(scope="module")
def estimates(jetson):
    archs = sample_architectures(jetson.space, 30, seed=3)
    return archs, jetson.estimate_many(archs)


def test_profiler_matches_the_predictor_for_a_model_space_sample(jetson, estimates):
    archs, ests = estimates
    space = HwModelSpace("convnet")
    latency, energy = SurrogateProfiler(space, jetson, "latency_ms"), SurrogateProfiler(space, jetson, "energy_mj")
    for arch, est in list(zip(archs, ests))[:5]:
        sample = arch_to_sample(space.space, arch)
        assert latency.profile(sample) == pytest.approx(est.latency_ms)
        assert energy.profile(sample) == pytest.approx(est.energy_mj)
        assert est.latency_interval[0] <= est.latency_ms <= est.latency_interval[1]
        assert est.source == "surrogate"
    with pytest.raises(HwAwareError, match="latency_ms or energy_mj"):
        SurrogateProfiler(space, jetson, "flops")


def test_budget_verdicts_use_margin_and_intervals():
    budget = Budget(latency_ms=10.0, energy_mj=20.0, margin=0.1)
    assert budget.limit("latency_ms") == pytest.approx(9.0)
    sure = HardwareEstimate("a", 5.0, (4.0, 6.0), 10.0, (9.0, 11.0))
    assert budget.check(sure).ok and budget.check(sure).decided
    over = HardwareEstimate("b", 9.5, (9.2, 9.8), 10.0, (9.0, 11.0))
    verdict = budget.check(over)
    assert not verdict.ok and verdict.violations == ["latency_ms"] and verdict.decided
    straddles = HardwareEstimate("c", 8.5, (7.0, 10.0), 10.0, (9.0, 11.0))
    assert budget.check(straddles).ok and budget.check(straddles).uncertain == ["latency_ms"]
    ood = HardwareEstimate("d", 1.0, (0.9, 1.1), 1.0, (0.9, 1.1), in_distribution=False)
    assert budget.check(ood).uncertain == ["latency_ms", "energy_mj"]
    for bad, message in (({}, "latency"), ({"latency_ms": -1}, "positive"), ({"latency_ms": 1, "margin": 1}, "margin"),
                         ({"latency_ms": "fast"}, "positive number"), ({"latency_ms": float("inf")}, "positive"),
                         ({"latency_ms": float("nan")}, "positive"), ({"latency_ms": 1, "margin": "tight"}, "margin"),
                         ({"energy_mj": True}, "positive number")):
        with pytest.raises(HwAwareError, match=message):
            Budget(**bad)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_a_non_finite_estimate_is_an_error_never_within_budget(bad):
    budget = Budget(latency_ms=10.0, energy_mj=20.0)
    for metric in ("latency_ms", "energy_mj"):
        estimate = HardwareEstimate("h", 5.0, (4.0, 6.0), 10.0, (9.0, 11.0), predictor="esm")
        setattr(estimate, metric, bad)  # as a broken predictor would leave it
        with pytest.raises(HwAwareError, match=f"non-finite {metric}.*rebuild or retrain"):
            budget.check(estimate)
    # and an estimate is refused where it is made
    with pytest.raises(HwAwareError, match="esm predictor returned a non-finite latency_ms"):
        HardwareEstimate("h", bad, (1.0, 2.0), predictor="esm")
    with pytest.raises(HwAwareError, match="non-finite energy_mj"):
        HardwareEstimate("h", 1.0, (1.0, 2.0), 3.0, (bad, 4.0))


def test_filter_accepts_exactly_the_architectures_within_budget(jetson, estimates):
    archs, ests = estimates
    latencies = sorted(e.latency_ms for e in ests)
    budget = Budget(latency_ms=latencies[len(latencies) // 2], margin=0.0)
    space = HwModelSpace("convnet")
    middleware = HardwareFilter(space, jetson, budget)
    for arch, est in zip(archs, ests):
        assert middleware.verdict(arch_to_sample(space.space, arch)).ok == (est.latency_ms <= budget.latency_ms)


def test_filter_in_a_chain_with_an_nni_strategy(jetson):
    from nni.nas.strategy import RegularizedEvolution
    from nni.nas.strategy.middleware import Chain

    space = HwModelSpace("convnet")
    strategy = Chain(RegularizedEvolution(population_size=4, sample_size=2),
                     HardwareFilter(space, jetson, Budget(latency_ms=30.0, energy_mj=80.0, margin=0.1)))
    assert isinstance(strategy, nni.nas.strategy.Strategy)


def test_tuner_emits_only_candidates_within_budget(jetson):
    space = load_space("convnet")
    tuner = HardwareAwareTuner("convnet", "jetson_nano", latency_budget_ms=30.0, energy_budget_mj=80.0, margin=0.1,
                               tuner="TPE", tuner_args={"optimize_mode": "maximize", "seed": 0})
    tuner.update_search_space(hpo_search_space(space))
    for pid in range(4):
        params = tuner.generate_parameters(pid)
        assert params.pop(HARDWARE_KEY)["latency_budget_ms"] == 30.0
        est = jetson.estimate(arch_from(space, params))
        assert est.latency_ms <= 27.0 and est.energy_mj <= 72.0
        tuner.receive_trial_result(pid, params, {"default": 0.5, "latency_ms": est.latency_ms})
        tuner.trial_end(pid, True)
    assert tuner.accepted == 4 and tuner.rejected > 0  # some proposals were over budget and never emitted


def arch_from(space, params):
    from nni_hwaware.spaces.nni_space import hpo_params_to_arch

    arch = hpo_params_to_arch(space, params)
    assert arch_to_hpo_params(space, arch) == params
    return arch


def test_tuner_stops_on_a_budget_nothing_meets():
    tuner = HardwareAwareTuner("convnet", "jetson_nano", latency_budget_ms=0.001, tuner="Random",
                               tuner_args={"seed": 1}, patience=5)
    tuner.update_search_space(hpo_search_space(load_space("convnet")))
    with pytest.raises(nni.NoMoreTrialError):
        tuner.generate_parameters(0)
    assert tuner.rejected == 5 and tuner.exhausted
    with pytest.raises(nni.NoMoreTrialError):  # and stays stopped
        tuner.generate_parameters(1)


def test_tuner_rejects_bad_settings(caplog):
    with pytest.raises(HwAwareError, match="tuner must be one of"):
        HardwareAwareTuner("convnet", "jetson_nano", latency_budget_ms=1.0, tuner="SMAC")
    with pytest.raises(HwAwareError, match="latency_budget_ms must be a positive number"):
        HardwareAwareTuner("convnet", "jetson_nano", latency_budget_ms="fast")
    with pytest.raises(HwAwareError, match="patience must be a whole number"):
        HardwareAwareTuner("convnet", "jetson_nano", latency_budget_ms=1.0, patience=0)
    # what needs loading fails in the background; NNI drops exceptions of tuner calls (the experiment would hang
    # RUNNING), so the search ends instead (no more trials) with the reason in the log, and ready() raises it
    missing = HardwareAwareTuner("convnet", "predictors/nowhere", latency_budget_ms=1.0)
    missing.update_search_space(hpo_search_space(load_space("convnet")))
    with pytest.raises(nni.NoMoreTrialError, match="the tuner could not start: predictor .* not found"):
        missing.generate_parameters(0)
    assert missing.generate_multiple_parameters([1, 2]) == []  # what NNI's dispatcher calls
    assert [r.getMessage() for r in caplog.records if r.getMessage().startswith("nni-hwaware:")] == [
        f"nni-hwaware: {missing.failure}; no more trials."]
    with pytest.raises(HwAwareError, match="not found"):
        missing.ready()
    typo = HardwareAwareTuner("convnet", "jetson_nano", latency_budget_ms=30.0, tuner_args={"optimise_mode": "max"})
    with pytest.raises(HwAwareError, match="not accepted by NNI's TPE tuner"):
        typo.ready()


def test_a_non_finite_estimate_ends_the_search(caplog):
    tuner = HardwareAwareTuner("convnet", "jetson_nano", latency_budget_ms=30.0, tuner="Random",
                               tuner_args={"seed": 0})
    tuner.update_search_space(hpo_search_space(load_space("convnet")))
    tuner.predictor.estimate_many = lambda archs: [_nan_estimate()]  # a predictor whose weights went bad
    with pytest.raises(nni.NoMoreTrialError, match="non-finite latency_ms"):
        tuner.generate_parameters(0)
    assert tuner.accepted == 0 and "rebuild or retrain" in tuner.failure
    assert any("nni-hwaware:" in r.getMessage() and "non-finite" in r.getMessage() for r in caplog.records)


def _nan_estimate() -> HardwareEstimate:
    estimate = HardwareEstimate("h", 1.0, (0.5, 1.5), predictor="jetson_nano")
    estimate.latency_ms = float("nan")
    return estimate


def test_tuner_sends_its_hardware_settings_and_keeps_them_from_the_inner_tuner(jetson):
    tuner = HardwareAwareTuner("convnet", "predictors/jetson_nano", latency_budget_ms=30.0, energy_budget_mj=80.0,
                               margin=0.1, tuner="Evolution", tuner_args={"optimize_mode": "maximize", "population_size": 4})
    tuner.update_search_space(hpo_search_space(load_space("convnet")))
    params = tuner.generate_parameters(7)
    hardware = params[HARDWARE_KEY]
    assert hardware == {"space": "convnet", "predictor": "predictors/jetson_nano", "latency_budget_ms": 30.0,
                        "energy_budget_mj": 80.0, "margin": 0.1, "input_size": 50, "trust_nn_meter_pickles": False,
                        "predictor_folder": str(jetson.folder.resolve())}
    inner_id, inner_params = tuner._inner_of[7]
    assert HARDWARE_KEY not in inner_params and {**inner_params, HARDWARE_KEY: hardware} == params
    # NNI hands back what the tuner emitted; Evolution would choke on the extra key if it reached it
    tuner.receive_trial_result(7, params, 0.5)
    tuner.trial_end(7, True)
    tuner.import_data([{"parameter": params, "value": 0.4}])
    assert HardwareSettings.from_mapping(hardware).budget() == Budget(30.0, 80.0, 0.1)


def test_pareto_front():
    rows = [{"accuracy": 0.9, "latency_ms": 10.0, "energy_mj": None}, {"accuracy": 0.8, "latency_ms": 5.0},
            {"accuracy": 0.7, "latency_ms": 6.0}, {"accuracy": 0.9, "latency_ms": 12.0}]
    assert pareto_front(rows) == [True, True, False, False]


def test_sibling_path_follows_the_predictor_base(tmp_path):
    folder = tmp_path / "runs" / "predictors" / "p"
    folder.mkdir(parents=True)
    assert sibling_path("runs/predictors/p", folder, "runs/m.db") == tmp_path / "runs" / "m.db"
    assert sibling_path(str(folder), folder, "runs/m.db") == Path("runs/m.db")
    assert sibling_path("runs/predictors/p", folder, "/abs/m.db") == Path("/abs/m.db")


def _quickstart(tmp_path: Path, **changes) -> Path:
    config = yaml.safe_load(QUICKSTART.read_text())
    config["searchSpaceFile"] = str(REPO / "experiments" / config["searchSpaceFile"])
    config["trialCodeDirectory"] = str(REPO)
    config["tuner"]["codeDirectory"] = str(REPO)
    for key, value in changes.items():
        if key == "trialCommand":
            assert value[0] in config["trialCommand"], value
            config["trialCommand"] = config["trialCommand"].replace(*value)
        else:
            config["tuner"]["classArgs"][key] = value
    path = tmp_path / "exp.yml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_quickstart_passes_preflight(tmp_path):
    info = preflight(load_config(QUICKSTART), QUICKSTART.parent, samples=40)
    assert info["space"] == "convnet" and info["predictor"]["kind"] == "jetson_nano"
    assert 0 < info["feasible_share"] < 1
    from nni.experiment.config import ExperimentConfig

    config = yaml.safe_load(QUICKSTART.read_text())
    for key in ("searchSpaceFile", "trialCodeDirectory"):  # nnictl resolves them relative to the file
        config[key] = str(QUICKSTART.parent / config[key])
    config["tuner"]["codeDirectory"] = str(QUICKSTART.parent / config["tuner"]["codeDirectory"])
    ExperimentConfig(**config).validate()


@pytest.mark.parametrize(("changes", "message"), [
    ({"predictor": "predictors/missing"}, "not found"),
    ({"latency_budget_ms": 0.001}, "no architecture among 40 random ones"),
    ({"trialCommand": ("--accuracy digits", "--accuracy digits --energy-budget-mj 90")},
     "trialcommand gives --energy-budget-mj: state energy_budget_mj once, in the tuner's classargs"),
    ({"trialCommand": ("--accuracy digits", "--input-size 32 --accuracy digits")}, "state input_size once"),
    ({"space": "resnet"}, "not the nnictl search space"),
    ({"refit_every": 2, "refit_db": "runs/m.db"}, "refit_every refits an esm predictor"),
])
def test_preflight_refuses_bad_configs(tmp_path, changes, message):
    path = _quickstart(tmp_path, **changes)
    with pytest.raises(HwAwareError) as caught:
        preflight(load_config(path), path.parent, samples=40)
    assert message.lower() in str(caught.value).lower()


@pytest.mark.slow
def test_nas_check_cli(tmp_path, cli):
    bad = cli("nas", "check", "--config", str(_quickstart(tmp_path, predictor="predictors/missing")))
    assert bad.returncode == 2 and bad.stderr.startswith("error:") and "Traceback" not in bad.stderr
    missing = cli("nas", "run", "--config", str(tmp_path / "nope.yml"))
    assert missing.returncode == 2 and "not found" in missing.stderr
    ok = cli("nas", "check", "--config", str(QUICKSTART), "--samples", "20")
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["predictor"]["kind"] == "jetson_nano"


def test_trial_judges_its_network_against_the_settings_the_tuner_sent(jetson, estimates):
    from nni_hwaware.nas.trial import build_parser, evaluate

    archs, ests = estimates
    arch, est = archs[0], ests[0]
    params = arch_to_hpo_params(jetson.space, arch)
    args = build_parser().parse_args(["--accuracy", "synflow"])
    for limit, within in ((est.latency_ms * 2, True), (est.latency_ms / 2, False)):
        hardware = {"space": "convnet", "predictor": "jetson_nano", "latency_budget_ms": limit,
                    "predictor_folder": str(jetson.folder)}
        got, result = evaluate(args, {**params, HARDWARE_KEY: hardware})
        assert got == jetson.space.validate(arch) and result["within_budget"] is within
        assert result["latency_ms"] == pytest.approx(est.latency_ms)
        # surely over budget under the surrogate: not trained (out of distribution, it is not sure)
        sure_over = not within and Budget(latency_ms=limit).check(est).decided
        assert result["accuracy_method"] == ("skipped: over budget" if sure_over else "synflow")
    # the settings come from one place: the tuner's, or (by hand) the options, never both
    with pytest.raises(HwAwareError, match="state latency_budget_ms once"):
        evaluate(build_parser().parse_args(["--latency-budget-ms", "5"]), {**params, HARDWARE_KEY: hardware})
