"""A tour of the search spaces, from space file to NNI and ONNX (``nni-hwaware spaces demo``).

For every shipped space it samples architectures with balanced sampling, builds each as a PyTorch module,
runs it, exports it to ONNX and runs that with onnxruntime, freezes the same architecture through the NNI
``ModelSpace`` and checks it names the same network, and writes the nnictl search space.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

logger = logging.getLogger(__name__)

DEMO_INPUT = {"resnet": 32, "mobilenetv3": 32, "densenet": 32, "convnet": 32}


def run_demo(out: Path, per_space: int, seed: int) -> list[dict]:
    """Sample, build, run, export and round-trip ``per_space`` architectures of every space."""
    import numpy as np
    import onnxruntime as ort
    import torch

    from nni_hwaware.artifacts import write_atomically
    from nni_hwaware.spaces import build_module, example_input, export_onnx, list_spaces, load_space
    from nni_hwaware.spaces import sample_architectures as sample
    from nni_hwaware.spaces.nni_space import HwModelSpace, arch_to_sample, hpo_search_space

    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for name in list_spaces():
        space = load_space(name)
        size = DEMO_INPUT.get(name, space.input_size)
        logger.info("== %s: %.3e architectures, units %s", name, space.num_architectures,
                    [(u.name, u.min_depth, u.max_depth) for u in space.units])
        write_atomically(out / f"{name}.nni-hpo.json", json.dumps(hpo_search_space(space), indent=1).encode())
        model_space = HwModelSpace(name, input_size=size)
        for arch in sample(space, per_space, seed=seed, strategy="balanced"):
            arch_id = space.arch_hash(arch)
            model = build_module(space, arch, input_size=size)
            x = example_input(space, size)
            with torch.no_grad():
                y = model(x).numpy()
            onnx_path = out / f"{name}-{arch_id}.onnx"
            export_onnx(space, arch, onnx_path, input_size=size)
            session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
            session.run(None, {"input": x.numpy()})
            start = time.perf_counter()
            for _ in range(5):
                session.run(None, {"input": x.numpy()})
            ort_ms = (time.perf_counter() - start) / 5 * 1e3
            frozen = model_space.freeze(arch_to_sample(space, arch))
            params = sum(p.numel() for p in model.parameters())
            assert frozen.architecture == arch and np.isfinite(y).all()
            row = {
                "space": name, "arch_hash": arch_id, "total_blocks": space.total_depth(arch),
                "params_M": round(params / 1e6, 3), "input_size": size, "onnxruntime_ms": round(ort_ms, 2),
                "onnx": str(onnx_path),
            }
            rows.append(row)
            logger.info("  %s  blocks=%3d  params=%8.3fM  onnxruntime %7.2f ms at %dx%d (5-run mean, not a "
                        "measurement protocol)", arch_id, row["total_blocks"], row["params_M"], ort_ms, size, size)
    write_atomically(out / "summary.json", json.dumps(rows, indent=1).encode())
    return rows
