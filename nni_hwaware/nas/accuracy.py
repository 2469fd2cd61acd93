"""Offline accuracy estimates for search trials: short training on a small dataset, or a data-free proxy.

Nothing downloads:

* ``digits`` (default): scikit-learn's handwritten digits (1,797 8x8 images shipped inside scikit-learn),
  upscaled to the training input size and repeated over the input channels;
* ``images:FOLDER``: any folder of images with one sub-folder per class (``FOLDER/cat/*.png``, ...);
* ``synflow``: the data-free SynFlow score (Tanaka et al. 2020) of the network at initialisation, in log10;
  a ranking proxy, not an accuracy.

A trial on a 2-core CPU cannot train a 1024-filter network at 50x50, so the network is trained *scaled down*:
channels times ``width_mult`` and the smallest input the architecture accepts (at least ``min_input``). The
hardware numbers of a trial are always those of the full-size architecture; this is a cheap ranking signal.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from nni_hwaware.errors import HwAwareError
from nni_hwaware.spaces import build_module
from nni_hwaware.spaces.schema import Architecture, SearchSpace

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff")


@dataclass
class AccuracySettings:
    """How a trial estimates accuracy.

    Parameters
    ----------
    method
        ``"digits"``, ``"images:FOLDER"`` or ``"synflow"``.
    epochs, batch_size, lr
        Training schedule (Adam).
    max_train
        Training images used at most (a random subset; 0 = all).
    width_mult
        Channel multiplier of the trained network.
    min_input
        Smallest training input size.
    seed
        Seed of the split, the subset and the initialisation.
    """

    method: str = "digits"
    epochs: int = 1
    batch_size: int = 32
    lr: float = 0.003
    max_train: int = 600
    width_mult: float = 0.0625
    min_input: int = 12
    seed: int = 0

    def check(self) -> None:
        if self.method not in ("digits", "synflow") and not self.method.startswith("images:"):
            raise HwAwareError(f"accuracy must be digits, synflow or images:FOLDER, got {self.method!r}")
        if self.epochs < 1 or self.batch_size < 1:
            raise HwAwareError("epochs and batch size must be at least 1")
        if not 0 < self.width_mult <= 1:
            raise HwAwareError(f"the training width multiplier must be in (0, 1], got {self.width_mult}")


def training_input_size(space: SearchSpace, arch: Architecture, min_input: int) -> int:
    """The smallest input size (at least ``min_input``) the architecture accepts."""
    if space.family != "convnet":
        return max(min_input, 32)
    from nni_hwaware.spaces.builders import convnet_spatial_sizes

    size = min_input
    while min(convnet_spatial_sizes(arch, size)) < 1:
        size += 1
    return size


def load_digits_split(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """scikit-learn's digits as float images in [0, 1] (N, 1, 8, 8), split 75/25 with a fixed seed."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    data = load_digits()
    X = (data.images / 16.0).astype(np.float32)[:, None]
    return tuple(train_test_split(X, data.target.astype(np.int64), test_size=0.25, random_state=seed,
                                  stratify=data.target))  # type: ignore[return-value]


