"""Architecture encodings of the ESM paper (Fig. 7), generic over any space file.

Every block of a unit is described by its *features*: the space's block choices plus its unit choices (a unit
choice such as DenseNet's kernel size applies to every block of the unit). Global choices, when a space has
them, are one-hot encoded in front of every encoding.

``onehot``
    per unit and block position up to the maximum depth, one-hot of each feature (all zeros past the depth).
``feature``
    per unit and block position, the numeric value of each feature, zero-padded to the maximum depth.
``statistical``
    per unit, the depth and the mean and standard deviation of each feature over its blocks (as HAT).
``fc``
    feature count: per unit, how many blocks take each value of each feature.
``fcc``
    feature combination count (ESM's proposal): per unit, how many blocks take each combination of feature
    values.

Examples
--------
>>> from nni_hwaware.spaces import load_space
>>> enc = Encoder(load_space("resnet"), "fcc")
>>> enc.length
36
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from operator import itemgetter
from typing import Any

import numpy as np

from nni_hwaware.errors import HwAwareError
from nni_hwaware.spaces.schema import Architecture, SearchSpace

ENCODINGS = ("onehot", "feature", "statistical", "fc", "fcc")


class Encoder:
    """Turns architectures of one space into fixed-length vectors.

    Parameters
    ----------
    space
        The search space.
    kind
        One of :data:`ENCODINGS`.
    """

    def __init__(self, space: SearchSpace, kind: str) -> None:
        if kind not in ENCODINGS:
            raise HwAwareError(f"unknown encoding {kind!r}; use one of {', '.join(ENCODINGS)}")
        self.space = space
        self.kind = kind
        # Block features: block choices then unit choices, each with its value -> index map.
        self.features: list[tuple[str, tuple[Any, ...]]] = list(space.block_choices.items()) + list(
            space.unit_choices.items()
        )
        self._index = [{v: i for i, v in enumerate(values)} for _, values in self.features]
        self._numeric = [
            np.array([float(v) if not isinstance(v, str) else float(i + 1) for i, v in enumerate(values)])
            for _, values in self.features
        ]
        self._sizes = [len(values) for _, values in self.features]
        self._combos = int(np.prod(self._sizes)) if self._sizes else 1
        # Strides to turn a tuple of value indices into one combination index.
        self._combo_strides = [int(np.prod(self._sizes[i + 1 :])) for i in range(len(self._sizes))]
        self._globals = list(space.global_choices.items())
        self._global_index = [{v: i for i, v in enumerate(values)} for _, values in self._globals]
        self._global_len = sum(len(v) for _, v in self._globals)
        self.length = self._global_len + sum(self._unit_length(u.max_depth) for u in space.units)
        # Lookup tables of the batched count encodings (fc, fcc): feature values -> positions in a unit segment.
        value_lists = [values for _, values in self.features]
        self._combo_position = {
            combo: i for i, combo in enumerate(itertools.product(*value_lists))
        }
        offsets = np.cumsum([0] + self._sizes[:-1]) if self._sizes else []
        self._count_position = [
            {v: int(offsets[f]) + i for i, v in enumerate(values)} for f, values in enumerate(value_lists)
        ]
        block_keys = list(space.block_choices)
        self._block_values = (
            (lambda b, g=itemgetter(*block_keys): (g(b),)) if len(block_keys) == 1 else itemgetter(*block_keys)
        ) if block_keys else None
        self._unit_keys = list(space.unit_choices)

    def _unit_length(self, max_depth: int) -> int:
        n_feat = len(self.features)
        if self.kind == "onehot":
            return max_depth * sum(self._sizes)
        if self.kind == "feature":
            return max_depth * n_feat
        if self.kind == "statistical":
            return 1 + 2 * n_feat
        if self.kind == "fc":
            return sum(self._sizes) if self._sizes else 1
        return self._combos  # fcc

    def feature_names(self) -> list[str]:
        """A name for every position of the vector."""
        names = [f"global_{k}={v}" for k, values in self._globals for v in values]
        for unit in self.space.units:
            u = unit.name
            if self.kind == "onehot":
                names += [f"{u}_b{j}_{k}={v}" for j in range(1, unit.max_depth + 1) for k, vs in self.features for v in vs]
            elif self.kind == "feature":
                names += [f"{u}_b{j}_{k}" for j in range(1, unit.max_depth + 1) for k, _ in self.features]
            elif self.kind == "statistical":
                names += [f"{u}_depth"] + [f"{u}_{k}_{s}" for k, _ in self.features for s in ("mean", "std")]
            elif self.kind == "fc":
                names += [f"{u}_count_{k}={v}" for k, vs in self.features for v in vs] or [f"{u}_depth"]
            else:
                combos = itertools.product(*[vs for _, vs in self.features])
                keys = [k for k, _ in self.features]
                names += [f"{u}_count_" + ",".join(f"{k}={v}" for k, v in zip(keys, c)) for c in combos]
        return names

    def _block_indices(self, unit: dict[str, Any]) -> list[list[int]]:
        """Per block, the value index of every feature."""
        unit_part = [self._index[len(self.space.block_choices) + i][unit[k]] for i, k in enumerate(self.space.unit_choices)]
        nb = len(self.space.block_choices)
        if nb:
            return [[self._index[i][b[k]] for i, k in enumerate(self.space.block_choices)] + unit_part for b in unit["blocks"]]
        return [list(unit_part) for _ in range(int(unit["depth"]))]

    def encode_one(self, arch: Architecture) -> np.ndarray:
        """Encode one architecture that is already canonical (use :meth:`encode` for raw input)."""
        out = np.zeros(self.length, dtype=np.float32)
        pos = 0
        for (name, _), index in zip(self._globals, self._global_index):
            out[pos + index[arch["global"][name]]] = 1.0
            pos += len(index)
        for spec, unit in zip(self.space.units, arch["units"]):
            width = self._unit_length(spec.max_depth)
            blocks = self._block_indices(unit)
            seg = out[pos : pos + width]
            if self.kind == "fcc":
                for idx in blocks:
                    seg[sum(i * s for i, s in zip(idx, self._combo_strides))] += 1.0
            elif self.kind == "fc":
                if not self._sizes:
                    seg[0] = len(blocks)
                offsets = np.cumsum([0] + self._sizes[:-1])
                for idx in blocks:
                    for f, i in enumerate(idx):
                        seg[offsets[f] + i] += 1.0
            elif self.kind == "onehot":
                per_block = sum(self._sizes)
                offsets = np.cumsum([0] + self._sizes[:-1])
                for j, idx in enumerate(blocks):
                    for f, i in enumerate(idx):
                        seg[j * per_block + offsets[f] + i] = 1.0
            elif self.kind == "feature":
                nf = len(self.features)
                for j, idx in enumerate(blocks):
                    for f, i in enumerate(idx):
                        seg[j * nf + f] = self._numeric[f][i]
            else:  # statistical
                seg[0] = len(blocks)
                if blocks:
                    values = np.array([[self._numeric[f][i] for f, i in enumerate(idx)] for idx in blocks])
                    seg[1::2] = values.mean(axis=0)
                    seg[2::2] = values.std(axis=0)
            pos += width
        return out

    def encode(self, archs: Sequence[Any], *, validate: bool = True) -> np.ndarray:
        """Encode architectures (dicts or JSON strings) into a ``(n, length)`` float32 matrix."""
        if validate:
            archs = [self.space.validate(a) for a in archs]
        if not archs:
            return np.zeros((0, self.length), dtype=np.float32)
        if self.kind in ("fc", "fcc") and self._sizes:
            return self._encode_counts(archs)
        return np.stack([self.encode_one(a) for a in archs])

    def _encode_counts(self, archs: Sequence[Architecture]) -> np.ndarray:
        """Batched fc/fcc: collect the flat position of every count and add them up with one bincount."""
        positions: list[int] = []
        widths = [self._unit_length(u.max_depth) for u in self.space.units]
        combo, count_pos = self._combo_position, self._count_position
        block_values, unit_keys = self._block_values, self._unit_keys
        fcc = self.kind == "fcc"
        for row, arch in enumerate(archs):
            pos = row * self.length
            if self._globals:
                for (name, _), index, start in zip(self._globals, self._global_index, self._global_offsets()):
                    positions.append(pos + start + index[arch["global"][name]])
            pos += self._global_len
            for unit, width in zip(arch["units"], widths):
                unit_values = tuple(unit[k] for k in unit_keys)
                if block_values is not None:
                    block_tuples = [block_values(b) + unit_values for b in unit["blocks"]]
                else:
                    block_tuples = [unit_values] * int(unit["depth"])
                if fcc:
                    positions.extend(pos + combo[t] for t in block_tuples)
                else:
                    positions.extend(pos + count_pos[f][v] for t in block_tuples for f, v in enumerate(t))
                pos += width
        counts = np.bincount(np.asarray(positions, dtype=np.int64), minlength=len(archs) * self.length)
        return counts.reshape(len(archs), self.length).astype(np.float32)

    def _global_offsets(self) -> list[int]:
        return list(np.cumsum([0] + [len(v) for _, v in self._globals[:-1]]))

    def describe(self) -> dict[str, Any]:
        """Encoding name, space and vector length."""
        return {"encoding": self.kind, "space": self.space.name, "length": self.length}


def encoding_lengths(space: SearchSpace) -> dict[str, int]:
    """The vector length of every encoding for a space."""
    return {kind: Encoder(space, kind).length for kind in ENCODINGS}
