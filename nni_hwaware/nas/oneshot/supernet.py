"""Supernets of the declarative spaces, built from NNI 3.0's mutable modules, for NNI's one-shot strategies.

:class:`HwSupernet` derives a weight-sharing supernet from a space file, the same file
:func:`~nni_hwaware.spaces.build_module` builds single networks from:

* every unit is an ``nni.nas.nn.pytorch.Repeat`` whose depth is the label ``{unit}_depth``;
* every block position holds a ``LayerChoice`` on its kernel size (label ``{unit}_b{j}_kernel_size``) whose
  candidates are ``LayerChoice`` s on the expansion ratio (``{unit}_b{j}_expand_ratio``): one
  :class:`~nni_hwaware.spaces.builders.Bottleneck` / ``InvertedResidual`` per combination, each with its own
  weights, shared by every architecture that uses it (SPOS, ProxylessNAS);
* ``convnet`` layers are a ``LayerChoice`` on ``global_layer_type`` (plain or depthwise-separable) of
  ``LayerChoice`` s on the layer's kernel size, whose convolutions are ``MutableConv2d`` with the layer's
  padding and the global filter count as mutable arguments (channels are slices of one weight); the classifier
  reads the feature map's channels and size and uses the matching (centred) slice of one weight; every slice is
  scaled for its own fan-in, so each path starts as the He-initialized network the trials train.

The stem and head modules are taken from ``build_module``'s own network, so a frozen sample is the same
network as ``build_module`` builds for its architecture (``tests/test_oneshot_supernet.py`` checks layer by
layer and by parameter count). The labels are those of :class:`~nni_hwaware.spaces.nni_space.HwModelSpace`;
``LayerChoice`` needs string names, so their values are names (``"3"``, ``"0_6667"``):
:meth:`HwSupernet.arch_to_sample` and :meth:`HwSupernet.sample_to_arch` translate.

NNI's strategies run on it unchanged: ``RandomOneShot`` (SPOS) on every space, and ``DARTS``, ``GumbelDARTS``
and ``Proxyless`` on ``resnet`` and ``mobilenetv3``. They mix or swap candidates, which needs every candidate
of a choice to give an output of the same shape; ``convnet``'s kernels, paddings and filter counts change it,
so those strategies are refused on it with one line when they mutate the space.
"""

from __future__ import annotations

import copy
import functools
import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import nni
import torch
from nni.mutable import Categorical, Mutable, ensure_frozen
from nni.nas.nn.pytorch import LayerChoice, ModelSpace, MutableConv2d, Repeat
from nni.nas.space import current_model
from torch import nn

from nni_hwaware.errors import HwAwareError, ParameterError
from nni_hwaware.spaces.builders import (
    BLOCK_TYPES,
    Bottleneck,
    InvertedResidual,
    build_module,
    convnet_spatial_sizes,
    make_divisible,
)
from nni_hwaware.spaces.nni_space import arch_to_sample, block_label, depth_label, nas_choices, sample_to_arch
from nni_hwaware.spaces.schema import Architecture, SearchSpace, load_space

logger = logging.getLogger(__name__)

#: Families with a supernet.
SUPERNET_FAMILIES = ("resnet", "mobilenetv3", "convnet")
#: Families on which differentiable strategies (DARTS, GumbelDARTS, Proxyless) can mix candidates.
DIFFERENTIABLE_FAMILIES = ("resnet", "mobilenetv3")


def choice_name(value: Any) -> str:
    """The ``LayerChoice`` name of a choice value (module names cannot hold dots).

    Examples
    --------
    >>> choice_name(3), choice_name(0.6667), choice_name("dws")
    ('3', '0_6667', 'dws')
    """
    return str(value).replace(".", "_")


def _layer_choice(label: str, values: list[Any], factory: Callable[[Any], nn.Module]) -> nn.Module:
    """``LayerChoice`` of ``factory(value)`` per value; in a frozen context only the chosen candidate is built."""
    sample = current_model()
    if sample is not None and label in sample:
        names = {choice_name(v): v for v in values}
        chosen = sample[label]
        if chosen not in names:
            raise HwAwareError(f"supernet sample: {label} = {chosen!r} is not one of {sorted(names)}")
        return factory(names[chosen])
    return LayerChoice({choice_name(v): factory(v) for v in values}, label=label)