def load_image_folder(folder: str | Path, size: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Images of ``folder/<class>/*`` as RGB float arrays (N, 3, size, size), split 80/20 per class."""
    from PIL import Image

    root = Path(folder)
    classes = sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
    if len(classes) < 2:
        raise HwAwareError(f"{folder} must hold one sub-folder of images per class (at least two classes)")
    rng = np.random.default_rng(seed)
    parts: list[list[Any]] = [[], [], [], []]
    for label, name in enumerate(classes):
        files = sorted(p for p in (root / name).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if len(files) < 2:
            raise HwAwareError(f"class folder {root / name} needs at least two images")
        images = []
        for path in files:
            try:
                with Image.open(path) as img:
                    images.append(np.asarray(img.convert("RGB").resize((size, size)), dtype=np.float32) / 255.0)
            except OSError as exc:
                raise HwAwareError(f"cannot read image {path} ({exc})") from None
        order = rng.permutation(len(images))
        n_test = max(1, len(images) // 5)
        for i, j in enumerate(order):
            k = 2 if i < n_test else 0
            parts[k].append(images[j].transpose(2, 0, 1))
            parts[k + 1].append(label)
    X_tr, y_tr, X_te, y_te = (np.asarray(p) for p in parts)
    return X_tr, X_te, y_tr.astype(np.int64), y_te.astype(np.int64)


def _prepare(X: np.ndarray, size: int, channels: int) -> torch.Tensor:
    t = torch.from_numpy(np.ascontiguousarray(X))
    if t.shape[-1] != size:
        t = nn.functional.interpolate(t, size=(size, size), mode="bilinear", align_corners=False)
    if t.shape[1] != channels:
        t = t.mean(dim=1, keepdim=True).expand(-1, channels, -1, -1).contiguous()
    return t


def _he_init(model: nn.Module) -> None:
    # PyTorch's default init shrinks the signal layer by layer; deep plain ReLU stacks (no batch norm, as in
    # the convnet space) then do not learn at all in one short epoch. He init keeps the signal's scale.
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
            if module.bias is not None:
                nn.init.zeros_(module.bias)


def synflow_score(model: nn.Module, input_shape: tuple[int, ...]) -> float:
    """log10 of the SynFlow saliency sum of a network at initialisation (data-free, one forward/backward)."""
    model = model.double().eval()
    with torch.no_grad():
        signs = {name: p.sign() for name, p in model.state_dict().items() if p.is_floating_point()}
        for p in model.state_dict().values():
            if p.is_floating_point():
                p.abs_()
    model.zero_grad()
    out = model(torch.ones(input_shape, dtype=torch.float64))
    torch.sum(out).backward()
    score = sum(float((p * p.grad).abs().sum().detach()) for p in model.parameters() if p.grad is not None)
    with torch.no_grad():
        for name, p in model.state_dict().items():
            if name in signs:
                p.mul_(signs[name])
    return math.log10(score) if score > 0 else float("-inf")


def estimate_accuracy(space: SearchSpace, arch: Architecture, settings: AccuracySettings) -> dict[str, Any]:
    """Accuracy (or the SynFlow proxy) of an architecture, with what was done to get it.

    Returns ``{"default": value, "accuracy": test accuracy or None, "accuracy_method": ..., "train_input_size",
    "train_width_mult", "train_seconds"}``.

    Examples
    --------
    >>> from nni_hwaware.spaces import load_space
    >>> space = load_space("convnet")
    >>> out = estimate_accuracy(space, space.default_architecture(), AccuracySettings(method="synflow"))
    >>> out["accuracy"] is None and out["default"] > 0
    True
    """
    import time

    settings.check()
    torch.manual_seed(settings.seed)
    size = training_input_size(space, arch, settings.min_input)
    channels = int(space.defaults["in_channels"])
    t0 = time.perf_counter()
    info: dict[str, Any] = {"accuracy_method": settings.method.split(":")[0], "train_input_size": size,
                            "train_width_mult": settings.width_mult}
    if settings.method == "synflow":
        model = build_module(space, arch, input_size=size, width_mult=settings.width_mult)
        value = synflow_score(model, (1, channels, size, size))
        return {"default": value, "accuracy": None, **info, "train_seconds": time.perf_counter() - t0}
    if settings.method == "digits":
        X_tr, X_te, y_tr, y_te = load_digits_split(settings.seed)
    else:
        X_tr, X_te, y_tr, y_te = load_image_folder(settings.method.split(":", 1)[1], size, settings.seed)
    classes = int(max(y_tr.max(), y_te.max())) + 1
    rng = np.random.default_rng(settings.seed)
    if settings.max_train and len(y_tr) > settings.max_train:
        keep = rng.choice(len(y_tr), settings.max_train, replace=False)
        X_tr, y_tr = X_tr[keep], y_tr[keep]
    x_train, x_test = _prepare(X_tr, size, channels), _prepare(X_te, size, channels)
    y_train, y_test = torch.from_numpy(y_tr), torch.from_numpy(y_te)
    model = build_module(space, arch, input_size=size, width_mult=settings.width_mult, num_classes=classes)
    _he_init(model)
    optimizer = torch.optim.Adam(model.parameters(), lr=settings.lr)
    loss_fn = nn.CrossEntropyLoss()
    generator = torch.Generator().manual_seed(settings.seed)
    model.train()
    for _ in range(settings.epochs):
        order = torch.randperm(len(y_train), generator=generator)
        for start in range(0, len(order), settings.batch_size):
            idx = order[start:start + settings.batch_size]
            optimizer.zero_grad()
            loss = loss_fn(model(x_train[idx]), y_train[idx])
            loss.backward()
            optimizer.step()
    model.eval()
    with torch.no_grad():
        pred = torch.cat([model(x_test[i:i + 256]).argmax(1) for i in range(0, len(y_test), 256)])
    accuracy = float((pred == y_test).float().mean())
    return {"default": accuracy, "accuracy": accuracy, **info, "train_seconds": time.perf_counter() - t0}
