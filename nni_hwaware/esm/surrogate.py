"""Surrogate latency predictors with scikit-learn's estimator conventions and a spread per prediction.

Every surrogate takes a feature matrix (an encoding of :mod:`nni_hwaware.esm.encode`, or one proxy column such as
MACs or a lookup-table sum) and latencies in milliseconds. ``__init__`` only stores parameters, ``fit`` returns
``self``, ``predict`` is pure, and ``predict_interval`` gives a central interval. Targets are fitted on the log
scale by default (latency spans orders of magnitude); predictions are on the original scale.

``mlp``
    the ESM paper's MLP: three hidden layers of width 64, MSE loss, Adam, lr 0.01, weight decay 1e-4; a small
    deep ensemble gives the spread.
``gb``
    gradient boosting, with 5 % / 95 % quantile models for the interval.
``rf``
    random forest; the spread across trees gives the interval.
``linear``
    a linear fit on one or a few proxy columns: the MACs proxy, and the lookup table's linear bias correction.

Artifacts are saved without anything that executes code on load: JSON + safetensors for the MLP, skops for
scikit-learn models (loaded with an allow-list of types).

Examples
--------
>>> import numpy as np
>>> X = np.random.default_rng(0).random((200, 4)); y = 1 + X @ [1, 2, 3, 4]
>>> model = make_surrogate("rf", random_state=0).fit(X, y)
>>> lo, hi = model.predict_interval(X[:3])
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, RegressorMixin, clone
from sklearn.ensemble import GradientBoostingRegressor, RandomForestRegressor
from sklearn.linear_model import LinearRegression

from nni_hwaware.artifacts import load_skops, safe_member
from nni_hwaware.errors import ArtifactError, HwAwareError
from nni_hwaware.esm.config import SURROGATES

_Z90 = 1.6449  # two-sided 90 % normal quantile


class _LogTargetMixin:
    log_target: bool

    def _to_fit(self, y: np.ndarray) -> np.ndarray:
        y = np.asarray(y, dtype=float)
        if self.log_target:
            if np.any(y <= 0):
                raise HwAwareError("latencies must be positive to fit on the log scale")
            return np.log(y)
        return y

    def _from_fit(self, z: np.ndarray) -> np.ndarray:
        return np.exp(z) if self.log_target else z


class MLPSurrogate(_LogTargetMixin, RegressorMixin, BaseEstimator):
    """The ESM paper's MLP, as a small deep ensemble.

    Parameters
    ----------
    hidden
        Width of every hidden layer (paper: 64).
    n_layers
        Number of hidden layers (paper: 3).
    lr, weight_decay
        Adam's learning rate and weight decay (paper: 0.01, 1e-4).
    epochs, batch_size
        Training length; mini-batches of ``batch_size``.
    n_members
        Ensemble members (different seeds); their spread is the model uncertainty.
    log_target
        Fit log latency.
    random_state
        Seed.
    """

    def __init__(
        self,
        hidden: int = 64,
        n_layers: int = 3,
        lr: float = 0.01,
        weight_decay: float = 1e-4,
        epochs: int = 300,
        batch_size: int = 64,
        n_members: int = 3,
        log_target: bool = True,
        random_state: int = 0,
    ) -> None:
        self.hidden = hidden
        self.n_layers = n_layers
        self.lr = lr
        self.weight_decay = weight_decay
        self.epochs = epochs
        self.batch_size = batch_size
        self.n_members = n_members
        self.log_target = log_target
        self.random_state = random_state

    def fit(self, X: np.ndarray, y: np.ndarray) -> MLPSurrogate:
        import torch

        X = np.asarray(X, dtype=np.float32)
        z = self._to_fit(y)
        self.x_mean_ = X.mean(axis=0)
        self.x_scale_ = np.where(X.std(axis=0) > 1e-8, X.std(axis=0), 1.0).astype(np.float32)
        self.y_mean_, self.y_scale_ = float(z.mean()), float(z.std() or 1.0)
        xs = torch.from_numpy((X - self.x_mean_) / self.x_scale_)
        ys = torch.from_numpy(((z - self.y_mean_) / self.y_scale_).astype(np.float32)).unsqueeze(1)
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # tiny matrices: threads only add overhead
        try:
            self.members_ = self._train_ensemble(xs, ys)
        finally:
            torch.set_num_threads(threads)
        self.residual_log_q90_ = 0.0
        return self

    def _train_ensemble(self, xs: Any, ys: Any) -> list[list[tuple[np.ndarray, np.ndarray]]]:
        """Train all members at once as one batched network (members differ by initialisation)."""
        import torch
        from torch import nn

        torch.manual_seed(self.random_state)
        gen = torch.Generator().manual_seed(self.random_state)
        widths = [xs.shape[1]] + [self.hidden] * self.n_layers + [1]
        weights, biases = [], []
        for fan_in, fan_out in zip(widths[:-1], widths[1:]):
            layers = [nn.Linear(fan_in, fan_out) for _ in range(self.n_members)]  # PyTorch's default init
            weights.append(nn.Parameter(torch.stack([m.weight.detach().T for m in layers])))
            biases.append(nn.Parameter(torch.stack([m.bias.detach() for m in layers]).unsqueeze(1)))
        opt = torch.optim.Adam(weights + biases, lr=self.lr, weight_decay=self.weight_decay)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=self.epochs)
        n = xs.shape[0]
        for _ in range(self.epochs):
            order = torch.randperm(n, generator=gen)
            for start in range(0, n, self.batch_size):
                idx = order[start : start + self.batch_size]
                h = xs[idx].unsqueeze(0).expand(self.n_members, -1, -1)
                for i, (w, b) in enumerate(zip(weights, biases)):
                    h = torch.baddbmm(b, h, w)
                    if i < len(weights) - 1:
                        h = torch.relu(h)
                loss = ((h - ys[idx].unsqueeze(0)) ** 2).mean()
                opt.zero_grad()
                loss.backward()
                opt.step()
            sched.step()
        return [
            [(w[m].detach().numpy().copy(), b[m, 0].detach().numpy().copy()) for w, b in zip(weights, biases)]
            for m in range(self.n_members)
        ]

    def _member_outputs(self, X: np.ndarray) -> np.ndarray:
        """Predictions of every member on the fitting scale, shape ``(n_members, n)``."""
        h0 = (np.asarray(X, dtype=np.float32) - self.x_mean_) / self.x_scale_
        outs = []
        for weights in self.members_:
            h = h0
            for i, (w, b) in enumerate(weights):
                h = h @ w + b
                if i < len(weights) - 1:
                    np.maximum(h, 0, out=h)
            outs.append(h[:, 0] * self.y_scale_ + self.y_mean_)
        return np.stack(outs)

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self._from_fit(self._member_outputs(X).mean(axis=0))

    def predict_interval(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """A 90 % interval from the ensemble spread combined with the calibrated residual spread."""
        outs = self._member_outputs(X)
        mean, std = outs.mean(axis=0), outs.std(axis=0)
        half = np.sqrt((_Z90 * std) ** 2 + self.residual_log_q90_**2)
        if self.log_target:
            return np.exp(mean - half), np.exp(mean + half)
        return mean - half, mean + half

    def conformity_scores(self, X: np.ndarray, y: np.ndarray) -> np.ndarray:
        """The smallest residual spread that puts each ``y`` inside its interval (fitting scale).

        A point is inside when ``|z - mean| <= sqrt((1.645 std)^2 + pad^2)``, i.e. when
        ``pad >= sqrt(max(r^2 - (1.645 std)^2, 0))``: that is its score.
        """
        outs = self._member_outputs(X)
        residual = self._to_fit(y) - outs.mean(axis=0)
        return np.sqrt(np.maximum(residual**2 - (_Z90 * outs.std(axis=0)) ** 2, 0.0))

    def calibrate(self, X: np.ndarray, y: np.ndarray, level: float = 0.9) -> MLPSurrogate:
        """Set the residual spread from a calibration set the model was not fitted on (split conformal)."""
        self.residual_log_q90_ = conformal_quantile(self.conformity_scores(X, y), level)
        return self


class SklearnSurrogate(_LogTargetMixin, RegressorMixin, BaseEstimator):
    """Gradient boosting, random forest or linear regression behind one interface.

    Parameters
    ----------
    kind
        ``"gb"``, ``"rf"`` or ``"linear"``.
    log_target
        Fit log latency (for ``linear`` the default is the original scale, as a MACs or lookup-table proxy is
        linear in latency).
    random_state
        Seed.
    """

    def __init__(self, kind: str = "gb", log_target: bool = True, random_state: int = 0) -> None:
        self.kind = kind
        self.log_target = log_target
        self.random_state = random_state

    def _base(self) -> BaseEstimator:
        if self.kind == "gb":
            return GradientBoostingRegressor(
                n_estimators=400, max_depth=3, learning_rate=0.05, subsample=0.8, random_state=self.random_state
            )
        if self.kind == "rf":
            return RandomForestRegressor(n_estimators=200, min_samples_leaf=1, random_state=self.random_state, n_jobs=1)
        if self.kind == "linear":
            return LinearRegression()
        raise HwAwareError(f"unknown surrogate {self.kind!r}; use one of {', '.join(SURROGATES)}")

    def fit(self, X: np.ndarray, y: np.ndarray) -> SklearnSurrogate:
        X = np.asarray(X, dtype=float)
        z = self._to_fit(y)
        self.model_ = clone(self._base()).fit(X, z)
        if self.kind == "gb":
            self.lower_ = GradientBoostingRegressor(
                loss="quantile", alpha=0.05, n_estimators=200, max_depth=3, learning_rate=0.05,
                random_state=self.random_state,
            ).fit(X, z)
            self.upper_ = clone(self.lower_).set_params(alpha=0.95).fit(X, z)
        self.residual_std_ = float(np.std(z - self.model_.predict(X)))
        self.residual_log_q90_ = 0.0
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self._from_fit(self.model_.predict(np.asarray(X, dtype=float)))

    def _base_interval(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The uncalibrated interval on the fitting scale, around the prediction."""
        X = np.asarray(X, dtype=float)
        mid = self.model_.predict(X)
        if self.kind == "gb":
            lo, hi = self.lower_.predict(X), self.upper_.predict(X)
        elif self.kind == "rf":
            trees = np.stack([t.predict(X) for t in self.model_.estimators_])
            lo, hi = np.quantile(trees, 0.05, axis=0), np.quantile(trees, 0.95, axis=0)
        else:
            lo, hi = mid - _Z90 * self.residual_std_, mid + _Z90 * self.residual_std_
        return np.minimum(lo, mid), np.maximum(hi, mid)

    def predict_interval(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """A 90 % interval: quantile models (gb), spread of trees (rf), residual spread (linear), each widened
        by the calibrated pad (:meth:`calibrate`)."""
        lo, hi = self._base_interval(X)
        pad = self.residual_log_q90_ if self.log_target else 0.0
        return self._from_fit(lo - pad), self._from_fit(hi + pad)

    def conformity_scores(self, X: np.ndarray, y: np.ndarray) -> np.ndarray:
        """The smallest pad that puts each ``y`` inside its interval (fitting scale; 0 when it already is)."""
        lo, hi = self._base_interval(X)
        z = self._to_fit(y)
        return np.maximum(np.maximum(lo - z, z - hi), 0.0)

    def calibrate(self, X: np.ndarray, y: np.ndarray, level: float = 0.9) -> SklearnSurrogate:
        """Set the pad from a calibration set the model was not fitted on (split conformal; log-target
        models, whose pad is on the log scale)."""
        if self.log_target:
            self.residual_log_q90_ = conformal_quantile(self.conformity_scores(X, y), level)
        return self


def conformal_quantile(scores: np.ndarray, level: float = 0.9) -> float:
    """The split-conformal quantile of calibration scores: the ``ceil((n + 1) level)``-th smallest.

    With scores of ``n`` points exchangeable with a new one, the new point's score is at most this value with
    probability at least ``level``. With too few points for that rank, the largest score (no guarantee).

    Examples
    --------
    >>> conformal_quantile(np.arange(1.0, 20.0))   # n = 19: the 18th smallest
    18.0
    >>> conformal_quantile(np.array([]))
    0.0
    """
    scores = np.sort(np.asarray(scores, dtype=float))
    if not len(scores):
        return 0.0
    rank = min(int(np.ceil((len(scores) + 1) * level)), len(scores))
    return float(scores[rank - 1])


def make_surrogate(kind: str, **params: Any) -> MLPSurrogate | SklearnSurrogate:
    """A surrogate by name (:data:`SURROGATES`)."""
    if kind == "mlp":
        return MLPSurrogate(**params)
    if kind in ("gb", "rf"):
        return SklearnSurrogate(kind=kind, **params)
    if kind == "linear":
        params.setdefault("log_target", False)
        return SklearnSurrogate(kind="linear", **params)
    raise HwAwareError(f"unknown surrogate {kind!r}; use one of {', '.join(SURROGATES)}")


# ------------------------------------------------------------------------------------- persistence
def save_surrogate(model: MLPSurrogate | SklearnSurrogate, folder: Path) -> dict[str, Any]:
    """Write a fitted surrogate into ``folder``; returns the JSON description to keep in the predictor card."""
    folder.mkdir(parents=True, exist_ok=True)
    if isinstance(model, MLPSurrogate):
        from safetensors.numpy import save_file

        tensors = {"x_mean": model.x_mean_, "x_scale": model.x_scale_}
        for m, weights in enumerate(model.members_):
            for i, (w, b) in enumerate(weights):
                tensors[f"m{m}.l{i}.w"] = np.ascontiguousarray(w, dtype=np.float32)
                tensors[f"m{m}.l{i}.b"] = np.ascontiguousarray(b, dtype=np.float32)
        save_file(tensors, str(folder / "mlp.safetensors"))
        return {
            "type": "mlp",
            "params": model.get_params(),
            "y_mean": model.y_mean_,
            "y_scale": model.y_scale_,
            "residual_log_q90": model.residual_log_q90_,
            "n_layers_saved": len(model.members_[0]),
            "file": "mlp.safetensors",
        }
    import skops.io as sio

    sio.dump(model, folder / "surrogate.skops")
    return {"type": "sklearn", "params": model.get_params(), "file": "surrogate.skops"}


def load_surrogate(folder: Path, meta: dict[str, Any], n_features: int) -> MLPSurrogate | SklearnSurrogate:
    """Load a surrogate written by :func:`save_surrogate` (no code executes on load).

    ``meta`` is the ``surrogate_file`` entry of ``predictor.json``; ``n_features`` the encoding length, which
    the stored weights must match.
    """
    path = safe_member(folder, meta.get("file"))
    if meta.get("type") == "mlp":
        return _load_mlp(path, meta, n_features)
    if meta.get("type") != "sklearn":
        raise ArtifactError(f"{folder} names a surrogate of type {meta.get('type')!r}; rebuild the predictor")
    model = load_skops(path)
    fitted = getattr(model, "model_", None)
    if not isinstance(model, SklearnSurrogate) or getattr(fitted, "n_features_in_", None) != n_features:
        raise ArtifactError(f"{path} is not a surrogate for this encoding; rebuild the predictor")
    return model


def _load_mlp(path: Path, meta: dict[str, Any], n_features: int) -> MLPSurrogate:
    """The MLP ensemble from safetensors, every weight checked against the layer shapes it must have."""
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    if not path.is_file():
        raise ArtifactError(f"predictor file {path} is missing; rebuild the predictor")
    try:
        tensors = load_file(str(path))
        model = MLPSurrogate(**meta["params"])
        model.x_mean_, model.x_scale_ = tensors["x_mean"], tensors["x_scale"]
        model.y_mean_, model.y_scale_ = float(meta["y_mean"]), float(meta["y_scale"])
        model.residual_log_q90_ = float(meta["residual_log_q90"])
        layers, members = int(meta["n_layers_saved"]), int(meta["params"]["n_members"])
        model.members_ = [[(tensors[f"m{m}.l{i}.w"], tensors[f"m{m}.l{i}.b"]) for i in range(layers)]
                          for m in range(members)]
    except (KeyError, TypeError, ValueError, OSError, SafetensorError) as exc:
        raise ArtifactError(f"predictor file {path} is corrupt or truncated, or does not match predictor.json "
                            f"({type(exc).__name__}); rebuild it") from None
    _check_mlp_shapes(model, n_features, path)
    return model


def _check_mlp_shapes(model: MLPSurrogate, n_features: int, path: Path) -> None:
    """Each member must map ``n_features`` inputs through consistent layers to one output."""
    ok = model.x_mean_.shape == (n_features,) and model.x_scale_.shape == (n_features,) and bool(model.members_)
    for layers in model.members_:
        width = n_features
        for w, b in layers:
            ok = ok and w.ndim == 2 and w.shape[0] == width and b.shape == (w.shape[1],)
            width = w.shape[1] if w.ndim == 2 else -1
        ok = ok and width == 1
    if not ok:
        raise ArtifactError(f"weights in {path} have the wrong shape for this predictor's encoding "
                            f"({n_features} features); rebuild the predictor")


def describe_params(model: BaseEstimator) -> str:
    """The estimator's parameters as compact JSON, for model cards."""
    return json.dumps(model.get_params(), sort_keys=True)
