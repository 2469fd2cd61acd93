"""Random and balanced sampling of architectures, as in the ESM paper (Sec. II-C).

*Random* draws every unit's depth uniformly and independently, so the total block count clusters around the
middle of its range (central limit theorem). *Balanced* splits the total block count range into ``bins``
equal ranges and draws the same number of architectures in each (``n // bins``; the remainder is drawn at
random): within a bin, the total depth is uniform over the bin's integers and the split of that total over
the units is uniform over all valid splits. Block choices are uniform in both strategies.

The same ``(space, n, seed, strategy, bins)`` always gives the same architectures in the same order.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from functools import lru_cache

import numpy as np

from nni_hwaware.errors import HwAwareError, ParameterError
from nni_hwaware.spaces.checks import check_bins, check_count, check_seed, show
from nni_hwaware.spaces.schema import Architecture, SearchSpace, bin_edges

STRATEGIES = ("random", "balanced")
DEFAULT_BINS = 5


def sample_architectures(
    space: SearchSpace,
    n: int,
    *,
    seed: int = 0,
    strategy: str = "random",
    bins: int = DEFAULT_BINS,
    exclude: Iterable[str] = (),
) -> list[Architecture]:
    """Draw ``n`` distinct architectures of a space.

    Parameters
    ----------
    space
        The search space.
    n
        How many architectures.
    seed
        Seed of the random generator; the same arguments give the same list.
    strategy
        ``"random"`` or ``"balanced"``.
    bins
        Number of equal ranges of the total block count (balanced sampling only).
    exclude
        Hashes (:meth:`SearchSpace.arch_hash`) of architectures not to return, e.g. ones already measured.

    Raises
    ------
    ParameterError
        If ``n`` is not in ``0..MAX_SAMPLES`` (100,000), ``seed`` not in ``0..2**63-1``, ``bins`` not a
        positive integer, or ``strategy`` unknown.
    HwAwareError
        If the space has fewer than ``n`` architectures, or too few distinct ones outside ``exclude``.

    Examples
    --------
    >>> from nni_hwaware.spaces import load_space
    >>> archs = sample_architectures(load_space("resnet"), 10, seed=1, strategy="balanced", bins=5)
    >>> len(archs)
    10
    """
    if strategy not in STRATEGIES:
        raise ParameterError(f"strategy must be one of {', '.join(STRATEGIES)}, got {show(strategy)}",
                             parameter="strategy")
    n, seed, bins = check_count(n), check_seed(seed), check_bins(bins)
    _check_room(space, n, exclude)
    rng = np.random.default_rng(seed)
    if strategy == "random":
        totals: list[int | None] = [None] * n
    else:
        lo, hi = space.min_total_depth, space.max_total_depth
        bins = min(bins, hi - lo + 1)
        totals = []
        for b in range(bins):
            totals += [int(rng.choice(_bin_members(lo, hi, bins, b))) for _ in range(n // bins)]
        totals += [None] * (n - len(totals))
        rng.shuffle(totals)  # type: ignore[arg-type]
    seen = set(exclude)
    out: list[Architecture] = []
    for total in totals:
        arch = _draw_distinct(space, rng, lambda t=total: t, seen)
        if arch is None:
            raise HwAwareError(
                f"could not find {n} distinct architectures of {space.name!r} (only {len(out)} found); "
                "ask for fewer"
            )
        out.append(arch)
    return out


def sample_per_bin(
    space: SearchSpace,
    counts: list[int],
    *,
    seed: int = 0,
    exclude: Iterable[str] = (),
) -> list[Architecture]:
    """Draw ``counts[i]`` distinct architectures whose total block count falls in bin ``i`` of ``len(counts)``.

    This is the per-bin draw of the ESM paper's dataset extension (Algorithm 1).
    """
    seed = check_seed(seed)
    if not isinstance(counts, list | tuple) or not counts:
        raise ParameterError(f"counts must be a non-empty list of per-bin counts, got {show(counts)}",
                             parameter="counts")
    counts = [check_count(c, f"counts[{i}]") for i, c in enumerate(counts)]
    check_count(sum(counts), "sum(counts)")
    rng = np.random.default_rng(seed)
    lo, hi = space.min_total_depth, space.max_total_depth
    num_bins = len(counts)
    seen = set(exclude)
    out: list[Architecture] = []
    for b, count in enumerate(counts):
        members = _bin_members(lo, hi, num_bins, b)
        for _ in range(count):
            arch = _draw_distinct(space, rng, lambda m=members: int(rng.choice(m)), seen)
            if arch is None:
                raise HwAwareError(f"bin {b + 1} of {space.name!r} has no more distinct architectures to draw")
            out.append(arch)
    return out


def _check_room(space: SearchSpace, n: int, exclude: Iterable[str]) -> None:
    """Refuse at once to draw more distinct architectures than the space holds (instead of retrying)."""
    if n > space.num_architectures:  # exclude is not counted: it may name architectures of other spaces
        raise HwAwareError(
            f"n={n} is more than the {space.num_architectures} architectures of space {space.name!r}; ask for fewer"
        )


def _draw_distinct(
    space: SearchSpace, rng: np.random.Generator, pick_total: Callable[[], int | None], seen: set[str]
) -> Architecture | None:
    """Draw until an architecture not in ``seen`` comes up (then record it), or give up after 1000 tries."""
    for _attempt in range(1000):
        arch = _draw(space, rng, pick_total())
        key = space.arch_hash(arch)
        if key not in seen:
            seen.add(key)
            return arch
    return None


def _bin_members(lo: int, hi: int, bins: int, b: int) -> list[int]:
    edges = bin_edges(lo, hi, bins)
    members = [t for t in range(lo, hi + 1) if (edges[b] < t or (b == 0 and t == lo)) and t <= edges[b + 1]]
    if not members:  # a bin narrower than one integer: take the nearest total
        members = [min(hi, max(lo, math.ceil(edges[b])))]
    return members


def _draw(space: SearchSpace, rng: np.random.Generator, total: int | None) -> Architecture:
    if total is None:
        depths = [int(rng.integers(u.min_depth, u.max_depth + 1)) for u in space.units]
    else:
        depths = _split_total(space, rng, total)
    arch: Architecture = {}
    if space.global_choices:
        arch["global"] = {k: _pick(rng, v) for k, v in space.global_choices.items()}
    units = []
    for depth in depths:
        unit: dict = {"depth": depth}
        unit.update({k: _pick(rng, v) for k, v in space.unit_choices.items()})
        if space.block_choices:
            unit["blocks"] = [{k: _pick(rng, v) for k, v in space.block_choices.items()} for _ in range(depth)]
        units.append(unit)
    arch["units"] = units
    return arch


def _pick(rng: np.random.Generator, values: tuple) -> object:
    return values[int(rng.integers(len(values)))]


def _split_total(space: SearchSpace, rng: np.random.Generator, total: int) -> list[int]:
    """Uniformly random unit depths with the given sum."""
    bounds = tuple((u.min_depth, u.max_depth) for u in space.units)
    depths = []
    remaining = total
    for i, (lo, hi) in enumerate(bounds):
        rest = bounds[i + 1 :]
        options = [d for d in range(lo, hi + 1) if _count_splits(rest, remaining - d) > 0]
        weights = np.array([_count_splits(rest, remaining - d) for d in options], dtype=float)
        d = int(options[int(rng.choice(len(options), p=weights / weights.sum()))])
        depths.append(d)
        remaining -= d
    return depths


@lru_cache(maxsize=4096)
def _count_splits(bounds: tuple[tuple[int, int], ...], total: int) -> int:
    """Number of ways to write ``total`` as a sum of one integer from each ``(lo, hi)`` range."""
    if not bounds:
        return 1 if total == 0 else 0
    lo, hi = bounds[0]
    return sum(_count_splits(bounds[1:], total - d) for d in range(lo, hi + 1))