class ConvnetHead(nn.Module):
    """The convnet classifier on whatever feature map arrives: channels and size pick a slice of one weight.

    ``Linear(F * s * s, classes)`` of the frozen network is ``weight[:, :F, o:o + s, o:o + s]`` flattened
    (channels, rows, columns: the order of ``nn.Flatten``), so every filter count and spatial size shares the
    weights. The window is centred (``o = (S - s) // 2`` for the largest size ``S``): a convnet layer's padding
    and kernel grow or shrink its map around the same centre, so a head weight keeps looking at the same part of
    the image whatever the architecture (a corner-aligned window mixes up positions, and the supernet stays at
    chance). The weight is stored at the scale of PyTorch's default ``Linear`` for the space's default
    architecture, and each slice is multiplied by ``sqrt(reference_fan_in / fan_in)`` (as the convolutions,
    see :func:`scaled_mixed_conv`): every slice starts as a default ``Linear`` of its own size, and the large
    ones do not explode.
    """

    def __init__(self, max_channels: int, max_size: int, num_classes: int, reference_fan_in: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num_classes, max_channels, max_size, max_size))
        self.bias = nn.Parameter(torch.zeros(num_classes))
        self.reference_fan_in = int(reference_fan_in)
        bound = self.reference_fan_in ** -0.5
        nn.init.uniform_(self.weight, -bound, bound)

    def sliced(self, channels: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The weight and bias of ``Linear(channels * size * size, classes)``."""
        _, max_channels, max_size, _ = self.weight.shape
        if channels > max_channels or size > max_size:
            raise HwAwareError(f"convnet head: a {channels}x{size}x{size} feature map exceeds the supernet's "
                               f"{max_channels}x{max_size}x{max_size}")
        start = (max_size - size) // 2
        window = self.weight[:, :channels, start:start + size, start:start + size]
        scale = (self.reference_fan_in / (channels * size * size)) ** 0.5
        return window.reshape(self.weight.shape[0], -1) * scale, self.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight, bias = self.sliced(x.shape[1], x.shape[2])
        return nn.functional.linear(torch.flatten(x, 1), weight, bias)

    def materialize(self, channels: int, size: int) -> nn.Sequential:
        """``Flatten`` and the concrete ``Linear`` of this slice (weights copied), as ``build_module`` has them."""
        weight, bias = self.sliced(channels, size)
        linear = nn.Linear(weight.shape[1], weight.shape[0])
        with torch.no_grad():
            linear.weight.copy_(weight)
            linear.bias.copy_(bias)
        return nn.Sequential(nn.Flatten(), linear)


class HwSupernet(ModelSpace):
    """Weight-sharing supernet of a space for NNI 3.0's one-shot strategies (see the module docstring).

    Parameters
    ----------
    space
        Space name or path to a space file (family ``resnet``, ``mobilenetv3`` or ``convnet``).
    input_size, width_mult, num_classes
        Overrides of the space defaults, as for ``build_module``: the supernet is built at this size (train it
        scaled down; a hardware predictor estimates the architecture at its own input size).

    Examples
    --------
    >>> supernet = HwSupernet("mobilenetv3", input_size=32, width_mult=0.25, num_classes=10)
    >>> arch = supernet.space.default_architecture()
    >>> net = supernet.freeze(supernet.arch_to_sample(arch))
    >>> sum(p.numel() for p in net.parameters()) == sum(
    ...     p.numel() for p in build_module(supernet.space, arch, input_size=32, width_mult=0.25,
    ...                                     num_classes=10).parameters())
    True
    """

    def __init__(self, space: str = "mobilenetv3", input_size: int | None = None, width_mult: float | None = None,
                 num_classes: int | None = None) -> None:
        super().__init__()
        self.space: SearchSpace = load_space(space)
        if self.space.family not in SUPERNET_FAMILIES:
            raise ParameterError(f"space {self.space.name!r} (family {self.space.family}) has no supernet; "
                                 f"supernets exist for the families {', '.join(SUPERNET_FAMILIES)}")
        self.input_size = self.space.resolve_input_size(input_size)
        self.width_mult = self.space.width_mult if width_mult is None else float(width_mult)
        reference = build_module(self.space, self.space.default_architecture(), input_size=self.input_size,
                                 width_mult=width_mult, num_classes=num_classes)
        self.num_classes = _last_linear(reference).out_features
        self.string_labels = _string_labels(self.space)
        self._choices = nas_choices(self.space)
        if self.space.family == "convnet":
            self._init_convnet(reference)
        else:
            self._init_blocks(reference)

    # ------------------------------------------------------------------------------------- building
    def _init_blocks(self, reference: nn.Module) -> None:
        """Replace the blocks of ``build_module``'s network by one ``Repeat`` per unit."""
        parent, prefix, suffix = _split_blocks(reference)
        in_ch = _block_input_channels(prefix)
        units: list[nn.Module] = []
        for spec in self.space.units:
            out_ch = make_divisible(spec.options["width"] * self.width_mult)
            units.append(Repeat(self._block_factory(spec, in_ch, out_ch),
                                nni.choice(depth_label(spec.name), list(range(spec.min_depth, spec.max_depth + 1)))))
            in_ch = out_ch
        features = nn.Sequential(*prefix, *units, *suffix)
        if parent is reference:
            self.net = features
        else:
            parent_name = next(n for n, m in reference.named_children() if m is parent)
            setattr(reference, parent_name, features)
            self.net = reference

    def _block_factory(self, spec: Any, unit_in: int, out_ch: int) -> Callable[[int], nn.Module]:
        opts, family = self.space.options, self.space.family

        def block(j: int, kernel: int, ratio: float) -> nn.Module:
            in_ch = unit_in if j == 0 else out_ch
            stride = int(spec.options["stride"]) if j == 0 else 1
            if family == "resnet":
                mid = make_divisible(out_ch / opts["bottleneck_reduction"] * float(ratio))
                return Bottleneck(in_ch, out_ch, mid, int(kernel), stride)
            mid = make_divisible(in_ch * opts["max_expand"] * float(ratio))
            return InvertedResidual(in_ch, out_ch, mid, int(kernel), stride, str(spec.options.get("activation", "relu")),
                                    bool(spec.options.get("se", False)))

        def position(j: int) -> nn.Module:
            kernels = list(self.space.block_choices["kernel_size"])
            ratios = list(self.space.block_choices["expand_ratio"])
            return _layer_choice(
                block_label(spec.name, j + 1, "kernel_size"), kernels,
                lambda k: _layer_choice(block_label(spec.name, j + 1, "expand_ratio"), ratios,
                                        lambda e: block(j, k, e)))

        return position

    def _init_convnet(self, reference: nn.Module) -> None:
        spec = self.space.units[0]
        filters_choice = nni.choice("global_filters", list(self.space.global_choices["filters"]))
        channels = round(filters_choice * self.width_mult)
        scaled = [round(f * self.width_mult) for f in self.space.global_choices["filters"]]
        if min(scaled) < 1:
            raise ParameterError(f"width_mult {self.width_mult:g} leaves the convnet's smallest filter count "
                                 "below 1 channel; use a larger width_mult", parameter="width_mult")
        in_channels = int(self.space.defaults["in_channels"])
        types = list(self.space.global_choices["layer_type"])
        kernels = list(self.space.block_choices["kernel_size"])

        def layer(j: int) -> nn.Module:
            padding = nni.choice(block_label(spec.name, j + 1, "padding"), list(self.space.block_choices["padding"]))
            cin = in_channels if j == 0 else channels

            def conv_layer(kind: str, k: int) -> nn.Module:
                if kind == "dws":
                    return nn.Sequential(MutableConv2d(cin, cin, k, 1, padding, groups=cin),
                                         MutableConv2d(cin, channels, 1), nn.ReLU(inplace=True))
                return nn.Sequential(MutableConv2d(cin, channels, k, 1, padding), nn.ReLU(inplace=True))

            return _layer_choice("global_layer_type", types, lambda kind: _layer_choice(
                block_label(spec.name, j + 1, "kernel_size"), kernels, lambda k: conv_layer(kind, k)))

        self.layers = Repeat(layer, nni.choice(depth_label(spec.name), list(range(spec.min_depth, spec.max_depth + 1))))
        # He init, as the trials train convnets: plain ReLU stacks without batch norm do not learn from
        # PyTorch's default init in a short training (a one-shot strategy's mixed convolutions get theirs from
        # scaled_mixed_conv)
        for module in self.layers.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
                nn.init.zeros_(module.bias)
        frozen = current_model()
        if frozen is not None:  # a frozen network: the concrete classifier of its feature map
            arch = self.sample_to_arch(frozen)
            size = convnet_spatial_sizes(arch, self.input_size)[-1]
            self.head: nn.Module = nn.Sequential(*list(reference.children())[-2:])
            self.head[-1] = nn.Linear(int(ensure_frozen(channels)) * size * size, self.num_classes)
            return
        grow = max(2 * p - k + 1 for p in self.space.block_choices["padding"] for k in kernels)
        self.head = ConvnetHead(max(scaled), self.input_size + spec.max_depth * max(grow, 0), self.num_classes,
                                reference_fan_in=_last_linear(reference).in_features)

    # ------------------------------------------------------------------------------------- samples
    def arch_to_sample(self, arch: Any) -> dict[str, Any]:
        """The supernet sample (``LayerChoice`` labels as names) of an architecture."""
        sample = arch_to_sample(self.space, arch)
        return {k: choice_name(v) if k in self.string_labels else v for k, v in sample.items()}

    def plain_value(self, label: str, value: Any) -> Any:
        """The space's value of a supernet sample's value (a ``LayerChoice`` name is translated back)."""
        if label not in self.string_labels or not isinstance(value, str):
            return value
        names = {choice_name(v): v for v in self._choices[label]}
        if value not in names:
            raise HwAwareError(f"supernet sample: {label} = {value!r} is not one of {sorted(names)}")
        return names[value]

    def sample_to_arch(self, sample: Mapping[str, Any]) -> Architecture:
        """The architecture a supernet sample names (labels of blocks beyond a unit's depth are ignored)."""
        return sample_to_arch(self.space, {k: self.plain_value(k, v) for k, v in sample.items()})

    # ------------------------------------------------------------------------------------ NNI hooks
    def leaf_mutables(self, is_leaf: Callable[[Mutable], bool]) -> Iterable[Any]:
        """NNI's leaf mutables, one per label, remembered while the module tree stays the same.

        A mutated ``convnet`` supernet holds each label hundreds of times (``global_filters`` in every mixed
        convolution), and NNI's ``simplify`` compares every repeat with the first; its evolution simplifies the
        space for every candidate it draws or mutates, which was most of the evolution's time. The repeats are
        compared once, here.
        """
        key = (tuple(id(m) for m in self.modules()), is_leaf)
        cached = getattr(self, "_leaves", None)
        if cached is None or cached[0] != key:
            first: dict[str, Any] = {}
            for mutable in super().leaf_mutables(is_leaf):
                label = getattr(mutable, "label", None)
                if label in first and not mutable.equals(first[label]):
                    raise HwAwareError(f"supernet: two different choices share the label {label!r}")
                first.setdefault(label, mutable)
            cached = self._leaves = (key, list(first.values()))
        return iter(cached[1])

    def freeze(self, sample: Mapping[str, Any]) -> nn.Module:
        """The network of a sample; on a trained supernet it uses the supernet's weights (shared, not copied).

        NNI's own ``freeze`` deep-copies every container on the way down, i.e. the whole supernet with every
        candidate, for each sample; only the chosen path is needed.
        """
        self.validate(dict(sample))
        frozen, _ = _freeze_path(self, dict(sample), root=True)
        if isinstance(getattr(frozen, "head", None), ConvnetHead):
            arch = self.sample_to_arch(sample)
            channels = round(int(arch["global"]["filters"]) * self.width_mult)
            frozen.head = frozen.head.materialize(channels, convnet_spatial_sizes(arch, self.input_size)[-1])
        frozen.architecture = self.sample_to_arch(sample)
        return frozen

    def extra_oneshot_hooks(self, strategy: Any) -> list[Any]:
        """Called by NNI when a one-shot strategy mutates this space (NNI's copy of the space given to the
        experiment): refuse strategies it cannot run, and point a hardware penalty at this copy."""
        from nni.nas.strategy import DARTS

        if isinstance(strategy, DARTS) and self.space.family not in DIFFERENTIABLE_FAMILIES:
            raise HwAwareError(
                f"{type(strategy).__name__} mixes the candidates of each choice, which must then give outputs of "
                f"one shape; in {self.space.name!r} kernels, paddings and filter counts change it: use "
                f"RandomOneShot (SPOS), or a {'/'.join(DIFFERENTIABLE_FAMILIES)} space")
        penalty = getattr(strategy, "penalty", None)
        if callable(getattr(penalty, "bind", None)):
            penalty.bind(self)
        return [scaled_mixed_conv] if self.space.family == "convnet" else []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.space.family == "convnet":
            return self.head(self.layers(x))
        return self.net(x)


# ------------------------------------------------------------------------------------------ helpers
def scaled_mixed_conv(module: nn.Module, name: str, memo: dict[str, Any],
                      mutate_kwargs: dict[str, Any]) -> nn.Module | None:
    """NNI mutation hook: a ``ScaledMixedConv2d`` in place of each ``MutableConv2d`` of the convnet (see
    :func:`_scaled_mixed_conv_class`)."""
    return _scaled_mixed_conv_class().mutate(module, name, memo, mutate_kwargs)


@functools.lru_cache(maxsize=1)
def _scaled_mixed_conv_class() -> type:
    """:class:`ScaledMixedConv2d`, made on first use (NNI's one-shot modules import Lightning)."""
    from nni.nas.oneshot.pytorch.supermodule.operation import MixedConv2d

    class ScaledMixedConv2d(MixedConv2d):
        """NNI's ``MixedConv2d`` whose every slice is He-scaled for its own fan-in.

        The convnet has no batch norm; NNI builds one weight at the largest filter count and kernel with
        PyTorch's default init, and a slice of it keeps that one scale whatever its own fan-in, so deep paths
        explode or vanish (losses of 10-100, a supernet at chance). Here the weight is He-initialized for its
        full fan-in and each slice is multiplied by ``sqrt(full_fan_in / fan_in)``, in training and in the frozen
        network alike, so every path starts as the He-initialized network the trials train.
        """

        def __init__(self, module_kwargs: dict[str, Any]) -> None:
            super().__init__(module_kwargs)
            self.full_fan_in = self.weight[0].numel()
            with torch.no_grad():
                self.weight.normal_(0.0, (2.0 / self.full_fan_in) ** 0.5)
                if self.bias is not None:
                    self.bias.zero_()

        def simplify(self, is_leaf: Callable[[Mutable], bool] | None = None) -> dict[str, Any]:
            """NNI's ``simplify``, remembered: NNI's path sampling calls it for every mixed convolution at every
            step (most of a step's sampling time on ``convnet``), and a convolution's labels never change."""
            if is_leaf is not None:
                return super().simplify(is_leaf)
            if getattr(self, "_labels", None) is None:
                self._labels = super().simplify()
            return dict(self._labels)

        def _freeze_weight_impl(self, *args: Any, **kwargs: Any) -> Any:
            params = super()._freeze_weight_impl(*args, **kwargs)
            weight = params["weight"]
            return {**params, "weight": weight * (self.full_fan_in / weight[0].numel()) ** 0.5}

    ScaledMixedConv2d.__qualname__ = ScaledMixedConv2d.__name__
    return ScaledMixedConv2d


def _string_labels(space: SearchSpace) -> frozenset[str]:
    """The labels realised as ``LayerChoice`` (their sample values are names, not the space's values)."""
    labels = {label for label in nas_choices(space)
              if label.endswith(("_kernel_size", "_expand_ratio")) and not label.startswith("global_")}
    if space.family == "convnet":
        labels.add("global_layer_type")
    return frozenset(labels)


def _freeze_path(module: nn.Module, sample: dict[str, Any], root: bool = False) -> tuple[nn.Module, bool]:
    """``module`` with its mutable descendants frozen; containers on the way are shallow copies."""
    if not root and isinstance(module, Mutable):
        return module.freeze(sample), True
    replaced = {}
    for name, child in module.named_children():
        new, changed = _freeze_path(child, sample)
        if changed:
            replaced[name] = new
    if not replaced and not root:
        return module, False
    clone = copy.copy(module)  # shares parameters and buffers; only the children differ
    clone._modules = {**module._modules, **replaced}
    return clone, True


def _last_linear(module: nn.Module) -> nn.Linear:
    return [m for m in module.modules() if isinstance(m, nn.Linear)][-1]


def _split_blocks(reference: nn.Module) -> tuple[nn.Module, list[nn.Module], list[nn.Module]]:
    """The ``Sequential`` holding ``build_module``'s blocks, and the modules before and after them in it."""
    for module in reference.modules():
        children = list(module.children())
        if isinstance(module, nn.Sequential) and any(isinstance(c, BLOCK_TYPES) for c in children):
            first = next(i for i, c in enumerate(children) if isinstance(c, BLOCK_TYPES))
            last = max(i for i, c in enumerate(children) if isinstance(c, BLOCK_TYPES))
            return module, children[:first], children[last + 1:]
    raise HwAwareError("build_module's network has no blocks to make choices of")


def _block_input_channels(prefix: list[nn.Module]) -> int:
    """Channels the stem gives the first block."""
    convs = [m for part in prefix for m in part.modules() if isinstance(m, nn.Conv2d)]
    return convs[-1].out_channels


def categorical_labels(model: nn.Module) -> dict[str, list[Any]]:
    """Every label of a (possibly mutated) supernet and its values, in NNI's order."""
    return {label: list(m.values) for label, m in model.simplify().items() if isinstance(m, Categorical)}
