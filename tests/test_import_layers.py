"""Imports point one way, down the data flow, and no module imports itself back through another.

The layers (README, "Where things go"): spaces <- measure (+ store) <- hardware interface <- predictors (esm,
jetson, nnmeter, calibration) <- comparison (esm.compare) <- nas <- cli. A module may import its own layer and the layers
below it, never one above. Function-local imports count too: they hide cycles from Python, not from readers.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "nni_hwaware"

#: (prefix, layer); the longest matching prefix decides. Lower layers are imported by higher ones.
LAYERS = (
    ("nni_hwaware", 0),  # the package itself (__version__), errors, paths, artifacts, metrics, plots
    ("nni_hwaware.spaces", 1),
    ("nni_hwaware.measure", 2),  # measuring, and the store (measure.store)
    ("nni_hwaware.hardware", 3),
    ("nni_hwaware.esm.surrogate", 3),  # the regressors every predictor kind may fit (nn-Meter's bias correction)
    ("nni_hwaware.esm.config", 3),  # the ESM loop's light inputs (names of surrogates, encodings, strategies)
    ("nni_hwaware.esm.encode", 3),  # architecture encodings: need only spaces
    ("nni_hwaware.esm", 4),
    ("nni_hwaware.jetson", 4),
    ("nni_hwaware.nnmeter", 4),
    ("nni_hwaware.calibration", 4),
    ("nni_hwaware.esm.compare", 5),  # compares ESM with nn-Meter: above both
    ("nni_hwaware.nas", 6),
    ("nni_hwaware.cli", 7),
    ("nni_hwaware.main", 7),
)
#: Predictor packages of one layer that must not import each other (they meet only in the hardware interface).
SIBLINGS = ("nni_hwaware.jetson", "nni_hwaware.nnmeter", "nni_hwaware.calibration")


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def all_modules() -> dict[str, Path]:
    return {module_name(p): p for p in PACKAGE.rglob("*.py")}


def imports_of(path: Path, modules: dict[str, Path]) -> set[str]:
    """Every nni_hwaware module ``path`` imports at run time, anywhere in the file (``from pkg import sub`` is
    ``pkg.sub``); imports under ``if TYPE_CHECKING:`` are for annotations only and are left out."""
    out: set[str] = set()
    for node in _runtime_nodes(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.startswith("nni_hwaware"))
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("nni_hwaware"):
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                out.add(sub if sub in modules else node.module)
    return out


def _runtime_nodes(tree: ast.AST):
    """The nodes of ``tree`` outside ``if TYPE_CHECKING:`` blocks."""
    todo = [tree]
    while todo:
        node = todo.pop()
        yield node
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                todo.extend(child.orelse)
            else:
                todo.append(child)


def layer_of(module: str) -> int:
    matches = [(len(prefix), layer) for prefix, layer in LAYERS
               if module == prefix or module.startswith(prefix + ".")]
    return max(matches)[1]


def sibling_of(module: str) -> str | None:
    return next((s for s in SIBLINGS if module == s or module.startswith(s + ".")), None)


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    modules = all_modules()
    return {name: imports_of(path, modules) for name, path in modules.items()}


def test_every_module_has_a_layer(graph):
    for module in graph:
        assert layer_of(module) >= 0


def test_imports_point_down_the_layers(graph):
    upward = [f"{a} (layer {layer_of(a)}) imports {b} (layer {layer_of(b)})"
              for a, targets in graph.items() for b in targets if layer_of(b) > layer_of(a)]
    assert not upward, "\n".join(sorted(upward))


def test_predictor_packages_do_not_import_each_other(graph):
    crossing = [f"{a} imports {b}" for a, targets in graph.items() for b in targets
                if sibling_of(a) and sibling_of(b) and sibling_of(a) != sibling_of(b)]
    assert not crossing, "\n".join(sorted(crossing))


def test_no_import_cycles(graph):
    """No cycle between modules. A submodule importing its own package's ``__init__`` is left out: the package
    re-exports its submodules, and Python resolves that order by the package's own imports."""
    def edges(module: str) -> set[str]:
        return {b for b in graph.get(module, ()) if b != module and not module.startswith(b + ".")}

    cycles = _strongly_connected(graph, edges)
    assert not cycles, "import cycles: " + "; ".join(" <-> ".join(sorted(c)) for c in cycles)


def _strongly_connected(graph: dict[str, set[str]], edges) -> list[list[str]]:
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges(v):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(component)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found
