"""The nnictl path: a tuner that wraps NNI's built-in tuners and emits only candidates within hardware budgets.

Use it from an experiment YAML (NNI v2 config)::

    searchSpaceFile: ...            # nni-hwaware spaces export convnet --format nni-hpo
    trialCommand: python3 -m nni_hwaware.nas.trial --accuracy digits
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

The space, the predictor, the input size and the budget are stated here only: every parameter set the tuner
emits carries them under ``"_hardware"`` (:data:`~nni_hwaware.nas.constraints.HARDWARE_KEY`, with the predictor
folder the tuner loaded), and the trial judges its candidate against exactly those.

Every candidate the inner tuner proposes is mapped to its architecture (the nested-choice parameters of
:func:`~nni_hwaware.spaces.nni_space.hpo_search_space`) and estimated by the surrogate; a candidate over budget
is never sent to a trial: the inner tuner receives ``penalty`` as its result instead and proposes another.
After ``patience`` rejections in a row the tuner logs why and ends the experiment (no more trials) rather
than looping on a budget nothing meets.

Start-up: NNI's manager gives the tuner process 10 seconds to connect, and the tuner is imported and built
before it connects. So this module imports nothing heavy (no torch, no ``nni.nas``, no predictor code), the
constructor only checks its arguments, and the predictor and inner tuner load in a background thread; the
first call NNI makes after connecting (``update_search_space``) waits for them.

Errors: NNI runs the tuner's methods in a worker thread and never reports their exceptions (the experiment
would stay RUNNING with nothing to run). So an error the tuner cannot recover from (a predictor it cannot load,
tuner arguments NNI's tuner refuses, a non-finite estimate) is logged as ``nni-hwaware: ...`` in the dispatcher
log and ends the search like an unmeetable budget does: ``generate_parameters`` raises ``NoMoreTrialError``
with the reason, and NNI's status becomes ``TUNER_NO_MORE_TRIAL``. :meth:`HardwareAwareTuner.ready` raises it
as a :class:`~nni_hwaware.errors.HwAwareError` for Python callers.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Mapping
from itertools import count
from pathlib import Path
from typing import Any

import nni
from nni.tuner import Tuner

from nni_hwaware.errors import HwAwareError
from nni_hwaware.nas.constraints import HARDWARE_KEY, HardwareSettings, is_number, wire_encode

_logger = logging.getLogger(__name__)
BUILTIN_TUNERS = ("TPE", "Evolution", "Random", "Anneal")
#: The tuner's own classArgs besides the :class:`~nni_hwaware.nas.constraints.HardwareSettings` fields.
TUNER_OPTIONS = ("tuner", "tuner_args", "penalty", "patience", "emit_uncertain", "refit_every")
CLASS_ARGS = tuple(k for k in HardwareSettings.field_names() if k != "predictor_folder") + TUNER_OPTIONS


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


def default_backend(predictor: Any) -> str:
    """The backend the fallback measures with when none is given: the one the predictor's numbers are of
    (``tensorrt`` for the Jetson Nano predictor), else onnxruntime."""
    return str(predictor.target.fingerprint.get("backend") or "onnxruntime")


def check_can_refit(predictor: Any, settings: HardwareSettings, where: str) -> None:
    """Refuse ``refit_every`` for a predictor that cannot learn from the measurements the trials make.

    An ESM predictor refits on measurements of this machine (or of ``fallback_device``); any other predictor
    that states its device is calibrated, which needs measurements of that device: ``fallback_device``.
    """
    if predictor.refittable or (predictor.target.fingerprint and settings.fallback_device):
        return
    kind = getattr(predictor, "kind", "?")
    if predictor.target.fingerprint:
        raise HwAwareError(f"{where} refit_every refits an ESM predictor from measurements of this machine, or "
                           f"calibrates any other predictor from measurements of its device: set fallback_device "
                           f"(e.g. ssh://user@jetson) for the {kind} predictor, or remove refit_every and refit_db")
    raise HwAwareError(f"{where} refit_every refits an ESM predictor from measurements; {settings.predictor} is a "
                       f"{kind} predictor, which does not learn from them: remove refit_every and refit_db")


def _whole(args: Mapping[str, Any], key: str, low: int) -> None:
    value = args.get(key)
    if value is not None and not (isinstance(value, int) and not isinstance(value, bool) and value >= low):
        raise HwAwareError(f"classArgs {key} must be a whole number of at least {low}, got {value!r}")


def check_class_args(args: Any) -> HardwareSettings:
    """Check the tuner's ``classArgs`` (types and ranges, nothing loaded); returns their hardware settings.

    Used by the tuner's constructor and by ``nni-hwaware nas check`` before NNI starts anything; each message
    names the key to fix.
    """
    if not isinstance(args, Mapping):
        raise HwAwareError(f"the tuner's classArgs must be a mapping of settings (key: value), got "
                           f"{type(args).__name__}; see experiments/quickstart.yml")
    unknown = sorted(str(k) for k in args if k not in CLASS_ARGS)
    if unknown:
        raise HwAwareError(f"the tuner's classArgs have unknown key(s) {', '.join(unknown)}; "
                           f"known: {', '.join(CLASS_ARGS)}")
    settings = HardwareSettings.from_mapping(args, lambda key: f"classArgs {key}", what="the tuner's classArgs")
    tuner = args.get("tuner", "TPE")
    if tuner not in BUILTIN_TUNERS:
        raise HwAwareError(f"classArgs tuner must be one of {', '.join(BUILTIN_TUNERS)}, got {tuner!r}")
    if not isinstance(args.get("tuner_args") or {}, Mapping):
        raise HwAwareError(f"classArgs tuner_args must be a mapping (e.g. {{optimize_mode: maximize}}), got "
                           f"{args['tuner_args']!r}")
    penalty = args.get("penalty")
    if penalty is not None and not (is_number(penalty) and math.isfinite(penalty)):
        raise HwAwareError(f"classArgs penalty must be a finite number, got {penalty!r}")
    _whole(args, "patience", 1)
    _whole(args, "refit_every", 0)
    if not isinstance(args.get("emit_uncertain", False), bool):
        raise HwAwareError(f"classArgs emit_uncertain must be true or false, got {args['emit_uncertain']!r}")
    if args.get("refit_every") and not args.get("refit_db"):
        raise HwAwareError("classArgs refit_every needs refit_db, the measurement store the trials write to")
    return settings


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
        After every ``refit_every`` trials that report measured latency, refit the predictor on the
        measurements of its device in ``refit_db`` (the store the trials measure into): an ESM predictor on its
        build data plus them, any other predictor by calibration. Each refit is a new folder
        (``refits/NNNN`` beside the store; see :mod:`~nni_hwaware.nas.fallback`); later candidates are screened
        with it, and later trials predict with it.
    fallback_device, token_file, fallback_protocol, allow_device_mismatch
        Where the trials measure undecided candidates (a device URL or a list: ``ssh://user@jetson``,
        ``http://host:port``), the HTTP agent's token file, the protocol (the predictor's own by default; see
        :data:`~nni_hwaware.nas.constraints.FALLBACK_PROTOCOLS`) and the override for measuring another
        device than the predictor's. Sent to every trial with the budget.
    trust_nn_meter_pickles
        Allow an nn-Meter predictor folder (its regressors are pickles, which run code when loaded) as the
        ``predictor`` and as the trials' ``--nn-meter`` folder: only for folders you built or trust.

    Examples
    --------
    >>> from nni_hwaware.spaces import load_space
    >>> from nni_hwaware.spaces.nni_space import hpo_search_space
    >>> tuner = HardwareAwareTuner("convnet", "jetson_nano", latency_budget_ms=30.0, tuner="Random",
    ...                            tuner_args={"seed": 0})
    >>> tuner.update_search_space(hpo_search_space(load_space("convnet")))
    >>> params = tuner.generate_parameters(0)
    >>> params["_hardware"]["latency_budget_ms"], tuner.last_estimate.latency_ms <= 30.0
    (30.0, True)
    """

    def __init__(self, space: str, predictor: str, latency_budget_ms: float | None = None,
                 energy_budget_mj: float | None = None, margin: float = 0.0, tuner: str = "TPE",
                 tuner_args: dict[str, Any] | None = None, input_size: int | None = None,
                 penalty: float | None = None, patience: int = 500, emit_uncertain: bool = False,
                 refit_db: str | None = None, refit_every: int = 0, backend: str | None = None,
                 threads: int | None = None, trust_nn_meter_pickles: bool = False,
                 fallback_device: str | list[str] | None = None, token_file: str | None = None,
                 fallback_protocol: str = "predictor", allow_device_mismatch: bool = False) -> None:
        # cheap checks only: NNI's manager waits at most 10 s for this process to connect
        self.settings = check_class_args(dict(
            space=space, predictor=predictor, latency_budget_ms=latency_budget_ms, energy_budget_mj=energy_budget_mj,
            margin=margin, tuner=tuner, tuner_args=tuner_args, input_size=input_size, penalty=penalty,
            patience=patience, emit_uncertain=emit_uncertain, refit_db=refit_db, refit_every=refit_every,
            backend=backend, threads=threads, trust_nn_meter_pickles=trust_nn_meter_pickles,
            fallback_device=fallback_device, token_file=token_file, fallback_protocol=fallback_protocol,
            allow_device_mismatch=allow_device_mismatch))
        self.budget = self.settings.budget()
        self.tuner_name, self.tuner_args = tuner, dict(tuner_args or {})
        mode = self.tuner_args.get("optimize_mode", "maximize" if tuner == "Evolution" else "minimize")
        self.penalty = float(penalty if penalty is not None else (0.0 if mode == "maximize" else 1e6))
        self.patience = patience
        self.emit_uncertain = emit_uncertain
        self.refit_every = refit_every
        self._inner_ids = count(10**9)
        self._inner_of: dict[int, tuple[int, dict[str, Any]]] = {}
        self.rejected = 0
        self.accepted = 0
        self.last_estimate: Any = None
        self.exhausted = False
        #: Why the search ended on an error (see :meth:`_end_search`), or ``None``.
        self.failure: str | None = None
        self._measured_results = 0
        self._loaded: dict[str, Any] = {}
        self._load_error: BaseException | None = None
        self._loader = threading.Thread(target=self._load, name="nni-hwaware-tuner-load", daemon=True)
        self._loader.start()

    # --- loading (background thread) ----------------------------------------------------------------------

    def _load(self) -> None:
        """Load the predictor, the inner tuner and the refitter; record an error for :meth:`ready` to raise."""
        try:
            from nni_hwaware.nas.hardware import as_hardware_predictor, sibling_path
            from nni_hwaware.spaces.nni_space import hpo_params_to_arch

            s = self.settings
            predictor = as_hardware_predictor(s.predictor, s.space, s.input_size,
                                              trust_pickles=s.trust_nn_meter_pickles)
            self.budget.check_predictor(predictor)
            db = sibling_path(s.predictor, predictor.folder, s.refit_db) if s.refit_db else None
            refitter = None
            if self.refit_every:
                from nni_hwaware.nas.fallback import MeasuredFallback

                check_can_refit(predictor, s, "classArgs")
                # reads the store only: the trials measure; the tuner never connects to the device
                refitter = MeasuredFallback(predictor, db, backend=s.backend or default_backend(predictor),
                                            device=s.fallback_device, threads=s.threads or 1,
                                            protocol=s.fallback_protocol,
                                            allow_device_mismatch=s.allow_device_mismatch, connect=False)
            try:
                inner = make_builtin_tuner(self.tuner_name, self.tuner_args)
            except (TypeError, ValueError) as exc:  # an argument the inner tuner does not take
                raise HwAwareError(f"classArgs tuner_args {self.tuner_args} are not accepted by NNI's "
                                   f"{self.tuner_name} tuner ({exc})") from None
            # what the trials receive: the folder and input size this tuner actually screens with
            hardware = dict(s.to_dict(), predictor_folder=str(Path(predictor.folder).resolve()),
                            input_size=predictor.input_size)
            if db is not None:  # the trials' store and where they find the refits: the file the tuner reads
                hardware["refit_db"] = str(db.resolve())
            if s.token_file:
                hardware["token_file"] = str(sibling_path(s.predictor, predictor.folder, s.token_file).resolve())
            self._loaded = {"predictor": predictor, "inner": inner, "refitter": refitter,
                            "to_arch": hpo_params_to_arch, "hardware": wire_encode(hardware)}
        except Exception as exc:  # noqa: BLE001 - kept for ready(), which the first call NNI makes reaches
            self._load_error = exc

    def ready(self) -> HardwareAwareTuner:
        """Wait until the predictor and the inner tuner are loaded; raises what loading raised.

        Raises
        ------
        HwAwareError
            The predictor or the inner tuner could not be loaded (the message says why).
        """
        self._loader.join()
        if self._load_error is not None:
            exc = self._load_error
            reason = str(exc) if isinstance(exc, HwAwareError) else f"{type(exc).__name__}: {exc}"
            raise HwAwareError(f"the tuner could not start: {reason}") from exc
        return self

    @property
    def predictor(self) -> Any:
        """The hardware predictor (waits for loading)."""
        return self.ready()._loaded["predictor"]

    @property
    def inner(self) -> Tuner:
        """The wrapped NNI tuner (waits for loading)."""
        return self.ready()._loaded["inner"]

    @property
    def refitter(self) -> Any:
        """The :class:`~nni_hwaware.nas.fallback.MeasuredFallback` that refits the surrogate, or ``None``."""
        return self.ready()._loaded["refitter"]

    @property
    def space(self) -> Any:
        """The :class:`~nni_hwaware.spaces.schema.SearchSpace` searched."""
        return self.predictor.space

    @property
    def hardware(self) -> dict[str, Any]:
        """The settings sent to every trial under :data:`~nni_hwaware.nas.constraints.HARDWARE_KEY` (device
        URLs percent-encoded: :func:`~nni_hwaware.nas.constraints.wire_encode`)."""
        return dict(self.ready()._loaded["hardware"])

    # --- NNI's tuner interface ----------------------------------------------------------------------------

    def _end_search(self, exc: Exception) -> None:
        """Record an unrecoverable error (logged once, for the dispatcher log); the search ends with it."""
        if self.failure is None:
            self.failure = str(exc) if isinstance(exc, HwAwareError) else f"{type(exc).__name__}: {exc}"
            _logger.error("nni-hwaware: %s; no more trials.", self.failure)

    def update_search_space(self, search_space: dict[str, Any]) -> None:
        try:
            inner = self.inner
        except HwAwareError as exc:  # raising here would leave the experiment RUNNING (see the module doc)
            self._end_search(exc)
            return
        inner.update_search_space(search_space)

    def generate_parameters(self, parameter_id: int, **kwargs: Any) -> dict[str, Any]:
        if self.failure is None and not self.exhausted:
            try:
                return self._next_within_budget(parameter_id, **kwargs)
            except HwAwareError as exc:
                self._end_search(exc)
        raise nni.NoMoreTrialError(self.failure or "hardware budget: no candidate met it")

    def _next_within_budget(self, parameter_id: int, **kwargs: Any) -> dict[str, Any]:
        """The inner tuner's next candidate within the budget; raises ``NoMoreTrialError`` after ``patience``."""
        inner, predictor, to_arch = self.inner, self.predictor, self._loaded["to_arch"]
        for _ in range(self.patience):
            inner_id = next(self._inner_ids)
            params = inner.generate_parameters(inner_id, **kwargs)
            verdict = self.budget.check(predictor.estimate(to_arch(predictor.space, params)))
            if verdict.ok or (self.emit_uncertain and not verdict.decided):
                # the inner tuner sees its own parameters again (receive_trial_result), never the settings
                self._inner_of[parameter_id] = (inner_id, params)
                self.accepted += 1
                self.last_estimate = verdict.estimate
                return {**params, HARDWARE_KEY: self.hardware}
            self.rejected += 1
            # a result (not trial_end: Evolution counts running trials there) so the tuner learns to avoid it
            inner.receive_trial_result(inner_id, params, self.penalty)
        self.exhausted = True
        _logger.error("nni-hwaware: %d candidates in a row exceeded the hardware budget %s; no architecture of %s "
                      "proposed by the tuner meets it. Stopping: relax the budget.", self.patience,
                      self.budget.to_dict(), predictor.space.name)
        raise nni.NoMoreTrialError("hardware budget: no candidate met it")

    def receive_trial_result(self, parameter_id: int, parameters: dict[str, Any], value: Any, **kwargs: Any) -> None:
        if parameter_id in self._inner_of:
            inner_id, inner_params = self._inner_of[parameter_id]
            self.inner.receive_trial_result(inner_id, inner_params, value, **kwargs)
        refitter = self._loaded.get("refitter")  # never raises: a tuner that failed to load has no trials
        if refitter is not None and isinstance(value, dict) and value.get("latency_source") == "measured":
            self._measured_results += 1
            if self._measured_results % self.refit_every == 0:
                try:
                    record = refitter.refit()
                except HwAwareError as exc:  # the search goes on with the surrogate it has
                    _logger.error("nni-hwaware: refit failed: %s; screening goes on with the current surrogate",
                                  exc)
                    return
                self._loaded["predictor"] = refitter.predictor  # a calibration is a new predictor object
                _logger.info("nni-hwaware: refitted the surrogate with %d measurement(s) into %s: %s",
                             record["added"], record["folder"],
                             {k: record.get(k) for k in ("accuracy_before", "accuracy", "before", "after")
                              if k in record})

    def trial_end(self, parameter_id: int, success: bool, **kwargs: Any) -> None:
        inner_id, _ = self._inner_of.pop(parameter_id, (None, None))
        if inner_id is not None:
            self.inner.trial_end(inner_id, success, **kwargs)

    def import_data(self, data: Any) -> None:
        # imported trials (resume, `nnictl experiment import`) carry the settings in their parameters
        cleaned = [dict(entry, parameter={k: v for k, v in entry["parameter"].items() if k != HARDWARE_KEY})
                   if isinstance(entry, dict) and isinstance(entry.get("parameter"), dict) else entry
                   for entry in data]
        try:
            inner = self.inner
        except HwAwareError as exc:
            self._end_search(exc)
            return
        inner.import_data(cleaned)
