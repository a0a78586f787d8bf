"""The shape of lib: packages in one order (lib.LAYERS), each module importing only its own
package and the ones before it; no import circle among modules or among packages; no module
over 500 lines; top-level shims that only re-export; and the sweep process never loads the
training stack. Imports count wherever they are: top level, inside functions, and under
`if TYPE_CHECKING:` (an annotation that names a higher package's type is a dependency too).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from lib import LAYERS

LIB = Path(__file__).resolve().parents[1] / "lib"
MAX_LINES = 500
# Modules that only re-export: the top-level shims (documented names and `python -m`
# commands) and the report's index of figures.
REEXPORTS = ("lib.report.plots",)


def module_name(path: Path) -> str:
    parts = path.relative_to(LIB.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(LIB.rglob("*.py"))}


def _resolve(name: str, known: dict[str, Path]) -> str | None:
    """The lib module `name` refers to: itself, or the module holding it (`lib.a.b.func`)."""
    while name and name not in known:
        name = name.rpartition(".")[0]
    return name or None


def lib_imports(path: Path, known: dict[str, Path]) -> set[str]:
    """The lib modules `path` imports anywhere (top level, in functions, for type checking);
    a package's __init__ is not counted for `from lib.pkg import module`."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{a.name}" for a in node.names if a.name != "*"]
            names += [node.module] if any(a.name == "*" for a in node.names) else []
        else:
            continue
        for name in names:
            if name.split(".")[0] == "lib" and (target := _resolve(name, known)):
                found.add(target)
    return found - {module_name(path), "lib"}


def import_graph() -> dict[str, set[str]]:
    known = modules()
    return {name: lib_imports(path, known) for name, path in known.items() if name != "lib"}


def package(module: str) -> str | None:
    """The package of a module in lib.LAYERS (None for the top-level shims)."""
    parts = module.split(".")
    return parts[1] if len(parts) >= 2 and parts[1] in LAYERS else None


def is_shim(module: str) -> bool:
    return module.count(".") == 1 and (LIB / f"{module.split('.')[1]}.py").is_file()


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


def package_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    packages: dict[str, set[str]] = {}
    for module, imported in graph.items():
        if (own := package(module)) is not None:
            others = {package(m) for m in imported} - {own, None}
            packages.setdefault(own, set()).update(others)
    return packages


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    """`module -> imported` for every import of a package ranked above the module's own, or of
    a shim from inside a package."""
    bad = []
    for module, imported in sorted(graph.items()):
        if (own := package(module)) is None:
            continue
        for other in sorted(imported):
            theirs = package(other)
            if theirs is None or LAYERS.index(theirs) > LAYERS.index(own):
                bad.append(f"{module} -> {other}")
    return bad


def only_reexports(path: Path) -> bool:
    """Only a docstring, `from lib.x import ...` lines and `if __name__ == "__main__": cli()`."""
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
            continue
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("lib."):
            continue
        if isinstance(node, ast.If) and ast.unparse(node) == (
            "if __name__ == '__main__':\n    cli()"
        ):
            continue
        return False
    return True


def test_the_cycle_finder_finds_a_circle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c", "a"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_the_checks_catch_violations() -> None:
    graph = {"lib.core.paths": {"lib.study.config"}, "lib.study.config": {"lib.core.paths"}}
    assert cycles(graph) and cycles(package_graph(graph))
    assert upward_imports(graph) == ["lib.core.paths -> lib.study.config"]
    assert upward_imports({"lib.study.config": {"lib.sweep"}}) == ["lib.study.config -> lib.sweep"]


def test_the_graph_sees_every_package() -> None:
    graph = import_graph()
    assert {package(m) for m in graph} - {None} == set(LAYERS)
    assert "lib.study.run" in graph["lib.study.experiment"]  # function-level and `from` imports
    assert "lib.study.config" in graph["lib.study.console"]  # TYPE_CHECKING imports count
    assert {p.name for p in LIB.iterdir() if p.is_dir() and p.name != "__pycache__"} == set(LAYERS)


def test_no_import_circle_among_modules() -> None:
    assert cycles(import_graph()) == []


def test_no_import_circle_among_packages() -> None:
    assert cycles(package_graph(import_graph())) == []


def test_no_module_imports_a_package_above_its_own() -> None:
    assert upward_imports(import_graph()) == []


@pytest.mark.parametrize("name", sorted(modules()))
def test_no_module_over_500_lines(name: str) -> None:
    lines = len(modules()[name].read_text().splitlines())
    assert lines <= MAX_LINES, f"{name}: {lines} lines; split it by concept"


def test_shims_only_reexport() -> None:
    names = [m for m in modules() if is_shim(m)] + list(REEXPORTS)
    assert "lib.sweep" in names and "lib.data" in names
    assert [m for m in names if not only_reexports(modules()[m])] == []


def test_the_contract_names_stay_at_their_paths() -> None:
    import lib.backbone
    import lib.calibration
    import lib.data
    import lib.labelmap
    import lib.quant

    for module, names in [
        (lib.labelmap, "frequency_counts greedy_mapping apply_mapping LabelMapper"),
        (lib.calibration, "seed_ece ece debiased_ece smooth_ece classwise_ece bootstrap_interval"),
        (lib.backbone, "load_lottery_ticket sparsity create_backbone"),
        (lib.data, "DATASETS get_dataset"),
        (lib.quant, "quantize_backbone"),
    ]:
        assert [n for n in names.split() if not hasattr(module, n)] == [], module.__name__


def test_sweep_does_not_load_the_training_stack() -> None:
    code = (
        "import sys, lib.sweep, lib.transfer\n"
        "heavy = [m for m in sys.modules if m in ("
        "'lib.adapt.train', 'lib.study.run', 'lib.study.experiment', 'lib.adapt.prompt',"
        " 'lib.adapt.labelmap', 'lib.labelmap')]\n"
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
