"""Real-world CNNs in plain torch (torchvision does not import beside torch 2.13) and their measured Jetson Nano
latency/energy as published.

The definitions follow the standard ones the reference measurements used (torchvision VGG16/19, ResNet50,
MobileNetV2, ShuffleNetV2 x1.0, EfficientNet-B4, EfficientNetV2-M; Cadene ``pretrainedmodels`` Xception;
milesial Pytorch-UNet ``unet_carvana``: 3 input channels, 2 classes, transposed-conv upsampling); parameter
counts match the published ones exactly (checked in the tests and the benchmark). No weights are needed.
Blocks that are the same as a search space's use its builder (:mod:`nni_hwaware.spaces.builders`: VGG's
conv-ReLU layers, ResNet's bottleneck, MobileNetV2's inverted residual); the others are defined here.

Reference measurements (:data:`REFERENCE`) are copied from ``data/real_data/real_models.csv`` of
https://github.com/iCAS-Lab/NAS-Performance-Modeling (commit 0adb0ec3c5bd5ea774097c483a07b32155c8f9c8),
measured by the dataset's authors with the same pipeline as the dataset: ONNX exported from the torch model at
1x3x224x224, converted to a TensorRT engine on the Jetson Nano, batch 1, power mode 0 (``nvpmodel -m 0``,
MAXN 10 W), latency = mean of 100 timed ``execute_async`` calls including the host<->device copies
(``jetson_scripts/latency.py``), energy = sum of the 1 Hz tegrastats POM_5V_GPU readings over a 60 s run
divided by the number of inferences (``jetson_scripts/Power.py``). The engine precision is not stated: the
conversion script (``newonnx2trt.py``) is not in the repository.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from nni_hwaware.spaces.builders import Bottleneck, ConvLayer, InvertedResidual, make_divisible

# name: (latency_ms, gpu_energy_mj, total_macs, total_params) from real_models.csv (see module docstring)
REFERENCE: dict[str, tuple[float, float, int, int]] = {
    "VGG16": (149.7444606, 639.8, 15483821032, 138357544),
    "VGG19": (177.0509386, 784.0616883, 19646923752, 143667240),
    "ShuffleNetV2": (11.15772963, 27.70930427, 144925172, 2278604),
    "UNet": (277.7229548, 1357.976526, 41820001792, 31037698),
    "ResNet50": (58.58263254, 250.4044044, 4089238376, 25557032),
    "MobileNetV2": (15.85832834, 50.75198518, 300809384, 3504872),
    "Xception": (86.10314369, 353.9229672, 4552934600, 22855952),
    "EfficientNetB4": (82.41468668, 298.4234483, 1503865672, 19341616),
    "EfficientNetV2M": (145.0359297, 572.2902439, 5362568052, 54139356),
}
REFERENCE_SOURCE = ("iCAS-Lab/NAS-Performance-Modeling data/real_data/real_models.csv "
                    "(commit 0adb0ec3c5bd5ea774097c483a07b32155c8f9c8); rows VGG16, VGG19, Shufflenet_v2, UNet, "
                    "ResNet50, MobileNetV2, Xception, EfficientNet_v1 (= torchvision efficientnet_b4), "
                    "EfficientNet_v2 (= torchvision efficientnet_v2_m); TensorRT on Jetson Nano, batch 1, "
                    "input 224x224, power mode 0, precision not stated")


def _cbr(cin: int, cout: int, k: int, stride: int = 1, groups: int = 1, act: type[nn.Module] | None = nn.ReLU,
         eps: float = 1e-5) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, k, stride, (k - 1) // 2, groups=groups, bias=False),
                               nn.BatchNorm2d(cout, eps=eps)]
    if act is not None:
        layers.append(act(inplace=True) if act in (nn.ReLU, nn.ReLU6, nn.SiLU) else act())
    return nn.Sequential(*layers)


# --------------------------------------------------------------------------------------------------- VGG
def vgg(depth: int = 16, num_classes: int = 1000) -> nn.Module:
    """torchvision VGG16/VGG19 (no batch-norm)."""
    cfg = {16: [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
           19: [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M",
                512, 512, 512, 512, "M"]}[depth]
    layers: list[nn.Module] = []
    cin = 3
    for v in cfg:
        if v == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers.append(ConvLayer(cin, int(v), 3, 1, depthwise_separable=False))
            cin = int(v)
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(7), nn.Flatten(),
                         nn.Linear(512 * 49, 4096), nn.ReLU(True), nn.Dropout(),
                         nn.Linear(4096, 4096), nn.ReLU(True), nn.Dropout(), nn.Linear(4096, num_classes))


# ------------------------------------------------------------------------------------------------ ResNet
def resnet50(num_classes: int = 1000) -> nn.Module:
    """torchvision ResNet50 (stride on the 3x3 conv, v1.5)."""
    layers: list[nn.Module] = [_cbr(3, 64, 7, 2), nn.MaxPool2d(3, 2, 1)]
    cin = 64
    for width, blocks, stride in ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)):
        for i in range(blocks):
            layers.append(Bottleneck(cin, width * 4, width, 3, stride if i == 0 else 1))
            cin = width * 4
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2048, num_classes))


# ------------------------------------------------------------------------------------------- MobileNetV2
def mobilenet_v2(num_classes: int = 1000) -> nn.Module:
    """torchvision MobileNetV2 (width 1.0)."""
    layers: list[nn.Module] = [_cbr(3, 32, 3, 2, act=nn.ReLU6)]
    cin = 32
    for t, c, n, s in ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
                       (6, 160, 3, 2), (6, 320, 1, 1)):
        for i in range(n):
            # without SE; no expansion conv where t == 1 (the builder leaves it out when mid == in)
            layers.append(InvertedResidual(cin, c, cin * t, 3, s if i == 0 else 1, "relu6", se=False))
            cin = c
    layers += [_cbr(cin, 1280, 1, act=nn.ReLU6), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.2),
               nn.Linear(1280, num_classes)]
    return nn.Sequential(*layers)


# ------------------------------------------------------------------------------------------ ShuffleNetV2
class _ShuffleUnit(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        bf = cout // 2
        self.stride = stride
        if stride > 1:
            self.branch1 = nn.Sequential(_cbr(cin, cin, 3, stride, groups=cin, act=None), _cbr(cin, bf, 1))
        self.branch2 = nn.Sequential(_cbr(cin if stride > 1 else bf, bf, 1),
                                     _cbr(bf, bf, 3, stride, groups=bf, act=None), _cbr(bf, bf, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 1:
            x1, x2 = x.chunk(2, dim=1)
            out = torch.cat((x1, self.branch2(x2)), dim=1)
        else:
            out = torch.cat((self.branch1(x), self.branch2(x)), dim=1)
        b, c, h, w = out.shape
        return out.view(b, 2, c // 2, h, w).transpose(1, 2).reshape(b, c, h, w)


class _MeanPoolFc(nn.Module):
    def __init__(self, cin: int, num_classes: int) -> None:
        super().__init__()
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.mean([2, 3]))


def shufflenet_v2(num_classes: int = 1000) -> nn.Module:
    """torchvision ShuffleNetV2 x1.0."""
    layers: list[nn.Module] = [_cbr(3, 24, 3, 2), nn.MaxPool2d(3, 2, 1)]
    cin = 24
    for repeats, cout in ((4, 116), (8, 232), (4, 464)):
        for i in range(repeats):
            layers.append(_ShuffleUnit(cin, cout, 2 if i == 0 else 1))
            cin = cout
    return nn.Sequential(*layers, _cbr(cin, 1024, 1), _MeanPoolFc(1024, num_classes))


# ---------------------------------------------------------------------------------------- EfficientNets
class _SqueezeExcite(nn.Module):
    def __init__(self, channels: int, squeeze: int) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Conv2d(channels, squeeze, 1), nn.Conv2d(squeeze, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.fc2(nn.functional.silu(self.fc1(nn.functional.adaptive_avg_pool2d(x, 1))))
        return x * torch.sigmoid(s)


class _MBConv(nn.Module):
    def __init__(self, cin: int, cout: int, k: int, stride: int, expand: int, fused: bool, eps: float) -> None:
        super().__init__()
        hidden = make_divisible(cin * expand)
        if fused:
            layers = ([_cbr(cin, hidden, k, stride, act=nn.SiLU, eps=eps), _cbr(hidden, cout, 1, act=None, eps=eps)]
                      if expand != 1 else [_cbr(cin, cout, k, stride, act=nn.SiLU, eps=eps)])
        else:
            layers = [_cbr(cin, hidden, 1, act=nn.SiLU, eps=eps)] if expand != 1 else []
            layers += [_cbr(hidden, hidden, k, stride, groups=hidden, act=nn.SiLU, eps=eps),
                       _SqueezeExcite(hidden, max(1, cin // 4)), _cbr(hidden, cout, 1, act=None, eps=eps)]
        self.body = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x) if self.residual else self.body(x)


def _efficientnet(stages: list[tuple[bool, int, int, int, int, int, int]], stem: int, last: int,
                  num_classes: int, eps: float) -> nn.Module:
    layers: list[nn.Module] = [_cbr(3, stem, 3, 2, act=nn.SiLU, eps=eps)]
    cin = stem
    for fused, expand, k, stride, _, cout, repeats in stages:
        for i in range(repeats):
            layers.append(_MBConv(cin, cout, k, stride if i == 0 else 1, expand, fused, eps))
            cin = cout
    layers += [_cbr(cin, last, 1, act=nn.SiLU, eps=eps), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.4),
               nn.Linear(last, num_classes)]
    return nn.Sequential(*layers)


def efficientnet_b(width: float = 1.0, depth: float = 1.0, num_classes: int = 1000) -> nn.Module:
    """torchvision EfficientNet-B* (B0: 1.0/1.0, B4: 1.4/1.8)."""
    base = [(1, 3, 1, 32, 16, 1), (6, 3, 2, 16, 24, 2), (6, 5, 2, 24, 40, 2), (6, 3, 2, 40, 80, 3),
            (6, 5, 1, 80, 112, 3), (6, 5, 2, 112, 192, 4), (6, 3, 1, 192, 320, 1)]
    stages = [(False, e, k, s, make_divisible(i * width), make_divisible(o * width), int(math.ceil(n * depth)))
              for e, k, s, i, o, n in base]
    return _efficientnet(stages, make_divisible(32 * width), 4 * make_divisible(320 * width), num_classes, 1e-5)


def efficientnet_v2_m(num_classes: int = 1000) -> nn.Module:
    """torchvision EfficientNetV2-M."""
    stages = [(True, 1, 3, 1, 24, 24, 3), (True, 4, 3, 2, 24, 48, 5), (True, 4, 3, 2, 48, 80, 5),
              (False, 4, 3, 2, 80, 160, 7), (False, 6, 3, 1, 160, 176, 14), (False, 6, 3, 2, 176, 304, 18),
              (False, 6, 3, 1, 304, 512, 5)]
    return _efficientnet(stages, 24, 1280, num_classes, 1e-3)


# ---------------------------------------------------------------------------------------------- Xception
class _SepConv(nn.Sequential):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__(nn.Conv2d(cin, cin, 3, 1, 1, groups=cin, bias=False), nn.Conv2d(cin, cout, 1, bias=False))


class _XBlock(nn.Module):
    def __init__(self, cin: int, cout: int, reps: int, stride: int, start_relu: bool, grow_first: bool) -> None:
        super().__init__()
        self.skip = _cbr(cin, cout, 1, stride, act=None) if cout != cin or stride != 1 else None
        rep: list[nn.Module] = []
        ch = cin
        if grow_first:
            rep += [nn.ReLU(inplace=True), _SepConv(cin, cout), nn.BatchNorm2d(cout)]
            ch = cout
        for _ in range(reps - 1):
            rep += [nn.ReLU(inplace=True), _SepConv(ch, ch), nn.BatchNorm2d(ch)]
        if not grow_first:
            rep += [nn.ReLU(inplace=True), _SepConv(cin, cout), nn.BatchNorm2d(cout)]
        if not start_relu:
            rep = rep[1:]
        else:
            rep[0] = nn.ReLU(inplace=False)
        if stride != 1:
            rep.append(nn.MaxPool2d(3, stride, 1))
        self.rep = nn.Sequential(*rep)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.rep(x) + (x if self.skip is None else self.skip(x))


def xception(num_classes: int = 1000) -> nn.Module:
    """Xception as in Cadene's ``pretrainedmodels`` (the reference measurement's source)."""
    def conv_bn_relu(cin: int, cout: int, stride: int) -> list[nn.Module]:
        return [nn.Conv2d(cin, cout, 3, stride, 0, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]

    layers = [*conv_bn_relu(3, 32, 2), *conv_bn_relu(32, 64, 1),
              _XBlock(64, 128, 2, 2, False, True), _XBlock(128, 256, 2, 2, True, True),
              _XBlock(256, 728, 2, 2, True, True), *[_XBlock(728, 728, 3, 1, True, True) for _ in range(8)],
              _XBlock(728, 1024, 2, 2, True, False),
              _SepConv(1024, 1536), nn.BatchNorm2d(1536), nn.ReLU(inplace=True),
              _SepConv(1536, 2048), nn.BatchNorm2d(2048), nn.ReLU(inplace=True),
              nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2048, num_classes)]
    return nn.Sequential(*layers)


# -------------------------------------------------------------------------------------------------- UNet
def _double_conv(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(_cbr(cin, cout, 3), _cbr(cout, cout, 3))


class UNet(nn.Module):
    """milesial Pytorch-UNet (``bilinear=False``: transposed-conv upsampling)."""

    def __init__(self, in_channels: int = 3, num_classes: int = 2) -> None:
        super().__init__()
        self.inc = _double_conv(in_channels, 64)
        self.downs = nn.ModuleList([nn.Sequential(nn.MaxPool2d(2), _double_conv(c, 2 * c)) for c in (64, 128, 256, 512)])
        self.ups = nn.ModuleList([nn.ConvTranspose2d(c, c // 2, 2, stride=2) for c in (1024, 512, 256, 128)])
        self.up_convs = nn.ModuleList([_double_conv(c, c // 2) for c in (1024, 512, 256, 128)])
        self.outc = nn.Conv2d(64, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = [self.inc(x)]
        for down in self.downs:
            skips.append(down(skips[-1]))
        x = skips.pop()
        for up, conv in zip(self.ups, self.up_convs):
            x = conv(torch.cat([skips.pop(), up(x)], dim=1))
        return self.outc(x)


ZOO: dict[str, Callable[[], nn.Module]] = {
    "VGG16": lambda: vgg(16),
    "VGG19": lambda: vgg(19),
    "ResNet50": resnet50,
    "MobileNetV2": mobilenet_v2,
    "ShuffleNetV2": shufflenet_v2,
    "EfficientNetB0": lambda: efficientnet_b(1.0, 1.0),
    "EfficientNetB4": lambda: efficientnet_b(1.4, 1.8),
    "EfficientNetV2M": efficientnet_v2_m,
    "Xception": xception,
    "UNet": UNet,
}
INPUT_SHAPE = (1, 3, 224, 224)


def build(name: str) -> nn.Module:
    """Build one zoo model in eval mode (random weights)."""
    return ZOO[name]().eval()


def param_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def reference_graphs() -> tuple[list[str], list, np.ndarray, np.ndarray]:
    """The zoo networks with a published measurement: names, per-layer graphs, latency (ms), energy (mJ)."""
    from nni_hwaware.jetson.graph import layers_from_module

    names = [name for name in ZOO if name in REFERENCE]
    graphs = [layers_from_module(build(name), INPUT_SHAPE) for name in names]
    latency = np.array([REFERENCE[name][0] for name in names])
    energy = np.array([REFERENCE[name][1] for name in names])
    return names, graphs, latency, energy
