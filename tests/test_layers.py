"""The package's layers, as the README's table states them: a module imports only from its own
layer or below, and no modules import each other in a circle (function-local and type-checking
imports included: a hidden edge is still an edge). Read from the source with ``ast``; nothing is
imported."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "lib" / "genlineage"

# lowest first; a name is a top-level module or sub-package of genlineage
LAYERS = [
    ("core", {"config", "io", "cache", "cached_job", "untrusted", "errors", "layout", "jobs", "markdown", "timings", "outdir"}),
    ("maths on arrays", {"distances", "confidence", "watermark", "discriminator", "metrics", "intervals"}),
    ("models and data", {"models", "training", "data", "key_sets"}),
    ("queries of a model", {"generation", "reconstruction", "keys", "training_set"}),
    ("the tool", {"verify", "cli"}),
    ("the study", {"study"}),
    ("stages", {"experiments"}),
    ("report", {"report"}),
    ("runner", {"runner", "preflight", "cost_plan", "notebook_copies"}),
]
LEVEL = {name: i for i, (_, names) in enumerate(LAYERS) for name in names}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_module(dotted: str) -> bool:
    """Whether ``from package import name`` names a module (or sub-package) rather than an object."""
    where = PACKAGE.parent / dotted.replace(".", "/")
    return where.is_dir() or where.with_suffix(".py").is_file()


def imports_of(path: Path) -> set[str]:
    """Every genlineage module ``path`` imports, wherever the import statement sits."""
    here = module_name(path).split(".")
    package = here if path.name == "__init__.py" else here[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("genlineage")}
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            target = ".".join(base + ([node.module] if node.module else []))
            if not target.startswith("genlineage"):
                continue
            found.add(target)
            found |= {f"{target}.{a.name}" for a in node.names if is_module(f"{target}.{a.name}")}
    return {m for m in found if m != "genlineage"}


def top(module: str) -> str:
    return module.split(".")[1]


GRAPH = {module_name(p): imports_of(p) for p in sorted(PACKAGE.rglob("*.py"))}


def test_every_module_has_a_layer():
    assert {top(m) for m in GRAPH if m != "genlineage"} - set(LEVEL) == set(), "add the new module to LAYERS and the README"


def test_no_import_runs_up_a_layer():
    upward = sorted(f"{m} -> {t}" for m, targets in GRAPH.items() if m != "genlineage"
                    for t in targets if LEVEL[top(t)] > LEVEL[top(m)])
    assert upward == []


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in graph:
                continue
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_no_modules_import_each_other_in_a_circle():
    # a package's __init__ only hands names on: its edges to its own modules are not a circle
    graph = {m: {t for t in ts if not (t.startswith(m + ".") and (PACKAGE.parent / m.replace(".", "/")).is_dir())}
             for m, ts in GRAPH.items()}
    assert _cycle(graph) is None


def test_the_checks_can_fail():
    assert _cycle({"a": {"b"}, "b": {"a"}}) == ["a", "b", "a"]
    with pytest.raises(AssertionError):
        assert LEVEL["verify"] <= LEVEL["config"]
