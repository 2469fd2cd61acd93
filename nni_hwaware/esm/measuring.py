"""Measurements for the ESM loop through a quality-controlled campaign and the measurement store.

:func:`store_backed_measure` is the ``measure`` of :func:`~nni_hwaware.esm.loop.run_esm` in ``nni-hwaware
build``: it measures only what the store lacks, so a rerun of the same build measures nothing twice.
"""

from __future__ import annotations

import hashlib
import json
import math
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from nni_hwaware.errors import HwAwareError
from nni_hwaware.esm.config import MeasureFn
from nni_hwaware.spaces.schema import Architecture, SearchSpace


def store_backed_measure(
    space: SearchSpace,
    measurer: Any,
    store: Any,
    *,
    input_size: int,
    qc_every: int = 50,
    drift_threshold: float = 0.03,
    window: int = 10,
    build: Mapping[str, Any] | None = None,
    label: str = "measure",
    show_progress: bool = True,
) -> MeasureFn:
    """A measure function for :func:`~nni_hwaware.esm.loop.run_esm` that goes through a quality-controlled
    campaign and the store.

    Each call measures the architectures not yet stored (with the reference-model checks of
    :class:`~nni_hwaware.measure.campaign.Campaign`), then reads every latency back from the store, so a rerun
    of the same build measures nothing twice.

    Every call of one build is one campaign, so the reference models measured at its first check are the
    drift baseline of the whole build (all its iterations, and its resumptions), and the store keeps one check
    history. ``build`` identifies the build (``nni-hwaware build`` passes its settings, so a rerun resumes
    the campaign); without it, each measure function is a campaign of its own. A model the checks left
    flagged ``drift`` (its window drifted past the threshold even after re-measurement) reads back as NaN,
    which the loop leaves out of training and judging; a later call for it (a resumed build) checks it again.
    ``drift_threshold`` is the relative drift of the
    reference models that fails a check (the paper's 3 %); ``window`` models are timed interleaved with the
    references and normalized by them (:class:`~nni_hwaware.measure.campaign.Campaign`; 0: one at a time).
    """
    # imported here: measuring pulls in the backends, which ``import nni_hwaware.esm`` need not load
    from nni_hwaware.measure.campaign import Campaign
    from nni_hwaware.measure.progress import Progress

    key = json.dumps(dict(build), sort_keys=True, default=str) if build is not None else uuid.uuid4().hex
    definition = {"purpose": "esm", "build": hashlib.sha256(key.encode()).hexdigest()[:16]}

    def measure(archs: Sequence[Architecture]) -> np.ndarray:
        if not archs:
            return np.zeros(0)
        progress = Progress(len(archs), label=label, enabled=show_progress)
        try:
            campaign = Campaign(space, archs, measurer, store, input_size=input_size, definition=definition,
                                qc_every=qc_every, drift_threshold=drift_threshold, progress=progress,
                                window=window)
            if qc_every > 0:
                # a resumed build checks its drifted models again (and re-measures them if the window still
                # drifts), so a quieter machine or a raised threshold can redeem them
                wanted = {space.arch_hash(a) for a in archs}
                store.set_qc_status([i for i, m in store.measurements(campaign=campaign.id, qc_status="drift")
                                     if m.arch_hash in wanted], "unchecked")
            campaign.run()
        finally:
            progress.close()
        out = []
        for arch in archs:
            m = store.get_measurement(space, space.arch_hash(arch), measurer.device_key, measurer.backend.name,
                                      input_size, precision=measurer.backend.precision)
            if m is None:
                raise HwAwareError(f"measurement of {space.arch_hash(arch)} is missing from the store")
            out.append(math.nan if m.qc_status == "drift" else m.latency_ms)
        return np.asarray(out, dtype=float)

    return measure
