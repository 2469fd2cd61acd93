"""Shared fixtures: the repository root, the shared data folder and a CLI runner."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

warnings.filterwarnings("ignore")
REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = REPO_ROOT.parent / "shared"


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not SHARED.is_dir():
        pytest.skip(f"../shared is not beside the repository ({SHARED})")
    return SHARED


def run_cli(*args: str, cwd: Path | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run the real ``nni-hwaware`` command line in a subprocess."""
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    return subprocess.run(
        [sys.executable, "-m", "nni_hwaware.cli", *args],
        capture_output=True, text=True, cwd=cwd or REPO_ROOT, env=env, timeout=timeout,
    )


@pytest.fixture(scope="session")
def cli():
    return run_cli


@pytest.fixture(scope="session")
def esm_gb_predictor(tmp_path_factory) -> Path:
    """A small ESM predictor folder (gradient-boosting surrogate, saved with skops) of ``mobilenetv3`` at 8 px.

    Its latencies are synthetic (a function of the architecture's block count and kernels): this fixture is
    for loading and input checks, not for accuracy; tests/test_esm_build.py builds one from real measurements.
    """
    import numpy as np

    from nni_hwaware.esm import ESMConfig, run_esm
    from nni_hwaware.spaces import load_space

    space = load_space("mobilenetv3")

    def synthetic_latency(archs):
        return np.array([1.0 + 0.3 * space.total_depth(a)
                         + 0.01 * sum(b["kernel_size"] for u in a["units"] for b in u["blocks"]) for a in archs])

    config = ESMConfig(initial=24, step=6, max_samples=24, test_size=10, bins=3, surrogate="gb", seed=0)
    result = run_esm(space, config, synthetic_latency, input_size=8)
    out = tmp_path_factory.mktemp("esm_gb") / "predictor"
    result.save(out)
    return out


@contextlib.contextmanager
def read_only_folder(folder: Path) -> Iterator[Path]:
    """``folder`` made unwritable for the duration (``chattr +i`` when running as root, who ignores modes)."""
    os.chmod(folder, 0o555)
    immutable = False
    try:
        if os.access(folder, os.W_OK):
            immutable = subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode == 0
            if not immutable:
                pytest.skip("running as root and chattr +i is not available: cannot make a read-only folder")
        yield folder
    finally:
        if immutable:
            subprocess.run(["chattr", "-i", str(folder)], check=True)
        os.chmod(folder, 0o755)
