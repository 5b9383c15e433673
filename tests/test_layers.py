"""The package's layers, checked: no module imports one above it, none
imports a sibling of its own layer, and no circle of imports, function-level
imports included.

``LAYERS`` is the contract, written down here once; docs/ARCHITECTURE.md
shows it between its ``<!-- layers -->`` markers, and
``test_architecture_md_states_this_contract`` keeps the two the same.

A unit is a subpackage (``aether_audit/model/`` ...) or, for the top layer,
the package's own modules (``__init__``, ``cli``, ``demo`` and the public
``plots``/``widgets`` re-exports). A module may import:
  - any module of a unit in a lower layer;
  - modules of its own unit, as long as no circle forms.
Units of one layer (``audit`` and ``export``; ``store`` and ``present``) are
independent of each other.
"""

from __future__ import annotations

import ast
import re
import textwrap
from collections.abc import Sequence
from pathlib import Path

PACKAGE = "aether_audit"
ROOT = Path(__file__).resolve().parents[1]
TOP = "top"

# Bottom first. One entry a layer; units of one layer may not import each other.
LAYERS: list[tuple[str, ...]] = [
    ("model",),             # records, wire, decoding, frames, the C hot loop, files, progress
    ("nats",),              # connection, raw protocol + JetStream API, embedded server
    ("read",),              # reader, subject index, the Reader protocol
    ("audit", "export"),    # checks/engine/report...; pipeline/sinks/verify...
    ("store", "present", "spark"),  # the store and its facade; HTML, plots, widgets, text; Spark source and audit
    (TOP,),                 # __init__, __main__, cli, demo, plots, widgets
]


