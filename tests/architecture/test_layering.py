"""The package layering, checked on the source (every import statement, lazy ones included).

Rules (each package's ``__init__`` docstring says the same in words):
- ``optimizer.inputs``, ``optimizer.costs`` and ``optimizer.plan`` never import ortools, so a
  plan is read, costed and checked without the solver;
- nothing outside ``optimizer.cli`` imports click;
- each package imports only the packages listed for it in ``ALLOWED``;
- no import cycle between modules, counting imports inside functions too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SOURCES = sorted([*(REPO / "optimizer").rglob("*.py"), *(REPO / "constraints").rglob("*.py")])

# package -> the project packages its modules may import (besides themselves and ``errors``)
ALLOWED = {
    "optimizer.inputs": {"optimizer.costs.formulas"},
    "optimizer.costs": {"optimizer.inputs"},
    "optimizer.plan": {"optimizer.inputs", "optimizer.costs"},
    "optimizer.cpsat": {"optimizer.inputs", "optimizer.costs", "optimizer.plan", "constraints"},
    "constraints": {"optimizer.cpsat.context", "optimizer.costs"},
    "optimizer.place": {"optimizer.inputs.files"},
    "optimizer.output": {"optimizer.inputs", "optimizer.costs", "optimizer.plan"},
    "optimizer.search": {"optimizer.inputs", "optimizer.costs", "optimizer.plan", "optimizer.cpsat",
                         "optimizer.output.plots"},
    "optimizer.simulate": {"optimizer.inputs", "optimizer.costs", "optimizer.plan"},
    "optimizer.profiles": {"optimizer.inputs", "optimizer.costs.profile", "optimizer.costs.formulas"},
}
NO_ORTOOLS = ("optimizer.inputs", "optimizer.costs", "optimizer.plan", "optimizer.output",
              "optimizer.simulate", "optimizer.profiles")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path) -> set[str]:
    """Every module named by an import statement anywhere in the file (absolute names)."""
    found: set[str] = set()
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


MODULES = {module_name(p): p for p in SOURCES}
IMPORTS = {name: imports_of(path) for name, path in MODULES.items()}


def owner(name: str) -> str | None:
    return next((pkg for pkg in sorted(ALLOWED, key=len, reverse=True)
                 if name == pkg or name.startswith(pkg + ".")), None)


def project_imports(name: str) -> set[str]:
    """Project modules (not packages' attributes) that ``name`` imports."""
    return {i for i in IMPORTS[name] if i in MODULES and i != name}


@pytest.mark.parametrize("name", sorted(n for n in MODULES if n.startswith(NO_ORTOOLS)))
def test_no_ortools_below_the_solver(name):
    assert not any(i == "ortools" or i.startswith("ortools.") for i in IMPORTS[name]), name


@pytest.mark.parametrize("name", sorted(n for n in MODULES if not n.startswith("optimizer.cli")))
def test_only_the_cli_imports_click(name):
    assert not any(i == "click" or i.startswith("click.") for i in IMPORTS[name]), name


@pytest.mark.parametrize("name", sorted(n for n in MODULES if owner(n)))
def test_each_package_imports_only_what_it_may(name):
    bad = forbidden_imports(name, project_imports(name))
    assert not bad, f"{name} imports {bad}"


def forbidden_imports(name: str, imported: set[str]) -> list[str]:
    """The modules of ``imported`` that ``name``'s package may not import: anything outside
    its ``ALLOWED`` packages, itself and ``optimizer.errors`` (the top-level ``optimizer``
    package only by its own name, never as a prefix that would allow every module)."""
    pkg = owner(name)
    allowed = ALLOWED[pkg] | {pkg, "optimizer.errors"}
    return sorted(i for i in imported
                  if i != "optimizer" and not any(i == a or i.startswith(a + ".") for a in allowed))


def test_the_package_rule_can_fail():
    """The rule is not vacuous: a plan module importing the output package is refused."""
    assert forbidden_imports("optimizer.plan.check", {"optimizer.output.text"}) == ["optimizer.output.text"]
    assert forbidden_imports("optimizer.plan.check", {"optimizer.costs.tables", "optimizer"}) == []


def test_no_import_cycles():
    graph = {name: project_imports(name) for name in MODULES}
    # a package's __init__ importing its own submodules is not a cycle of concern
    for name in graph:
        graph[name] = {i for i in graph[name] if not (MODULES[name].name == "__init__.py" and i.startswith(name + "."))}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycle = stack[stack.index(nxt):] + [nxt]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name)


def test_the_checker_can_detect_a_cycle(tmp_path):
    """The cycle test is not vacuous: the graph really contains the project's edges."""
    assert "optimizer.costs.tables" in project_imports("optimizer.plan.evaluate")
    assert "optimizer.cpsat.context" in project_imports("constraints.placement")
