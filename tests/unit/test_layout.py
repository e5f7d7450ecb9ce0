"""The package's layout keeps its directions: api <- builders <- decide <- {controller, local},
with client and report on api (and decide), and no cycles.

Read from the source with `ast`, so the rule covers every import, including those inside
functions that a test run might never reach.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2] / "operator" / "mentor"
RUNTIME = ("kubernetes", "kopf", "torchx", "aiohttp", "torch", "mentor_trainer")
# The pod builders turn TorchX's AppDef into pods with TorchX's own `role_to_pod`, which speaks
# the kubernetes client's models: that is the one launch description (DESIGN: "One launch"),
# pure, with no I/O. Nothing else in api/, builders/ or decide/ may import a runtime.
LAUNCH_BUILDERS = {"mentor.builders.launch": {"torchx"},
                   "mentor.builders.pods": {"torchx", "kubernetes"}}
PURE = ("mentor.api", "mentor.builders", "mentor.decide")
UPPER = ("mentor.controller", "mentor.local", "mentor.client", "mentor.cli")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def imports(path: Path) -> Iterator[str]:
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module
            # `from mentor.local import training` imports the module mentor.local.training
            yield from (f"{node.module}.{a.name}" for a in node.names)


def mentor_imports(path: Path, known: dict[str, Path]) -> set[str]:
    return {name for name in imports(path) if name in known}


def within(name: str, packages: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in packages)


def reachable(name: str, known: dict[str, Path]) -> set[str]:
    """The mentor modules `name` imports, directly or through others."""
    seen, todo = {name}, [name]
    while todo:
        for found in mentor_imports(known[todo.pop()], known) - seen:
            seen.add(found)
            todo.append(found)
    return seen


@pytest.mark.parametrize("name", [n for n in modules() if within(n, PURE)])
def test_the_contract_builders_and_decisions_import_no_runtime(name: str) -> None:
    """Directly or through another mentor module: `import mentor.decide` stays light."""
    known = modules()
    allowed = set().union(*LAUNCH_BUILDERS.values()) if name in LAUNCH_BUILDERS else set()
    for module in reachable(name, known):
        found = {i.split(".")[0] for i in imports(known[module])} & set(RUNTIME)
        assert found <= allowed, f"{name} imports {sorted(found - allowed)} (through {module})"


@pytest.mark.parametrize("name", [n for n in modules() if within(n, PURE)])
def test_builders_and_decisions_never_import_the_layers_above(name: str) -> None:
    known = modules()
    upward = {i for i in mentor_imports(known[name], known) if within(i, UPPER)}
    assert not upward, f"{name} imports {sorted(upward)}"


def test_api_imports_only_api() -> None:
    known = modules()
    for name, path in known.items():
        if within(name, ("mentor.api",)):
            outside = {i for i in mentor_imports(path, known)
                       if i != "mentor" and not within(i, ("mentor.api",))}
            assert not outside, f"{name} imports {sorted(outside)}"


def test_builders_never_import_decisions() -> None:
    known = modules()
    for name, path in known.items():
        if within(name, ("mentor.builders",)):
            found = {i for i in mentor_imports(path, known) if within(i, ("mentor.decide",))}
            assert not found, f"{name} imports {sorted(found)}"


def test_there_are_no_import_cycles() -> None:
    known = modules()
    graph = {name: {i for i in mentor_imports(path, known) if i not in (name, "mentor")}
             for name, path in known.items()}
    # Package __init__ modules are their children's parents, not their importers.
    graph = {n: {i for i in deps if not n.startswith(i + ".")} for n, deps in graph.items()}
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycle = [*trail[trail.index(nxt):], nxt] if nxt in trail else [node, nxt]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt, [*trail, nxt])
        state[node] = 2

    for start in sorted(graph):
        if start not in state:
            visit(start, [start])


def test_the_layout_rule_sees_a_violation(tmp_path: Path) -> None:
    """The check itself: a decision that imports kubernetes is caught."""
    bad = tmp_path / "bad.py"
    bad.write_text("import datetime\nfrom kubernetes.client import V1Pod\n")
    assert {i.split(".")[0] for i in imports(bad)} & set(RUNTIME) == {"kubernetes"}


def test_no_decision_is_longer_than_sixty_lines() -> None:
    """Every function of decide/ reads on one screen."""
    for name, path in modules().items():
        if not within(name, ("mentor.decide",)):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                assert length <= 60, f"{name}.{node.name} is {length} lines"
