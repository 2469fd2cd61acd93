"""The nnictl path: a tuner that wraps NNI's built-in tuners and emits only candidates within hardware budgets.

Use it from an experiment YAML (NNI v2 config)::

    searchSpaceFile: ...            # nni-hwaware spaces export convnet --format nni-hpo
    tuner:
      className: nni_hwaware.nas.tuner.HardwareAwareTuner
      classArgs:
        tuner: TPE                  # TPE | Evolution | Random | Anneal
        tuner_args: {optimize_mode: maximize}
        space: convnet
        predictor: predictors/jetson_nano
        latency_budget_ms: 40
        energy_budget_mj: 120
        margin: 0.1

Every candidate the inner tuner proposes is mapped to its architecture (the nested-choice parameters of
:func:`~nni_hwaware.spaces.nni_space.hpo_search_space`) and estimated by the surrogate; a candidate over budget
is never sent to a trial: the inner tuner receives ``penalty`` as its result instead and proposes another.
After ``patience`` rejections in a row the tuner logs why and ends the experiment (no more trials) rather
than looping on a budget nothing meets.
"""

from __future__ import annotations

import logging
from itertools import count
from typing import Any

import nni
from nni.tuner import Tuner

from nni_hwaware.errors import HwAwareError
from nni_hwaware.nas.constraints import Budget
from nni_hwaware.nas.hardware import as_hardware_predictor, sibling_path
from nni_hwaware.spaces.nni_space import hpo_params_to_arch

_logger = logging.getLogger(__name__)
BUILTIN_TUNERS = ("TPE", "Evolution", "Random", "Anneal")


def make_builtin_tuner(name: str, args: dict[str, Any] | None = None) -> Tuner:
    """One of NNI's built-in tuners by its nnictl name."""
    args = dict(args or {})
    if name == "TPE":
        from nni.algorithms.hpo.tpe_tuner import TpeTuner

        return TpeTuner(**args)
    if name == "Evolution":
        from nni.algorithms.hpo.evolution_tuner import EvolutionTuner

        return EvolutionTuner(**args)
    if name == "Random":
        from nni.algorithms.hpo.random_tuner import RandomTuner

        return RandomTuner(**args)
    if name == "Anneal":
        from nni.algorithms.hpo.hyperopt_tuner import HyperoptTuner

        return HyperoptTuner("anneal", **args)
    raise HwAwareError(f"tuner must be one of {', '.join(BUILTIN_TUNERS)}, got {name!r}")


