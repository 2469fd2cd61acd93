"""The NNI ModelSpace of a space runs in a real NasExperiment, and its trials build the sampled networks."""

from __future__ import annotations

import socket

import pytest

from nni_hwaware.spaces.nni_space import HwModelSpace, sample_to_arch


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_model_space_in_nas_experiment(tmp_path):
    import nni
    import nni.nas.strategy as strategy
    from nni.nas.evaluator import FunctionalEvaluator
    from nni.nas.experiment import NasExperiment

    def evaluate(model):  # defined here so it is shipped to the trial by value
        import torch

        y = model(torch.randn(1, 3, 32, 32))
        assert y.shape == (1, 10)
        nni.report_final_result(float(sum(p.numel() for p in model.parameters())))

    model_space = HwModelSpace("mobilenetv3", input_size=32, num_classes=10)
    experiment = NasExperiment(model_space, FunctionalEvaluator(evaluate), strategy.Random())
    experiment.config.max_trial_number = 2
    experiment.config.trial_concurrency = 1
    experiment.config.experiment_working_directory = str(tmp_path / "nni-experiments")
    try:
        experiment.run(port=_free_port())
        top = experiment.export_top_models(top_k=2, formatter="dict")
    finally:
        experiment.stop()
    assert len(top) == 2
    for sample in top:
        arch = sample_to_arch(model_space.space, sample)
        frozen = model_space.freeze(sample)
        assert frozen.architecture == arch
