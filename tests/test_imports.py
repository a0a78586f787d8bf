"""The shape of lib's imports: no import circle among its modules (function-level imports
included, `if TYPE_CHECKING:` ones not), and the sweep process never loads the training stack."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

LIB = Path(__file__).resolve().parents[1] / "lib"


def _type_checking_only(node: ast.AST, parents: dict[ast.AST, ast.AST]) -> bool:
    while node in parents:
        node = parents[node]
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            return True
    return False


def lib_imports(path: Path) -> set[str]:
    """The lib modules `path` imports anywhere (top level or inside functions)."""
    tree = ast.parse(path.read_text())
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    found = set()
    for node in ast.walk(tree):
        if _type_checking_only(node, parents):
            continue
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        else:
            continue
        for name in names:
            parts = name.split(".")
            if parts[0] == "lib" and len(parts) > 1 and (LIB / f"{parts[1]}.py").is_file():
                found.add(parts[1])
    return found - {path.stem}


def import_graph() -> dict[str, set[str]]:
    return {p.stem: lib_imports(p) for p in sorted(LIB.glob("*.py")) if p.stem != "__init__"}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every import circle, each as the path of modules that closes it."""
    found, state = [], {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                found.append(stack[stack.index(nxt) :] + [nxt])
            elif nxt not in state:
                visit(nxt, [*stack, nxt])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    return found


def test_the_cycle_finder_finds_a_circle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c", "a"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_circle_among_lib_modules() -> None:
    graph = import_graph()
    assert "experiment" in graph and "sweep" in graph  # the parser sees the package
    assert cycles(graph) == []


def test_sweep_does_not_load_the_training_stack() -> None:
    code = (
        "import sys, lib.sweep, lib.transfer\n"
        "heavy = [m for m in sys.modules if m in ("
        "'lib.adapt.train', 'lib.adapt.loops', 'lib.study.experiment', 'lib.adapt.prompt',"
        " 'lib.adapt.labelmap', 'lib.labelmap')]\n"
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
