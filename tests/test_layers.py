"""The packages stack in floors: each imports only the floors below it, and nothing imports in a cycle."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Lowest first. A package may import its own floor and those below it, and the drivers listed for it.
FLOORS = ["domain", "outbox", "dispatch", "printing", "api", "mqtt", "service", "fleet", "cli"]
DRIVERS_ALLOWED = {
    "domain": set(),
    "outbox": set(),
    "dispatch": {"drivers.pos"},
    "printing": {"drivers.printers"},
    "api": {"drivers.pos"},
    "mqtt": set(),
    "service": {"drivers.pos", "drivers.printers"},
    "fleet": set(),
    "cli": {"drivers.pos", "drivers.printers"},
}


def module_name(path: Path) -> str:
    """Return the dotted module name of a source file under the repository root."""
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path, *, typing_only: bool = True) -> set[str]:
    """Return every first-party module ``path`` imports (at module level or in a function).

    With ``typing_only=False``, imports under ``if TYPE_CHECKING:`` are left out: they never run.
    """
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        guard = isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"
        if guard and not typing_only:
            assert isinstance(node, ast.If)
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            # ``from agent.outbox import transitions`` imports the module agent.outbox.transitions.
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text(encoding="utf-8")))
    return {name for name in found if name.split(".")[0] in {"agent", "drivers"}}


def sources(*tops: str) -> list[Path]:
    """Return every Python source file under the given top-level packages."""
    return sorted(p for top in tops for p in (ROOT / top).rglob("*.py"))


def known_modules() -> set[str]:
    """Return the dotted names of every first-party module and package."""
    return {module_name(p) for p in sources("agent", "drivers")}


def test_agent_has_no_module_outside_a_package() -> None:
    loose = [p.name for p in (ROOT / "agent").glob("*.py") if p.name != "__init__.py"]
    assert loose == [], f"agent/ holds only packages; move {loose} into one"
    packages = sorted(p.name for p in (ROOT / "agent").iterdir() if (p / "__init__.py").exists())
    assert packages == sorted(FLOORS), "a new package needs its floor in FLOORS (and in docs/architecture.md)"


PACKAGED = [p for p in sources("agent") if p.parent.name != "agent"]


@pytest.mark.parametrize("path", PACKAGED, ids=lambda p: str(p.relative_to(ROOT)))
def test_agent_packages_import_only_their_floor_and_below(path: Path) -> None:
    package = module_name(path).split(".")[1]
    floor = FLOORS.index(package)
    wrong = []
    for name in imports_of(path) & known_modules():
        top, *rest = name.split(".")
        if top == "agent" and rest:
            if FLOORS.index(rest[0]) > floor:
                wrong.append(name)
        elif top == "drivers" and rest and f"drivers.{rest[0]}" not in DRIVERS_ALLOWED[package]:
            wrong.append(name)
    assert wrong == [], f"agent.{package} may not import {sorted(wrong)} (see agent/{package}/__init__.py)"


@pytest.mark.parametrize("path", sources("drivers"), ids=lambda p: str(p.relative_to(ROOT)))
def test_drivers_import_only_the_domain(path: Path) -> None:
    wrong = sorted(
        name
        for name in imports_of(path) & known_modules()
        if name.startswith("agent") and name != "agent.domain" and not name.startswith("agent.domain.")
    )
    assert wrong == [], "drivers take their settings section and the order; they import nothing else of the agent"


def test_no_import_cycles() -> None:
    modules = known_modules()
    graph = {module_name(p): imports_of(p, typing_only=False) & modules for p in sources("agent", "drivers")}
    # A package's __init__ is not an edge worth following: importing agent.outbox.transitions names agent.outbox too.
    graph = {m: {d for d in deps if d != m and not m.startswith(d + ".")} for m, deps in graph.items()}
    cycles: list[list[str]] = []
    state: dict[str, int] = {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        stack.append(node)
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == 1:
                cycles.append([*stack[stack.index(dep) :], dep])
            elif dep not in state:
                visit(dep, stack)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [])
    assert cycles == [], "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)
