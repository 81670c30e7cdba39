"""The package's layout: its modules import one another without a circle (issue 35)."""
import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "jaxres"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _type_checking_only(tree: ast.AST) -> set[int]:
    """Line numbers of the imports under ``if TYPE_CHECKING:`` (never run)."""
    lines = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            lines |= {n.lineno for stmt in node.body for n in ast.walk(stmt) if isinstance(n, (ast.Import, ast.ImportFrom))}
    return lines


def import_graph(pkg: Path = PKG) -> dict[str, set[str]]:
    """Module -> the jaxres modules it imports anywhere in its text (top level or inside a function),
    ``from jaxres.x import name`` counting as an import of ``jaxres.x.name`` where that is a module."""
    modules = {_module_name(p): p for p in pkg.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(), str(path))
        skip, package = _type_checking_only(tree), name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets = set()
        for node in ast.walk(tree):
            if getattr(node, "lineno", None) in skip:
                continue
            if isinstance(node, ast.Import):
                targets |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")
                    base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
                submodules = {f"{base}.{a.name}" for a in node.names} & modules.keys()
                targets |= submodules or {base}  # names from a package's __init__ import the package itself
        graph[name] = {t for t in targets if t in modules and t != name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One circle of imports (its modules in order, the first repeated at the end), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        state[node] = 2
        path.pop()
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start)):
            return found
    return None


def test_the_cycle_finder_finds_a_circle_and_reads_function_level_imports(tmp_path):
    pkg = tmp_path / "jaxres"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from jaxres import b\n")
    (pkg / "b.py").write_text("def f():\n    from jaxres.sub import c\n")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "c.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from jaxres import a\n")
    global ROOT
    old, ROOT = ROOT, tmp_path
    try:
        graph = import_graph(pkg)
        assert graph["jaxres.b"] == {"jaxres.sub.c"} and graph["jaxres.sub.c"] == set()
        assert find_cycle(graph) is None  # an import only for type checkers runs never
        (pkg / "sub" / "c.py").write_text("from .. import a\n")
        assert find_cycle(import_graph(pkg)) == ["jaxres.a", "jaxres.b", "jaxres.sub.c", "jaxres.a"]
    finally:
        ROOT = old


def test_jaxres_has_no_import_circle():
    graph = import_graph()
    assert "jaxres.data.tfds_source" in graph and "jaxres.config" in graph
    cycle = find_cycle(graph)
    assert cycle is None, "import circle: " + " -> ".join(cycle)


def test_the_description_of_runs_imports_no_model_and_no_jax():
    """config and catalog describe runs; nothing they import (transitively) builds a model or imports JAX."""
    graph = import_graph()
    seen, todo = set(), ["jaxres.config"]
    while todo:
        m = todo.pop()
        if m not in seen:
            seen.add(m)
            todo += graph[m]
    assert seen == {"jaxres.config", "jaxres.catalog"}
    for m in seen:
        tree = ast.parse((PKG / (m.split(".", 1)[1] + ".py")).read_text())
        imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        imported |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        assert not imported & {"jax", "flax", "optax", "orbax"}, m


def test_every_package_is_installed():
    """pyproject.toml lists its packages by name: a new subpackage left out would be missing from a wheel."""
    import tomllib

    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {_module_name(p) for p in PKG.rglob("__init__.py")}
    assert found <= listed, sorted(found - listed)
