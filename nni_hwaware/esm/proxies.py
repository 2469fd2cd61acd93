"""Cheap latency proxies of an architecture: MACs, and a lookup table of blocks measured in isolation.

Both become one feature column for a ``linear`` surrogate: the MACs proxy fits ``latency = a * MACs + b``; the
lookup table sums the latencies of an architecture's blocks, each measured alone on the device with its real
input shape, and the linear fit is the ESM paper's bias correction (it also absorbs stem and head).

Shapes and MACs come from a forward pass on PyTorch's ``meta`` device: no weights are allocated, so counting
a 224x224 ResNet takes milliseconds.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Sequence

import numpy as np
import torch
from torch import nn

from nni_hwaware.errors import HwAwareError
from nni_hwaware.spaces.builders import BLOCK_TYPES
from nni_hwaware.spaces.counting import meta_input, meta_model, restore_forward
from nni_hwaware.spaces.schema import Architecture, SearchSpace


def block_instances(
    space: SearchSpace, arch: Architecture, input_size: int, width_mult: float | None = None
) -> list[tuple[str, nn.Module, tuple[int, ...]]]:
    """Every block of an architecture with a structural key and the input shape it sees.

    The key is a hash of the block's module structure and input shape, so two blocks with the same key have
    the same latency in isolation.
    """
    model = meta_model(space, arch, input_size, width_mult)
    found: list[tuple[str, nn.Module, tuple[int, ...]]] = []

    def pre_hook(mod: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
        shape = tuple(int(d) for d in inputs[0].shape)
        key = hashlib.sha256(f"{mod!r}|{shape}".encode()).hexdigest()[:16]
        found.append((key, mod, shape))

    handles = [m.register_forward_pre_hook(pre_hook) for m in model.modules() if isinstance(m, BLOCK_TYPES)]
    try:
        with torch.no_grad():
            model(meta_input(space, input_size))
    finally:
        for h in handles:
            h.remove()
    return found


def covering_architectures(space: SearchSpace) -> list[Architecture]:
    """Architectures whose blocks together include every distinct block the space can have.

    Every unit at maximum depth with every block taking the same choices, once per combination of block
    and unit choices (and global choices): a block's structure depends only on its choices, its unit and its
    position, so these cover every (unit, position, choices) triple.
    """
    import itertools

    def combos(choices: dict) -> list[dict]:
        keys = list(choices)
        return [dict(zip(keys, values)) for values in itertools.product(*choices.values())] or [{}]

    archs = []
    for g in combos(dict(space.global_choices)):
        for u in combos(dict(space.unit_choices)):
            for b in combos(dict(space.block_choices)):
                arch: Architecture = {"global": g} if space.global_choices else {}
                arch["units"] = [
                    {"depth": spec.max_depth, **u, **({"blocks": [dict(b)] * spec.max_depth} if b else {})}
                    for spec in space.units
                ]
                archs.append(space.validate(arch))
    return archs


class LookupTable:
    """Latency of every distinct block measured alone; an architecture's feature is the sum over its blocks.

    Parameters
    ----------
    space
        The search space.
    input_size, width_mult
        The setting the blocks are measured in.
    table
        Block key -> latency in ms (empty until :meth:`measure_blocks`).
    """

    def __init__(
        self, space: SearchSpace, input_size: int, width_mult: float | None = None, table: dict[str, float] | None = None
    ) -> None:
        self.space = space
        self.input_size = input_size
        self.width_mult = width_mult
        self.table: dict[str, float] = dict(table or {})

    def measure_blocks(
        self,
        archs: Sequence[Architecture],
        measure_onnx: Callable[[bytes], float],
        progress: Callable[[int, int], None] | None = None,
    ) -> int:
        """Measure every block of ``archs`` not yet in the table; returns how many were measured.

        ``measure_onnx`` takes ONNX bytes of one block and returns its latency in ms.
        """
        from nni_hwaware.spaces.export import module_to_onnx_bytes

        pending: dict[str, tuple[nn.Module, tuple[int, ...]]] = {}
        for arch in archs:
            for key, module, shape in block_instances(self.space, arch, self.input_size, self.width_mult):
                if key not in self.table and key not in pending:
                    pending[key] = (module, shape)
        for i, (key, (meta_module, shape)) in enumerate(pending.items()):
            module = restore_forward(meta_module.to_empty(device="cpu"))
            with torch.no_grad():
                for p in module.parameters():
                    p.normal_(0, 0.02)
                for name, buf in module.named_buffers():
                    if name.endswith("running_var"):
                        buf.fill_(1.0)
                    elif buf.is_floating_point():
                        buf.zero_()
            self.table[key] = float(measure_onnx(module_to_onnx_bytes(module, torch.randn(*shape))))
            if progress:
                progress(i + 1, len(pending))
        return len(pending)

    def features(self, archs: Iterable[Architecture]) -> np.ndarray:
        """The summed block latency of each architecture, as a ``(n, 1)`` matrix."""
        rows = []
        for arch in archs:
            total = 0.0
            for key, module, shape in block_instances(self.space, arch, self.input_size, self.width_mult):
                if key not in self.table:
                    raise HwAwareError(
                        f"lookup table has no entry for block {type(module).__name__} with input {shape}; "
                        "rebuild it covering this architecture"
                    )
                total += self.table[key]
            rows.append([total])
        return np.array(rows, dtype=float)

    def to_json(self) -> str:
        """The table as JSON."""
        return json.dumps({"input_size": self.input_size, "width_mult": self.width_mult, "table": self.table})
