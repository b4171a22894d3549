"""The package's public names: lazy where heavy, and `refine` stays the function after its submodule is imported."""

from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path


def test_refine_is_the_function_and_its_module_is_refinement():
    importlib.import_module("refiner_trl.refinement")
    import refiner_trl

    assert callable(refiner_trl.refine) and refiner_trl.refine.__module__ == "refiner_trl.refinement"


def test_every_public_name_resolves_to_the_object_its_module_defines():
    import refiner_trl

    lazy = refiner_trl._EXPORTS
    eager = {"RefinementTrace": "refinement", "refine": "refinement", "refine_metrics": "refinement"}
    assert set(refiner_trl.__all__) == {*lazy, *eager, "__version__"}
    for name, module in {**lazy, **eager}.items():
        defined = getattr(importlib.import_module(f"refiner_trl.{module}"), name)
        assert getattr(refiner_trl, name) is defined, name
    pyproject = (Path(__file__).resolve().parents[1] / "pyproject.toml").read_text(encoding="utf-8")
    assert re.search(r'^version = "(.+)"$', pyproject, flags=re.M).group(1) == refiner_trl.__version__


PACKAGE = Path(__file__).resolve().parents[1] / "refiner_trl"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _runtime_imports(tree: ast.AST) -> list[ast.ImportFrom | ast.Import]:
    """The import statements of a module at any depth (lazy ones inside functions too), but not those under
    `if TYPE_CHECKING:`, which never run."""
    found: list[ast.ImportFrom | ast.Import] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.append(node)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def package_import_graph() -> dict[str, set[str]]:
    """Each module of the package -> the package modules it imports at run time. The top-level `__init__`, which
    re-exports every public name lazily, is left out: the graph is that of the modules it re-exports."""
    modules = {_module_name(path): path for path in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        if name == "refiner_trl":
            continue
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        targets = set()
        for node in _runtime_imports(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
                candidates = [target] + [f"{target}.{alias.name}" for alias in node.names]
            else:
                candidates = [alias.name for alias in getattr(node, "names", [])]
                candidates += [node.module] if isinstance(node, ast.ImportFrom) and node.module else []
            targets |= {c for c in candidates if c in modules and c not in ("refiner_trl", name)}
        graph[name] = targets
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """A cycle of `graph` as a list of nodes (first = last), or `None`."""
    state: dict[str, str] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node], _ = "open", stack.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == "open":
                return stack[stack.index(target) :] + [target]
            if target not in state and (cycle := visit(target)):
                return cycle
        state[node], _ = "done", stack.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_package_imports_form_no_cycle():
    graph = package_import_graph()
    assert (
        "refiner_trl.critics" in graph["refiner_trl.refinement"]
        and "refiner_trl.generators" in graph["refiner_trl.critics.model"]
    )  # the graph sees the imports it should
    assert "refiner_trl.modeling" in graph["refiner_trl.generators"]  # a lazy import inside a function counts
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]  # the check can fail


def test_the_benchmarks_import_no_cycle_no_private_trainer_method_and_no_test_imports_them():
    """Benchmarks import each other by their module names (they run as scripts from `benchmarks/`)."""
    folder = PACKAGE.parent / "benchmarks"
    names = {path.stem for path in folder.glob("*.py")}
    graph = {}
    for path in folder.glob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
        imported |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
        graph[path.stem] = (imported & names) - {path.stem}
        private = [
            n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute) and n.attr in ("_explore", "_sample")
        ]
        assert not private, f"{path.name} reaches into the trainer's private {private}"
    assert "render" in graph["pretrained"]  # the graph sees the imports it should
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))
    for test in (PACKAGE.parent / "tests").glob("*.py"):
        tree = ast.parse(test.read_text(encoding="utf-8"))
        imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
        imported |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
        assert not imported & names, f"{test.name} imports a benchmark: {imported & names}"
