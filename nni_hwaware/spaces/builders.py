"""Concrete PyTorch modules for one architecture of a space, one builder per macro-architecture family.

The builders read every fixed detail (widths, strides, stem, growth rate) from the space file, so a new space
of an existing family is only a new YAML file.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from nni_hwaware.errors import HwAwareError
from nni_hwaware.spaces.checks import check_int, check_num_classes, check_width_mult
from nni_hwaware.spaces.limits import MAX_ACTIVATION_ELEMENTS, MAX_PARAMETERS

if TYPE_CHECKING:
    from nni_hwaware.spaces.schema import Architecture, SearchSpace


def make_divisible(value: float, divisor: int = 8) -> int:
    """Round a channel count to the nearest multiple of ``divisor`` without losing more than 10 %."""
    new = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if new < 0.9 * value:
        new += divisor
    return new


def _scaled(width: float, width_mult: float) -> int:
    return make_divisible(width * width_mult)


# --------------------------------------------------------------------------------------------- resnet
class Bottleneck(nn.Module):
    """ResNet bottleneck: 1x1 reduce, kxk (stride), 1x1 expand, with identity or projection shortcut."""

    def __init__(self, in_ch: int, out_ch: int, mid_ch: int, kernel_size: int, stride: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(in_ch, mid_ch, 1, bias=False),
            nn.BatchNorm2d(mid_ch),
            nn.ReLU(inplace=True),
            nn.Conv2d(mid_ch, mid_ch, kernel_size, stride, kernel_size // 2, bias=False),
            nn.BatchNorm2d(mid_ch),
            nn.ReLU(inplace=True),
            nn.Conv2d(mid_ch, out_ch, 1, bias=False),
            nn.BatchNorm2d(out_ch),
        )
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_ch != out_ch:
            self.shortcut = nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, stride, bias=False), nn.BatchNorm2d(out_ch))
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.body(x) + self.shortcut(x))


def _build_resnet(space: SearchSpace, arch: Architecture, width_mult: float, num_classes: int) -> nn.Module:
    opts = space.options
    stem = _scaled(opts["stem_channels"], width_mult)
    layers: list[nn.Module] = [
        nn.Conv2d(int(space.defaults["in_channels"]), stem, 7, 2, 3, bias=False),
        nn.BatchNorm2d(stem),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(3, 2, 1),
    ]
    in_ch = stem
    for spec, unit in zip(space.units, arch["units"]):
        out_ch = _scaled(spec.options["width"], width_mult)
        for j, block in enumerate(unit["blocks"]):
            mid = make_divisible(out_ch / opts["bottleneck_reduction"] * float(block["expand_ratio"]))
            stride = int(spec.options["stride"]) if j == 0 else 1
            layers.append(Bottleneck(in_ch, out_ch, mid, int(block["kernel_size"]), stride))
            in_ch = out_ch
    return _Classifier(nn.Sequential(*layers), in_ch, num_classes)


# ---------------------------------------------------------------------------------------- mobilenetv3
class SqueezeExcite(nn.Module):
    """Squeeze-and-excite with hard-sigmoid gating, as in MobileNetV3."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        squeezed = make_divisible(channels / 4)
        self.fc = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(channels, squeezed, 1),
            nn.ReLU(inplace=True),
            nn.Conv2d(squeezed, channels, 1),
            nn.Hardsigmoid(inplace=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.fc(x)


def _activation(name: str) -> nn.Module:
    """``hswish``, ``relu6`` (MobileNetV2, in the Jetson zoo) or ReLU (anything else)."""
    if name == "hswish":
        return nn.Hardswish(inplace=True)
    return nn.ReLU6(inplace=True) if name == "relu6" else nn.ReLU(inplace=True)


class InvertedResidual(nn.Module):
    """MobileNetV3 block: 1x1 expand, depthwise kxk (stride), optional SE, 1x1 project, residual if possible."""

    def __init__(
        self, in_ch: int, out_ch: int, mid_ch: int, kernel_size: int, stride: int, activation: str, se: bool
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        if mid_ch != in_ch:
            layers += [nn.Conv2d(in_ch, mid_ch, 1, bias=False), nn.BatchNorm2d(mid_ch), _activation(activation)]
        layers += [
            nn.Conv2d(mid_ch, mid_ch, kernel_size, stride, kernel_size // 2, groups=mid_ch, bias=False),
            nn.BatchNorm2d(mid_ch),
            _activation(activation),
        ]
        if se:
            layers.append(SqueezeExcite(mid_ch))
        layers += [nn.Conv2d(mid_ch, out_ch, 1, bias=False), nn.BatchNorm2d(out_ch)]
        self.body = nn.Sequential(*layers)
        self.residual = stride == 1 and in_ch == out_ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.body(x)
        return out + x if self.residual else out


def _build_mobilenetv3(space: SearchSpace, arch: Architecture, width_mult: float, num_classes: int) -> nn.Module:
    opts = space.options
    stem = _scaled(opts["stem_channels"], width_mult)
    layers: list[nn.Module] = [
        nn.Conv2d(int(space.defaults["in_channels"]), stem, 3, 2, 1, bias=False),
        nn.BatchNorm2d(stem),
        nn.Hardswish(inplace=True),
    ]
    in_ch = stem
    for spec, unit in zip(space.units, arch["units"]):
        out_ch = _scaled(spec.options["width"], width_mult)
        for j, block in enumerate(unit["blocks"]):
            mid = make_divisible(in_ch * opts["max_expand"] * float(block["expand_ratio"]))
            stride = int(spec.options["stride"]) if j == 0 else 1
            layers.append(
                InvertedResidual(
                    in_ch, out_ch, mid, int(block["kernel_size"]), stride,
                    str(spec.options.get("activation", "relu")), bool(spec.options.get("se", False)),
                )
            )
            in_ch = out_ch
    head_ch = make_divisible(in_ch * opts["head_expand"])
    last = _scaled(opts["last_channels"], max(1.0, width_mult))
    layers += [nn.Conv2d(in_ch, head_ch, 1, bias=False), nn.BatchNorm2d(head_ch), nn.Hardswish(inplace=True)]
    features = nn.Sequential(*layers)
    head = nn.Sequential(
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(head_ch, last),
        nn.Hardswish(inplace=True),
        nn.Linear(last, num_classes),
    )
    return nn.Sequential(features, head)


# ------------------------------------------------------------------------------------------- densenet
class DenseLayer(nn.Module):
    """DenseNet-BC layer: BN-ReLU-conv1x1(bn_size*growth)-BN-ReLU-conv kxk(growth), concatenated to the input."""

    def __init__(self, in_ch: int, growth: int, bn_size: int, kernel_size: int) -> None:
        super().__init__()
        inter = bn_size * growth
        self.body = nn.Sequential(
            nn.BatchNorm2d(in_ch),
            nn.ReLU(inplace=True),
            nn.Conv2d(in_ch, inter, 1, bias=False),
            nn.BatchNorm2d(inter),
            nn.ReLU(inplace=True),
            nn.Conv2d(inter, growth, kernel_size, 1, kernel_size // 2, bias=False),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, self.body(x)], 1)


def _build_densenet(space: SearchSpace, arch: Architecture, width_mult: float, num_classes: int) -> nn.Module:
    opts = space.options
    growth = max(1, round(opts["growth_rate"] * width_mult))
    ch = _scaled(opts["stem_channels"], width_mult)
    layers: list[nn.Module] = [
        nn.Conv2d(int(space.defaults["in_channels"]), ch, 7, 2, 3, bias=False),
        nn.BatchNorm2d(ch),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(3, 2, 1),
    ]
    for i, unit in enumerate(arch["units"]):
        for _ in range(int(unit["depth"])):
            layers.append(DenseLayer(ch, growth, int(opts["bn_size"]), int(unit["kernel_size"])))
            ch += growth
        if i < len(arch["units"]) - 1:
            out = max(1, int(ch * float(opts["compression"])))
            layers += [
                nn.BatchNorm2d(ch),
                nn.ReLU(inplace=True),
                nn.Conv2d(ch, out, 1, bias=False),
                nn.AvgPool2d(2, 2, ceil_mode=True),
            ]
            ch = out
    layers += [nn.BatchNorm2d(ch), nn.ReLU(inplace=True)]
    return _Classifier(nn.Sequential(*layers), ch, num_classes)


# -------------------------------------------------------------------------------------------- convnet
def convnet_spatial_sizes(arch: Architecture, input_size: int) -> list[int]:
    """Spatial size after each layer of a convnet architecture: ``W - k + 2*pad + 1`` (stride 1)."""
    sizes, w = [], input_size
    for block in arch["units"][0]["blocks"]:
        w = w - int(block["kernel_size"]) + 2 * int(block["padding"]) + 1
        sizes.append(w)
    return sizes


class ConvLayer(nn.Sequential):
    """One layer of the convnet family: Conv2d(k, pad) or depthwise Conv2d(k, pad) + pointwise 1x1, then ReLU."""

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int, padding: int, depthwise_separable: bool) -> None:
        if depthwise_separable:
            convs = [nn.Conv2d(in_ch, in_ch, kernel_size, 1, padding, groups=in_ch), nn.Conv2d(in_ch, out_ch, 1)]
        else:
            convs = [nn.Conv2d(in_ch, out_ch, kernel_size, 1, padding)]
        super().__init__(*convs, nn.ReLU(inplace=True))


def _build_convnet(
    space: SearchSpace, arch: Architecture, width_mult: float, num_classes: int, input_size: int
) -> nn.Module:
    filters = max(1, round(int(arch["global"]["filters"]) * width_mult))
    dws = arch["global"]["layer_type"] == "dws"
    sizes = convnet_spatial_sizes(arch, input_size)
    if min(sizes) < 1:
        raise HwAwareError(
            f"this convnet architecture shrinks a {input_size}x{input_size} input below 1x1 "
            f"(sizes {sizes}); use a larger input_size or smaller kernels / larger padding",
            mentions=("input_size",),
        )
    layers: list[nn.Module] = []
    in_ch = int(space.defaults["in_channels"])
    for block in arch["units"][0]["blocks"]:
        layers.append(ConvLayer(in_ch, filters, int(block["kernel_size"]), int(block["padding"]), dws))
        in_ch = filters
    layers += [nn.Flatten(), nn.Linear(filters * sizes[-1] * sizes[-1], num_classes)]
    return nn.Sequential(*layers)


class _Classifier(nn.Module):
    """Features, global average pooling and a linear classifier."""

    def __init__(self, features: nn.Module, channels: int, num_classes: int) -> None:
        super().__init__()
        self.features = features
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


# The module classes that are exactly one block of a unit (lookup tables measure them in isolation).
BLOCK_TYPES: tuple[type[nn.Module], ...] = (Bottleneck, InvertedResidual, DenseLayer, ConvLayer)

_BUILDERS: dict[str, Callable[..., nn.Module]] = {
    "resnet": _build_resnet,
    "mobilenetv3": _build_mobilenetv3,
    "densenet": _build_densenet,
}

def build_module(
    space: SearchSpace,
    arch: Any,
    *,
    input_size: int | None = None,
    width_mult: float | None = None,
    num_classes: int | None = None,
) -> nn.Module:
    """Build the concrete ``torch.nn.Module`` of one architecture, in eval mode.

    Parameters
    ----------
    space
        The search space.
    arch
        An architecture of the space (validated here).
    input_size, width_mult, num_classes
        Overrides of the space defaults. ``input_size`` matters for the convnet family, whose classifier
        depends on the final spatial size.

    Raises
    ------
    HwAwareError
        If the architecture is not one of the space, or the network would exceed the size caps of
        :mod:`~nni_hwaware.spaces.limits` (checked on the meta device before anything is allocated).
    ParameterError
        If an override is out of range (``input_size`` 1..4096, ``width_mult`` in (0, 16], ``num_classes``
        1..100000).

    Examples
    --------
    >>> from nni_hwaware.spaces import load_space
    >>> space = load_space("resnet")
    >>> model = build_module(space, space.default_architecture(), num_classes=10)
    """
    arch = space.validate(arch)
    wm = space.width_mult if width_mult is None else check_width_mult(width_mult)
    classes = int(space.defaults["num_classes"]) if num_classes is None else check_num_classes(num_classes)
    size = space.resolve_input_size(input_size)
    check_network_size(space, arch, input_size=size, width_mult=wm, num_classes=classes)
    return _build(space, arch, wm, classes, size).eval()


def _build(space: SearchSpace, arch: Architecture, wm: float, classes: int, size: int) -> nn.Module:
    if space.family == "convnet":
        return _build_convnet(space, arch, wm, classes, size)
    return _BUILDERS[space.family](space, arch, wm, classes)


def check_network_size(
    space: SearchSpace, arch: Architecture, *, input_size: int, width_mult: float, num_classes: int
) -> None:
    """Refuse a network over the caps of :mod:`~nni_hwaware.spaces.limits` before allocating it.

    The network is built on PyTorch's ``meta`` device (shapes, no memory) and run on a meta input: its
    parameter count must be at most ``MAX_PARAMETERS``, its largest activation at most
    ``MAX_ACTIVATION_ELEMENTS`` values, and no activation may shrink to zero size. Nothing is checked when
    the caller itself builds on the meta device, since then nothing is allocated either.

    Raises
    ------
    HwAwareError
        If the network is too large for the caps or collapses to 0x0 at this input size.
    """
    if torch.empty(0).device.type == "meta":
        return
    with torch.device("meta"):
        model = _build(space, arch, width_mult, num_classes, input_size)
    setting = f"input_size {input_size}, width_mult {width_mult:g}"
    params = sum(p.numel() for p in model.parameters())
    if params > MAX_PARAMETERS:
        raise HwAwareError(
            f"this architecture has {params:,} parameters at {setting}; at most {MAX_PARAMETERS:,} can be "
            "built (an ONNX file holds 2 GB): use a smaller width_mult or a smaller architecture"
        )
    largest, empty = _activation_sizes(model, int(space.defaults["in_channels"]), input_size)
    if empty:
        raise HwAwareError(
            f"input_size {input_size} is too small for this architecture: {empty} shrinks it to nothing; "
            "use a larger input_size"
        )
    if largest > MAX_ACTIVATION_ELEMENTS:
        raise HwAwareError(
            f"this architecture's largest activation has {largest:,} values at {setting}; at most "
            f"{MAX_ACTIVATION_ELEMENTS:,} (1 GiB) can be built: use a smaller input_size or width_mult"
        )


def _activation_sizes(model: nn.Module, in_channels: int, input_size: int) -> tuple[int, str]:
    """Largest output (in values) of any module of a meta model, and the first module with an empty output."""
    largest, empty = 0, ""

    def hook(module: nn.Module, _inputs: Any, output: Any) -> None:
        nonlocal largest, empty
        if isinstance(output, torch.Tensor):
            largest = max(largest, output.numel())
            if output.numel() == 0 and not empty:
                empty = type(module).__name__

    skip_batch_norm(model)
    handles = [m.register_forward_hook(hook) for m in model.modules()]
    try:
        with torch.no_grad():
            model(torch.empty(1, in_channels, input_size, input_size, device="meta"))
    except RuntimeError as exc:  # a layer whose input already shrank below its kernel
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise HwAwareError(
            f"input_size {input_size} is too small for this architecture ({reason[:200]}); use a larger input_size"
        ) from None
    finally:
        for handle in handles:
            handle.remove()
    return largest, empty


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


def skip_batch_norm(model: nn.Module) -> nn.Module:
    """Make every batch norm of ``model`` the identity, for shape passes on the ``meta`` device.

    Batch norm keeps shapes and costs no MACs, but is slow on the meta device. The identity is an instance
    attribute, so ``repr()`` and the module structure stay the same (``spaces.counting.restore_forward`` undoes it).
    """
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.forward = _identity  # type: ignore[method-assign]
    return model


def example_input(space: SearchSpace, input_size: int | None = None, batch: int = 1) -> torch.Tensor:
    """A random input tensor of the right shape for a space."""
    size = space.resolve_input_size(input_size)
    batch = check_int(batch, "batch", 1, 1024, "a positive integer")
    return torch.randn(batch, int(space.defaults["in_channels"]), size, size)
