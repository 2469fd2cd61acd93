"""nni-hwaware: hardware-aware neural architecture search for NNI 3.0.

The package follows the data: ``spaces`` (declarative search spaces) -> ``measure`` (real latency and energy
on devices, into the SQLite store ``measure.store``) -> ``hardware`` (the one predictor interface) -> the
predictor kinds (``esm``, ``jetson``, ``nnmeter``, ``calibration``) -> ``nas`` (NNI integration) -> ``cli``.
The README's "Where things go" has the map.
"""

from nni_hwaware.errors import HwAwareError

__version__ = "0.1.0"

__all__ = ["HwAwareError", "__version__"]