def modules_of(src: Path, package: str) -> dict[str, Path]:
    """Every module under ``src/package``: dotted name -> file (a package is its ``__init__``)."""
    out = {}
    for path in sorted((src / package).rglob("*.py")):
        parts = list(path.relative_to(src).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def imports_of(name: str, path: Path, known: set[str]) -> list[tuple[str, int]]:
    """The package's modules ``name`` imports, anywhere in it (function-level
    too), relative imports resolved: (module, line). ``from x import y``
    counts as importing ``x.y`` where that is a module, else ``x``."""
    is_package = path.name == "__init__.py"
    base = name.split(".") if is_package else name.split(".")[:-1]
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = base[: len(base) - (node.level - 1)]
                module = ".".join(anchor + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            targets = [f"{module}.{alias.name}" if f"{module}.{alias.name}" in known else module
                       for alias in node.names]
        else:
            continue
        for target in targets:
            # the deepest known module the dotted name names (``a.b.c`` attribute -> ``a.b``)
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                out.append((target, node.lineno))
    return out


def unit_of(module: str, package: str, subpackages: set[str]) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in subpackages else TOP


def check(src: Path, package: str = PACKAGE, layers: Sequence[tuple[str, ...]] = LAYERS) -> list[str]:
    """The contract's breaches in ``src/package``: one sentence each (empty: none)."""
    modules = modules_of(src, package)
    known = set(modules)
    rank = {unit: i for i, layer in enumerate(layers) for unit in layer}
    subpackages = {unit for unit in rank if unit != TOP}
    problems = []
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        unit = unit_of(name, package, subpackages)
        if unit not in rank:
            problems.append(f"{name}: its unit {unit!r} is in no layer")
            continue
        graph[name] = set()
        for target, line in imports_of(name, path, known):
            if target == package and unit != TOP:  # the package's __init__ is the top layer
                problems.append(f"{name}:{line} imports {target} (the package's top) from below")
                continue
            other = unit_of(target, package, subpackages)
            graph[name].add(target)
            if other not in rank or other == unit:
                continue
            if rank[other] > rank[unit]:
                problems.append(f"{name}:{line} imports {target}: upward ({unit} is below {other})")
            elif rank[other] == rank[unit]:
                problems.append(f"{name}:{line} imports {target}: sideways ({unit} and {other} share a layer)")
    problems += [f"import cycle: {' -> '.join(cycle)}" for cycle in cycles(graph)]
    return problems


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(_a_cycle(graph, set(component)))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def _a_cycle(graph: dict[str, set[str]], component: set[str]) -> list[str]:
    """A path around ``component`` (for the message), starting at its smallest name."""
    start = min(component)
    path, seen, node = [start], {start}, start
    while True:
        nxt = min(n for n in graph[node] if n in component)
        path.append(nxt)
        if nxt in seen:
            return path[path.index(nxt):]
        seen.add(nxt)
        node = nxt


def layers_text(layers: Sequence[tuple[str, ...]] = LAYERS) -> str:
    """The contract as docs/ARCHITECTURE.md shows it, top layer first."""
    lines = []
    for i, layer in reversed(list(enumerate(layers))):
        names = " | ".join("(top-level modules)" if unit == TOP else f"{unit}/" for unit in layer)
        lines.append(f"{i}. {names}")
    return "\n".join(lines)


# --- the package -------------------------------------------------------------------------


def test_no_upward_or_sideways_import_and_no_circle():
    problems = check(ROOT)
    assert not problems, "the layer contract is broken:\n" + "\n".join(problems)


def test_every_subpackage_is_in_a_layer():
    subpackages = {p.parent.name for p in (ROOT / PACKAGE).glob("*/__init__.py")}
    assert subpackages == {unit for layer in LAYERS for unit in layer} - {TOP}


def test_architecture_md_states_this_contract():
    text = (ROOT / "docs" / "ARCHITECTURE.md").read_text(encoding="utf-8")
    shown = re.search(r"<!-- layers -->\n```\n(.*?)\n```\n<!-- /layers -->", text, re.S)
    assert shown, "docs/ARCHITECTURE.md lost its <!-- layers --> block"
    assert shown.group(1) == layers_text(), "docs/ARCHITECTURE.md shows other layers than tests/test_layers.py"


# --- the checker catches what it should (a small tree made here) ---------------------------


def make_tree(tmp_path: Path, files: dict[str, str]) -> Path:
    for name, text in {"pkg/__init__.py": "", "pkg/model/__init__.py": "", "pkg/audit/__init__.py": "",
                       "pkg/export/__init__.py": "", **files}.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return tmp_path


TINY = [("model",), ("audit", "export"), (TOP,)]


def test_a_clean_tree_passes(tmp_path):
    src = make_tree(tmp_path, {
        "pkg/model/a.py": "import json\n",
        "pkg/audit/b.py": "from ..model.a import x\nfrom ..model import a\n",
        "pkg/cli.py": "from .audit import b\nfrom . import __version__\n",
    })
    assert check(src, "pkg", TINY) == []


def test_a_planted_upward_import_inside_a_function_fails(tmp_path):
    src = make_tree(tmp_path, {
        "pkg/model/a.py": "def f():\n    from ..audit.b import g\n    return g\n",
        "pkg/audit/b.py": "def g(): pass\n",
    })
    assert check(src, "pkg", TINY) == ["pkg.model.a:2 imports pkg.audit.b: upward (model is below audit)"]


def test_absolute_and_sideways_imports_fail(tmp_path):
    src = make_tree(tmp_path, {
        "pkg/model/a.py": "import pkg.cli\n",
        "pkg/audit/b.py": "from pkg.export import c\n",
        "pkg/export/c.py": "",
        "pkg/cli.py": "",
    })
    assert check(src, "pkg", TINY) == [
        "pkg.audit.b:1 imports pkg.export.c: sideways (audit and export share a layer)",
        "pkg.model.a:1 imports pkg.cli: upward (model is below top)",
    ]


def test_a_circle_within_a_unit_fails(tmp_path):
    src = make_tree(tmp_path, {
        "pkg/audit/b.py": "from .c import y\n",
        "pkg/audit/c.py": "def y():\n    from . import b\n",
    })
    assert check(src, "pkg", TINY) == ["import cycle: pkg.audit.b -> pkg.audit.c -> pkg.audit.b"]


def test_reaching_the_top_package_from_below_fails(tmp_path):
    src = make_tree(tmp_path, {"pkg/model/a.py": "from .. import __version__\n"})
    assert check(src, "pkg", TINY) == ["pkg.model.a:1 imports pkg (the package's top) from below"]
