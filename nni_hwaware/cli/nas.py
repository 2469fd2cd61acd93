"""``nni-hwaware nas ...``: run and check hardware-aware nnictl experiments.

Option values are checked by the library (:func:`~nni_hwaware.nas.experiment.run_experiment`,
:func:`~nni_hwaware.nas.experiment.preflight`), so the Python API refuses the same values with the same messages.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from nni_hwaware.cli.options import parameter_default


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``nas`` command and its sub-commands."""
    from nni_hwaware.nas.experiment import preflight, run_experiment

    nas = subparsers.add_parser("nas", help="hardware-aware NAS experiments on NNI: run, check")
    sub = nas.add_subparsers(dest="nas_command", metavar="SUBCOMMAND")
    sub.required = True

    p = sub.add_parser("run", help="start an nnictl experiment, wait for it, report the best within budget")
    p.add_argument("--config", type=Path, required=True, help="experiment YAML, e.g. experiments/quickstart.yml")
    p.add_argument("--out", type=Path, default=Path("runs/nas"), help="output folder")
    p.add_argument("--port", type=int, default=None, help="web UI port (default 8080, or a free one)")
    p.add_argument("--trials", type=int, default=None, help="override maxTrialNumber")
    p.add_argument("--timeout", type=float, default=parameter_default(run_experiment, "timeout"),
                   help="seconds to wait for the experiment (a failed or unfinished one is stopped; "
                        "default: %(default)s)")
    p.add_argument("--stop", action="store_true", help="stop the experiment when done")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--trust-pickles", action="store_true",
                   help="allow a config that trusts nn-Meter's pickled predictors (they run code when loaded)")
    p.set_defaults(func=_run)

    p = sub.add_parser("check", help="check a hardware-aware experiment config without starting it")
    p.add_argument("--config", type=Path, required=True)
    p.add_argument("--samples", type=int, default=parameter_default(preflight, "samples"),
                   help="random architectures tried against the budget (default: %(default)s)")
    p.add_argument("--trust-pickles", action="store_true",
                   help="allow a config that trusts nn-Meter's pickled predictors (they run code when loaded)")
    p.set_defaults(func=_check)

    p = sub.add_parser("oneshot", help="one-shot search on a supernet: SPOS + evolution, or Proxyless/DARTS with "
                                       "the hardware loss; finalists retrained from scratch")
    p.add_argument("--config", type=Path, required=True, help="one-shot YAML, e.g. experiments/oneshot_spos.yml")
    p.add_argument("--out", type=Path, default=Path("runs/oneshot"),
                   help="output folder: results.json, pareto.png (default: %(default)s)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=_oneshot)


def _run(args: argparse.Namespace) -> int:
    from nni_hwaware.nas.experiment import format_report, run_experiment

    report = run_experiment(args.config, out=args.out, port=args.port, trials=args.trials, stop=args.stop,
                            timeout=args.timeout, trust_pickles=args.trust_pickles)
    print(json.dumps(report) if args.json else format_report(report))
    return 0 if report["rows"] else 1


def _check(args: argparse.Namespace) -> int:
    from nni_hwaware.nas.experiment import load_config, preflight

    info = preflight(load_config(args.config), args.config.resolve().parent, samples=args.samples,
                     trust_pickles=args.trust_pickles)
    print(json.dumps(info, indent=1))
    return 0


def _oneshot(args: argparse.Namespace) -> int:
    from nni_hwaware.nas.oneshot.search import format_report, run_oneshot

    report = run_oneshot(args.config, args.out)
    if args.json:
        print(json.dumps(report, default=str))
    else:
        print(format_report(report))
        print(f"results: {args.out / 'results.json'}, Pareto plot {args.out / 'pareto.png'}")
    return 0 if report["final"] else 1
