"""A Jupyter kernel for the notebook tests that runs this interpreter (the project venv), whatever kernels the
machine has."""

from __future__ import annotations

import json
import sys
from pathlib import Path


def kernelspec_dir(root: Path) -> Path:
    """A JUPYTER_PATH folder whose ``python3`` kernel runs this interpreter (the project venv)."""
    spec = root / "kernels" / "python3"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (nni-hwaware tests)", "language": "python",
    }))
    return root
