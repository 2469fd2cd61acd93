"""The trial of ``experiments/measure.yml``: measure one batch of sampled architectures on this machine.

Every trial of the nnictl experiment gets a batch index from NNI's GridSearch tuner (search space
``{"batch": choice(0..B-1)}``), samples the same architectures as ``nni-hwaware spaces sample`` with the given
arguments, measures the architectures of its batch (``archs[batch::batches]``) with the local backend (or on a remote
device running the agent: ``--device ssh://...`` / ``http://...``), and
reports them with ``nni.report_final_result``: ``{"default": mean latency, "measurements": [...],
"device_description": {...}, ...}``. It also writes the same JSON to ``measurements.json`` in the trial's
output folder. ``nni-hwaware dataset import-nni EXPERIMENT_ID --db PATH`` collects them into a store.

Run outside NNI (no tuner) it measures batch 0, which makes it easy to try on a board by hand::

    python -m nni_hwaware.measure.nni_trial --space mobilenetv3 --n 8 --batches 4 --input-size 32
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from nni_hwaware.artifacts import write_json_atomically
from nni_hwaware.errors import HwAwareError
from nni_hwaware.measure.progress import log_to_stderr
from nni_hwaware.measure.protocol import DEFAULT_RUNS

RESULT_FILE = "measurements.json"
RESULT_FORMAT = "nni-hwaware-measurements/1"


def build_parser() -> argparse.ArgumentParser:
    """Arguments of the trial command (a subset of ``nni-hwaware measure``)."""
    p = argparse.ArgumentParser(prog="python -m nni_hwaware.measure.nni_trial")
    p.add_argument("--space", required=True)
    p.add_argument("--n", type=int, required=True, help="architectures in the whole experiment")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--strategy", choices=("random", "balanced"), default="random")
    p.add_argument("--bins", type=int, default=5)
    p.add_argument("--batches", type=int, required=True, help="number of batches (= trials)")
    p.add_argument("--input-size", type=int, default=None)
    p.add_argument("--backend", default="onnxruntime")
    p.add_argument("--device", action="append", default=None,
                   help="cpu, cuda[:N], or a device URL (ssh://..., http://...); repeat URLs for a pool")
    p.add_argument("--token-file", default=None, help="http:// devices: the agent's token (or NNI_HWAWARE_TOKEN)")
    p.add_argument("--precision", default="fp32")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--runs", type=int, default=DEFAULT_RUNS)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--energy", default="auto")
    return p


def run_trial(args: argparse.Namespace, batch: int) -> dict[str, Any]:
    """Measure batch ``batch`` and return the result dict reported to NNI."""
    from nni_hwaware.measure.protocol import Protocol
    from nni_hwaware.measure.remote import device_argument
    from nni_hwaware.measure.runner import make_measurer, measure_architectures_unstored
    from nni_hwaware.measure.store import space_fingerprint, space_text, text_hash
    from nni_hwaware.spaces import load_space, sample_architectures

    device = device_argument(args.device)
    if not 0 <= batch < args.batches:
        raise HwAwareError(f"batch {batch} is outside 0..{args.batches - 1}")
    space = load_space(args.space)
    size = space.resolve_input_size(args.input_size)
    archs = sample_architectures(space, args.n, seed=args.seed, strategy=args.strategy, bins=args.bins)
    mine = archs[batch::args.batches]
    measurer = make_measurer(args.backend, threads=args.threads, device=device, precision=args.precision,
                             protocol=Protocol(runs=args.runs, warmup=args.warmup), energy=args.energy,
                             token_file=args.token_file)
    try:
        measurements = measure_architectures_unstored(space, mine, measurer, input_size=size)
    finally:
        measurer.close()
    latencies = [m.latency_ms for m in measurements]
    return {
        "default": sum(latencies) / len(latencies) if latencies else 0.0,
        "format": RESULT_FORMAT,
        "space": space.name,
        "space_hash": text_hash(space_text(space)),
        "space_fingerprint": space_fingerprint(space),
        "batch": batch,
        "batches": args.batches,
        "device_description": measurer.device_description,
        "measurements": [m.to_dict() for m in measurements],
    }


def main(argv: list[str] | None = None) -> int:
    """Entry point of the trial."""
    from nni_hwaware.errors import silence_third_party_warnings

    silence_third_party_warnings()
    log_to_stderr()  # the library's messages reach NNI's trial log (the trial's stderr)
    args = build_parser().parse_args(argv)
    import nni

    params = nni.get_next_parameter() or {}
    batch = int(params.get("batch", 0))
    try:
        result = run_trial(args, batch)
    except HwAwareError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2
    out_dir = Path(os.environ.get("NNI_OUTPUT_DIR", "."))
    write_json_atomically(out_dir / RESULT_FILE, result)
    nni.report_final_result(result)
    print(f"batch {batch}: measured {len(result['measurements'])} architecture(s), "
          f"mean latency {result['default']:.3f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
