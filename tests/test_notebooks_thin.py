"""The notebooks only parameterise, call and show (logic lives in the package, where tests reach
it): every name a notebook imports is used, no notebook defines a function or class, and each has
its ``parameters`` cell first."""
from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def _code(path: Path) -> list[dict]:
    return [c for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code"]


def _tree(path: Path) -> ast.Module:
    source = "\n".join("".join(c["source"]) for c in _code(path))
    return ast.parse("\n".join(line for line in source.splitlines() if not line.lstrip().startswith(("%", "!"))))


def unused_imports(tree: ast.Module) -> set[str]:
    imported = {(a.asname or a.name).split(".")[0] for node in ast.walk(tree) if isinstance(node, (ast.Import, ast.ImportFrom))
                for a in node.names}
    used = {node.id for node in ast.walk(tree) if isinstance(node, ast.Name)}
    return imported - used


def test_the_unused_import_check_can_fail():
    assert unused_imports(ast.parse("import os\nfrom x import y, z\nprint(y)")) == {"os", "z"}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_a_notebook_imports_only_what_it_uses_and_defines_no_logic(path):
    tree = _tree(path)
    assert unused_imports(tree) == set(), f"{path.name} imports names it never uses"
    defined = [n.name for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef))]
    assert defined == [], f"{path.name} defines {defined}: move them into lib/genlineage where tests reach them"
    first = _code(path)[0]
    assert "parameters" in first["metadata"].get("tags", []), f"{path.name}: the first code cell must be tagged parameters"
