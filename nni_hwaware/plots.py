"""PNG plots of predictors: predicted vs measured, per-bin accuracy per iteration, convergence, comparisons."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def scatter_predicted_vs_measured(measured: Sequence[float], predicted: Sequence[float], path: Path, title: str) -> None:
    """Predicted against measured latency with the +-10 % band."""
    plt = _pyplot()
    y, p = np.asarray(measured), np.asarray(predicted)
    fig, ax = plt.subplots(figsize=(5, 5))
    lo, hi = float(min(y.min(), p.min())), float(max(y.max(), p.max()))
    grid = np.linspace(lo, hi, 2)
    ax.plot(grid, grid, "k-", lw=1, label="ideal")
    ax.fill_between(grid, grid * 0.9, grid * 1.1, color="0.85", label="+-10 %")
    ax.scatter(y, p, s=10, alpha=0.7)
    ax.set_xlabel("measured latency (ms)")
    ax.set_ylabel("predicted latency (ms)")
    ax.set_title(title, fontsize=9)
    ax.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def bin_accuracy_per_iteration(history: Sequence[Mapping[str, Any]], acc_th: float, path: Path) -> None:
    """One line per depth bin: its held-out accuracy at each iteration of the ESM loop."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    num_bins = len(history[0]["bin_accuracy"]) if history else 0
    for b in range(num_bins):
        xs = [h["train_size"] for h in history if h["bin_accuracy"][b] is not None]
        ys = [h["bin_accuracy"][b] for h in history if h["bin_accuracy"][b] is not None]
        ax.plot(xs, ys, marker="o", label=f"bin {b + 1}")
    ax.axhline(acc_th, color="k", ls="--", lw=1, label=f"Acc_TH {acc_th}")
    ax.set_xlabel("training samples")
    ax.set_ylabel("held-out accuracy")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def convergence(curves: Mapping[str, Sequence[tuple[int, float]]], acc_th: float, path: Path, ylabel: str) -> None:
    """Accuracy against training samples, one curve per label."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for label, points in curves.items():
        if points:
            xs, ys = zip(*points)
            ax.plot(xs, ys, marker="o", label=label)
    ax.axhline(acc_th, color="k", ls="--", lw=1, label=f"Acc_TH {acc_th}")
    ax.set_xlabel("training samples (measurements)")
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def pareto_accuracy_latency(points: Sequence[Mapping[str, Any]], path: Path, *, latency_budget: float | None = None,
                            energy_budget: float | None = None, title: str = "") -> None:
    """Accuracy against latency (and energy, when known) of searched architectures, Pareto front marked.

    ``points`` hold ``accuracy``, ``latency_ms``, ``energy_mj`` (or None), ``pareto`` (bool) and ``source``.
    """
    plt = _pyplot()
    with_energy = any(p.get("energy_mj") is not None for p in points)
    fig, axes = plt.subplots(1, 2 if with_energy else 1, figsize=(10 if with_energy else 5.5, 4.5), squeeze=False)
    panels = [("latency_ms", "latency (ms)", latency_budget)]
    if with_energy:
        panels.append(("energy_mj", "energy per inference (mJ)", energy_budget))
    for ax, (key, label, budget) in zip(axes[0], panels):
        for source, marker in (("surrogate", "o"), ("measured", "s")):
            sel = [p for p in points if p.get(key) is not None and p.get("source", "surrogate") == source]
            if sel:
                ax.scatter([p[key] for p in sel], [p["accuracy"] for p in sel], marker=marker, s=28, alpha=0.75,
                           c=["tab:red" if p.get("pareto") else "tab:blue" for p in sel],
                           label=f"{source} latency")
        front = sorted((p for p in points if p.get("pareto") and p.get(key) is not None), key=lambda p: p[key])
        if front:
            ax.step([p[key] for p in front], [p["accuracy"] for p in front], where="post", color="tab:red", lw=1,
                    label="Pareto front (accuracy, latency, energy)")
        if budget is not None:
            ax.axvline(budget, color="k", ls="--", lw=1, label="budget")
        ax.set_xlabel(label)
        ax.set_ylabel("accuracy")
        ax.legend(fontsize=7, loc="lower right")
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
