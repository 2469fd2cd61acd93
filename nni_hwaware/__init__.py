"""nni-hwaware: hardware-aware neural architecture search for NNI 3.0.

The package follows the data: ``spaces`` (declarative search spaces) -> ``measure`` (real latency and energy
on devices) -> ``store`` (SQLite measurement store) -> ``encode`` -> ``surrogate`` -> ``esm`` (the
train-evaluate-extend builder) -> NNI integration -> ``cli``.
"""

from nni_hwaware.errors import HwAwareError

__version__ = "0.1.0"

__all__ = ["HwAwareError", "__version__"]