class HardwareAwareTuner(Tuner):
    """An nnictl tuner: a built-in tuner whose candidates all satisfy the hardware budgets under the surrogate.

    Parameters
    ----------
    space
        Search space name (the experiment's search space must be its ``nni-hpo`` export).
    predictor
        Predictor folder (relative paths also resolve against the repository root) or ``jetson_nano``.
    latency_budget_ms, energy_budget_mj, margin
        The :class:`~nni_hwaware.nas.constraints.Budget`.
    tuner, tuner_args
        Inner tuner (``TPE``, ``Evolution``, ``Random``, ``Anneal``) and its arguments.
    input_size
        Input resolution (default: the predictor's / the space's).
    penalty
        Result given to the inner tuner for a rejected candidate (default 0, the worst accuracy, when
        maximizing; 1e6 when minimizing).
    patience
        Rejections in a row after which the experiment ends.
    emit_uncertain
        Also emit candidates over budget under the point estimate whose interval straddles the limit (or that
        are out of distribution), for trials that measure them (``--fallback``) to decide.
    refit_db, refit_every, backend, threads
        With an ESM predictor: after every ``refit_every`` trials that report measured latency, refit the
        surrogate on its build data plus the measurements of this target in ``refit_db`` (the trials'
        ``--db``), so later candidates are screened by the refitted surrogate.

    Examples
    --------
    >>> from nni_hwaware.spaces import load_space
    >>> from nni_hwaware.spaces.nni_space import hpo_search_space
    >>> tuner = HardwareAwareTuner("convnet", "jetson_nano", latency_budget_ms=30.0, tuner="Random",
    ...                            tuner_args={"seed": 0})
    >>> tuner.update_search_space(hpo_search_space(load_space("convnet")))
    >>> params = tuner.generate_parameters(0)
    >>> tuner.last_estimate.latency_ms <= 30.0
    True
    """

    def __init__(self, space: str, predictor: str, latency_budget_ms: float | None = None,
                 energy_budget_mj: float | None = None, margin: float = 0.0, tuner: str = "TPE",
                 tuner_args: dict[str, Any] | None = None, input_size: int | None = None,
                 penalty: float | None = None, patience: int = 500, emit_uncertain: bool = False,
                 refit_db: str | None = None, refit_every: int = 0, backend: str = "onnxruntime",
                 threads: int = 1) -> None:
        self.budget = Budget(latency_budget_ms, energy_budget_mj, margin)
        self.predictor = as_hardware_predictor(predictor, space, input_size)
        self.budget.check_predictor(self.predictor)
        self.space = self.predictor.space
        tuner_args = dict(tuner_args or {})
        self.inner = make_builtin_tuner(tuner, tuner_args)
        maximize = tuner_args.get("optimize_mode", "maximize" if tuner == "Evolution" else "minimize") == "maximize"
        self.penalty = float(penalty if penalty is not None else (0.0 if maximize else 1e6))
        if patience < 1:
            raise HwAwareError(f"patience must be at least 1, got {patience}")
        self.patience = patience
        self._inner_ids = count(10**9)
        self._inner_of: dict[int, int] = {}
        self.rejected = 0
        self.accepted = 0
        self.last_estimate: Any = None
        self.exhausted = False
        self.emit_uncertain = emit_uncertain
        self.refitter = None
        self.refit_every = refit_every
        self._measured_results = 0
        if refit_every:
            from nni_hwaware.nas.fallback import MeasuredFallback

            if refit_db is None:
                raise HwAwareError("refit_every needs refit_db, the measurement store the trials write to")
            db = sibling_path(predictor, self.predictor.folder, refit_db)
            self.refitter = MeasuredFallback(self.predictor, db, backend=backend, threads=threads, refit_every=0)

    def update_search_space(self, search_space: dict[str, Any]) -> None:
        self.inner.update_search_space(search_space)

    def generate_parameters(self, parameter_id: int, **kwargs: Any) -> dict[str, Any]:
        if self.exhausted:
            raise nni.NoMoreTrialError("hardware budget: no candidate met it")
        for _ in range(self.patience):
            inner_id = next(self._inner_ids)
            params = self.inner.generate_parameters(inner_id, **kwargs)
            verdict = self.budget.check(self.predictor.estimate(hpo_params_to_arch(self.space, params)))
            if verdict.ok or (self.emit_uncertain and not verdict.decided):
                self._inner_of[parameter_id] = inner_id
                self.accepted += 1
                self.last_estimate = verdict.estimate
                return params
            self.rejected += 1
            # a result (not trial_end: Evolution counts running trials there) so the tuner learns to avoid it
            self.inner.receive_trial_result(inner_id, params, self.penalty)
        self.exhausted = True
        _logger.error("nni-hwaware: %d candidates in a row exceeded the hardware budget %s; no architecture of %s "
                      "proposed by the tuner meets it. Stopping: relax the budget.", self.patience,
                      self.budget.to_dict(), self.space.name)
        raise nni.NoMoreTrialError("hardware budget: no candidate met it")

    def receive_trial_result(self, parameter_id: int, parameters: dict[str, Any], value: Any, **kwargs: Any) -> None:
        if parameter_id in self._inner_of:
            self.inner.receive_trial_result(self._inner_of[parameter_id], parameters, value, **kwargs)
        if self.refitter is not None and isinstance(value, dict) and value.get("latency_source") == "measured":
            self._measured_results += 1
            if self._measured_results % self.refit_every == 0:
                record = self.refitter.refit()
                _logger.info("nni-hwaware: refitted the surrogate with %d measurement(s): held-out accuracy "
                             "%.4f -> %.4f", record["added"], record["accuracy_before"], record["accuracy"])

    def trial_end(self, parameter_id: int, success: bool, **kwargs: Any) -> None:
        inner_id = self._inner_of.pop(parameter_id, None)
        if inner_id is not None:
            self.inner.trial_end(inner_id, success, **kwargs)

    def import_data(self, data: Any) -> None:
        self.inner.import_data(data)
