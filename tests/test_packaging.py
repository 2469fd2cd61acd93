"""The wheel ships the package with its data folders, and finds them when installed outside the repo."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import tomllib
from setuptools import find_packages

REPO = Path(__file__).resolve().parents[1]


def test_every_subpackage_is_listed_in_pyproject():
    listed = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = set(find_packages(str(REPO), include=["nni_hwaware*"]))
    assert found <= listed, f"add {sorted(found - listed)} to [tool.setuptools] packages in pyproject.toml"


@pytest.mark.slow
def test_wheel_contains_and_finds_data_folders(tmp_path):
    wheel_dir, target = tmp_path / "wheel", tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(wheel_dir), str(REPO)],
        check=True, capture_output=True, timeout=300,
    )
    (wheel,) = wheel_dir.glob("*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for space in ("resnet", "mobilenetv3", "densenet", "convnet"):
        assert f"nni_hwaware/search_spaces/{space}.yaml" in names
    shipped_predictors = [p.relative_to(REPO / "predictors") for p in (REPO / "predictors").rglob("*")
                          if p.is_file() and p.suffix in {".json", ".md", ".npy", ".npz", ".safetensors", ".skops"}]
    for rel in shipped_predictors:
        assert f"nni_hwaware/predictors/{rel.as_posix()}" in names
    zipfile.ZipFile(wheel).extractall(target)
    probe = (
        "from nni_hwaware.paths import data_dir; from nni_hwaware.spaces import list_spaces, load_space;"
        "print(data_dir('search_spaces')); print(list_spaces()); print(load_space('densenet').num_architectures)"
    )
    env = dict(os.environ, PYTHONPATH=str(target), PYTHONWARNINGS="ignore")
    out = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, env=env, capture_output=True, text=True,
                         check=True, timeout=120).stdout.splitlines()
    assert out[0].startswith(str(target))
    assert "resnet" in out[1] and "convnet" in out[1]
    assert out[2] == "10000000000"
