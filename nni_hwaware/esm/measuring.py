"""Measurements for the ESM loop through a quality-controlled campaign and the measurement store.

:func:`store_backed_measure` is the ``measure`` of :func:`~nni_hwaware.esm.loop.run_esm` in ``nni-hwaware
build``: it measures only what the store lacks, so a rerun of the same build measures nothing twice.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import numpy as np

from nni_hwaware.errors import HwAwareError
from nni_hwaware.esm.loop import MeasureFn
from nni_hwaware.spaces.schema import Architecture, SearchSpace


def store_backed_measure(
    space: SearchSpace,
    measurer: Any,
    store: Any,
    *,
    input_size: int,
    qc_every: int = 50,
    label: str = "measure",
    show_progress: bool = True,
) -> MeasureFn:
    """A measure function for :func:`~nni_hwaware.esm.loop.run_esm` that goes through a quality-controlled
    campaign and the store.

    Each call measures the architectures not yet stored (with the reference-model checks of
    :class:`~nni_hwaware.measure.campaign.Campaign`), then reads every latency back from the store, so a rerun
    of the same build measures nothing twice.
    """
    # imported here: measuring pulls in the backends, which ``import nni_hwaware.esm`` need not load
    from nni_hwaware.measure.campaign import Campaign
    from nni_hwaware.measure.progress import Progress

    def measure(archs: Sequence[Architecture]) -> np.ndarray:
        if not archs:
            return np.zeros(0)
        definition = {"purpose": "esm", "archs": hashlib.sha256(
            "".join(space.arch_hash(a) for a in archs).encode()).hexdigest()[:16]}
        progress = Progress(len(archs), label=label, enabled=show_progress)
        try:
            Campaign(space, archs, measurer, store, input_size=input_size, definition=definition,
                     qc_every=qc_every, progress=progress).run()
        finally:
            progress.close()
        out = []
        for arch in archs:
            m = store.get_measurement(space, space.arch_hash(arch), measurer.device_key, measurer.backend.name,
                                      input_size, precision=measurer.backend.precision)
            if m is None:
                raise HwAwareError(f"measurement of {space.arch_hash(arch)} is missing from the store")
            out.append(m.latency_ms)
        return np.asarray(out, dtype=float)

    return measure
