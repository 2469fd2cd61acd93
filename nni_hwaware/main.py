"""The main job of ``./run.sh main``: the quickstart hardware-aware NAS experiment on NNI.

It runs ``experiments/quickstart.yml`` with nnictl: NNI's TPE proposes architectures of the ``convnet``
space, the shipped Jetson Nano predictor keeps only those within a latency and an energy budget, and each
trial trains its network briefly on scikit-learn's digits. When the experiment is done it prints the best
architectures within budget (accuracy, latency, energy and where those numbers came from), writes a Pareto
plot to ``runs/quickstart/pareto.png`` and says where NNI's web UI is and how to stop the experiment.
``nni-hwaware nas run --config FILE`` does the same for any hardware-aware experiment config.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from nni_hwaware.cli import configure_logging
from nni_hwaware.errors import HwAwareError, silence_third_party_warnings

QUICKSTART = Path(__file__).resolve().parents[1] / "experiments" / "quickstart.yml"


def main(argv: list[str] | None = None) -> int:
    """Run the quickstart experiment and print its report."""
    silence_third_party_warnings()
    configure_logging()
    parser = argparse.ArgumentParser(prog="./run.sh main", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, default=QUICKSTART, help="experiment YAML (default: the quickstart)")
    parser.add_argument("--out", type=Path, default=Path("runs/quickstart"), help="output folder")
    parser.add_argument("--port", type=int, default=None, help="web UI port (default 8080, or a free one)")
    parser.add_argument("--trials", type=int, default=None, help="override maxTrialNumber")
    parser.add_argument("--stop", action="store_true", help="stop the experiment when done (no web UI afterwards)")
    args = parser.parse_args(argv)
    from nni_hwaware.nas.experiment import format_report, run_experiment

    try:
        report = run_experiment(args.config, out=args.out, port=args.port, trials=args.trials, stop=args.stop)
    except HwAwareError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2
    except KeyboardInterrupt:  # run_experiment has stopped the experiment already
        sys.stderr.write("interrupted\n")
        return 130
    print(format_report(report))
    return 0 if report["rows"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
