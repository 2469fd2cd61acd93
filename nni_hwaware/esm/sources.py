"""Where the ESM loop's architectures come from: sampled from the search space, or drawn from a measured pool.

The loop (:func:`nni_hwaware.esm.loop.train_evaluate_extend`) asks a source for a held-out set, an initial
training set and, at each extension, more architectures per bin of total block count (Algorithm 1) or at
random. :class:`SpaceSampler` samples the space (``nni-hwaware build``: each architecture is then measured);
:class:`MeasuredPool` draws from architectures measured already, and is its own measure function (``compare``
replays the loop on the store's measurements, and tests use a public dataset).

Examples
--------
>>> from nni_hwaware.spaces import load_space
>>> space = load_space("convnet")
>>> pool = MeasuredPool(space, SpaceSampler(space).draw(30, strategy="random", bins=3, seed=0, exclude=set()),
...                     [float(i + 1) for i in range(30)])
>>> test = pool.held_out(6, bins=3, seed=0)
>>> len(test), len(pool.draw(10, strategy="balanced", bins=3, seed=1, exclude={space.arch_hash(a) for a in test}))
(6, 10)
>>> float(pool.measure(pool.architectures[:1])[0])
1.0
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

import numpy as np

from nni_hwaware.errors import HwAwareError
from nni_hwaware.spaces.sampling import sample_architectures, sample_per_bin
from nni_hwaware.spaces.schema import Architecture, SearchSpace


class ArchitectureSource(ABC):
    """Architectures for the ESM loop. Draws are distinct and never in ``exclude`` (architecture hashes)."""

    def __init__(self, space: SearchSpace) -> None:
        self.space = space

    @abstractmethod
    def held_out(self, count: int, *, bins: int, seed: int) -> list[Architecture]:
        """The held-out test set, spread over the ``bins`` bins of total block count."""

    @abstractmethod
    def draw(self, count: int, *, strategy: str, bins: int, seed: int, exclude: set[str]) -> list[Architecture]:
        """``count`` architectures, ``"random"`` or ``"balanced"`` over the bins (fewer when none are left)."""

    @abstractmethod
    def draw_per_bin(self, counts: Sequence[int], *, seed: int, exclude: set[str]) -> list[Architecture]:
        """``counts[i]`` architectures of bin ``i`` (Algorithm 1's extension; fewer where a bin runs out)."""


class SpaceSampler(ArchitectureSource):
    """Sample the search space (:func:`~nni_hwaware.spaces.sampling.sample_architectures`); each draw is new."""

    def held_out(self, count: int, *, bins: int, seed: int) -> list[Architecture]:
        return sample_architectures(self.space, count, seed=seed, strategy="balanced", bins=bins)

    def draw(self, count: int, *, strategy: str, bins: int, seed: int, exclude: set[str]) -> list[Architecture]:
        return sample_architectures(self.space, count, seed=seed, strategy=strategy, bins=bins, exclude=exclude)

    def draw_per_bin(self, counts: Sequence[int], *, seed: int, exclude: set[str]) -> list[Architecture]:
        return sample_per_bin(self.space, list(counts), seed=seed, exclude=exclude)


class MeasuredPool(ArchitectureSource):
    """Architectures measured already, with their latencies; :meth:`measure` looks them up.

    Parameters
    ----------
    space
        Their search space.
    archs, latency_ms
        The pool (an architecture listed twice keeps its first latency).
    held_out
        Indices into ``archs`` of a fixed held-out set (default: :meth:`held_out` picks one, balanced over bins).
    """

    def __init__(self, space: SearchSpace, archs: Sequence[Architecture], latency_ms: Sequence[float], *,
                 held_out: Sequence[int] | None = None) -> None:
        super().__init__(space)
        if len(archs) != len(latency_ms):
            raise HwAwareError(f"{len(archs)} architectures but {len(latency_ms)} latencies")
        self._latency: dict[str, float] = {}
        self.architectures: list[Architecture] = []
        for arch, y in zip(archs, latency_ms):
            h = space.arch_hash(arch)
            if h not in self._latency:
                self._latency[h] = float(y)
                self.architectures.append(arch)
        self._hashes = [space.arch_hash(a) for a in self.architectures]
        self._fixed = None if held_out is None else [archs[int(i)] for i in held_out]

    def measure(self, archs: Sequence[Architecture]) -> np.ndarray:
        """The pool's latencies of ``archs`` (all must be in the pool)."""
        try:
            return np.asarray([self._latency[self.space.arch_hash(a)] for a in archs], dtype=float)
        except KeyError:
            raise HwAwareError("an architecture asked for is not in the measured pool") from None

    def held_out(self, count: int, *, bins: int, seed: int) -> list[Architecture]:
        if self._fixed is not None:
            return list(self._fixed)
        test_idx, _ = split_test(self.space, self.architectures, count, bins, seed)
        return [self.architectures[i] for i in test_idx]

    def _bin_members(self, bins: int, exclude: set[str], rng: np.random.Generator) -> list[list[int]]:
        """Indices of the pool's architectures not in ``exclude``, per bin, each bin in random order."""
        members: list[list[int]] = [[] for _ in range(bins)]
        for i, arch in enumerate(self.architectures):
            if self._hashes[i] not in exclude:
                members[self.space.depth_bin(self.space.total_depth(arch), bins)].append(i)
        return [list(rng.permutation(m)) for m in members]

    def draw(self, count: int, *, strategy: str, bins: int, seed: int, exclude: set[str]) -> list[Architecture]:
        rng = np.random.default_rng(seed)
        chosen: list[int] = []
        if strategy == "balanced":  # an equal share per bin, the rest at random where bins run short
            members = self._bin_members(bins, exclude, rng)
            for b in range(bins):
                chosen += members[b][: count // bins + (1 if b < count % bins else 0)]
        taken = set(chosen)
        rest = [i for i in rng.permutation(len(self.architectures))
                if i not in taken and self._hashes[i] not in exclude]
        chosen += rest[: count - len(chosen)]
        return [self.architectures[int(i)] for i in chosen]

    def draw_per_bin(self, counts: Sequence[int], *, seed: int, exclude: set[str]) -> list[Architecture]:
        members = self._bin_members(len(counts), exclude, np.random.default_rng(seed))
        return [self.architectures[int(i)] for b, n in enumerate(counts) for i in members[b][:n]]


def split_test(space: SearchSpace, archs: Sequence[Architecture], test_size: int, bins: int,
               seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices of a held-out set spread evenly over depth bins, and of the rest (in random order)."""
    rng = np.random.default_rng(seed)
    bin_of = np.array([space.depth_bin(space.total_depth(a), bins) for a in archs])
    per_bin = {b: list(rng.permutation(np.flatnonzero(bin_of == b))) for b in range(bins)}
    test: list[int] = []
    while len(test) < test_size and any(per_bin.values()):
        for b in range(bins):
            if per_bin[b] and len(test) < test_size:
                test.append(int(per_bin[b].pop()))
    test_idx = np.array(sorted(test), dtype=int)
    train_idx = np.setdiff1d(np.arange(len(archs)), test_idx)
    return test_idx, rng.permutation(train_idx)
