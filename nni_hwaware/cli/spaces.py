"""``nni-hwaware spaces ...``: list, show, sample, build and export search spaces."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from nni_hwaware.cli.options import parameter_default
from nni_hwaware.errors import HwAwareError
from nni_hwaware.spaces import list_spaces, load_space, sample_architectures
from nni_hwaware.spaces.archjson import read_architecture_argument
from nni_hwaware.spaces.sampling import DEFAULT_BINS, STRATEGIES


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``spaces`` command and its sub-commands."""
    spaces = subparsers.add_parser("spaces", help="declarative search spaces: list, show, sample, build, export")
    sub = spaces.add_subparsers(dest="spaces_command", metavar="SUBCOMMAND")
    sub.required = True

    p = sub.add_parser("list", help="list the shipped spaces")
    p.set_defaults(func=_list)

    p = sub.add_parser("show", help="describe one space (size, units, choices)")
    p.add_argument("name", help="space name or path to a space YAML file")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=_show)

    p = sub.add_parser("sample", help="sample architectures, one JSON per line")
    p.add_argument("name")
    p.add_argument("--n", type=int, required=True, help="number of architectures")
    p.add_argument("--seed", type=int, default=parameter_default(sample_architectures, "seed"))
    p.add_argument("--strategy", choices=STRATEGIES, default=parameter_default(sample_architectures, "strategy"))
    p.add_argument("--bins", type=int, default=DEFAULT_BINS, help="bins of total block count (balanced)")
    p.set_defaults(func=_sample)

    p = sub.add_parser("build", help="build one architecture and export it to ONNX")
    p.add_argument("name")
    p.add_argument("--arch", required=True, help="architecture JSON, or @FILE to read it from a file")
    p.add_argument("--onnx", required=True, metavar="OUT.onnx", help="where to write the ONNX model")
    p.add_argument("--input-size", type=int, default=None, help="input resolution (default: the space's)")
    p.add_argument("--width-mult", type=float, default=None, help="channel multiplier (default: the space's)")
    p.set_defaults(func=_build)

    p = sub.add_parser("export", help="export the space for NNI tools")
    p.add_argument("name")
    p.add_argument("--format", choices=("nni-hpo",), default="nni-hpo", help="nni-hpo: nnictl search space JSON")
    p.add_argument("--out", default=None, help="file to write (default: stdout)")
    p.set_defaults(func=_export)

    p = sub.add_parser("demo", help="sample, build, run, export and NNI-freeze architectures of every space")
    p.add_argument("--out", type=Path, default=Path("runs/demo"), help="output folder")
    p.add_argument("--per-space", type=int, default=3, help="architectures per space")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_demo)


def _list(args: argparse.Namespace) -> int:
    for name in list_spaces():
        space = load_space(name)
        print(f"{name:<12} {float(space.num_architectures):>10.3g} architectures  {space.family}")
    return 0


def _show(args: argparse.Namespace) -> int:
    info = load_space(args.name).describe()
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(f"{info['name']} ({info['family']}): {info['num_architectures']} architectures "
          f"({info['num_architectures_sci']})")
    print(info["description"])
    print(f"defaults: {info['defaults']}")
    for unit in info["units"]:
        print(f"  {unit}")
    for level, choices in info["choices"].items():
        if choices:
            print(f"{level} choices: {choices}")
    return 0


def _sample(args: argparse.Namespace) -> int:
    space = load_space(args.name)
    for arch in sample_architectures(space, args.n, seed=args.seed, strategy=args.strategy, bins=args.bins):
        sys.stdout.write(space.canonical_json(arch) + "\n")
    return 0


def read_arch_argument(value: str) -> str:
    """An ``--arch`` value: JSON text, or ``@FILE`` naming a file that holds it (UTF-8, at most 1 MiB)."""
    return read_architecture_argument(value)


def _build(args: argparse.Namespace) -> int:
    from nni_hwaware.spaces import export_onnx  # torch and onnx: only the command that exports pays for them

    space = load_space(args.name)
    arch = space.validate(read_arch_argument(args.arch))
    data = export_onnx(space, arch, args.onnx, input_size=args.input_size, width_mult=args.width_mult)
    size = space.resolve_input_size(args.input_size)
    print(f"wrote {args.onnx} ({len(data) / 1e6:.1f} MB, input 1x{space.defaults['in_channels']}x{size}x{size}, "
          f"arch {space.arch_hash(arch)})")
    return 0


def _export(args: argparse.Namespace) -> int:
    from nni_hwaware.spaces.export import write_atomically
    from nni_hwaware.spaces.nni_space import hpo_search_space

    text = json.dumps(hpo_search_space(load_space(args.name)), indent=1) + "\n"
    if args.out:
        write_atomically(args.out, text.encode())
    else:
        sys.stdout.write(text)
    return 0


def _demo(args: argparse.Namespace) -> int:
    from nni_hwaware.spaces.demo import run_demo

    if args.per_space < 1:
        raise HwAwareError(f"--per-space must be at least 1, got {args.per_space}")
    rows = run_demo(args.out, args.per_space, args.seed)
    print(f"\n{len(rows)} architectures built, run and exported; ONNX files, nnictl search spaces and "
          f"summary.json are in {args.out}/")
    return 0
