"""The package's layout: its modules import one another without a circle (issue 35)."""
import ast
from pathlib import Path

import pytest

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


def _reach(graph: dict[str, set[str]], start: str) -> set[str]:
    """``start`` and every jaxres module it imports, directly or through others."""
    seen, todo = set(), [start]
    while todo:
        m = todo.pop()
        if m not in seen:
            seen.add(m)
            todo += graph[m]
    return seen


def _path(module: str) -> Path:
    rel = Path(*module.split(".")[1:])
    return PKG / rel / "__init__.py" if (PKG / rel).is_dir() else PKG / rel.with_suffix(".py")


JAX = {"jax", "jaxlib", "flax", "optax", "orbax"}
SPEC = {"jaxres.catalog", "jaxres.config", *(f"jaxres.config.{m}" for m in ("values", "sections", "keys", "env",
                                                                             "identity", "study", "presets", "files"))}
KERNELS = {"jaxres.conv", "jaxres.norms", "jaxres.onednn", "jaxres.winograd", "jaxres.cpu"}
ANALYSIS = {"jaxres.report", "jaxres.report.runs", "jaxres.report.tables", "jaxres.report.figures", "jaxres.report.depth",
            "jaxres.claims", "jaxres.stats"}
# The layers (jaxres/config/, jaxres/report/ and jaxres/data/ are packages; the rest is flat, and the commit that
# made jaxres/spec/, now jaxres/config/, says why): each may import only what is
# listed here, wherever in a module the import is written.
LAYERS = {
    "jaxres.config": SPEC,  # what a run is: no model, no JAX
    **{k: KERNELS | {"jaxres.catalog", "jaxres.config.env", "jaxres.config.sections", "jaxres.config.values",
                     "jaxres.config.keys"} for k in KERNELS},  # the arithmetic: the compute section only
    **{a: ANALYSIS | SPEC | {"jaxres.results", "jaxres.stopping", "jaxres.errors"} for a in ANALYSIS},  # results only
}


@pytest.mark.parametrize("module", sorted(LAYERS))
def test_each_layer_imports_only_the_layers_below_it(module):
    extra = _reach(import_graph(), module) - LAYERS[module]
    assert not extra, f"{module} reaches {sorted(extra)}"


@pytest.mark.parametrize("module", ["jaxres.config", *sorted(ANALYSIS)])
def test_the_description_of_runs_and_the_analysis_of_results_import_no_jax(module):
    """Not even inside a function: ``--report-only`` runs where JAX is not installed (tested by running it too)."""
    for m in _reach(import_graph(), module):
        tree = ast.parse(_path(m).read_text())
        imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        imported |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        lazy = {"jaxres.stopping"}  # imports JAX only to agree between several processes, which reports never do
        assert m in lazy or not imported & JAX, f"{m} (reached from {module}) imports {sorted(imported & JAX)}"


def test_report_only_runs_without_importing_jax(tmp_path):
    """``--report-only`` on the committed campaign results, in a fresh interpreter: JAX is never imported."""
    import shutil
    import subprocess
    import sys

    shutil.copytree(ROOT / "results" / "seed_cpu", tmp_path / "r")
    code = ("import sys; from experiments import compare; rc = compare.main(['--report-only', sys.argv[1]]); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in %r)); sys.exit(rc)" % (JAX,))
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path / "r")], cwd=ROOT, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "[]"
    assert (tmp_path / "r" / "claims.csv").read_text() == (ROOT / "results" / "seed_cpu" / "claims.csv").read_text()


def test_every_package_is_installed():
    """pyproject.toml lists its packages by name: a new subpackage left out would be missing from a wheel."""
    import tomllib

    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {_module_name(p) for p in PKG.rglob("__init__.py")}
    assert found <= listed, sorted(found - listed)
